"""Consult tab: the clinician's consultations, a multimodal chat, streamed answers.

Handlers are thin: they call `app.workflow.Consultations` and render its records. Every one is
wrapped by `Auth.guard` (clinician or admin) and exposed under an `api_name`, so the same
checks hold for the browser and for HTTP clients.

A consultation is created by its first message ("New consultation" only clears the chat).
The list, deleting, rating answers and answer versions are plain-value endpoints for programs
(`gr.api`: /list_consultations, /delete_consultation, /feedback, /versions, /choose_version);
the page reaches the same methods through small private events that render their results.
"""

from __future__ import annotations

import html
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing

import gradio as gr

import storage
from app.attachment_cards import card_html
from app.auth import CLINICAL, Auth
from app.compare import Comparisons, FromConsultation
from app.config import AppConfig
from app.consult_api import display_name, file_path
from app.edge import optional_id, parse_id, parse_index, user_message
from app.i18n import SERVER, error_text, i18n, t, translate
from app.language import current_language
from app.prestart import STOP_WAIT_S, Prestarted, Prestarts, Running
from app.viewer import build_viewer
from app.workflow import Answer, Consultations, UploadRejected
from storage import (
    DIMENSIONS,
    AnswerVersions,
    CompareTurnRecord,
    ConsultationRecord,
    Database,
    InvalidInput,
    MessageRecord,
    MessageRole,
    Thumbs,
    UserRecord,
    list_active_variants,
    list_consultations,
    list_variants,
    record_audit,
    rename_consultation,
)

ACCEPTED = [".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".dcm", ".pdf"]
#: Shown under an answer that did not finish (`app.i18n` keys); the stored text stays as it was.
FAILED_NOTES = {
    "cut_off": "consult.note.cut_off",
    "error": "consult.note.error",
    "cancelled": "consult.note.cancelled",
}

OPEN_FIRST = SERVER["consult.open_first"]["en"]  # translated at the edge (app.i18n)
#: Characters of an answer shown in the answer picker: enough to tell answers apart.
ANSWER_PREVIEW_CHARS = 48
PICK_ANSWER = "Pick an answer first. / 请先选择一条回答。"


def render(records: list[MessageRecord]) -> list[dict]:
    """Stored messages as Chatbot messages (thumbnails served by /attachments, per user)."""
    out = []
    for m in records:
        if m.role is MessageRole.USER:
            files = [card_html(a) for a in m.attachments]  # what intake did, thumbnails
            out.append({"role": "user", "content": "\n\n".join([*files, m.text]).strip()})
        elif m.role is MessageRole.ASSISTANT:
            text = m.text
            note = FAILED_NOTES.get(m.finish_reason.value if m.finish_reason else "", "")
            if note:
                error = (translate(m.error) or m.error) if m.error else ""
                text = f"{text}\n\n{t(note, error=error)}".strip()
            out.append({"role": "assistant", "content": text})
    return out


def chat_text(message: dict) -> str:
    """A Chatbot message's text as HTTP clients get it (a string, or Gradio 6's list of parts),
    without the line under an answer (`with_meta`)."""
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        return ""
    return ANSWER_META.sub("", content)


def _label(c: ConsultationRecord) -> str:
    """A consultation as the list shows it: title, id, day of its last activity (UTC)."""
    return f"{c.title} · #{c.id} · {c.updated_at:%Y-%m-%d}"


def _choices(db: Database, user: UserRecord, search: str | None = None) -> list[tuple[str, int]]:
    return [(_label(c), c.id) for c in list_consultations(db, user.id, search)]


def _row(c: ConsultationRecord) -> dict:
    return {"id": c.id, "title": c.title, "created_at": c.created_at.isoformat(),
            "updated_at": c.updated_at.isoformat(), "label": _label(c)}  # fmt: skip


def _versions_out(v: AnswerVersions) -> dict:
    """An answer's versions as programs get them (the chat shows the current one)."""
    versions = [
        {"message_id": m.id, "number": n, "current": m.id == v.current_id, "text": m.text,
         "finish_reason": m.finish_reason.value if m.finish_reason else None,
         "created_at": m.created_at.isoformat()}
        for n, m in enumerate(v.versions, 1)
    ]  # fmt: skip
    return {"consultation_id": v.consultation_id, "current_id": v.current_id,
            "current": v.current_number, "count": len(versions), "versions": versions}  # fmt: skip


def _preview(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= ANSWER_PREVIEW_CHARS else line[: ANSWER_PREVIEW_CHARS - 1] + "…"


def _answer_picker(records: list[MessageRecord], picked: int | None = None) -> dict:
    """The answer picker over the chat's answers; `picked`, else the last, is picked."""
    answers = [m for m in records if m.role is MessageRole.ASSISTANT]
    choices = [(f"{n}. {_preview(m.text)}", m.id) for n, m in enumerate(answers, 1)]
    if picked is None and answers:
        picked = answers[-1].id
    return gr.update(choices=choices, value=picked)


def _thumbs_buttons(thumbs: Thumbs | None) -> tuple[dict, dict]:
    """The 👍 / 👎 buttons showing the caller's rating (the chosen one stands out)."""
    up, down = (gr.update(variant="primary" if thumbs is t else "secondary") for t in Thumbs)
    return up, down


def _attachment_choices(records: list[MessageRecord]) -> list[tuple[str, str]]:
    return [
        (t("consult.attachment_choice", name=a.original_name, seq=m.seq), f"{m.id}:{a.position}")
        for m in records
        for a in m.attachments
        if a.text
    ]


def _in_place(exc: BaseException) -> str:
    """An error as the line beside the control used shows it, in the reader's words (logged
    by `app.edge`): raised from a page event, Gradio would mark every output as failed."""
    return t("consult.status.failed", error=error_text(exc, user_message(exc)))


def _rejected_files(exc: UploadRejected) -> str:
    """One line per file that could not be used (its name first), then what to do."""
    lines = [f"- ⚠️ {error_text(exc, line)}" for line in exc.errors]
    return "\n".join([*lines, "", t("consult.upload_fix")])


def _answer_meta(m: MessageRecord, variants: dict[int, str]) -> str:
    """The line under an answer: the length-limit mark, its model variant, the time it took."""
    parts = []
    if m.finish_reason is not None and m.finish_reason.value == "length":
        parts.append(t("consult.note.length"))
    name = variants.get(m.model_variant_id) if m.model_variant_id is not None else None
    if name and m.latency_ms is not None:
        parts.append(t("consult.answer_meta", variant=name, seconds=f"{m.latency_ms / 1000:.1f}"))
    elif name:
        parts.append(name)
    return " · ".join(parts)


#: The line `with_meta` puts under an answer (an empty span drawn by CSS from its title).
ANSWER_META = re.compile(r'\n\n<span class="answer-meta" title="[^"]*"></span>$')


def with_meta(shown: list[dict], records: list[MessageRecord], variants: dict[int, str]) -> list[dict]:
    """`render`'s chat with each answer's line under it (`_answer_meta`). The line is drawn by
    CSS from its title (assets/app.css `.answer-meta`): the answer's own text, as copied or
    read back, stays exactly the stored text."""
    kept = [m for m in records if m.role in (MessageRole.USER, MessageRole.ASSISTANT)]
    out = []
    for msg, m in zip(shown, kept, strict=False):
        meta = _answer_meta(m, variants) if m.role is MessageRole.ASSISTANT else ""
        if meta and isinstance(msg.get("content"), str):
            span = f'<span class="answer-meta" title="{html.escape(meta)}"></span>'
            msg = {**msg, "content": f"{msg['content']}\n\n{span}"}
        out.append(msg)
    return out


class ConsultHandlers:
    """The Consult tab's use cases as plain methods `(user, *inputs) -> outputs`: no components
    and no request inside, so tests call them directly; `build_consult_tab` wraps each in
    `Auth.guard` (role check, errors in users' words) and wires it to the page."""

    def __init__(self, db: Database, flow: Consultations, comparisons: Comparisons | None = None):
        self.db, self.flow, self.comparisons = db, flow, comparisons
        # (user id, consultation id) -> the answer streaming there (Stop / Esc end it)
        self._running: dict[tuple[int, int], Running] = {}
        self._running_lock = threading.Lock()
        # answers /send started before /answer follows them (app.prestart)
        self.prestarts = Prestarts(flow)

    def refresh(self, user: UserRecord, current: int | None):
        variants = list_active_variants(self.db)
        names = [v.name for v in variants]
        demo = any(v.embedded for v in variants)
        return (
            gr.update(choices=_choices(self.db, user), value=current),
            gr.update(choices=names, value=names[0] if names else None),
            gr.update(value=demo_banner(), visible=demo),
        )

    def open_consultation(self, user: UserRecord, cid: int | None):
        cid = optional_id(cid, "consultation")
        if cid is None:
            return [], "", gr.update(choices=[], value=None), ""
        records = self.flow.chat_history(user, cid)
        title_text = next((t for t, i in _choices(self.db, user) if i == cid), "")
        return (
            render(records),
            title_text.rsplit(" · #", 1)[0],
            gr.update(choices=_attachment_choices(records), value=None),
            "",
        )

    def new_consultation(self, user: UserRecord):
        """Clear the chat and the selection; the next message starts the consultation."""
        return gr.update(value=None), [], ""

    def rename(self, user: UserRecord, cid: int | None, new_title: str):
        cid = optional_id(cid, "consultation")
        if cid is None:
            raise InvalidInput("no consultation", user_message=OPEN_FIRST)
        rename_consultation(self.db, cid, user.id, new_title)
        return gr.update(choices=_choices(self.db, user), value=cid)

    def report_choices(self, user: UserRecord, cid: int | None):
        cid = optional_id(cid, "consultation")
        if cid is None:
            return gr.update(choices=[], value=None)
        return gr.update(choices=_attachment_choices(self.flow.chat_history(user, cid)))

    def show_report(self, user: UserRecord, cid: int | None, key: str | None):
        cid = optional_id(cid, "consultation")
        if cid is None or not key:
            return ""
        msg_part, _, pos_part = str(key).partition(":")  # "message id:attachment position"
        msg_id, pos = parse_id(msg_part, "report"), parse_index(pos_part, "report")
        for m in self.flow.chat_history(user, cid):
            if m.id == msg_id:
                return next((a.text or "" for a in m.attachments if a.position == pos), "")
        return ""

    def _stream(self, user: UserRecord, answer: Answer,
                started: Prestarted | None = None) -> Iterator[list[dict]]:  # fmt: skip
        """Yield the chat while the answer streams (throttled); record it, then show it stored.
        `started`: the answer was started by /send and is read (and stored) on its own thread;
        this follows its text.

        Stop (`stop`) ends the stream here rather than cancelling the event, so the last update
        is the answer as stored, marked stopped, whatever arrived after the last update shown.
        """
        shown = self.chat(answer.history)
        key = (user.id, answer.consultation_id or 0)
        run = started.run if started is not None else Running()
        with self._running_lock:
            self._running[key] = run
        try:
            source = started.texts() if started is not None else self.flow.streamed(user, answer)
            with closing(source) as texts:
                for text in texts:
                    if run.stop.is_set() and started is None:
                        break  # a started answer stops on its thread: followed to its end
                    yield [*shown, {"role": "assistant", "content": text}]
            stored = [answer.recorded] if answer.recorded is not None else []
            final = self.chat([*answer.history, *stored])
            out = answer.outcome
            if answer.recorded is None and out is not None and out.error is not None:
                # nothing was stored (no text came): show the failure where the answer would be
                note = t(FAILED_NOTES["error"], error=error_text(out.error, out.error.user_message))
                final.append({"role": "assistant", "content": note})
            yield final
        finally:
            run.done.set()
            with self._running_lock:
                if self._running.get(key) is run:
                    del self._running[key]

    def chat(self, records: list[MessageRecord]) -> list[dict]:
        """The chat as the page shows it: `render`, each answer with its model and time."""
        variants = {v.id: v.name for v in list_variants(self.db)}
        return with_meta(render(records), records, variants)

    def stop(self, user: UserRecord, cid: int | None) -> None:
        """Stop / Esc: end the answer streaming into this consultation; return once it is
        recorded and shown (at most `STOP_WAIT_S`; the page then cancels the event)."""
        cid = optional_id(cid, "consultation")
        with self._running_lock:
            run = self._running.get((user.id, cid or 0))
        run = run or self.prestarts.running(user, cid)  # started by /send, not yet followed
        if run is not None:
            run.stop.set()
            run.done.wait(STOP_WAIT_S)

    def send(self, user: UserRecord, message: dict | None, cid: int | None,
             variant_name: str | None = None):  # fmt: skip
        """Store the clinician's turn (uploads taken in first); the answer is `answer`, chained.
        With `variant_name` the answer starts at once, and `answer` follows it (app.prestart)."""
        message = message if isinstance(message, dict) else {}
        files = [(display_name(f), file_path(f)) for f in message.get("files") or []]
        # UploadRejected (one line per file) reaches the browser as an error; the draft and its
        # files stay in the box because no output is updated. Only the caller's own uploads
        # are taken (self.flow.take_in).
        text = message.get("text") or ""
        text = text if isinstance(text, str) else ""
        cid = optional_id(cid, "consultation")
        if variant_name:  # the model starts as it is stored (`ask` refuses an unknown variant)
            answer = self.prestarts.ask(user, cid, text, files, variant_name,
                                        language=current_language()).answer  # fmt: skip
            cid, records = answer.consultation_id, list(answer.history)  # up to the turn
        else:
            cid, _ = self.flow.add_turn(user, cid, text, files)
            records = self.flow.chat_history(user, cid)
        choices = _choices(self.db, user)
        title_text = next((t for t, i in choices if i == cid), "").rsplit(" · #", 1)[0]
        shown = self.chat(records)
        return gr.update(choices=choices, value=cid), shown, None, "", title_text

    def answer(self, user: UserRecord, cid: int | None, variant_name: str | None):
        """Stream the model's answer to the last turn; plain values only (cheap per token)."""
        cid = optional_id(cid, "consultation")
        if cid is None:
            raise InvalidInput("no consultation", user_message=OPEN_FIRST)
        started, replaced = self.prestarts.take(user, cid, variant_name)
        if started is not None:
            ans = started.answer
        else:  # none started, or one of another variant, stopped: this one replaces it
            ans = self.flow.answer(user, cid, variant_name, regenerate=replaced,
                                   language=current_language())  # fmt: skip
        for chat_value in self._stream(user, ans, started):
            yield chat_value, _status(ans)

    def answer_page(self, user: UserRecord, sent: bool | None, compare: bool | None,
                    cid: int | None, variant_name: str | None):  # fmt: skip
        """After the composer's Enter: `answer`, when the turn was stored (else its refusal is
        already shown beside the composer) and one answer follows (not two side by side)."""
        if not sent or compare:
            yield gr.skip(), gr.skip()
            return
        yield from self.answer(user, cid, variant_name)

    def retry(self, user: UserRecord, cid: int | None, variant_name: str | None):
        cid = optional_id(cid, "consultation")
        if cid is None:
            raise InvalidInput("no consultation", user_message=OPEN_FIRST)
        # regenerate: replaces the last answer if there is one, else answers the last question
        answer = self.flow.answer(user, cid, variant_name, regenerate=True,
                                  language=current_language())  # the system prompt's
        for chat_value in self._stream(user, answer):
            yield chat_value, _status(answer)

    # --- clinician compare mode: two answers side by side, the pick continues ------------

    def compare_available(self, user: UserRecord):
        """The compare switch shows when two variants can be compared."""
        usable = self.comparisons is not None and len(list_active_variants(self.db)) >= 2
        return gr.update(visible=usable, value=False if not usable else gr.skip())

    def compare(self, user: UserRecord, cid: int | None):
        """Two variants answer the consultation's last turn side by side (blind); the pick
        buttons unlock when both answers ended on their own. Outputs: answer A, answer B,
        the compare turn id, the pick's idempotency key, pick A, pick B, the panel, status."""
        cid = optional_id(cid, "consultation")
        if cid is None:
            raise InvalidInput("no consultation", user_message=OPEN_FIRST)
        if self.comparisons is None:
            raise InvalidInput("compare mode off", user_message=t("consult.compare.unpickable"))
        pair = self.comparisons.start(user, FromConsultation(cid), language=current_language())
        key = str(uuid.uuid4())  # one pick per turn: a double click or a resend is the same vote
        locked = gr.update(interactive=False)
        shown = gr.update(visible=True)
        streaming = t("consult.compare.streaming")
        yield "", "", pair.turn.id, key, locked, locked, shown, streaming
        with closing(iter(pair)) as updates:
            for a, b in updates:
                yield a, b, pair.turn.id, key, locked, locked, shown, streaming
        turn = pair.turn
        texts, pickable = _pair_texts(turn)
        unlock = gr.update(interactive=pickable)
        note = "" if pickable else t("consult.compare.unpickable")
        yield texts["a"], texts["b"], turn.id, key, unlock, unlock, shown, note

    def compare_page(self, user: UserRecord, sent: bool | None, compare: bool | None,
                     cid: int | None):  # fmt: skip
        """After the composer's Enter: `compare`, when the turn was stored and the compare
        switch is on."""
        if not sent or not compare:
            yield (gr.skip(),) * 8
            return
        yield from self.compare(user, cid)

    def pick(self, user: UserRecord, cid: int | None, turn_id: int | None, key: str | None,
             side: str, proactiveness: str | None = None, accuracy: str | None = None,
             usefulness: str | None = None, language_quality: str | None = None):  # fmt: skip
        """The clinician's pick (overall A or B; the four dimensions optional) is stored as a
        vote, becomes the consultation's answer, and the variants are revealed."""
        cid = parse_id(cid, "consultation")
        tid = parse_id(turn_id, "turn")
        rated = (proactiveness, accuracy, usefulness, language_quality)
        votes = {"overall": side, **{d: (v or None) for d, v in zip(DIMENSIONS, rated, strict=True)}}
        revealed = self.comparisons.vote(user, tid, votes, key or "") if self.comparisons else None
        if revealed is None:
            raise InvalidInput("compare mode off", user_message=t("consult.compare.unpickable"))
        records = self.flow.chat_history(user, cid)
        note = t("consult.compare.picked", side=side.upper(), a=revealed.names["a"],
                 b=revealed.names["b"])  # fmt: skip
        locked = gr.update(interactive=False)
        return render(records), gr.update(visible=False), locked, locked, note

    def close_compare(self, user: UserRecord):
        """Another consultation (or a new one) hides the compare panel."""
        return gr.update(visible=False)

    # --- the list, deleting, rating, versions: plain values (programs call these) --------

    def list_consultations(self, user: UserRecord, search: str | None = None) -> list[dict]:
        """The caller's consultations, newest activity first, only those whose title contains
        `search` (any case) if given: id, title, created_at and updated_at (ISO 8601, UTC),
        and the label the page's list shows."""
        return [_row(c) for c in storage.list_consultations(self.db, user.id, search)]

    def delete_consultation(self, user: UserRecord, consultation_id: int) -> dict:
        """Delete one of the caller's consultations: it leaves their list and cannot be opened
        or changed again (it is kept for audit; administrators can still read it)."""
        cid = parse_id(consultation_id, "consultation")
        deleted = storage.delete_consultation(self.db, cid, user.id)
        record_audit(self.db, "consultation.delete", user_id=user.id,
                     target_type="consultation", target_id=cid)  # fmt: skip
        return {"consultation_id": cid, "deleted_at": deleted.deleted_at.isoformat()}

    def feedback(
        self, user: UserRecord, message_id: int, thumbs: str, comment: str | None = None
    ) -> dict:
        """Rate an answer in one of the caller's consultations: thumbs "up" or "down" and an
        optional comment. Rating the same answer again changes the rating."""
        mine = storage.set_feedback(self.db, parse_id(message_id, "answer"), user.id, thumbs,
                                    comment)  # fmt: skip
        return {"message_id": mine.message_id, "thumbs": mine.thumbs.value,
                "comment": mine.comment, "updated_at": mine.updated_at.isoformat()}  # fmt: skip

    def versions(self, user: UserRecord, consultation_id: int, message_id: int) -> dict:
        """The versions of an answer (each Retry / regenerate adds one), oldest first, and
        which one the consultation continues with."""
        return _versions_out(storage.answer_versions(
            self.db, parse_id(consultation_id, "consultation"), parse_id(message_id, "answer"),
            user.id))  # fmt: skip

    def choose_version(self, user: UserRecord, consultation_id: int, message_id: int) -> dict:
        """Continue the consultation with this version of the answer (the turns that followed
        it come back; those after the version it replaces are kept aside)."""
        return _versions_out(storage.choose_version(
            self.db, parse_id(consultation_id, "consultation"), parse_id(message_id, "answer"),
            user.id))  # fmt: skip

    # --- the page: the list, the URL, errors shown in place -------------------------------
    # Page events must not raise (Gradio would mark every output failed, and the chat, the
    # list and the composer would show "Error"): these catch and say what went wrong in the
    # line beside the control used. Programs keep the raising endpoints above.

    def _listing(self, user: UserRecord, search: str | None, current: int | None) -> dict:
        """The consultation list (newest activity first), the open one marked."""
        choices = _choices(self.db, user, search)
        return gr.update(choices=choices,
                         value=current if any(v == current for _, v in choices) else None)  # fmt: skip

    def _opened(self, user: UserRecord, cid: int, search: str | None) -> tuple:
        """(consultation, list, chat, title, report picker, notice) with `cid` open."""
        records = self.flow.chat_history(user, cid)
        found = storage.get_consultation(self.db, cid, user.id)
        return (cid, self._listing(user, search, cid), self.chat(records), found.title,
                gr.update(choices=_attachment_choices(records), value=None), "")  # fmt: skip

    def _cleared(self, user: UserRecord, search: str | None, notice: str = "") -> tuple:
        return (None, self._listing(user, search, None), [], "",
                gr.update(choices=[], value=None), notice)  # fmt: skip

    def start(self, user: UserRecord, wanted: str | None, search: str | None):
        """Page load: open the consultation the address names (`?c=<id>`), else the one
        updated last; one the caller may not read is "not found", said in place."""
        try:
            cid = optional_id(wanted, "consultation")
            if cid is None:
                latest = list_consultations(self.db, user.id, limit=1)
                cid = latest[0].id if latest else None
            return self._opened(user, cid, search) if cid is not None else self._cleared(user, search)
        except Exception as exc:  # noqa: BLE001 - shown in place (logged by app.edge)
            return self._cleared(user, search, _in_place(exc))

    def open_page(self, user: UserRecord, cid: int | None, search: str | None):
        """A consultation picked in the list."""
        try:
            cid = optional_id(cid, "consultation")
            return self._opened(user, cid, search) if cid is not None else self._cleared(user, search)
        except Exception as exc:  # noqa: BLE001 - shown in place
            return self._cleared(user, search, _in_place(exc))

    def new_page(self, user: UserRecord, search: str | None):
        """"New consultation": an empty chat; nothing is stored until the first message."""
        return self._cleared(user, search)

    def send_page(self, user: UserRecord, message: dict | None, cid: int | None,
                  search: str | None, variant_name: str | None = None,
                  compare: bool | None = False):  # fmt: skip
        """The composer's Enter: `send`, with refused files named beside the composer and the
        draft (text and files) left in it; the answer starts at once unless two answers side by
        side (`compare`) follow. Outputs: consultation, list, chat, composer, status, title,
        notice, whether the answer should follow."""
        keep = (gr.skip(),) * 6
        try:
            consultation, shown, box, status, title_text = self.send(
                user, message, cid, None if compare else variant_name)  # fmt: skip
        except UploadRejected as exc:
            return *keep, _rejected_files(exc), False
        except Exception as exc:  # noqa: BLE001 - shown in place
            return *keep, _in_place(exc), False
        new = consultation["value"]
        return new, self._listing(user, search, new), shown, box, status, title_text, "", True

    def retry_page(self, user: UserRecord, cid: int | None, variant_name: str | None):
        """Retry / regenerate from the page: `retry`, its refusals said in the status line."""
        try:
            cid = optional_id(cid, "consultation")
            if cid is None:
                raise InvalidInput("no consultation", user_message=OPEN_FIRST)
            answer = self.flow.answer(user, cid, variant_name, regenerate=True,
                                      language=current_language())  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - shown in place
            yield gr.skip(), _in_place(exc)
            return
        for chat_value in self._stream(user, answer):
            yield chat_value, _status(answer)

    def rename_page(self, user: UserRecord, cid: int | None, new_title: str | None,
                    search: str | None):  # fmt: skip
        """Enter in the title (or Rename): the list shows the new title."""
        try:
            self.rename(user, cid, new_title or "")
            return self._listing(user, search, optional_id(cid, "consultation")), ""
        except Exception as exc:  # noqa: BLE001 - shown in place
            return gr.skip(), _in_place(exc)

    def ask_delete(self, user: UserRecord, cid: int | None):
        """Delete asks first: the confirm buttons show with the consultation's title."""
        try:
            cid = optional_id(cid, "consultation")
            if cid is None:
                raise InvalidInput("no consultation", user_message=OPEN_FIRST)
            found = storage.get_consultation(self.db, cid, user.id)
        except Exception as exc:  # noqa: BLE001 - shown in place
            return gr.update(visible=False), _in_place(exc)
        return gr.update(visible=True), t("consult.delete_question", title=found.title)

    def cancel_delete(self, user: UserRecord):
        return gr.update(visible=False), ""

    def delete_page(self, user: UserRecord, cid: int | None, search: str | None):
        """Confirmed: the consultation leaves the list (kept in SQL) and the chat clears."""
        try:
            cid = parse_id(cid, "consultation")
            title_text = storage.get_consultation(self.db, cid, user.id).title
            self.delete_consultation(user, cid)
        except Exception as exc:  # noqa: BLE001 - shown in place
            return (*(gr.skip(),) * 5, gr.update(visible=False), _in_place(exc))
        *cleared, _ = self._cleared(user, search)
        return (*cleared, gr.update(visible=False), t("consult.deleted", title=title_text))

    def list_page(self, user: UserRecord, search: str | None, cid: int | None):
        """The list after an answer (its consultation moved to the top)."""
        return self._listing(user, search, optional_id(cid, "consultation"))

    # --- the same, rendered into the page ------------------------------------------------

    def filter_list(self, user: UserRecord, search: str | None, current: int | None):
        """The consultation list, narrowed to titles containing `search`."""
        return gr.update(choices=_choices(self.db, user, search), value=current)

    def answer_choices(self, user: UserRecord, cid: int | None):
        """The answers in the chat, for the answer picker (the last one picked)."""
        cid = optional_id(cid, "consultation")
        return _answer_picker(self.flow.chat_history(user, cid) if cid is not None else [])

    def show_answer(self, user: UserRecord, cid: int | None, message_id: int | None):
        """The picked answer's versions (‹n/m›) and the caller's rating of it."""
        cid, mid = optional_id(cid, "consultation"), optional_id(message_id, "answer")
        if cid is None or mid is None:
            return gr.update(choices=[], value=None), *_thumbs_buttons(None), ""
        found = storage.answer_versions(self.db, cid, mid, user.id)
        total = len(found.versions)
        picker = gr.update(choices=[(f"{n}/{total}", m.id) for n, m in enumerate(found.versions, 1)],
                           value=found.current_id)  # fmt: skip
        mine = storage.get_feedback(self.db, mid, user.id)
        return picker, *_thumbs_buttons(mine and mine.thumbs), (mine and mine.comment) or ""

    def pick_version(self, user: UserRecord, cid: int | None, message_id: int | None):
        """The version picker: continue with that version; the chat shows its branch."""
        chosen = self.choose_version(user, cid, message_id)
        records = self.flow.chat_history(user, chosen["consultation_id"])
        return render(records), _answer_picker(records, chosen["current_id"])

    def rate(self, user: UserRecord, message_id: int | None, thumbs: str, comment: str | None):
        """The 👍 / 👎 buttons: rate the picked answer (with the comment box's text)."""
        if optional_id(message_id, "answer") is None:
            raise InvalidInput("no answer picked", user_message=PICK_ANSWER)
        mine = self.feedback(user, message_id, thumbs, comment)
        return _thumbs_buttons(Thumbs(mine["thumbs"]))


#: The page's script, run once the Consult tab's page-load chain passed the role check:
#: Esc stops an answer (it presses Stop), and on a phone the list starts closed as a drawer
#: (gr.Sidebar covers the whole width there) and closes again once a consultation is picked.
PAGE_JS = """() => {
    const phone = () => window.matchMedia("(max-width: 768px)").matches;
    window.pulsemindCloseDrawer = () => {
        const open = document.querySelector("#consult-sidebar.open .toggle-button");
        if (open && phone()) open.click();
    };
    window.pulsemindCloseDrawer();
    if (!window.pulsemindEsc) {
        window.pulsemindEsc = true;
        document.addEventListener("keydown", (e) => {
            const stop = document.querySelector("#consult-stop");
            if (e.key === "Escape" && stop && stop.offsetParent !== null) stop.click();
        }, true);  // capture: before a focused control handles the key
    }
}"""
#: The open consultation's address: `?c=<id>` (other parameters kept), none for a new one.
SET_URL_JS = """(c) => {
    const url = new URL(window.location.href);
    if (c) url.searchParams.set("c", c); else url.searchParams.delete("c");
    window.history.replaceState(window.history.state, "", url);
    if (window.pulsemindCloseDrawer) window.pulsemindCloseDrawer();
}"""
#: The page load reads `?c=<id>` from the address: it becomes the start handler's first input.
READ_URL_JS = """(c, search) => [new URLSearchParams(window.location.search).get("c"), search]"""


def build_consult_tab(
    config: AppConfig, db: Database, auth: Auth, flow: Consultations,
    comparisons: Comparisons | None = None,
) -> Callable[[gr.Blocks], None]:
    guard = auth.guard(*CLINICAL)
    h = ConsultHandlers(db, flow, comparisons)

    banner = gr.Markdown(visible=False)
    # the list of consultations: a drawer on a phone (gr.Sidebar), beside the chat elsewhere
    with gr.Sidebar(label=i18n("consult.consultations"), elem_id="consult-sidebar", width=300):
        new_btn = gr.Button(i18n("consult.new"), variant="primary", elem_id="consult-new")
        search = gr.Textbox(label=i18n("consult.search"), max_lines=1, elem_id="consult-search")
        listing = gr.Radio(label=i18n("consult.consultations"), choices=[], value=None,
                           elem_id="consult-list")  # fmt: skip
        # the open consultation's id (what every event and HTTP client sends); the server
        # checks ownership of whatever id arrives, hence any value is accepted here
        consultation = gr.Dropdown(label=i18n("consult.consultations"), choices=[], value=None,
                                   interactive=True, allow_custom_value=True,
                                   visible="hidden")  # fmt: skip
        title = gr.Textbox(label=i18n("consult.title"), max_lines=1, elem_id="consult-title",
                           info=i18n("consult.title_info"))  # fmt: skip
        with gr.Row():
            rename_btn = gr.Button(i18n("consult.rename"), size="sm")
            delete_btn = gr.Button(i18n("consult.delete"), size="sm", variant="stop",
                                   elem_id="consult-delete")  # fmt: skip
        with gr.Row(visible=False) as confirm_row:
            confirm_btn = gr.Button(i18n("consult.confirm_delete"), size="sm", variant="stop",
                                    elem_id="consult-confirm-delete")  # fmt: skip
            cancel_btn = gr.Button(i18n("consult.cancel"), size="sm")
        list_note = gr.Markdown(elem_id="consult-list-note")
        variant = gr.Dropdown(label=i18n("consult.model"), choices=[], interactive=True,
                              allow_custom_value=True)  # fmt: skip
        with gr.Accordion(i18n("consult.report_text"), open=False):
            report = gr.Dropdown(label=i18n("consult.attachment"), choices=[], interactive=True,
                                 allow_custom_value=True)  # fmt: skip
            report_text = gr.Textbox(label=i18n("consult.extracted_text"), lines=12,
                                     interactive=False)  # fmt: skip
    with gr.Column():
        chat = gr.Chatbot(label=i18n("consult.chat"), height=560, buttons=["copy"],
                          feedback_options=None, elem_id="consult-chat")  # fmt: skip
        # what went wrong with the last action (a refused file, a consultation not found)
        notice = gr.Markdown(elem_id="consult-notice")
        box = gr.MultimodalTextbox(
            file_types=ACCEPTED, file_count="multiple", sources=["upload"],
            label=i18n("consult.message"), placeholder=i18n("consult.placeholder"),
            show_label=False, elem_id="consult-input",
        )  # fmt: skip
        with gr.Row():
            stop_btn = gr.Button(i18n("consult.stop"), size="sm", scale=0, min_width=100,
                                 elem_id="consult-stop")  # fmt: skip
            retry_btn = gr.Button(i18n("consult.retry"), size="sm", scale=0, min_width=160)
            compare_on = gr.Checkbox(label=i18n("consult.compare.switch"), value=False,
                                     visible=False, elem_id="consult-compare-switch")  # fmt: skip
        # clinician compare mode: the next answer comes from two variants, side by side
        with gr.Group(visible=False, elem_id="consult-compare") as compare_panel:
            sides = {}  # side -> (its answer, its pick button), labelled anonymously
            with gr.Row(equal_height=True):
                for side in ("a", "b"):
                    with gr.Column():
                        gr.Markdown(i18n(f"consult.compare.answer_{side}"),
                                    elem_id=f"consult-compare-heading-{side}")  # fmt: skip
                        sides[side] = (
                            gr.Markdown(container=True, min_height=120,
                                        elem_id=f"consult-compare-{side}"),
                            gr.Button(i18n(f"consult.compare.pick_{side}"), interactive=False,
                                      variant="primary"),
                        )  # fmt: skip
            (answer_a, pick_a), (answer_b, pick_b) = sides["a"], sides["b"]
            with gr.Accordion(i18n("consult.compare.dimensions"), open=False):
                with gr.Row():
                    dimension_radios = [
                        gr.Radio([("A", "a"), ("B", "b"), ("A = B", "tie")], value=None,
                                 label=i18n(f"consult.compare.{d}"), min_width=160)
                        for d in DIMENSIONS
                    ]  # fmt: skip
            compare_turn, compare_key = gr.State(None), gr.State(None)
        status = gr.Markdown(elem_id="consult-status")
        # an answer of the chat: its versions (Retry adds one) and the clinician's rating
        with gr.Row():
            answer_pick = gr.Dropdown(label=i18n("consult.answer"), choices=[], interactive=True,
                                      allow_custom_value=True, scale=3)  # fmt: skip
            version_pick = gr.Dropdown(label=i18n("consult.version"), choices=[], interactive=True,
                                       allow_custom_value=True, scale=1)  # fmt: skip
            up_btn = gr.Button("👍", size="sm", scale=0, min_width=60)
            down_btn = gr.Button("👎", size="sm", scale=0, min_width=60)
        comment = gr.Textbox(label=i18n("consult.comment"), max_lines=4)
        thumbs = [(up_btn, gr.State(Thumbs.UP.value)), (down_btn, gr.State(Thumbs.DOWN.value))]
        # the images of the open consultation: zoom, pan, side by side, cine, window/level
        viewer = build_viewer(db, auth, open=False)
    sent_ok = gr.State(False)

    def wire(blocks: gr.Blocks) -> None:
        private = {"api_visibility": "private"}
        quiet = {"api_visibility": "private", "show_progress": "hidden"}
        limit = config.concurrency
        opened = [consultation, listing, chat, title, report, notice]
        set_url = {"fn": None, "inputs": [consultation], "outputs": None, "js": SET_URL_JS}

        # --- for programs: the endpoints as they were (they raise; clients read the error)
        gr.on([], guard(h.open_consultation), [consultation], [chat, title, report, status],
              api_name="open_consultation")  # fmt: skip
        gr.on([], guard(h.new_consultation), None, [consultation, chat, title],
              api_name="new_consultation")  # fmt: skip
        gr.on([], guard(h.rename), [consultation, title], [consultation], api_name="rename")
        gr.on([], guard(h.send), [box, consultation, variant],
              [consultation, chat, box, status, title], api_name="send",
              concurrency_limit=limit)  # fmt: skip
        gr.on([], guard(h.retry), [consultation, variant], [chat, status], api_name="retry",
              concurrency_limit=limit)  # fmt: skip
        for fn in (h.list_consultations, h.delete_consultation, h.feedback, h.versions,
                   h.choose_version):  # fmt: skip
            gr.api(guard(fn), api_name=fn.__name__)

        # --- the page: load, the list, the address
        loaded = blocks.load(guard(h.refresh), [consultation], [consultation, variant, banner],
                             api_name="refresh")  # fmt: skip
        started = loaded.success(guard(h.start), [consultation, search], opened, js=READ_URL_JS,
                                 **quiet)  # fmt: skip
        started.then(**set_url).then(None, None, None, js=PAGE_JS).then(
            None, None, None, js=viewer.open_js)  # fmt: skip
        open_ev = listing.input(guard(h.open_page), [listing, search], opened, **private)
        open_ev.then(**set_url)
        new_ev = new_btn.click(guard(h.new_page), [search], opened, **private)
        new_ev.then(**set_url)
        search.change(guard(h.filter_list), [search, consultation], [listing], **quiet)
        for trigger in (title.submit, rename_btn.click):  # Enter in the title renames
            trigger(guard(h.rename_page), [consultation, title, search], [listing, list_note],
                    **private)  # fmt: skip
        delete_btn.click(guard(h.ask_delete), [consultation], [confirm_row, list_note], **private)
        cancel_btn.click(guard(h.cancel_delete), None, [confirm_row, list_note], **private)
        delete_ev = confirm_btn.click(guard(h.delete_page), [consultation, search],
                                      [consultation, listing, chat, title, report, confirm_row,
                                       list_note], **private)  # fmt: skip
        delete_ev.then(**set_url)
        report.change(guard(h.show_report), [consultation, report], [report_text],
                      api_name="report_text")  # fmt: skip

        # --- a turn: store it (refusals said beside the composer), then answer it
        send_ev = box.submit(guard(h.send_page), [box, consultation, search, variant, compare_on],
                             [consultation, listing, chat, box, status, title, notice, sent_ok],
                             concurrency_limit=limit, **private)  # fmt: skip
        send_ev.then(**set_url)
        # compare mode decides what follows a stored turn: one answer, or two side by side.
        # Both start with the turn's reply and each goes on only if it is the one (a gate event
        # of their own would cost a round trip to the server each, before the first words).
        after = [sent_ok, compare_on, consultation]
        answer_ev = send_ev.success(guard(h.answer_page), [*after, variant], [chat, status],
                                    concurrency_limit=limit, **private)  # fmt: skip
        compare_ev = send_ev.success(
            guard(h.compare_page), after,
            [answer_a, answer_b, compare_turn, compare_key, pick_a, pick_b, compare_panel, status],
            concurrency_limit=limit, **private)  # fmt: skip
        # for programs: /send, then /answer
        gr.on([], guard(h.answer), [consultation, variant], [chat, status], api_name="answer",
              concurrency_limit=limit)  # fmt: skip
        retry_ev = retry_btn.click(guard(h.retry_page), [consultation, variant], [chat, status],
                                   concurrency_limit=limit, **private)  # fmt: skip
        for ev in (answer_ev, retry_ev):
            ev.then(guard(h.list_page), [search, consultation], [listing], **quiet)
        answer_ev.then(guard(h.report_choices), [consultation], [report],
                       api_visibility="private")  # fmt: skip
        # Stop (or Esc): the answer ends itself and shows as stored; anything still running
        # after that (compare mode, a silent model) is cancelled
        stop_btn.click(guard(h.stop), [consultation], None, **quiet).then(
            None, None, None, cancels=[answer_ev, retry_ev, compare_ev])  # fmt: skip
        blocks.load(guard(h.compare_available), None, [compare_on], api_visibility="private")
        for btn, side in ((pick_a, "a"), (pick_b, "b")):
            picked = btn.click(guard(h.pick), [consultation, compare_turn, compare_key,
                                               gr.State(side), *dimension_radios],
                               [chat, compare_panel, pick_a, pick_b, status],
                               api_name=f"consult_pick_{side}", api_visibility="private")  # fmt: skip
            picked.then(guard(h.answer_choices), [consultation], [answer_pick],
                        api_visibility="private")  # fmt: skip

        for ev in (started, open_ev, new_ev, answer_ev, retry_ev, delete_ev):  # the picker follows
            ev.then(guard(h.answer_choices), [consultation], [answer_pick], **private)
        for ev in (open_ev, new_ev, delete_ev):
            ev.then(guard(h.close_compare), None, [compare_panel], **private)
        answer_pick.change(guard(h.show_answer), [consultation, answer_pick],
                           [version_pick, up_btn, down_btn, comment], **private)  # fmt: skip
        version_pick.input(guard(h.pick_version), [consultation, version_pick],
                           [chat, answer_pick], **private)  # fmt: skip
        for btn, value in thumbs:
            btn.click(guard(h.rate), [answer_pick, value, comment], [up_btn, down_btn], **private)
        viewer.wire(consultation, send_ev)  # its pickers follow the open consultation

    return wire


def _pair_texts(turn: CompareTurnRecord) -> tuple[dict[str, str], bool]:
    """Each side's recorded text (with the note of an answer that did not finish) and whether
    the pair can be picked (both ended on their own)."""
    texts, pickable = {}, True
    for side in ("a", "b"):
        r = next((r for r in turn.responses if r.side.value == side), None)
        reason = r.finish_reason.value if r and r.finish_reason else "error"
        text = r.text if r else ""
        if reason not in ("stop", "length"):
            pickable = False
            error = (translate(r.error) or r.error) if r and r.error else ""
            text = f"{text}\n\n{t(FAILED_NOTES.get(reason, FAILED_NOTES['error']), error=error)}"
        texts[side] = text.strip()
    return texts, pickable


def _status(answer: Answer) -> str:
    out = answer.outcome
    if out is None or out.ok or out.finish_reason == "cancelled":
        return ""
    error = error_text(out.error, out.error.user_message) if out.error else None
    return t("consult.status.failed", error=error or t("consult.did_not_finish"))


def demo_banner() -> str:
    """The demo-model warning, for clinicians; the operator's hint beside it, smaller."""
    hint = t("consult.demo_hint")
    return f'{t("consult.demo_banner")} <small class="operator-hint">{hint}</small>'
