"""Compare tab: annotators (and admins) judge two model answers side by side, blind.

The question comes from an imported case (case set -> case -> which patient turn is asked; the
case's turns and the reference doctor's answers are shown first), from a clinician's logged
consultation up to one of its questions (`storage.logged_questions`: the consultation is only
read, its de-identified attachments are shown once the comparison exists, and who asked is
never shown), or from a patient turn the annotator types, with uploaded files. Start: two
variants are drawn and both answers stream into "Answer A" and "Answer B" at once
(`app.compare.Comparisons`); nobody sees which variant wrote which until the vote is committed. The vote (A / B / tie on proactiveness, accuracy, usefulness
and language quality; A / B / tie / both bad overall; a safety flag per side; a comment) unlocks
only when both answers ended on their own. The turn's idempotency key is made when the turn
starts and kept in the session (`gr.State`), so a double click or a resent vote is one row;
"Saved" and the reveal are shown only after the commit returns. Continue: the preferred answer
(or, after a tie, the one chosen) becomes shared history and both variants answer the patient's
next turn. Second opinion: a turn another annotator compared and voted on (`storage.reviews`)
is shown with both stored answers (not regenerated, sides as stored), the vote unlocked at
once; the reveal follows the vote, and the conversation is not continued.

Handlers are plain methods `(user, *inputs)` (`CompareHandlers`), testable without a browser;
`build_compare_tab` lays out the components and wires each handler through `Auth.guard`
(annotators and admins). Errors are shown in place, in the line beside the control used (the
status under the sources, the vote's note, the continue note): an event whose outputs
include the answers must not raise (Gradio would mark every output failed), and no input is an
output of a failing step, so nothing typed is lost.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from typing import Any

import gradio as gr

from app.attachment_cards import THUMBNAILS_PER_ATTACHMENT
from app.auth import Auth
from app.compare import MESSAGES as COMPARE_MESSAGES
from app.compare import AdHoc, Comparisons, FromCase, FromLog, PairAnswer
from app.compare_api import message_parts
from app.config import AppConfig
from app.consult_tab import ACCEPTED
from app.edge import optional_id, parse_id, user_message
from app.i18n import SERVER, error_text, i18n, t, translate
from app.language import current_language
from storage import (
    AttachmentRecord,
    CaseRecord,
    CompareTurnRecord,
    Database,
    InvalidInput,
    LoggedQuestion,
    Overall,
    UserRecord,
    get_case,
    get_compare_turn,
    list_active_variants,
    list_case_sets,
    list_cases,
    logged_questions,
    turn_context,
)
from storage.access import ANNOTATING_ROLES
from storage.compare_context import MESSAGES as CONTEXT_MESSAGES
from storage.i18n import bilingual
from storage.votes import DIMENSIONS, JUDGEABLE

#: The vote's fields in the order the panel shows them (and the vote event takes them).
VOTE_FIELDS = (*DIMENSIONS, "overall", "safety_flag_a", "safety_flag_b", "comment")
#: What the streaming events (start from a case, start typed, continue) update, in order.
STREAM_FIELDS = ("context", "a", "b", "status", "vote_button", "vote_note", "reveal", "turn_id",
                 "key", "keep", "typed", "next", "continue_note", *VOTE_FIELDS)  # fmt: skip
#: Where a context item's text came from (`storage.compare_context`) -> who said it.
SPEAKERS = {"case_reference": "compare.reference", "comparison_response": "compare.kept",
            "message": "compare.earlier"}  # fmt: skip
MALFORMED = SERVER["api.malformed"]["en"]
#: What `Comparisons.continue_` says after a tie when no answer was chosen to keep.
CHOOSE_KEPT = bilingual(COMPARE_MESSAGES["choose_kept"])


def _skip() -> dict:
    return gr.skip()


def _out(**changes: Any) -> tuple:
    """A streaming event's outputs (`STREAM_FIELDS`): the named ones, the rest left as they are."""
    unknown = set(changes) - set(STREAM_FIELDS)
    if unknown:
        raise ValueError(f"not outputs of a streaming event: {sorted(unknown)}")
    return tuple(changes[name] if name in changes else _skip() for name in STREAM_FIELDS)


def failed(exc: BaseException) -> str:
    """The status line for an error, in the reader's words (logged by `app.edge`)."""
    return t("compare.failed", error=error_text(exc, user_message(exc)))


# --- what the annotator reads ----------------------------------------------------------------


def _attachment_md(n: int, att: AttachmentRecord, thumbnails: bool) -> str:
    kind = t(f"compare.kind.{att.kind.value}")
    line = f"*{t('compare.attachment', n=n, kind=kind)}*"
    if thumbnails:  # served by /attachments to whoever a comparison shows them (storage.access)
        line += "\n\n" + " ".join(
            f"[![{img.label}](/attachments/{att.id}/{img.position}.png)]"
            f"(/attachments/{att.id}/{img.position}.png)"
            for img in att.images[:THUMBNAILS_PER_ATTACHMENT]
        )
    return line


def _bubble(speaker: str, text: str, attachments: Sequence[AttachmentRecord] = (), *,
            question: bool = False, thumbnails: bool = False) -> dict:  # fmt: skip
    """One message of the conversation pane: who said it, the files, the text."""
    head = f"**{t(speaker)}**" + (f" · *{t('compare.question')}*" if question else "")
    files = [_attachment_md(n, a, thumbnails) for n, a in enumerate(attachments, 1)]
    role = "user" if speaker == "compare.patient" else "assistant"
    return {"role": role, "content": "\n\n".join([head, *files, text]).strip()}


def _reference(text: str | None) -> list[dict]:
    if not text:
        return []
    return [{"role": "assistant", "content": f"*{t('compare.reference_note')}*\n\n{text}"}]


def case_preview(case: CaseRecord, turn: int) -> list[dict]:
    """A case up to its turn `turn` (1-based, the question), with the reference doctor's answers;
    files by kind only (their images are readable once a comparison shows them)."""
    shown: list[dict] = []
    for n, ct in enumerate(case.turns[:turn], 1):
        shown.append(
            _bubble("compare.patient", ct.patient_text, ct.attachments, question=n == turn)
        )
        if n < turn:
            shown.append(_bubble("compare.reference", ct.reference_answer or ""))
    return shown + _reference(case.turns[turn - 1].reference_answer)


def turn_conversation(db: Database, user: UserRecord, turn: CompareTurnRecord) -> list[dict]:
    """What both models were sent for the turn (its stored snapshot), then the case's reference
    answer to the question, if any."""
    messages = turn_context(db, turn.id, user_id=user.id)
    items = [*turn.context["history"], turn.context["prompt"]]
    shown = []
    for n, (item, msg) in enumerate(zip(items, messages, strict=True), 1):
        ((kind, _),) = (item.get("ref") or {"typed": None}).items()
        speaker = (
            "compare.patient" if item["role"] == "user" else SPEAKERS.get(kind, "compare.kept")
        )
        shown.append(_bubble(speaker, msg.text, msg.attachments, question=n == len(items),
                             thumbnails=True))  # fmt: skip
    return shown + _reference(turn.reference_answer)


def _why_not_votable(turn: CompareTurnRecord) -> str | None:
    """None if both answers ended on their own; else what happened to each that did not."""
    why = []
    for side in ("a", "b"):
        r = turn.response(side)
        reason = r.finish_reason.value if r is not None else "cancelled"
        if r is not None and r.finish_reason in JUDGEABLE:
            continue
        error = (translate(r.error) or r.error) if r is not None and r.error else ""
        key = (
            f"compare.side.{reason}" if reason in ("cut_off", "error") else "compare.side.cancelled"
        )
        why.append(t(key, side=side.upper(), error=error).strip())
    return " ".join(why) or None


def _log_title(q: LoggedQuestion) -> str:
    files = f" · 📎 {q.files}" if q.files else ""
    return t("compare.log_choice", cid=q.consultation_id, turn=q.turn,
             day=f"{q.asked_at:%Y-%m-%d}", preview=q.preview) + files  # fmt: skip


def _case_title(case: CaseRecord) -> str:
    parts = [p for p in (case.source_id, case.cate1, case.cate2) if p]
    return t("compare.case_choice", n=case.position, title=" · ".join(parts) or f"#{case.id}")


# --- the handlers ----------------------------------------------------------------------------


class CompareHandlers:
    """The Compare tab's use cases as plain methods `(user, *inputs) -> outputs`: no components
    and no request inside, so tests call them directly; `build_compare_tab` wraps each in
    `Auth.guard` (annotators and admins) and wires it to the page."""

    def __init__(self, db: Database, flow: Comparisons):
        self.db, self.flow = db, flow

    def refresh(self, user: UserRecord):
        """On page load: the case sets (the first picked), and a note if Compare cannot run."""
        sets = list_case_sets(self.db)
        note = ""
        if len(list_active_variants(self.db)) < 2:
            note = t("compare.need_two")
        elif not sets:
            note = t("compare.no_cases")
        choices = [(s.name, s.id) for s in sets]
        return (gr.update(choices=choices, value=choices[0][1] if choices else None), note,
                t("compare.locked"))  # fmt: skip

    def cases(self, user: UserRecord, case_set_id: int | None):
        """The cases of a case set, in file order."""
        try:
            sid = optional_id(case_set_id, "case set")
            found = list_cases(self.db, sid, user_id=user.id) if sid is not None else []
        except Exception as exc:  # shown in place, like every error of this tab
            return gr.update(choices=[], value=None), failed(exc)
        return gr.update(choices=[(_case_title(c), c.id) for c in found], value=None), ""

    def pick_case(self, user: UserRecord, case_id: int | None):
        """A case was chosen: its turns (the last one asked by default) and the question picker."""
        try:
            cid = optional_id(case_id, "case")
            if cid is None:
                return [], gr.update(choices=[], value=None), ""
            case = get_case(self.db, cid, user_id=user.id)
        except Exception as exc:
            return _skip(), _skip(), failed(exc)
        n = len(case.turns)
        choices = [(t("compare.turn_choice", n=k), k) for k in range(1, n + 1)]
        return case_preview(case, n), gr.update(choices=choices, value=n), ""

    def pick_turn(self, user: UserRecord, case_id: int | None, turn: int | None):
        """Another patient turn of the case is to be the question."""
        try:
            cid = optional_id(case_id, "case")
            if cid is None:
                return [], t("compare.pick_case")
            case = get_case(self.db, cid, user_id=user.id)
            k = optional_id(turn, "turn") or len(case.turns)
            if k > len(case.turns):
                raise InvalidInput(f"case {cid} has no turn {k}",
                                   user_message=bilingual(CONTEXT_MESSAGES["case_turn"], turn=k))  # fmt: skip
        except Exception as exc:
            return _skip(), failed(exc)
        return case_preview(case, k), ""

    def compare_case(self, user: UserRecord, case_id: int | None, turn: int | None):
        """Start a comparison on a case's patient turn (default: its last) and stream both."""
        try:
            cid, k = optional_id(case_id, "case"), optional_id(turn, "turn")
        except Exception as exc:
            yield _out(status=failed(exc))
            return
        if cid is None:
            yield _out(status=t("compare.pick_case"))
            return
        language = current_language()
        yield from self._pair(user, lambda: self.flow.start(user, FromCase(cid, k),
                                                            language=language))  # fmt: skip

    def log_choices(self, user: UserRecord):
        """The clinicians' logged questions, newest first (never who asked them)."""
        try:
            found = logged_questions(self.db, user.id)
        except Exception as exc:
            return gr.update(choices=[], value=None), failed(exc)
        return gr.update(choices=[(_log_title(q), f"{q.consultation_id}:{q.message_id}")
                                  for q in found], value=None), ""  # fmt: skip

    def compare_log(self, user: UserRecord, picked: str | None):
        """Start a comparison on a logged consultation up to the picked question ("cid:mid");
        the consultation is only read."""
        if not picked:
            yield _out(status=t("compare.pick_log"))
            return
        try:
            cid, _, mid = str(picked).partition(":")
            source = FromLog(parse_id(cid, "consultation"), parse_id(mid, "message"))
        except Exception as exc:
            yield _out(status=failed(exc))
            return
        language = current_language()
        yield from self._pair(user, lambda: self.flow.start(user, source, language=language))

    def compare_typed(self, user: UserRecord, message: dict | None):
        """Start a comparison on a patient turn typed here (with the caller's own uploads)."""
        try:
            text, files = message_parts(message)
        except Exception as exc:
            yield _out(status=failed(exc))
            return
        language = current_language()
        yield from self._pair(user, lambda: self.flow.start(user, AdHoc(text, files),
                                                            language=language), clear="typed")  # fmt: skip

    def continue_comparison(self, user: UserRecord, turn_id: int | None, message: dict | None,
                            keep: str | None):  # fmt: skip
        """After the vote: the preferred answer (or `keep`, "a"/"b", after a tie) becomes shared
        history and both variants answer the patient's next turn."""
        try:
            tid = optional_id(turn_id, "turn")
            text, files = message_parts(message)
        except Exception as exc:
            yield _out(continue_note=failed(exc))
            return
        if tid is None:
            yield _out(continue_note=t("compare.start_first"))
            return
        side = keep if keep in ("a", "b") else None
        yield from self._pair(user, lambda: self.flow.continue_(user, tid, text, files, keep=side),
                              clear="next", notes="continue_note")  # fmt: skip

    def compare_review(self, user: UserRecord):
        """A second opinion: a turn someone else compared and voted on (the caller's pending one
        first), its conversation and both stored answers, blind, the vote unlocked at once."""
        try:
            turn = self.flow.review(user)
            if turn is None:
                yield _out(status=t("compare.review_none"))
                return
            context = turn_conversation(self.db, user, turn)
        except Exception as exc:
            yield _out(status=failed(exc))
            return
        texts = {side: (turn.response(side).text if turn.response(side) else "") for side in "ab"}
        yield _out(
            context=context, a=texts["a"], b=texts["b"], status=t("compare.review_ready"),
            vote_button=gr.update(interactive=True), vote_note="", reveal="", turn_id=turn.id,
            key=str(uuid.uuid4()), keep=gr.update(value=None, visible=False),
            continue_note=t("compare.review_no_continue"),
            **{f: None for f in (*DIMENSIONS, "overall")}, safety_flag_a=False,
            safety_flag_b=False, comment="",
        )  # fmt: skip

    def _pair(self, user: UserRecord, begin: Callable[[], PairAnswer], clear: str | None = None,
              notes: str = "status") -> Iterator[tuple]:  # fmt: skip
        """Start a turn with `begin`, then stream both answers and unlock the vote if both ended
        on their own. An error lands in `notes` (the line beside the button pressed); what was
        typed stays unless the turn started (then the box is cleared: its text is in the
        conversation)."""
        try:
            pair = begin()
            context = turn_conversation(self.db, user, pair.turn)
        except Exception as exc:
            choose = isinstance(exc, InvalidInput) and exc.user_message == CHOOSE_KEPT
            yield _out(
                **{notes: failed(exc)}, **({"keep": gr.update(visible=True)} if choose else {})
            )
            return
        key = str(uuid.uuid4())  # one per turn: a double click or a resend is one vote row
        cleared = {clear: None} if clear else {}
        yield _out(
            context=context, a="", b="", status=t("compare.answering"),
            vote_button=gr.update(interactive=False), vote_note=t("compare.locked"), reveal="",
            turn_id=pair.turn.id, key=key, keep=gr.update(value=None, visible=False),
            continue_note="", **cleared, **{f: None for f in (*DIMENSIONS, "overall")},
            safety_flag_a=False, safety_flag_b=False, comment="",
        )  # fmt: skip
        try:
            with closing(iter(pair)) as updates:  # closed on Stop: both recorded as cancelled
                for a, b in updates:
                    yield _out(a=a, b=b)
            turn = pair.turn
        except Exception as exc:
            yield _out(status=failed(exc), vote_note=t("compare.stopped"))
            return
        why = _why_not_votable(turn)
        texts = {side: (turn.response(side).text if turn.response(side) else "") for side in "ab"}
        yield _out(
            a=texts["a"], b=texts["b"], status="" if why else t("compare.ready"),
            vote_button=gr.update(interactive=why is None),
            vote_note=t("compare.not_votable", why=why) if why else "",
        )  # fmt: skip

    def vote(self, user: UserRecord, turn_id: int | None, key: str | None,
             proactiveness: str | None, accuracy: str | None, usefulness: str | None,
             language_quality: str | None, overall: str | None, safety_flag_a: bool,
             safety_flag_b: bool, comment: str | None):  # fmt: skip
        """Store the vote (the turn's key: a replay is the same vote), then say "Saved" and
        reveal the variants. Outputs: vote note, vote button, reveal, keep choice."""
        choices = dict(proactiveness=proactiveness, accuracy=accuracy, usefulness=usefulness,
                       language_quality=language_quality, overall=overall,
                       safety_flag_a=bool(safety_flag_a), safety_flag_b=bool(safety_flag_b),
                       comment=(comment or "").strip() or None)  # fmt: skip
        try:
            tid = optional_id(turn_id, "turn")
            if tid is None:
                return t("compare.start_first"), _skip(), _skip(), _skip()
            revealed = self.flow.vote(user, tid, choices, key if isinstance(key, str) else "")
        except Exception as exc:  # nothing chosen is lost: the radios are not outputs
            return failed(exc), _skip(), _skip(), _skip()
        # after a tie the creator chooses the answer that continues; a second opinion keeps none
        tie = revealed.continues and revealed.vote.overall not in (Overall.A, Overall.B)
        saved = t("compare.saved") + (" " + t("compare.choose_kept") if tie else "")
        names = revealed.names
        return (saved, gr.update(interactive=False), t("compare.reveal", a=names["a"],
                b=names["b"]), gr.update(visible=tie, value=None))  # fmt: skip

    def stopped(self, user: UserRecord, turn_id: int | None):
        """The Stop button: unless both answers had already ended on their own, the vote stays
        locked, with the reason."""
        try:
            tid = optional_id(turn_id, "turn")
            if tid is None:
                return _skip(), _skip()
            turn = get_compare_turn(self.db, tid, user_id=user.id)
        except Exception as exc:
            return gr.update(interactive=False), failed(exc)
        if len(turn.responses) == 2 and _why_not_votable(turn) is None:
            return _skip(), _skip()
        return gr.update(interactive=False), t("compare.stopped")


# --- the page --------------------------------------------------------------------------------


def _sides(*extra: tuple) -> list:
    return [("A", "a"), ("B", "b"), (i18n("compare.tie"), "tie"), *extra]


def build_compare_tab(
    config: AppConfig, db: Database, auth: Auth, comparisons: Comparisons | None
) -> Callable[[gr.Blocks], None]:
    """Lay out the Compare tab; returns the function that wires its events (page-load handlers
    on the Blocks it is given, which runs them only for annotators and admins: `app.ui`)."""
    if comparisons is None:  # no model variants on this server: say so, wire nothing
        gr.Markdown(i18n("compare.unavailable"), elem_id="compare-unavailable")
        return lambda blocks: None
    guard = auth.guard(*ANNOTATING_ROLES)
    h = CompareHandlers(db, comparisons)

    gr.Markdown(i18n("compare.intro"))
    with gr.Tabs():
        with gr.Tab(i18n("compare.from_case"), id="compare-from-case"):
            with gr.Row():
                # allow_custom_value: choices are set at load; the server checks every id
                case_set = gr.Dropdown(label=i18n("compare.case_set"), choices=[], interactive=True,
                                       allow_custom_value=True, elem_id="compare-case-set")  # fmt: skip
                case = gr.Dropdown(label=i18n("compare.case"), choices=[], interactive=True,
                                   allow_custom_value=True, elem_id="compare-case")  # fmt: skip
                turn = gr.Dropdown(label=i18n("compare.turn"), choices=[], interactive=True,
                                   allow_custom_value=True, elem_id="compare-turn")  # fmt: skip
            start_case = gr.Button(i18n("compare.start"), variant="primary",
                                   elem_id="compare-start-case")  # fmt: skip
        with gr.Tab(i18n("compare.from_log"), id="compare-from-log") as log_tab:
            log_pick = gr.Dropdown(label=i18n("compare.log"), info=i18n("compare.log_info"),
                                   choices=[], interactive=True, allow_custom_value=True,
                                   elem_id="compare-log")  # fmt: skip
            start_log = gr.Button(i18n("compare.start"), variant="primary",
                                  elem_id="compare-start-log")  # fmt: skip
        with gr.Tab(i18n("compare.from_typed"), id="compare-typed"):
            typed = gr.MultimodalTextbox(
                file_types=ACCEPTED, file_count="multiple", sources=["upload"],
                label=i18n("compare.typed"), placeholder=i18n("compare.typed_placeholder"),
                elem_id="compare-typed-input",
            )  # fmt: skip
            start_typed = gr.Button(i18n("compare.start"), variant="primary",
                                    elem_id="compare-start-typed")  # fmt: skip
        with gr.Tab(i18n("compare.from_review"), id="compare-from-review"):
            gr.Markdown(i18n("compare.review_info"))
            start_review = gr.Button(i18n("compare.review_start"), variant="primary",
                                     elem_id="compare-start-review")  # fmt: skip
    status = gr.Markdown(elem_id="compare-status")
    context = gr.Chatbot(label=i18n("compare.context"), height=320, buttons=["copy"],
                         feedback_options=None, elem_id="compare-context")  # fmt: skip
    answers = []
    with gr.Row(equal_height=True):
        for side in ("a", "b"):
            with gr.Column():
                gr.Markdown(i18n(f"compare.heading_{side}"), elem_id=f"compare-heading-{side}")
                answers.append(gr.Markdown(container=True, min_height=160,
                                           elem_id=f"compare-answer-{side}"))  # fmt: skip
    answer_a, answer_b = answers
    with gr.Row():
        stop_btn = gr.Button(i18n("compare.stop"), size="sm", scale=0, min_width=120,
                             elem_id="compare-stop")  # fmt: skip
    with gr.Group(elem_id="compare-vote"):
        gr.Markdown(i18n("compare.your_vote"), padding=True)
        with gr.Row():
            dims = [gr.Radio(_sides(), label=i18n(f"compare.{d}"), info=i18n(f"compare.{d}_info"),
                             elem_id=f"compare-{d}") for d in DIMENSIONS]  # fmt: skip
        overall = gr.Radio(_sides((i18n("compare.both_bad"), "both_bad")),
                           label=i18n("compare.overall"), elem_id="compare-overall")  # fmt: skip
        with gr.Row():
            flag_a = gr.Checkbox(label=i18n("compare.safety_a"), elem_id="compare-safety-a")
            flag_b = gr.Checkbox(label=i18n("compare.safety_b"), elem_id="compare-safety-b")
        comment = gr.Textbox(label=i18n("compare.comment"), max_lines=4, elem_id="compare-comment")
        vote_btn = gr.Button(i18n("compare.vote"), variant="primary", interactive=False,
                             elem_id="compare-vote-button")  # fmt: skip
        vote_note = gr.Markdown(elem_id="compare-vote-note", padding=True)
        reveal = gr.Markdown(elem_id="compare-reveal", padding=True)
    keep = gr.Radio([(i18n("compare.answer_a"), "a"), (i18n("compare.answer_b"), "b")],
                    label=i18n("compare.keep"), visible=False, elem_id="compare-keep")  # fmt: skip
    next_box = gr.MultimodalTextbox(
        file_types=ACCEPTED, file_count="multiple", sources=["upload"],
        label=i18n("compare.next"), placeholder=i18n("compare.next_placeholder"),
        elem_id="compare-next",
    )  # fmt: skip
    continue_btn = gr.Button(i18n("compare.continue"), elem_id="compare-continue")
    continue_note = gr.Markdown(elem_id="compare-continue-note")
    turn_id = gr.State(None)  # the turn on screen; held by the server, not sent by the page
    key = gr.State(None)  # its vote's idempotency key

    def wire(blocks: gr.Blocks) -> None:
        private = {"api_visibility": "private"}
        limit = config.concurrency
        blocks.load(guard(h.refresh), None, [case_set, status, vote_note],
                    api_name="compare_refresh", **private)  # fmt: skip
        case_set.change(guard(h.cases), [case_set], [case, status], api_name="compare_cases")
        case.change(guard(h.pick_case), [case], [context, turn, status], api_name="compare_case")
        turn.input(guard(h.pick_turn), [case, turn], [context, status], api_name="compare_turn",
                   **private)  # fmt: skip
        # the log grows while annotators work: listed again each time its tab is opened
        log_tab.select(guard(h.log_choices), None, [log_pick, status], api_name="compare_log_list")
        streamed = [context, answer_a, answer_b, status, vote_btn, vote_note, reveal, turn_id, key,
                    keep, typed, next_box, continue_note, *dims, overall, flag_a, flag_b,
                    comment]  # fmt: skip
        events = [
            start_case.click(guard(h.compare_case), [case, turn], streamed,
                             api_name="compare_from_case", concurrency_limit=limit),
            start_log.click(guard(h.compare_log), [log_pick], streamed,
                            api_name="compare_from_log", concurrency_limit=limit),
            start_typed.click(guard(h.compare_typed), [typed], streamed,
                              api_name="compare_typed", concurrency_limit=limit),
            typed.submit(guard(h.compare_typed), [typed], streamed, concurrency_limit=limit,
                         **private),
            continue_btn.click(guard(h.continue_comparison), [turn_id, next_box, keep], streamed,
                               api_name="compare_continue", concurrency_limit=limit),
            next_box.submit(guard(h.continue_comparison), [turn_id, next_box, keep], streamed,
                            concurrency_limit=limit, **private),
        ]  # fmt: skip
        start_review.click(guard(h.compare_review), None, streamed, api_name="compare_from_review",
                           concurrency_limit=limit)  # fmt: skip
        vote_btn.click(guard(h.vote), [turn_id, key, *dims, overall, flag_a, flag_b, comment],
                       [vote_note, vote_btn, reveal, keep], api_name="compare_vote",
                       concurrency_limit=limit)  # fmt: skip
        stop_btn.click(guard(h.stopped), [turn_id], [vote_btn, vote_note], cancels=events,
                       **private)  # fmt: skip

    return wire
