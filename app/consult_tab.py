"""Consult tab: the clinician's consultations, a multimodal chat, streamed answers.

Handlers are thin: they call `app.workflow.Consultations` and render its records. Every one is
wrapped by `Auth.guard` (clinician or admin) and exposed under an `api_name`, so the same
checks hold for the browser and for HTTP clients.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import closing

import gradio as gr

from app.auth import CLINICAL, Auth
from app.config import AppConfig
from app.consult_api import display_name, file_path
from app.edge import optional_id, parse_id, parse_index
from app.workflow import Answer, Consultations
from storage import (
    Database,
    InvalidInput,
    MessageRecord,
    MessageRole,
    UserRecord,
    create_consultation,
    list_active_variants,
    list_consultations,
    rename_consultation,
)

ACCEPTED = [".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".dcm", ".pdf"]
DEMO_BANNER = (
    "⚠️ **Demo model** — this app is running on the small built-in demo model: its answers are "
    "random text, not medical advice. Start it with `--model-url` to use a real model."
)
#: Shown under an answer that did not finish; the stored text stays as it was.
FAILED_NOTES = {
    "cut_off": "⚠️ *The answer was cut off: {error} Press **Retry** to ask again.*",
    "error": "⚠️ *{error} Press **Retry** to ask again.*",
    "cancelled": "*(stopped)*",
}

OPEN_FIRST = "Open a consultation first."
#: Thumbnails per attachment in the chat (a PDF's first pages, a DICOM's kept frames).
THUMBNAILS_PER_ATTACHMENT = 4


def _image_md(att) -> str:
    return " ".join(
        f"[![{att.original_name}, {img.label}](/attachments/{att.id}/{img.position}.png)]"
        f"(/attachments/{att.id}/{img.position}.png)"
        for img in att.images[:THUMBNAILS_PER_ATTACHMENT]
    )


def render(records: list[MessageRecord]) -> list[dict]:
    """Stored messages as Chatbot messages (thumbnails served by /attachments, per user)."""
    out = []
    for m in records:
        if m.role is MessageRole.USER:
            files = [
                f"**{a.original_name}** ({a.kind.value})\n\n{_image_md(a)}" for a in m.attachments
            ]
            out.append({"role": "user", "content": "\n\n".join([*files, m.text]).strip()})
        elif m.role is MessageRole.ASSISTANT:
            text = m.text
            note = FAILED_NOTES.get(m.finish_reason.value if m.finish_reason else "", "")
            if note:
                text = f"{text}\n\n{note.format(error=m.error or '')}".strip()
            out.append({"role": "assistant", "content": text})
    return out


def chat_text(message: dict) -> str:
    """A Chatbot message's text as HTTP clients get it (a string, or Gradio 6's list of parts)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    return ""


def _choices(db: Database, user: UserRecord) -> list[tuple[str, int]]:
    return [(f"{c.title} · #{c.id}", c.id) for c in list_consultations(db, user.id)]


def _attachment_choices(records: list[MessageRecord]) -> list[tuple[str, str]]:
    return [
        (f"{a.original_name} (message {m.seq})", f"{m.id}:{a.position}")
        for m in records
        for a in m.attachments
        if a.text
    ]


class ConsultHandlers:
    """The Consult tab's use cases as plain methods `(user, *inputs) -> outputs`: no components
    and no request inside, so tests call them directly; `build_consult_tab` wraps each in
    `Auth.guard` (role check, errors in users' words) and wires it to the page."""

    def __init__(self, db: Database, flow: Consultations):
        self.db, self.flow = db, flow

    def refresh(self, user: UserRecord, current: int | None):
        variants = list_active_variants(self.db)
        names = [v.name for v in variants]
        demo = any(v.embedded for v in variants)
        return (
            gr.update(choices=_choices(self.db, user), value=current),
            gr.update(choices=names, value=names[0] if names else None),
            gr.update(value=DEMO_BANNER, visible=demo),
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
        c = create_consultation(self.db, user.id, None)
        return gr.update(choices=_choices(self.db, user), value=c.id), [], c.title

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

    def _stream(self, user: UserRecord, answer: Answer) -> Iterator[list[dict]]:
        """Yield the chat while the answer streams (throttled); record it, then show it stored."""
        shown = render(answer.history)
        with closing(self.flow.streamed(user, answer)) as texts:
            for text in texts:
                yield [*shown, {"role": "assistant", "content": text}]
        stored = [answer.recorded] if answer.recorded is not None else []
        final = render([*answer.history, *stored])
        out = answer.outcome
        if answer.recorded is None and out is not None and out.error is not None:
            # nothing was stored (no text came): show the failure where the answer would be
            note = FAILED_NOTES["error"].format(error=out.error.user_message)
            final.append({"role": "assistant", "content": note})
        yield final

    def send(self, user: UserRecord, message: dict | None, cid: int | None):
        """Store the clinician's turn (uploads taken in first); the answer is `answer`, chained."""
        message = message if isinstance(message, dict) else {}
        files = [(display_name(f), file_path(f)) for f in message.get("files") or []]
        # UploadRejected (one line per file) reaches the browser as an error; the draft and its
        # files stay in the box because no output is updated. Only the caller's own uploads
        # are taken (self.flow.take_in).
        text = message.get("text") or ""
        cid, _ = self.flow.add_turn(user, optional_id(cid, "consultation"),
                               text if isinstance(text, str) else "", files)  # fmt: skip
        choices = _choices(self.db, user)
        title_text = next((t for t, i in choices if i == cid), "").rsplit(" · #", 1)[0]
        shown = render(self.flow.chat_history(user, cid))
        return gr.update(choices=choices, value=cid), shown, None, "", title_text

    def answer(self, user: UserRecord, cid: int | None, variant_name: str | None):
        """Stream the model's answer to the last turn; plain values only (cheap per token)."""
        cid = optional_id(cid, "consultation")
        if cid is None:
            raise InvalidInput("no consultation", user_message=OPEN_FIRST)
        ans = self.flow.answer(user, cid, variant_name)
        for chat_value in self._stream(user, ans):
            yield chat_value, _status(ans)

    def retry(self, user: UserRecord, cid: int | None, variant_name: str | None):
        cid = optional_id(cid, "consultation")
        if cid is None:
            raise InvalidInput("no consultation", user_message=OPEN_FIRST)
        # regenerate: replaces the last answer if there is one, else answers the last question
        answer = self.flow.answer(user, cid, variant_name, regenerate=True)
        for chat_value in self._stream(user, answer):
            yield chat_value, _status(answer)


def build_consult_tab(
    config: AppConfig, db: Database, auth: Auth, flow: Consultations
) -> Callable[[gr.Blocks], None]:
    guard = auth.guard(*CLINICAL)
    h = ConsultHandlers(db, flow)

    banner = gr.Markdown(visible=False)
    with gr.Row():
        with gr.Column(scale=1, min_width=240):
            # allow_custom_value: choices are per user and set at load; the server checks
            # ownership of whatever id arrives (HTTP clients send ids directly).
            consultation = gr.Dropdown(label="Consultations", choices=[], value=None,
                                       interactive=True, allow_custom_value=True)  # fmt: skip
            new_btn = gr.Button("New consultation", variant="secondary")
            title = gr.Textbox(label="Title", max_lines=1)
            rename_btn = gr.Button("Rename", size="sm")
            variant = gr.Dropdown(label="Model", choices=[], interactive=True,
                                  allow_custom_value=True)  # fmt: skip
            with gr.Accordion("Report text", open=False):
                report = gr.Dropdown(label="Attachment", choices=[], interactive=True,
                                     allow_custom_value=True)  # fmt: skip
                report_text = gr.Textbox(label="Extracted text", lines=12, interactive=False)
        with gr.Column(scale=3):
            chat = gr.Chatbot(label="Consultation", height=560, buttons=["copy"],
                              feedback_options=None, elem_id="consult-chat")  # fmt: skip
            box = gr.MultimodalTextbox(
                file_types=ACCEPTED, file_count="multiple", sources=["upload"],
                placeholder="Describe the case; attach lab reports (PDF, photos), images, DICOM",
                show_label=False, elem_id="consult-input",
            )  # fmt: skip
            with gr.Row():
                stop_btn = gr.Button("Stop", size="sm", scale=0, min_width=100)
                retry_btn = gr.Button("Retry / regenerate", size="sm", scale=0, min_width=160)
            status = gr.Markdown(elem_id="consult-status")

    def wire(blocks: gr.Blocks) -> None:
        blocks.load(guard(h.refresh), [consultation], [consultation, variant, banner],
                    api_name="refresh")  # fmt: skip
        # .input, not .change: the handlers below set the value while an answer streams
        consultation.input(guard(h.open_consultation), [consultation],
                           [chat, title, report, status], api_name="open_consultation")  # fmt: skip
        new_btn.click(
            guard(h.new_consultation), None, [consultation, chat, title], api_name="new_consultation"
        )
        rename_btn.click(guard(h.rename), [consultation, title], [consultation], api_name="rename")
        report.change(guard(h.show_report), [consultation, report], [report_text],
                      api_name="report_text")  # fmt: skip
        limit = config.concurrency
        send_ev = box.submit(guard(h.send), [box, consultation],
                             [consultation, chat, box, status, title], api_name="send",
                             concurrency_limit=limit)  # fmt: skip
        answer_ev = send_ev.success(guard(h.answer), [consultation, variant], [chat, status],
                                    api_name="answer", concurrency_limit=limit)  # fmt: skip
        retry_ev = retry_btn.click(guard(h.retry), [consultation, variant], [chat, status],
                                   api_name="retry", concurrency_limit=limit)  # fmt: skip
        answer_ev.then(guard(h.report_choices), [consultation], [report],
                       api_visibility="private")  # fmt: skip
        stop_btn.click(None, None, None, cancels=[answer_ev, retry_ev])

    return wire


def _status(answer: Answer) -> str:
    out = answer.outcome
    if out is None or out.ok or out.finish_reason == "cancelled":
        return ""
    return f"⚠️ {out.error.user_message if out.error else 'The answer did not finish.'}"
