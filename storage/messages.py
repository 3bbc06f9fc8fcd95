"""Messages of a consultation: append user turns (with attachments) and answers, read history.

Each message gets the next `seq` of its consultation inside the writing transaction, after
the consultation row is locked (PostgreSQL `SELECT ... FOR UPDATE`; SQLite write
transactions start with `BEGIN IMMEDIATE`, one writer at a time), so two writers never pick
the same number; the unique (consultation_id, seq) constraint is the backstop.

Regenerating an answer (see storage/models.py): `add_assistant_message(..., replaces_id=X)`
appends the new answer as X's sibling (same parent: another version of the answer) and marks
X and every later message of the current path superseded; `history()` returns the current
path only, unless asked for everything. `answer_versions` lists an answer's versions and
`choose_version` makes another one current: the path is re-derived from the `chosen` marks,
so the chosen version comes back with the turns that followed it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from loguru import logger
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from storage.access import access_consultation
from storage.attachments import load_attachments, store_attachment
from storage.checks import as_enum, bounded_text, json_object, optional_count
from storage.consultations import new_consultation
from storage.db import Database
from storage.errors import InvalidInput, NotFound
from storage.models import (
    ERROR_LENGTH,
    ORIGINAL_NAME_LENGTH,
    Consultation,
    FinishReason,
    Message,
    MessageAttachment,
    MessageRole,
    ModelVariant,
    utcnow,
)
from storage.records import (
    AnswerVersions,
    AttachmentRecord,
    ConsultationRecord,
    MessageRecord,
    NewAttachment,
    from_row,
)

#: One message's text. Far above any model context; stops a runaway paste or loop.
MAX_MESSAGE_CHARS = 200_000
#: Attachments on one user turn (the model takes up to 30 images per prompt; a PDF or a
#: DICOM series can add several pages/frames, so intake decides what reaches the model).
MAX_ATTACHMENTS_PER_MESSAGE = 30
#: Sampling parameters are a handful of numbers.
MAX_SAMPLING_PARAMS_CHARS = 10_000

NO_SUCH_ANSWER = "This answer is not in this consultation. / 此会诊中没有这条回答。"
NOT_AN_ANSWER = (
    "Only the model's answers have versions and ratings. / 只有模型的回答才有版本和评价。"
)


def _record(message: Message, attachments: Sequence[AttachmentRecord] = ()) -> MessageRecord:
    return from_row(MessageRecord, message, attachments=tuple(attachments))


def _current_leaf(session: Session, consultation_id: int) -> int | None:
    """The last message of the current path (what a new turn follows), or None if empty."""
    return session.scalar(
        select(Message.id)
        .where(Message.consultation_id == consultation_id)
        .where(Message.superseded.is_(False))
        .order_by(Message.seq.desc())
        .limit(1)
    )


def _append(
    session: Session, consultation: Consultation, message: Message, parent_id: int | None
) -> Message:
    """Give `message` the next seq of the (locked) consultation and write it after
    `parent_id`, as the chosen child there."""
    last = session.scalar(
        select(func.max(Message.seq)).where(Message.consultation_id == consultation.id)
    )
    message.consultation_id = consultation.id
    message.seq = (last or 0) + 1
    message.parent_id = parent_id
    message.chosen = True
    message.created_at = utcnow()
    consultation.updated_at = message.created_at
    session.add(message)
    session.flush()
    return message


def _clean_name(name: object, position: int) -> str:
    if not isinstance(name, str) or not name.strip():
        return f"attachment-{position + 1}"
    # Keep the end: it carries the extension.
    return name.strip()[-ORIGINAL_NAME_LENGTH:]


def check_user_message(text: str, attachments: int = 0) -> None:
    """What `add_user_message` refuses whatever the consultation (length, number of files):
    callers check first, before they create a consultation for it. Raises InvalidInput."""
    bounded_text(text, "message", MAX_MESSAGE_CHARS, allow_empty=attachments > 0)
    if attachments > MAX_ATTACHMENTS_PER_MESSAGE:
        raise InvalidInput(
            f"{attachments} attachments; at most {MAX_ATTACHMENTS_PER_MESSAGE}",
            user_message=f"At most {MAX_ATTACHMENTS_PER_MESSAGE} files per message.",
        )


def add_user_message(
    db: Database,
    consultation_id: int,
    author_id: int,
    text: str,
    attachments: Sequence[NewAttachment] = (),
) -> MessageRecord:
    """Append a user turn with its attachments, all in one transaction (all or nothing).

    `author_id` must own the consultation. Attachments already stored (same sha256) are
    reused. Raises NotFound, PermissionDenied or InvalidInput; nothing is written then.
    """
    check_user_message(text, len(attachments))
    with db.transaction() as session:
        consultation = access_consultation(
            session, consultation_id, author_id, write=True, lock=True
        )
        record, reused = _add_user_turn(session, consultation, author_id, text, attachments)
    _log_user_turn(record, len(attachments), reused)
    return record


def start_consultation(
    db: Database,
    owner_id: int,
    title: str | None,
    text: str,
    attachments: Sequence[NewAttachment] = (),
) -> tuple[ConsultationRecord, MessageRecord]:
    """A new consultation with its first user turn, in one transaction: `create_consultation`
    then `add_user_message`, one write instead of two (SQLite has one writer at a time, and
    sixteen clinicians starting at once queue on it). Nothing is written if either refuses."""
    check_user_message(text, len(attachments))
    with db.transaction() as session:
        consultation = new_consultation(session, owner_id, title)
        record, reused = _add_user_turn(session, consultation, owner_id, text, attachments)
        started = from_row(ConsultationRecord, consultation)
    logger.info("created consultation id={} owner id={}", started.id, owner_id)
    _log_user_turn(record, len(attachments), reused)
    return started, record


def _add_user_turn(
    session: Session,
    consultation: Consultation,
    author_id: int,
    text: str,
    attachments: Sequence[NewAttachment],
) -> tuple[MessageRecord, int]:
    """Append the turn to the (locked, writable) consultation; the record and how many of its
    attachments were already stored."""
    message = _append(
        session,
        consultation,
        Message(role=MessageRole.USER, text=text, author_id=author_id),
        _current_leaf(session, consultation.id),
    )
    reused = 0
    for position, new in enumerate(attachments):
        if not isinstance(new, NewAttachment):
            raise InvalidInput(f"attachment {position} is not a NewAttachment")
        attachment, created = store_attachment(session, new)
        reused += not created
        session.add(
            MessageAttachment(
                message_id=message.id,
                attachment_id=attachment.id,
                position=position,
                original_name=_clean_name(new.original_name, position),
            )
        )
    session.flush()
    stored = load_attachments(session, [message.id], with_png=False) if attachments else {}
    return _record(message, stored.get(message.id, [])), reused


def _log_user_turn(record: MessageRecord, attachments: int, reused: int) -> None:
    logger.info(
        "consultation id={}: user message id={} seq={} with {} attachments ({} reused)",
        record.consultation_id,
        record.id,
        record.seq,
        attachments,
        reused,
    )


def add_assistant_message(
    db: Database,
    consultation_id: int,
    text: str,
    *,
    user_id: int,
    model_variant_id: int | None,
    sampling_params: dict[str, Any] | None,
    latency_ms: int | None,
    first_token_ms: int | None,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    finish_reason: FinishReason | str,
    error: str | None = None,
    replaces_id: int | None = None,
) -> MessageRecord:
    """Append a model answer (possibly partial or empty, with `error`) to the consultation.

    `user_id` asked for the answer and must be allowed to write the consultation (its owner:
    an admin reading someone else's consultation cannot add or regenerate answers there).
    `replaces_id`: the answer this one regenerates (a current one); the new answer is its
    next version, and it and every later message of the path become superseded.
    """
    outcome = _outcome_fields(text, finish_reason, error, latency_ms=latency_ms,
                              first_token_ms=first_token_ms, prompt_tokens=prompt_tokens,
                              completion_tokens=completion_tokens)  # fmt: skip
    params = json_object(sampling_params, "sampling_params", MAX_SAMPLING_PARAMS_CHARS)
    with db.transaction() as session:
        consultation = access_consultation(
            session, consultation_id, user_id, write=True, lock=True
        )
        if model_variant_id is not None and session.get(ModelVariant, model_variant_id) is None:
            raise NotFound(f"model variant {model_variant_id} does not exist")
        if replaces_id is not None:
            parent_id = _supersede_from(session, consultation_id, replaces_id)
        else:
            parent_id = _current_leaf(session, consultation_id)
        message = _append(
            session,
            consultation,
            Message(
                role=MessageRole.ASSISTANT,
                model_variant_id=model_variant_id,
                sampling_params=params,
                replaces_id=replaces_id,
                **outcome,
            ),
            parent_id,
        )
        record = _record(message)
    logger.info(
        "consultation id={}: answer id={} seq={} variant id={} finish={}{}",
        consultation_id,
        record.id,
        record.seq,
        model_variant_id,
        record.finish_reason.value if record.finish_reason else None,
        f" replaces id={replaces_id}" if replaces_id is not None else "",
    )
    return record


def update_assistant_message(
    db: Database,
    message_id: int,
    text: str,
    *,
    user_id: int,
    finish_reason: FinishReason | str,
    error: str | None = None,
    latency_ms: int | None = None,
    first_token_ms: int | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
) -> MessageRecord:
    """Replace the text and outcome of an answer stored while it streamed (a checkpoint).

    A streaming answer is first stored as `cut_off` with the text shown so far, and updated
    as it grows and when it ends: a crash of the app keeps what the clinician saw, marked cut
    off. Only answers on the current branch of a consultation `user_id` may write.
    """
    outcome = _outcome_fields(text, finish_reason, error, latency_ms=latency_ms,
                              first_token_ms=first_token_ms, prompt_tokens=prompt_tokens,
                              completion_tokens=completion_tokens)  # fmt: skip
    with db.transaction() as session:
        message = session.get(Message, message_id)
        if message is None:
            raise NotFound(f"message {message_id} does not exist")
        access_consultation(session, message.consultation_id, user_id, write=True, lock=True)
        if message.role is not MessageRole.ASSISTANT or message.superseded:
            raise InvalidInput(f"message {message_id} is not a current answer")
        for name, value in outcome.items():
            setattr(message, name, value)
        session.flush()
        return _record(message)


def _outcome_fields(
    text: str, finish_reason: FinishReason | str, error: str | None, **counts: int | None
) -> dict[str, Any]:
    """How an answer ended, checked: text, finish reason, error (shortened), counts."""
    bounded_text(text, "answer", MAX_MESSAGE_CHARS, allow_empty=True)
    if error is not None:
        error = str(error)
        if len(error) > ERROR_LENGTH:
            error = error[: ERROR_LENGTH - 1] + "…"
    return {
        "text": text,
        "finish_reason": as_enum(FinishReason, finish_reason, "finish_reason"),
        "error": error,
        **{name: optional_count(value, name) for name, value in counts.items()},
    }


def _supersede_from(session: Session, consultation_id: int, replaces_id: int) -> int | None:
    """Take the current answer `replaces_id` and the rest of the path after it off the
    current path, and unchoose its versions; returns their parent (the new version's)."""
    old = session.get(Message, replaces_id)
    if old is None or old.consultation_id != consultation_id:
        raise NotFound(f"message {replaces_id} is not in consultation {consultation_id}")
    if old.role is not MessageRole.ASSISTANT:
        raise InvalidInput(f"message {replaces_id} is not an answer; only answers are replaced")
    if old.superseded:
        raise InvalidInput(f"message {replaces_id} is already superseded")
    session.execute(
        update(Message)
        .where(Message.consultation_id == consultation_id)
        .where(Message.seq >= old.seq)
        .where(Message.superseded.is_(False))
        .values(superseded=True)
        .execution_options(synchronize_session="fetch")
    )
    session.execute(
        update(Message)
        .where(_siblings_of(consultation_id, old.parent_id))
        .values(chosen=False)
        .execution_options(synchronize_session="fetch")
    )
    return old.parent_id


def _siblings_of(consultation_id: int, parent_id: int | None):
    """The condition "follows `parent_id` in the consultation" (the first messages for None)."""
    parent = Message.parent_id.is_(None) if parent_id is None else Message.parent_id == parent_id
    return (Message.consultation_id == consultation_id) & parent


def _answer_in(session: Session, consultation_id: int, message_id: int) -> Message:
    """The answer `message_id` of the consultation, else NotFound / InvalidInput."""
    message = session.get(Message, message_id)
    if message is None or message.consultation_id != consultation_id:
        raise NotFound(
            f"message {message_id} is not in consultation {consultation_id}",
            user_message=NO_SUCH_ANSWER,
        )
    if message.role is not MessageRole.ASSISTANT:
        raise InvalidInput(f"message {message_id} is not an answer", user_message=NOT_AN_ANSWER)
    return message


def _versions(session: Session, answer: Message) -> AnswerVersions:
    versions = list(
        session.scalars(
            select(Message)
            .where(_siblings_of(answer.consultation_id, answer.parent_id))
            .where(Message.role == MessageRole.ASSISTANT)
            .order_by(Message.seq)
        )
    )
    current = next((m for m in versions if m.chosen), versions[-1])
    return AnswerVersions(
        consultation_id=answer.consultation_id,
        versions=tuple(_record(m) for m in versions),
        current_id=current.id,
    )


def answer_versions(
    db: Database, consultation_id: int, message_id: int, user_id: int
) -> AnswerVersions:
    """The versions of the answer `message_id` (itself included), oldest first, and which
    one the consultation continues with. For whoever may read the consultation."""
    with db.transaction(write=False) as session:
        access_consultation(session, consultation_id, user_id, write=False)
        return _versions(session, _answer_in(session, consultation_id, message_id))


def choose_version(
    db: Database, consultation_id: int, message_id: int, user_id: int
) -> AnswerVersions:
    """Make the answer `message_id` the version the consultation continues with (owner only).

    It becomes the chosen child of its parent (and so does every message above it), and the
    current path is re-derived from the chosen marks: the turns that followed this version
    come back, those after the version it replaces leave the path (kept, superseded).
    """
    with db.transaction() as session:
        access_consultation(session, consultation_id, user_id, write=True, lock=True)
        answer = _answer_in(session, consultation_id, message_id)
        rows = session.execute(
            select(Message.id, Message.parent_id, Message.chosen, Message.superseded)
            .where(Message.consultation_id == consultation_id)
            .order_by(Message.seq)
        ).all()
        parent_of = {r.id: r.parent_id for r in rows}
        children: defaultdict[int | None, list[int]] = defaultdict(list)
        for r in rows:
            children[r.parent_id].append(r.id)
        chosen = {r.id for r in rows if r.chosen}
        node: int | None = answer.id
        while node is not None:
            chosen.difference_update(children[parent_of[node]])
            chosen.add(node)
            node = parent_of[node]
        path = set(current_path(children, chosen))
        _set_flag(session, "chosen", {r.id for r in rows if r.chosen} ^ chosen, chosen)
        _set_flag(session, "superseded", {r.id for r in rows if not r.superseded} ^ path,
                  set(parent_of) - path)  # fmt: skip
        versions = _versions(session, answer)
    logger.info("consultation id={}: answer id={} chosen (version {} of {})", consultation_id,
                message_id, versions.current_number, len(versions.versions))  # fmt: skip
    return versions


def current_path(children: dict[int | None, list[int]], chosen: set[int]) -> list[int]:
    """The current path of a consultation's tree: from the first message down through the
    chosen child of each message (`children` in seq order; the newest if none is chosen)."""
    path: list[int] = []
    kids = children.get(None, [])
    while kids:
        node = next((k for k in reversed(kids) if k in chosen), kids[-1])
        path.append(node)
        kids = children.get(node, [])
    return path


def _set_flag(session: Session, column: str, changed: set[int], true_ids: set[int]) -> None:
    """Write `column` for the `changed` rows: True for those in `true_ids`, else False."""
    for value, ids in ((True, changed & true_ids), (False, changed - true_ids)):
        if ids:
            session.execute(
                update(Message)
                .where(Message.id.in_(sorted(ids)))
                .values({column: value})
                .execution_options(synchronize_session="fetch")
            )


def history(
    db: Database,
    consultation_id: int,
    *,
    user_id: int | None = None,
    include_superseded: bool = False,
    with_png: bool = False,
) -> list[MessageRecord]:
    """The consultation's messages in order, each with its attachments.

    By default only the current branch (no superseded answers). With `user_id`, checks
    that this user may read the consultation (owner or admin) in the same transaction;
    without it the caller is trusted (training export). Image bytes are loaded only with
    `with_png=True` (to build a model prompt); otherwise `ImageRecord.png` is None.
    """
    query = select(Message).where(Message.consultation_id == consultation_id).order_by(Message.seq)
    if not include_superseded:
        query = query.where(Message.superseded.is_(False))
    with db.transaction(write=False) as session:
        if user_id is not None:
            access_consultation(session, consultation_id, user_id, write=False)
        elif session.get(Consultation, consultation_id) is None:
            raise NotFound(f"consultation {consultation_id} does not exist")
        messages = list(session.scalars(query))
        attachments = load_attachments(session, [m.id for m in messages], with_png=with_png)
        return [_record(m, attachments.get(m.id, [])) for m in messages]


def get_message(db: Database, message_id: int, *, user_id: int | None = None) -> MessageRecord:
    """One message with its attachments (no PNG bytes); access checked as in `history`."""
    with db.transaction(write=False) as session:
        message = session.get(Message, message_id)
        if message is None:
            raise NotFound(f"message {message_id} does not exist")
        if user_id is not None:
            access_consultation(session, message.consultation_id, user_id, write=False)
        attachments = load_attachments(session, [message.id], with_png=False)
        return _record(message, attachments.get(message.id, []))
