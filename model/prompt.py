"""The prompt a model sees: built here, and only here, for the app, exports, trainers and evals.

Train/serve consistency needs one builder: the words around an attachment, the system prompt
and which stored messages count are decided once. A consultation becomes

    [system: SYSTEM_PROMPTS[language]]
    [user: "[Attachment 1: pdf, 2 pages]\\n<report text>\\n<clinician's text>", images...]
    [assistant: answer]  ... (failed answers without text, and system rows, are left out)

    from model.prompt import to_chat_messages, user_turn
    messages = to_chat_messages(storage.history(db, cid, with_png=True), language="zh-CN")

`to_chat_messages` takes anything shaped like storage's `MessageRecord` (the `StoredMessage`
protocol below), so `training/` and tools can build the same prompt from their own rows, and
`model/` does not depend on `storage/` (which could change its records without this noticing
until a type check; duck typing keeps the contract to the five fields used).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from model.chat import ChatMessage
from model.images import ModelImage, StoredImage, from_stored

#: What the model is told it is, per language. Kept short: the demo model has a small context.
SYSTEM_PROMPTS = {
    "en": (
        "You are PulseMind, a clinical consultation assistant for clinicians. Ask for missing "
        "information that matters clinically, be medically accurate, useful and clear."
    ),
    "zh-CN": (
        "你是 PulseMind，一个为临床医生服务的临床会诊助手。请主动询问具有临床意义的缺失信息，"
        "做到医学上准确、实用、清晰。"
    ),
}
DEFAULT_LANGUAGE = "en"
#: The English system prompt (the default).
SYSTEM_PROMPT = SYSTEM_PROMPTS[DEFAULT_LANGUAGE]


def system_prompt(language: str = DEFAULT_LANGUAGE) -> str:
    """The system prompt in `language` ("en" or "zh-CN"); ValueError names the choices."""
    try:
        return SYSTEM_PROMPTS[language]
    except KeyError:
        raise ValueError(
            f"No system prompt in {language!r}; choose one of {', '.join(SYSTEM_PROMPTS)}."
        ) from None


class StoredAttachment(Protocol):
    @property
    def kind(self) -> str: ...  # "image" | "dicom" | "pdf" (a str enum is fine)

    @property
    def page_count(self) -> int | None: ...

    @property
    def text(self) -> str | None: ...

    @property
    def images(self) -> Sequence[StoredImage]: ...


class StoredMessage(Protocol):
    """A stored consultation message, as `storage.MessageRecord` has it."""

    @property
    def role(self) -> str: ...  # "system" | "user" | "assistant" (a str enum is fine)

    @property
    def text(self) -> str: ...

    @property
    def attachments(self) -> Sequence[StoredAttachment]: ...


def attachment_context(position: int, kind: str, page_count: int | None, text: str | None) -> str:
    """What the model reads about an attachment besides its pixels (no file names: they can hold names)."""
    parts = [f"[Attachment {position + 1}: {kind}"]
    if page_count:
        parts.append(f", {page_count} pages")
    parts.append("]")
    if text:
        parts.append(f"\n{text}")
    return "".join(parts)


def user_turn(text: str, attachments: Sequence[tuple[str, int | None, str | None]],
              images: Iterable[ModelImage]) -> ChatMessage:  # fmt: skip
    """A clinician's turn as the model reads it: one context line per attachment (kind, pages,
    text), then the message; the attachments' images (see `model.images.for_model`)."""
    context = "\n".join(attachment_context(i, str(k), p, t) for i, (k, p, t) in enumerate(attachments))
    return ChatMessage("user", f"{context}\n{text}".strip() if context else text, list(images))


def to_chat_messages(
    records: Sequence[StoredMessage], *, language: str = DEFAULT_LANGUAGE
) -> list[ChatMessage]:
    """Stored history (with image bytes loaded) as the messages a model receives."""
    out = [ChatMessage("system", system_prompt(language))]
    for m in records:
        if m.role == "system":
            continue
        if m.role == "assistant":
            if m.text:  # a failed answer with no text is not part of the dialogue
                out.append(ChatMessage("assistant", m.text))
            continue
        images = [
            from_stored(img) for att in m.attachments for img in att.images if img.png
        ]
        atts = [(str(a.kind), a.page_count, a.text) for a in m.attachments]
        out.append(user_turn(m.text, atts, images))
    return out
