"""Feedback on answers: a thumbs up or down with an optional comment, one per user and answer.

Clinicians rate the answers of their own consultations (the rule in `storage.access`: whoever
may write the consultation); rating the same answer again changes the one row (upsert on
UNIQUE(message_id, user_id)). Every version of an answer can be rated, and deleted
consultations cannot. The rows are training signal: they stay with the answer.

    set_feedback(db, message_id, user_id, "down", "Missed the drug interaction.")
    get_feedback(db, message_id, user_id)   # -> FeedbackRecord | None
"""

from __future__ import annotations

from loguru import logger
from sqlalchemy import select

from storage.access import access_consultation
from storage.db import Database
from storage.errors import InvalidInput, NotFound
from storage.models import (
    FEEDBACK_COMMENT_LENGTH,
    AnswerFeedback,
    Message,
    MessageRole,
    Thumbs,
    utcnow,
)
from storage.records import FeedbackRecord, from_row

NOT_AN_ANSWER = "Only the model's answers can be rated. / 只能评价模型的回答。"
NO_SUCH_ANSWER = "This answer does not exist. / 这条回答不存在。"
THUMBS_INVALID = "Rate the answer with thumbs up or down. / 请用“赞”或“踩”评价这条回答。"
COMMENT_INVALID = (
    f"The comment must be text of at most {FEEDBACK_COMMENT_LENGTH} characters. "
    f"/ 评论须为不超过 {FEEDBACK_COMMENT_LENGTH} 个字符的文字。"
)


def _thumbs(value: object) -> Thumbs:
    if isinstance(value, Thumbs):
        return value
    if isinstance(value, str) and value in {t.value for t in Thumbs}:
        return Thumbs(value)
    raise InvalidInput("thumbs must be 'up' or 'down'", user_message=THUMBS_INVALID)


def _comment(value: object) -> str | None:
    """The comment, stripped; None when there is none."""
    if value is None:
        return None
    if not isinstance(value, str) or len(value.strip()) > FEEDBACK_COMMENT_LENGTH:
        raise InvalidInput("comment is not text or too long", user_message=COMMENT_INVALID)
    return value.strip() or None


def _answer_for(session, message_id: int, user_id: int, *, write: bool) -> Message:
    message = session.get(Message, message_id)
    if message is None:
        raise NotFound(f"message {message_id} does not exist", user_message=NO_SUCH_ANSWER)
    access_consultation(session, message.consultation_id, user_id, write=write, lock=write)
    if message.role is not MessageRole.ASSISTANT:
        raise InvalidInput(f"message {message_id} is not an answer", user_message=NOT_AN_ANSWER)
    return message


def set_feedback(
    db: Database,
    message_id: int,
    user_id: int,
    thumbs: Thumbs | str,
    comment: str | None = None,
) -> FeedbackRecord:
    """Rate the answer `message_id` as `user_id` (its consultation's owner): insert the
    user's feedback on it, or change it if there is one. An empty comment is stored as None."""
    rating, text = _thumbs(thumbs), _comment(comment)
    with db.transaction() as session:
        # the consultation row is locked (write): two ratings of one answer cannot both insert
        _answer_for(session, message_id, user_id, write=True)
        row = session.scalar(
            select(AnswerFeedback)
            .where(AnswerFeedback.message_id == message_id)
            .where(AnswerFeedback.user_id == user_id)
        )
        now = utcnow()
        if row is None:
            row = AnswerFeedback(message_id=message_id, user_id=user_id, created_at=now)
            session.add(row)
        row.thumbs, row.comment, row.updated_at = rating, text, now
        session.flush()
        record = from_row(FeedbackRecord, row)
    logger.info("feedback on answer id={} by user id={}: {}{}", message_id, user_id,
                rating.value, " with comment" if text else "")  # fmt: skip
    return record


def get_feedback(db: Database, message_id: int, user_id: int) -> FeedbackRecord | None:
    """`user_id`'s own feedback on the answer, if any (the user must be able to read it)."""
    with db.transaction(write=False) as session:
        _answer_for(session, message_id, user_id, write=False)
        row = session.scalar(
            select(AnswerFeedback)
            .where(AnswerFeedback.message_id == message_id)
            .where(AnswerFeedback.user_id == user_id)
        )
        return from_row(FeedbackRecord, row) if row is not None else None
