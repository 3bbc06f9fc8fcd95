"""What a compare turn shows: its snapshot, built when the turn is made and resolved to prompt it.

A turn's `context` records exactly what the two models were sent, by reference and hash:

    context = {"history": [item, ...], "prompt": item}
    item    = {"role": "user" | "assistant", "ref": {<kind>: id} | None, "text_sha256": hex,
               "attachments": [{"id": 3, "sha256": hex}, ...]}       (user items)

`ref` names where the text lives: `case_turn` (a case's patient turn), `case_reference` (the
doctor's reference answer of that turn), `message` (a consultation message),
`comparison_turn` (an earlier turn's question) or `comparison_response` (an earlier turn's
kept answer); the question is the turn's own `prompt_text` (a typed one has no ref).
`content_sha256` hashes the content alone (language, texts, files), so the same question
shown to many annotators has one hash. `turn_context` resolves a snapshot back into messages
for `model.prompt.to_chat_messages`, checking every hash: a vote stays traceable to exactly
what was shown, and a changed or deleted source is refused rather than silently re-read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from loguru import logger
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.access import access_compare_turn
from storage.attachments import attachments_by_id, store_attachment
from storage.cases import case_attachment_ids
from storage.checks import bounded_text
from storage.db import Database
from storage.errors import Conflict, InvalidInput, NotFound
from storage.i18n import bilingual
from storage.messages import MAX_ATTACHMENTS_PER_MESSAGE, MAX_MESSAGE_CHARS
from storage.models import (
    Attachment,
    Case,
    CaseTurn,
    ComparisonResponse,
    ComparisonTurn,
    Message,
    MessageAttachment,
    MessageRole,
)
from storage.records import ContextMessage, NewAttachment

MESSAGES = {
    "no_question": {
        "en": "There is no question to answer: the consultation's last message is not the "
        "clinician's.",
        "zh-CN": "没有待回答的问题：会诊的最后一条消息不是医生发出的。",
    },
    "case_turn": {
        "en": "This case has no turn {turn}.",
        "zh-CN": "该病例没有第 {turn} 轮。",
    },
    "context_changed": {
        "en": "Part of what this comparison showed was changed or deleted.",
        "zh-CN": "此比较展示的部分内容已被修改或删除。",
    },
    "question": {
        "en": "A question is text of at most {limit} characters, or files (at most {files}).",
        "zh-CN": "问题须为不超过 {limit} 个字符的文本，或文件（最多 {files} 个）。",
    },
}


def _say(key: str, **fields: object) -> str:
    return bilingual(MESSAGES[key], **fields)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _files(pairs: Sequence[tuple[int, str]]) -> list[dict[str, Any]]:
    return [{"id": attachment_id, "sha256": sha256} for attachment_id, sha256 in pairs]


def context_item(role: MessageRole, ref: dict[str, int] | None, text: str,
                 files: Sequence[tuple[int, str]] = ()) -> dict[str, Any]:  # fmt: skip
    """One message of a snapshot: its role, where its text lives, hashes of text and files."""
    item: dict[str, Any] = {"role": role.value, "ref": ref, "text_sha256": text_sha256(text)}
    if role is MessageRole.USER:
        item["attachments"] = _files(files)
    return item


def content_sha256(language: str, context: dict[str, Any]) -> str:
    """The hash of what the models read: language, texts and files, not where they came from."""
    items = [*context["history"], context["prompt"]]
    content = [language] + [
        [i["role"], i["text_sha256"], [f["sha256"] for f in i.get("attachments", ())]] for i in items
    ]
    return text_sha256(json.dumps(content, separators=(",", ":")))


# --- building a turn's snapshot -----------------------------------------------------------


class Question:
    """What a new turn asks: its snapshot, text, files and where they came from."""

    def __init__(self, history: list[dict[str, Any]], text: str, files: list[tuple[int, str]],
                 ref: dict[str, int] | None = None, *, message_id: int | None = None,
                 case_turn_id: int | None = None, reference: str | None = None):  # fmt: skip
        self.context = {"history": history, "prompt": context_item(MessageRole.USER, ref, text, files)}
        self.text, self.files = text, files
        self.message_id, self.case_turn_id, self.reference = message_id, case_turn_id, reference


def from_case(session: Session, case_id: int, turn: int | None) -> Question:
    if session.get(Case, case_id) is None:
        raise NotFound(f"case {case_id} does not exist")
    turns = list(session.scalars(
        select(CaseTurn).where(CaseTurn.case_id == case_id).order_by(CaseTurn.position)))  # fmt: skip
    k = len(turns) if turn is None else turn
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(turns):
        raise InvalidInput(f"case {case_id} has no turn {turn}", user_message=_say("case_turn", turn=turn))
    history = []
    for t in turns[: k - 1]:
        history.append(context_item(MessageRole.USER, {"case_turn": t.id}, t.patient_text,
                             case_attachment_ids(session, t.id)))  # fmt: skip
        history.append(context_item(MessageRole.ASSISTANT, {"case_reference": t.id}, t.reference_answer or ""))
    asked = turns[k - 1]
    return Question(history, asked.patient_text, case_attachment_ids(session, asked.id),
                     {"case_turn": asked.id}, case_turn_id=asked.id,
                     reference=asked.reference_answer)  # fmt: skip


def _message_files(session: Session, message_ids: list[int]) -> dict[int, list[tuple[int, str]]]:
    rows = session.execute(
        select(MessageAttachment.message_id, Attachment.id, Attachment.sha256)
        .join(Attachment, Attachment.id == MessageAttachment.attachment_id)
        .where(MessageAttachment.message_id.in_(message_ids))
        .order_by(MessageAttachment.message_id, MessageAttachment.position)
    ).all()
    files: dict[int, list[tuple[int, str]]] = {}
    for message_id, attachment_id, sha256 in rows:
        files.setdefault(message_id, []).append((attachment_id, sha256))
    return files


def from_consultation(session: Session, consultation_id: int, up_to: int | None = None) -> Question:
    """The consultation's current path; its last message (the clinician's) is the question, or
    the path up to message `up_to` (a clinician's message on it: a logged consultation).
    Answers that failed without text are left out, as the prompt builder leaves them out."""
    messages = list(session.scalars(
        select(Message).where(Message.consultation_id == consultation_id)
        .where(Message.superseded.is_(False)).order_by(Message.seq)))  # fmt: skip
    if up_to is not None:
        ends = [i for i, m in enumerate(messages) if m.id == up_to]
        if not ends:
            raise NotFound(f"message {up_to} is not on consultation {consultation_id}'s path")
        messages = messages[: ends[0] + 1]
    if not messages or messages[-1].role is not MessageRole.USER:
        raise InvalidInput("no question to answer", user_message=_say("no_question"))
    files = _message_files(session, [m.id for m in messages if m.role is MessageRole.USER])
    history = [
        context_item(m.role, {"message": m.id}, m.text, files.get(m.id, ()))
        for m in messages[:-1]
        if m.role is MessageRole.USER or (m.role is MessageRole.ASSISTANT and m.text)
    ]
    asked = messages[-1]
    return Question(history, asked.text, files.get(asked.id, []), {"message": asked.id},
                     message_id=asked.id)  # fmt: skip


def typed_question(session: Session, history: list[dict[str, Any]], text: str | None,
           attachments: Sequence[NewAttachment]) -> Question:  # fmt: skip
    """A question typed in Compare (with its uploads, stored like any upload)."""
    text = (text or "").strip() if isinstance(text, str | None) else text
    try:
        bounded_text(text, "question", MAX_MESSAGE_CHARS, allow_empty=bool(attachments))
    except InvalidInput as exc:
        raise InvalidInput(exc.detail, user_message=_say(
            "question", limit=MAX_MESSAGE_CHARS, files=MAX_ATTACHMENTS_PER_MESSAGE)) from None
    if len(attachments) > MAX_ATTACHMENTS_PER_MESSAGE:
        raise InvalidInput(f"more than {MAX_ATTACHMENTS_PER_MESSAGE} files", user_message=_say(
            "question", limit=MAX_MESSAGE_CHARS, files=MAX_ATTACHMENTS_PER_MESSAGE))
    files = []
    for new in attachments:
        if not isinstance(new, NewAttachment):
            raise InvalidInput("attachment is not a NewAttachment")
        attachment, _ = store_attachment(session, new)
        files.append((attachment.id, attachment.sha256))
    return Question(history, text, files)


def _resolve(session: Session, item: dict[str, Any], turn: ComparisonTurn) -> str | None:
    """The text an item's ref names now (None if it is gone)."""
    ((kind, ref_id),) = item["ref"].items()
    if kind == "case_turn":
        row = session.get(CaseTurn, ref_id)
        return row.patient_text if row else None
    if kind == "case_reference":
        row = session.get(CaseTurn, ref_id)
        return row.reference_answer or "" if row else None
    if kind == "message":
        row = session.get(Message, ref_id)
        return row.text if row else None
    if kind == "comparison_turn":
        row = session.get(ComparisonTurn, ref_id)
        return row.prompt_text if row and row.comparison_id == turn.comparison_id else None
    if kind == "comparison_response":
        row = session.get(ComparisonResponse, ref_id)
        return row.text if row else None
    return None


def turn_context(
    db: Database, turn_id: int, *, user_id: int, with_png: bool = False
) -> list[ContextMessage]:
    """What the turn's models were sent, as messages for `model.prompt.to_chat_messages`:
    the history, then the question, if `user_id` may read the turn (`resolve_context`)."""
    with db.transaction(write=False) as session:
        turn, _ = access_compare_turn(session, turn_id, user_id, write=False)
        return resolve_context(session, turn, with_png=with_png)


def resolve_context(
    session: Session, turn: ComparisonTurn, *, with_png: bool
) -> list[ContextMessage]:
    """The turn's snapshot resolved to messages, every text and file checked against its hashes
    (Conflict if something shown was changed or deleted since). No reader check: callers
    decide (`turn_context` checks; an operator's export trusts itself)."""
    items = [*turn.context["history"], turn.context["prompt"]]
    files = attachments_by_id(session, [f["id"] for i in items for f in i.get("attachments", ())],
                              with_png=with_png)  # fmt: skip
    out = []
    for n, item in enumerate(items):
        text = turn.prompt_text if n == len(items) - 1 else _resolve(session, item, turn)
        attachments = []
        for position, f in enumerate(item.get("attachments", ())):
            found = files.get(f["id"])
            if found is None or found.sha256 != f["sha256"]:
                text = None
                break
            attachments.append(replace(found, position=position))
        if text is None or text_sha256(text) != item["text_sha256"]:
            logger.warning("compare turn id={}: context item {} changed", turn.id, n)
            raise Conflict(f"turn {turn.id} context item {n} changed",
                           user_message=_say("context_changed"))  # fmt: skip
        out.append(ContextMessage(MessageRole(item["role"]), text, tuple(attachments)))
    return out
