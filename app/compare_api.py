"""`/compare`, `/vote`, `/keep`, `/compare_review`: the Compare workflow for programs.

    from gradio_client import Client, handle_file
    client = Client(url, auth=(name, password))
    job = client.submit(None, case_id, api_name="/compare")     # or a message, or a turn id
    for update in job: print(update["a"], update["b"])          # both answers so far
    last = job.result()  # {"turn_id", "a", "b", "finish_reason": {"a", "b"}, "error": {...}}
    votes = {"proactiveness": "a", "accuracy": "tie", "usefulness": "a",
             "language_quality": "b", "overall": "a"}
    client.predict(last["turn_id"], votes, str(uuid.uuid4()), api_name="/vote")
    # {"turn_id", "vote_id", "names": {"a": "tiny", "b": "a1"}, "kept_side"}
    turn = client.predict(api_name="/compare_review")  # a second opinion (annotators, admins):
    # {"turn_id", "context", "a", "b", ...} of a turn another annotator voted on, or a message
    client.predict(turn["turn_id"], votes, str(uuid.uuid4()), api_name="/vote")

`/compare(message, case_id, turn_id, consultation_id, keep)`: exactly one source: a message
{"text", "files"} alone (a typed patient turn: annotators, admins), a case id (annotators,
admins), a comparison turn id to continue with the message (after the vote; `keep` "a"/"b"
after a tie), or a consultation id (clinician compare mode, the caller's own consultation; a
message given with it is added to the consultation first). The same rules as the tabs decide
(`storage.access`); files must be the caller's own uploads to this server.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing

import gradio as gr

from app.auth import Auth
from app.compare import (
    AdHoc,
    Comparisons,
    FromCase,
    FromConsultation,
    FromLog,
    PairAnswer,
    VoteChoice,
)
from app.consult_api import display_name, file_path
from app.edge import optional_id, parse_id
from app.i18n import SERVER, t
from app.language import current_language
from storage import (
    CompareTurnRecord,
    Database,
    InvalidInput,
    Side,
    UserRecord,
    UserRole,
    turn_context,
)
from storage.access import ANNOTATING_ROLES

#: What a program that sent something other than {"text": str, "files": [...]} is told.
MALFORMED = SERVER["api.malformed"]["en"]
ONE_SOURCE = SERVER["api.compare_source"]["en"]
BAD_VOTE = SERVER["api.bad_vote"]["en"]
BAD_SIDE = SERVER["api.bad_side"]["en"]
VOTE_FIELDS = frozenset(VoteChoice.__dataclass_fields__)


def build_compare_api(auth: Auth, comparisons: Comparisons, concurrency: int) -> None:
    """Register `/compare`, `/vote`, `/keep` and `/compare_review` in the current Blocks."""
    # every role: storage.access decides (annotators and admins on cases and typed turns,
    # a clinician only in her own consultation), as for the tabs
    guard = auth.guard(*UserRole)

    @guard
    def compare(
        user: UserRecord,
        message: dict | None = None,
        case_id: int | None = None,
        turn_id: int | None = None,
        consultation_id: int | None = None,
        keep: str | None = None,
        message_id: int | None = None,
    ) -> Iterator[dict]:
        """Start (or continue) a blind comparison and stream both answers as they are written.

        Sources: `case_id`; `consultation_id` (your own consultation: clinician compare mode,
        `message` adds your next turn first); `consultation_id` with `message_id` (annotators,
        admins: a logged consultation up to that question, only read); a `message` alone (a
        typed turn); `turn_id` continues a comparison after your vote (`keep`: "a" or "b").

        Each update is {"turn_id", "a", "b"} (each side's text so far); the last one also has
        "finish_reason" and "error" per side ({"a": ..., "b": ...}).
        """
        text, files = message_parts(message)
        case = optional_id(case_id, "case")
        turn = optional_id(turn_id, "turn")
        cid = optional_id(consultation_id, "consultation")
        asked = optional_id(message_id, "message")
        if asked is not None and (cid is None or message is not None):
            raise InvalidInput("message id without a consultation", user_message=ONE_SOURCE)
        side = _side(keep) if keep not in (None, "") else None
        if sum(x is not None for x in (case, turn, cid)) > 1 or (side and turn is None):
            raise InvalidInput("more than one comparison source", user_message=ONE_SOURCE)
        language = current_language()
        if turn is not None:
            pair = comparisons.continue_(user, turn, text, files, keep=side)
        elif case is not None:
            if message is not None:
                raise InvalidInput("a message with a case", user_message=ONE_SOURCE)
            pair = comparisons.start(user, FromCase(case), language=language)
        elif asked is not None:
            pair = comparisons.start(user, FromLog(cid, asked), language=language)
        elif cid is not None:
            if text or files:  # takes only the caller's own uploads (Consultations.take_in)
                comparisons.add_patient_turn(user, cid, text, files)
            pair = comparisons.start(user, FromConsultation(cid), language=language)
        else:
            if message is None:
                raise InvalidInput("no comparison source", user_message=ONE_SOURCE)
            pair = comparisons.start(user, AdHoc(text, files), language=language)
        yield from stream_pair(pair)

    @guard
    def vote(user: UserRecord, turn_id: int, votes: dict, idempotency_key: str) -> dict:
        """Vote on a compare turn's two answers (a replay with the same key is the same vote)
        and learn which variant wrote each: {"turn_id", "vote_id", "names", "kept_side"}."""
        tid = parse_id(turn_id, "turn")
        if (
            not isinstance(votes, dict)
            or not set(votes) <= VOTE_FIELDS
            or not all(isinstance(v, str | bool) or v is None for v in votes.values())
        ):
            raise InvalidInput("malformed vote", user_message=BAD_VOTE)
        if not isinstance(idempotency_key, str):
            idempotency_key = ""  # storage refuses it in the user's words
        revealed = comparisons.vote(user, tid, votes, idempotency_key)
        return {"turn_id": tid, "vote_id": revealed.vote.id, "names": revealed.names,
                "kept_side": _value(revealed.turn.kept_side)}  # fmt: skip

    @guard
    def keep(user: UserRecord, turn_id: int, side: str) -> dict:
        """After the vote: the answer (side "a" or "b") the conversation continues with; in
        clinician compare mode it becomes the consultation's answer."""
        turn = comparisons.keep(user, parse_id(turn_id, "turn"), _side(side))
        return {"turn_id": turn.id, "kept_side": _value(turn.kept_side),
                "message_id": turn.kept_message_id}  # fmt: skip

    @auth.guard(*ANNOTATING_ROLES)  # as the Compare tab
    def compare_review(user: UserRecord) -> dict | str:
        """A second opinion: a turn another annotator compared and voted on (your pending one
        first), with the context and both answers as stored, blind: {"turn_id", "context":
        [{"role", "text", "files"}], "a", "b", "finish_reason", "reference"}; vote on it with
        `/vote`. A plain message when there is nothing to review."""
        turn = comparisons.review(user)
        if turn is None:
            return t("compare.review_none")
        return review_json(comparisons.db, user, turn)

    for fn in (compare, vote, keep, compare_review):
        gr.api(fn, api_name=fn.__name__, concurrency_limit=concurrency)


def review_json(db: Database, user: UserRecord, turn: CompareTurnRecord) -> dict:
    """A turn to review as plain JSON: what both models were sent (files as the image URLs
    `/attachments` serves to the reviewer) and both stored answers; never the variants."""
    context = [{"role": _value(m.role), "text": m.text,
                "files": [[f"/attachments/{a.id}/{img.position}.png" for img in a.images]
                          for a in m.attachments]}
               for m in turn_context(db, turn.id, user_id=user.id)]  # fmt: skip
    out: dict = {"turn_id": turn.id, "context": context, "finish_reason": {},
                 "reference": turn.reference_answer}  # fmt: skip
    for side in ("a", "b"):
        r = turn.response(side)
        out[side] = r.text if r else ""
        out["finish_reason"][side] = _value(r.finish_reason) if r else None
    return out


def message_parts(message: object) -> tuple[str, list[tuple[str, object]]]:
    """(text, [(name, path)]) of {"text", "files"} (None: no message); InvalidInput else."""
    if message is None:
        return "", []
    if not isinstance(message, dict) or not isinstance(message.get("files") or [], list):
        raise InvalidInput("malformed message", user_message=MALFORMED)
    text = message.get("text") or ""
    if not isinstance(text, str):
        raise InvalidInput("malformed message", user_message=MALFORMED)
    return text, [(display_name(f), file_path(f)) for f in message.get("files") or []]


def _side(value: object) -> Side:
    if isinstance(value, str) and value in ("a", "b"):
        return Side(value)
    raise InvalidInput("malformed side", user_message=BAD_SIDE)


def _value(x: object) -> object:
    return getattr(x, "value", x)


def stream_pair(pair: PairAnswer) -> Iterator[dict]:
    """Both answers as they grow, then how each ended (both recorded first, even on Stop)."""
    tid = pair.turn.id
    with closing(iter(pair)) as updates:
        for a, b in updates:
            yield {"turn_id": tid, "a": a, "b": b}
    turn = pair.turn
    out = {"turn_id": tid, "a": "", "b": "", "finish_reason": {}, "error": {}}
    for side in ("a", "b"):
        r = next((r for r in turn.responses if _value(r.side) == side), None)
        out[side] = r.text if r else ""
        out["finish_reason"][side] = _value(r.finish_reason) if r else None
        out["error"][side] = r.error if r else None
    yield out
