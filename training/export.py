"""Training data out of storage: Hugging Face datasets for SFT, preference pairs and CRPO.

Why: the trainers read what clinicians and annotators produced (votes, kept and rated
answers, imported reference dialogues), in exactly the prompt the model is served
(`model.prompt.to_chat_messages`, the one prompt builder), and every row names the rows it
came from so a trained adapter traces back to the votes and messages behind it.

    pulsemind export --kind sft OUT [--include-flagged] [--since 2026-01-01T00:00:00+00:00]
    export_dataset(db, ExportConfig(kind="pairs", out=Path("pairs")))   # -> rows written

Kinds (columns are fixed per kind: `FEATURES`; images are `datasets.Image`, one list per row,
in the order of the image placeholders in the messages):

- **sft**: `messages` (system, user, assistant, ...; the last assistant message is the
  preferred answer; a `case` row's assistant messages are all the reference doctor's) and
  `images`. Sources: the overall winner of each voted comparison turn (`vote`), consultation
  answers a clinician kept in compare mode, picked among regenerated versions or rated thumbs
  up, none rated thumbs down (`consultation`), imported case sets' reference dialogues (`case`).
  One row per distinct example: sources giving the same one (an answer kept in compare mode
  is also its vote's winner) are merged, the row keeping every source's ids and `signals`.
- **pairs**: `prompt`, `images`, `chosen`, `rejected` (one assistant message each: TRL's
  conversational preference format), the four dimensions as "chosen"/"rejected"/"tie",
  `overall` ("chosen": only decisive votes make pairs; ties and "both bad" do not), voter id.
- **crpo**: `prompt`, `images` and `counterparts`: every logged answer to the same context
  (comparison turns sharing `context_sha256`), for CRPO's comparison reward; `--policy NAME`
  leaves out that variant's own answers.

A message is `{"role", "content": [{"type": "image", "text": None} | {"type": "text",
"text": ...}]}`. Flagged data is left out unless `include_flagged`: a vote whose chosen side
carries a safety flag, and (crpo) an answer any voter flagged. Only de-identified stored text
and images go in: storage keeps nothing else. No timestamps are written, rows are sorted by
their ids and the fingerprint is derived from the content, so the same database gives
byte-identical files. The dataset is written to a temporary folder beside OUT and renamed
into place: OUT is either complete or absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import datasets
from loguru import logger
from sqlalchemy import select, true
from sqlalchemy.orm import Session
from tqdm import tqdm

from model.chat import ChatMessage
from model.images import EncodedImage, ModelImage, png_bytes
from model.prompt import DEFAULT_LANGUAGE, to_chat_messages
from storage import Database
from storage.cases import load_case
from storage.compare_context import resolve_context
from storage.errors import InvalidInput
from storage.messages import history
from storage.models import (
    AnswerFeedback,
    Case,
    CaseSet,
    Comparison,
    ComparisonResponse,
    ComparisonTurn,
    FinishReason,
    Message,
    MessageRole,
    ModelVariant,
    Overall,
    Preference,
    Side,
    Thumbs,
    Vote,
)
from storage.records import ContextMessage, MessageRecord

Kind = Literal["sft", "pairs", "crpo"]
KINDS: tuple[Kind, ...] = ("sft", "pairs", "crpo")
DIMENSIONS = ("proactiveness", "accuracy", "usefulness", "language_quality")
#: Only answers that ended on their own are training targets (the rule votes follow too).
FINISHED = (FinishReason.STOP, FinishReason.LENGTH)

_ids = datasets.List(datasets.Value("int64"))
_strings = datasets.List(datasets.Value("string"))
_message = {
    "role": datasets.Value("string"),
    "content": datasets.List({"type": datasets.Value("string"), "text": datasets.Value("string")}),
}
_chat = datasets.List(_message)
_images = datasets.List(datasets.Image())
_trace = {
    "language": datasets.Value("string"),
    "comparison_turn_ids": _ids,
    "vote_ids": _ids,
    "response_ids": _ids,
    "message_ids": _ids,
    "consultation_id": datasets.Value("int64"),
    "case_id": datasets.Value("int64"),
    "case_turn_ids": _ids,
    "attachment_sha256s": _strings,
    "context_sha256": datasets.Value("string"),
}
#: The columns of each kind, in this order.
FEATURES: dict[str, datasets.Features] = {
    "sft": datasets.Features(
        {
            "source": datasets.Value("string"),
            "signals": _strings,
            "messages": _chat,
            "images": _images,
            **_trace,
        }
    ),  # fmt: skip
    "pairs": datasets.Features(
        {
            "prompt": _chat,
            "images": _images,
            "chosen": _chat,
            "rejected": _chat,
            **{d: datasets.Value("string") for d in DIMENSIONS},
            "overall": datasets.Value("string"),
            "voter_id": datasets.Value("int64"),
            "chosen_variant": datasets.Value("string"),
            "rejected_variant": datasets.Value("string"),
            **_trace,
        }
    ),  # fmt: skip
    "crpo": datasets.Features(
        {
            "prompt": _chat,
            "images": _images,
            "counterparts": _strings,
            "counterpart_variants": _strings,
            **_trace,
        }
    ),  # fmt: skip
}


class NothingToExport(InvalidInput):
    """The database holds no rows of the kind asked for (with the filters given)."""


@dataclass(frozen=True)
class ExportConfig:
    """What `export_dataset` writes."""

    kind: Kind
    """sft | pairs | crpo (see the module docstring)."""
    out: Path
    """The dataset folder to create (must not exist yet)."""
    include_flagged: bool = False
    """Keep votes with a safety flag on the chosen side, and (crpo) flagged answers."""
    since: datetime | None = None
    """Only votes, comparison turns, messages and case sets created at or after this time."""
    policy: str | None = None
    """crpo: the policy variant's name; its own logged answers are not counterparts."""
    language: str = DEFAULT_LANGUAGE
    """System prompt language of consultation and case rows (comparisons store their own)."""
    progress: bool = False
    """Show tqdm progress bars (the command line)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InvalidInput(
                f"kind {self.kind!r}", user_message=f"Choose a kind: {', '.join(KINDS)}."
            )
        if self.since is not None and self.since.tzinfo is None:
            raise InvalidInput("naive since", user_message="Give --since with a time zone "
                               "(e.g. 2026-01-01T00:00:00+00:00).")  # fmt: skip
        if self.policy is not None and self.kind != "crpo":
            raise InvalidInput(
                "policy outside crpo", user_message="--policy is for --kind crpo only."
            )


# --- prompt -> columns ----------------------------------------------------------------------


def image_bytes(img: ModelImage) -> bytes:
    """The bytes kept for a prompt image: what the model is sent when stored that way (the
    upload's stripped encoding), else the stored pixels as PNG (lossless, deterministic)."""
    return img.data if isinstance(img, EncodedImage) else png_bytes(img)


def chat_columns(
    messages: Sequence[ChatMessage],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Prompt-builder messages as (messages column, images column): one `image` placeholder
    per image before the message's text, the images in placeholder order."""
    out, images = [], []
    for m in messages:
        content: list[dict[str, Any]] = [{"type": "image", "text": None} for _ in m.images]
        content.append({"type": "text", "text": m.text})
        out.append({"role": m.role, "content": content})
        images.extend({"bytes": image_bytes(img), "path": None} for img in m.images)
    return out, images


def _assistant(text: str) -> list[dict[str, Any]]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def _shas(records: Iterable[Any]) -> list[str]:
    return [a.sha256 for r in records for a in r.attachments]


# --- what a compare turn showed ---------------------------------------------------------------


def turn_records(session: Session, turn: ComparisonTurn) -> list[ContextMessage]:
    """The turn's context resolved for the prompt builder, every hash checked: what
    `storage.turn_context` returns, without its reader check (an export is the operator's,
    and voters may have been deactivated since). Conflict if a source changed."""
    return resolve_context(session, turn, with_png=True)


def _turn_trace(turn: ComparisonTurn, records: Sequence[ContextMessage], language: str,
                case_id: int | None) -> dict[str, Any]:  # fmt: skip
    refs = [i["ref"] or {} for i in [*turn.context["history"], turn.context["prompt"]]]
    case_turns = sorted({r[k] for r in refs for k in ("case_turn", "case_reference") if k in r})
    return {"language": language, "comparison_turn_ids": [turn.id],
            "message_ids": [r["message"] for r in refs if "message" in r],
            "consultation_id": None, "case_id": case_id, "case_turn_ids": case_turns,
            "attachment_sha256s": _shas(records), "context_sha256": turn.context_sha256}  # fmt: skip


# --- sources ------------------------------------------------------------------------------


def _since(column: Any, since: datetime | None) -> Any:
    return true() if since is None else column >= since


def _variant_names(session: Session) -> dict[int, str]:
    return dict(session.execute(select(ModelVariant.id, ModelVariant.name)).tuples().all())


def _vote_rows(
    session: Session, config: ExportConfig, tick: Callable[[], None]
) -> list[dict[str, Any]]:
    """sft (winner) or pairs rows from decisive votes."""
    votes = list(session.scalars(select(Vote).where(_since(Vote.created_at, config.since))
                                 .where(Vote.overall.in_([Overall.A, Overall.B])).order_by(Vote.id)))  # fmt: skip
    names = _variant_names(session)
    rows, skipped = [], 0
    for vote in votes:
        tick()
        won = Side(vote.overall.value)
        flagged = vote.safety_flag_a if won is Side.A else vote.safety_flag_b
        if flagged and not config.include_flagged:
            skipped += 1
            continue
        turn = session.get(ComparisonTurn, vote.turn_id)
        comparison = session.get(Comparison, turn.comparison_id)
        responses = {r.side: r for r in session.scalars(
            select(ComparisonResponse).where(ComparisonResponse.turn_id == turn.id))}  # fmt: skip
        chosen, rejected = responses[won], responses[Side.B if won is Side.A else Side.A]
        records = turn_records(session, turn)
        trace = _turn_trace(turn, records, comparison.language, comparison.case_id)
        if config.kind == "sft":
            messages, images = chat_columns(to_chat_messages(
                [*records, ContextMessage(MessageRole.ASSISTANT, chosen.text)], language=comparison.language))  # fmt: skip
            rows.append({"source": "vote", "signals": ["vote_overall"], "messages": messages,
                         "images": images, **trace, "vote_ids": [vote.id],
                         "response_ids": [chosen.id]})  # fmt: skip
            continue
        prompt, images = chat_columns(to_chat_messages(records, language=comparison.language))
        labels = {d: _label(getattr(vote, d), won) for d in DIMENSIONS}
        rows.append({"prompt": prompt, "images": images, "chosen": _assistant(chosen.text),
                     "rejected": _assistant(rejected.text), **labels, "overall": "chosen",
                     "voter_id": vote.voter_id, "chosen_variant": names[chosen.variant_id],
                     "rejected_variant": names[rejected.variant_id], **trace,
                     "vote_ids": [vote.id], "response_ids": [chosen.id, rejected.id]})  # fmt: skip
    if skipped:
        logger.info("export {}: {} flagged votes left out", config.kind, skipped)
    return rows


def _path_to(by_id: dict[int, MessageRecord], message_id: int) -> list[MessageRecord]:
    path = []
    node: int | None = message_id
    while node is not None:
        path.append(by_id[node])
        node = by_id[node].parent_id
    return path[::-1]


def _consultation_rows(db: Database, session: Session, config: ExportConfig,
                       tick: Callable[[], None]) -> list[dict[str, Any]]:  # fmt: skip
    """sft rows from consultations: answers kept in compare mode, picked among regenerated
    versions (the chosen version the consultation went on from) or rated thumbs up; never
    one rated thumbs down, failed or empty."""
    signals: dict[int, set[str]] = {}
    kept = session.scalars(select(ComparisonTurn.kept_message_id)
                           .where(ComparisonTurn.kept_message_id.is_not(None)))  # fmt: skip
    for message_id in kept:
        signals.setdefault(message_id, set()).add("kept")
    replaced = set(
        session.scalars(select(Message.replaces_id).where(Message.replaces_id.is_not(None)))
    )
    picked = session.execute(select(Message.id, Message.parent_id, Message.chosen, Message.superseded)
                             .where(Message.role == MessageRole.ASSISTANT)).all()  # fmt: skip
    parents_with_versions = {p for m, p, _, _ in picked if m in replaced}
    # picked: the version the clinician went on from (the consultation continues after it)
    continued = set(
        session.scalars(select(Message.parent_id).where(Message.parent_id.is_not(None)))
    )
    for message_id, parent_id, chosen, superseded in picked:
        if (
            chosen
            and not superseded
            and parent_id in parents_with_versions
            and message_id in continued
        ):
            signals.setdefault(message_id, set()).add("picked")
    down = set()
    for message_id, thumbs in session.execute(
        select(AnswerFeedback.message_id, AnswerFeedback.thumbs)
    ):
        if thumbs is Thumbs.UP:
            signals.setdefault(message_id, set()).add("thumbs_up")
        else:
            down.add(message_id)
    wanted = sorted(m for m in signals if m not in down)
    if not wanted:
        return []
    answers = {m.id: m for m in session.scalars(
        select(Message).where(Message.id.in_(wanted)).where(_since(Message.created_at, config.since)))}  # fmt: skip
    loaded: dict[int, dict[int, MessageRecord]] = {}
    rows = []
    for message_id in wanted:
        tick()
        answer = answers.get(message_id)
        if (
            answer is None
            or not answer.text.strip()
            or answer.finish_reason not in (None, *FINISHED)
        ):
            continue
        cid = answer.consultation_id
        if cid not in loaded:
            loaded[cid] = {
                m.id: m for m in history(db, cid, include_superseded=True, with_png=True)
            }
        path = _path_to(loaded[cid], message_id)
        messages, images = chat_columns(to_chat_messages(path, language=config.language))
        rows.append({"source": "consultation", "signals": sorted(signals[message_id]),
                     "messages": messages, "images": images, "language": config.language,
                     "comparison_turn_ids": [], "vote_ids": [], "response_ids": [],
                     "message_ids": [m.id for m in path], "consultation_id": cid, "case_id": None,
                     "case_turn_ids": [], "attachment_sha256s": _shas(path),
                     "context_sha256": None})  # fmt: skip
    return rows


def _case_rows(
    session: Session, config: ExportConfig, tick: Callable[[], None]
) -> list[dict[str, Any]]:
    """sft rows from imported case sets: each case's dialogue up to its last reference answer."""
    case_ids = list(session.scalars(select(Case.id).join(CaseSet, CaseSet.id == Case.case_set_id)
                                    .where(_since(CaseSet.created_at, config.since)).order_by(Case.id)))  # fmt: skip
    rows = []
    for case_id in case_ids:
        tick()
        case = load_case(session, case_id, with_png=True)
        turns = list(case.turns)
        while turns and turns[-1].reference_answer is None:
            turns.pop()
        if not turns:
            continue
        records: list[ContextMessage] = []
        for t in turns:
            records.append(ContextMessage(MessageRole.USER, t.patient_text, t.attachments))
            records.append(ContextMessage(MessageRole.ASSISTANT, t.reference_answer or ""))
        messages, images = chat_columns(to_chat_messages(records, language=config.language))
        rows.append({"source": "case", "signals": ["reference"], "messages": messages,
                     "images": images, "language": config.language, "comparison_turn_ids": [],
                     "vote_ids": [], "response_ids": [], "message_ids": [],
                     "consultation_id": None, "case_id": case_id,
                     "case_turn_ids": [t.id for t in turns], "attachment_sha256s": _shas(records),
                     "context_sha256": None})  # fmt: skip
    return rows


def _crpo_rows(
    session: Session, config: ExportConfig, tick: Callable[[], None]
) -> list[dict[str, Any]]:
    """One row per distinct context: all finished, non-empty answers logged for it."""
    names = _variant_names(session)
    if config.policy is not None and config.policy not in names.values():
        raise InvalidInput(f"policy {config.policy!r}",
                           user_message=f"There is no model variant named {config.policy!r}.")  # fmt: skip
    turns = list(session.scalars(select(ComparisonTurn).where(_since(ComparisonTurn.created_at, config.since))
                                 .order_by(ComparisonTurn.id)))  # fmt: skip
    groups: dict[str, list[ComparisonTurn]] = {}
    for turn in turns:
        groups.setdefault(turn.context_sha256, []).append(turn)
    flagged = set()
    for turn_id, flag_a, flag_b in session.execute(
        select(Vote.turn_id, Vote.safety_flag_a, Vote.safety_flag_b)
    ):
        flagged |= {(turn_id, s) for s, f in ((Side.A, flag_a), (Side.B, flag_b)) if f}
    rows = []
    for sha, group in sorted(groups.items(), key=lambda kv: kv[1][0].id):
        tick()
        ids = [t.id for t in group]
        answers = [r for r in session.scalars(select(ComparisonResponse)
                                              .where(ComparisonResponse.turn_id.in_(ids))
                                              .order_by(ComparisonResponse.id))
                   if r.finish_reason in FINISHED and r.text.strip()
                   and names[r.variant_id] != config.policy
                   and (config.include_flagged or (r.turn_id, r.side) not in flagged)]  # fmt: skip
        if not answers:
            continue
        first = group[0]
        comparison = session.get(Comparison, first.comparison_id)
        records = turn_records(session, first)
        prompt, images = chat_columns(to_chat_messages(records, language=comparison.language))
        votes = sorted(session.scalars(select(Vote.id).where(Vote.turn_id.in_(ids))))
        rows.append({"prompt": prompt, "images": images, "counterparts": [r.text for r in answers],
                     "counterpart_variants": [names[r.variant_id] for r in answers],
                     **_turn_trace(first, records, comparison.language, comparison.case_id),
                     "comparison_turn_ids": ids, "vote_ids": votes,
                     "response_ids": [r.id for r in answers], "context_sha256": sha})  # fmt: skip
    return rows


# --- writing ------------------------------------------------------------------------------


def _row_key(row: dict[str, Any]) -> tuple:
    """Rows sorted by where they came from, so the file does not depend on query order."""
    source = {"vote": 0, "consultation": 1, "case": 2}.get(row.get("source", "vote"), 3)
    return (source, row["comparison_turn_ids"], row["vote_ids"], row["response_ids"],
            row["message_ids"], row["case_id"] or 0)  # fmt: skip


def collect_rows(db: Database, config: ExportConfig) -> list[dict[str, Any]]:
    """The rows of `config.kind`, sorted, without writing anything."""
    with db.transaction(write=False) as session:
        bar = tqdm(desc=f"export {config.kind}", unit="row", disable=not config.progress)

        def tick() -> None:
            bar.update()

        if config.kind == "crpo":
            rows = _crpo_rows(session, config, tick)
        else:
            rows = _vote_rows(session, config, tick)
            if config.kind == "sft":
                rows += _consultation_rows(db, session, config, tick)
                rows += _case_rows(session, config, tick)
        bar.close()
    rows.sort(key=_row_key)
    return _merge_duplicates(rows) if config.kind == "sft" else rows


def _merge_duplicates(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One sft row per distinct example (messages and images): an answer kept in compare
    mode is also its vote's winner; the row keeps the ids and signals of every source."""
    merged: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = json.dumps(
            [row["messages"], [hashlib.sha256(i["bytes"]).hexdigest() for i in row["images"]]],
            sort_keys=True,
        )
        first = merged.setdefault(key, row)
        if first is row:
            continue
        for name, value in row.items():
            if name == "signals":
                first[name] = sorted(set(first[name]) | set(value))
            elif isinstance(value, list) and name not in ("messages", "images"):
                first[name] = first[name] + [v for v in value if v not in first[name]]
            elif first[name] is None:
                first[name] = value
    return list(merged.values())


def _fingerprint(rows: list[dict[str, Any]], kind: str) -> str:
    """A fingerprint from the content (datasets would otherwise draw a random one)."""
    h = hashlib.sha256(kind.encode())
    for row in rows:
        for name in sorted(row):
            value = row[name]
            if name == "images":
                value = [hashlib.sha256(i["bytes"]).hexdigest() for i in value]
            h.update(json.dumps([name, value], sort_keys=True, ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def export_dataset(db: Database, config: ExportConfig) -> int:
    """Write the `config.kind` dataset to `config.out` (`save_to_disk`); returns its row count.

    NothingToExport when there are no rows; InvalidInput when `out` exists. Nothing is left
    behind on failure: the dataset is written to a temporary folder and renamed into place.
    """
    out = Path(config.out)
    if out.exists():
        raise InvalidInput(
            f"{out} exists", user_message=f"{out} exists already; choose a new folder."
        )
    rows = collect_rows(db, config)
    if not rows:
        raise NothingToExport(f"no {config.kind} rows", user_message=(
            f"Nothing to export: the database holds no {config.kind} data"
            + (" since the given time" if config.since else "")
            + ("" if config.include_flagged else " (safety-flagged choices are left out unless --include-flagged)")
            + "."))  # fmt: skip
    features = FEATURES[config.kind]
    table = datasets.Dataset.from_list([{name: row[name] for name in features} for row in rows],
                                       features=features)  # fmt: skip
    dataset = datasets.Dataset(
        table.data, info=table.info, fingerprint=_fingerprint(rows, config.kind)
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        dataset.save_to_disk(str(tmp / "dataset"))
        os.rename(tmp / "dataset", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("export {}: {} rows written", config.kind, len(rows))
    return len(rows)


def _label(choice: Preference | None, won: Side) -> str | None:
    """A dimension's label in a pair: chosen / rejected / tie, None where it was not rated."""
    if choice is None:
        return None
    return "tie" if choice is Preference.TIE else "chosen" if choice.value == won.value else "rejected"
