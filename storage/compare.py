"""Comparisons: two model variants answer one question side by side, blind.

A comparison is one compare session (who, from which context, prompt language). Each of its
turns is one question answered by two variants under a blind side assignment (A/B), with a
snapshot of exactly what the models were sent (storage/compare_context.py). Writes run in one
transaction each and follow `storage.access` (the creator writes: annotators and admins on
cases and typed questions, a clinician in their own consultation). Answers are recorded once
per side however they ended; once voted (storage/votes.py), the kept answer becomes the next
turn's history, and in clinician mode the consultation's answer.

    turn = create_comparison(db, ann.id, "case", case_id=7, variant_a_id=2, variant_b_id=1)
    record_response(db, turn.id, ann.id, "a", text, sampling_params=..., finish_reason="stop")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from loguru import logger
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.access import (
    access_compare_turn,
    access_comparison,
    may_read_cases,
    may_start_comparison,
)
from storage.attachments import attachments_by_id
from storage.checks import as_enum, bounded_text, json_object, optional_count
from storage.compare_context import (
    Question,
    content_sha256,
    context_item,
    from_case,
    from_consultation,
    typed_question,
)
from storage.db import Database
from storage.errors import Conflict, InvalidInput, NotFound
from storage.i18n import LANGUAGES, bilingual
from storage.messages import (
    MAX_MESSAGE_CHARS,
    MAX_SAMPLING_PARAMS_CHARS,
    _append,
    _current_leaf,
)
from storage.models import (
    ERROR_LENGTH,
    CompareSource,
    CompareTurnState,
    Comparison,
    ComparisonResponse,
    ComparisonTurn,
    ComparisonTurnAttachment,
    Consultation,
    FinishReason,
    Message,
    MessageAttachment,
    MessageRole,
    ModelVariant,
    Side,
    utcnow,
)
from storage.records import (
    CompareTurnRecord,
    ComparisonRecord,
    NewAttachment,
    ResponseRecord,
    from_row,
)

MESSAGES = {
    "same_variant": {
        "en": "A comparison needs two different model variants.",
        "zh-CN": "比较需要两个不同的模型版本。",
    },
    "answered_already": {
        "en": "This side's answer is recorded already.",
        "zh-CN": "该侧的回答已经记录。",
    },
    "not_voted": {
        "en": "Vote on both answers before the conversation goes on.",
        "zh-CN": "请先对两个回答投票，再继续对话。",
    },
    "kept_other": {
        "en": "The conversation already continues with the other answer.",
        "zh-CN": "对话已经以另一个回答继续。",
    },
    "empty_answer": {
        "en": "This answer is empty; the conversation cannot continue with it.",
        "zh-CN": "该回答为空，无法以它继续对话。",
    },
    "moved_on": {
        "en": "This comparison has gone on since; continue from its last turn.",
        "zh-CN": "该比较已经继续进行，请从最后一轮继续。",
    },
    "not_kept": {
        "en": "Choose the answer the conversation continues with first.",
        "zh-CN": "请先选择对话要继续使用的回答。",
    },
    "consultation_changed": {
        "en": "The consultation changed since these answers were written; compare again.",
        "zh-CN": "这些回答生成后会诊已有变化，请重新比较。",
    },
    "no_new_question": {
        "en": "Add the next question to the consultation first.",
        "zh-CN": "请先在会诊中添加下一个问题。",
    },
    "language": {
        "en": "Unknown prompt language.",
        "zh-CN": "未知的提示语言。",
    },
}


#: Sources whose comparison names a consultation (clinician mode writes into it; a log only reads).
CONSULTATION_SOURCES = (CompareSource.CONSULTATION, CompareSource.LOG)

def _say(key: str, **fields: object) -> str:
    return bilingual(MESSAGES[key], **fields)


def _check_variants(session: Session, variant_a_id: int, variant_b_id: int) -> None:
    if variant_a_id == variant_b_id:
        raise InvalidInput("the same variant on both sides", user_message=_say("same_variant"))
    for variant_id in (variant_a_id, variant_b_id):
        if session.get(ModelVariant, variant_id) is None:
            raise NotFound(f"model variant {variant_id} does not exist")


def _add_turn(session: Session, comparison: Comparison, question: Question,
              variant_a_id: int, variant_b_id: int) -> ComparisonTurn:  # fmt: skip
    position = session.scalar(select(func.max(ComparisonTurn.position))
                              .where(ComparisonTurn.comparison_id == comparison.id))  # fmt: skip
    turn = ComparisonTurn(
        comparison_id=comparison.id, position=(position or 0) + 1,
        state=CompareTurnState.ANSWERING, context=question.context,
        context_sha256=content_sha256(comparison.language, question.context),
        prompt_text=question.text, prompt_message_id=question.message_id,
        prompt_case_turn_id=question.case_turn_id, reference_answer=question.reference,
        variant_a_id=variant_a_id, variant_b_id=variant_b_id, created_at=utcnow(),
    )  # fmt: skip
    session.add(turn)
    session.flush()
    session.add_all(ComparisonTurnAttachment(turn_id=turn.id, attachment_id=attachment_id,
                                             position=i)
                    for i, (attachment_id, _) in enumerate(question.files))  # fmt: skip
    session.flush()
    return turn


def create_comparison(
    db: Database,
    creator_id: int,
    source: CompareSource | str,
    *,
    variant_a_id: int,
    variant_b_id: int,
    language: str = "en",
    case_id: int | None = None,
    case_turn: int | None = None,
    consultation_id: int | None = None,
    message_id: int | None = None,
    prompt_text: str | None = None,
    prompt_attachments: Sequence[NewAttachment] = (),
) -> CompareTurnRecord:
    """Start a comparison and its first turn (state `answering`); returns the turn.

    `source` "case": `case_id`, and `case_turn` (1, 2, ...; default its last turn) is the
    question, the turns before it with their reference answers the history. "consultation":
    the creator's own consultation, its last (clinician's) message the question. "log": a
    logged consultation up to `message_id` (a clinician's message), read only. "ad_hoc":
    `prompt_text` and `prompt_attachments` (already through intake). Raises PermissionDenied,
    NotFound, InvalidInput; nothing is written then.
    """
    source = as_enum(CompareSource, source, "comparison source")
    if language not in LANGUAGES:
        raise InvalidInput(f"language {language!r}", user_message=_say("language"))
    with db.transaction() as session:
        may_start_comparison(session, creator_id, source, consultation_id)
        _check_variants(session, variant_a_id, variant_b_id)
        if source is CompareSource.CASE:
            if case_id is None:
                raise InvalidInput("a case comparison needs a case id")
            question = from_case(session, case_id, case_turn)
        elif source is CompareSource.CONSULTATION:
            question = from_consultation(session, consultation_id)
        elif source is CompareSource.LOG:
            if message_id is None:
                raise InvalidInput("a logged-consultation comparison needs a message id")
            question = from_consultation(session, consultation_id, up_to=message_id)
        else:
            question = typed_question(session, [], prompt_text, prompt_attachments)
        comparison = Comparison(
            creator_id=creator_id, source=source, language=language, created_at=utcnow(),
            case_id=case_id if source is CompareSource.CASE else None,
            consultation_id=consultation_id if source in CONSULTATION_SOURCES else None,
            up_to_message_id=question.message_id,
        )  # fmt: skip
        session.add(comparison)
        session.flush()
        turn = _add_turn(session, comparison, question, variant_a_id, variant_b_id)
        record = _turn_record(session, turn)
    logger.info("comparison id={} ({}) started by user id={}: turn id={} variants {} vs {}",
                record.comparison_id, source.value, creator_id, record.id, variant_a_id,
                variant_b_id)  # fmt: skip
    return record


def add_compare_turn(
    db: Database,
    previous_turn_id: int,
    user_id: int,
    *,
    variant_a_id: int,
    variant_b_id: int,
    prompt_text: str | None = None,
    prompt_attachments: Sequence[NewAttachment] = (),
) -> CompareTurnRecord:
    """The comparison's next turn, after `previous_turn_id` (its last turn, whose kept answer
    is now shared history).

    Case and typed comparisons: `prompt_text`/`prompt_attachments` are the next question.
    Clinician mode: the next question is already the consultation's last message (stored
    with `add_user_message`); the snapshot is the consultation's current path.
    """
    with db.transaction() as session:
        # the previous turn's lock serialises two continuations of it: the second one finds
        # that the comparison went on
        previous, comparison = access_compare_turn(session, previous_turn_id, user_id,
                                                   write=True, lock=True)  # fmt: skip
        last = session.scalar(select(func.max(ComparisonTurn.position))
                              .where(ComparisonTurn.comparison_id == comparison.id))  # fmt: skip
        if previous.position != last:
            raise Conflict(f"turn {previous.id} is not the last", user_message=_say("moved_on"))
        if previous.kept_side is None:
            raise InvalidInput(f"turn {previous.id} has no kept answer", user_message=_say("not_kept"))
        _check_variants(session, variant_a_id, variant_b_id)
        if comparison.source is CompareSource.CONSULTATION:
            question = from_consultation(session, comparison.consultation_id)
            if question.message_id == previous.prompt_message_id:
                raise InvalidInput("no new question", user_message=_say("no_new_question"))
        else:
            kept = _response(session, previous.id, previous.kept_side)
            asked = previous.context["prompt"]
            history = [
                *previous.context["history"],
                {**asked, "ref": {"comparison_turn": previous.id}},
                context_item(MessageRole.ASSISTANT, {"comparison_response": kept.id}, kept.text),
            ]
            question = typed_question(session, history, prompt_text, prompt_attachments)
        turn = _add_turn(session, comparison, question, variant_a_id, variant_b_id)
        record = _turn_record(session, turn)
    logger.info("comparison id={}: turn id={} (position {}) after turn id={}",
                record.comparison_id, record.id, record.position, previous_turn_id)  # fmt: skip
    return record


# --- answers ------------------------------------------------------------------------------


def _response(session: Session, turn_id: int, side: Side) -> ComparisonResponse:
    response = session.scalar(select(ComparisonResponse).where(ComparisonResponse.turn_id == turn_id)
                              .where(ComparisonResponse.side == side))  # fmt: skip
    if response is None:
        raise NotFound(f"turn {turn_id} has no answer on side {side.value}")
    return response


def record_response(
    db: Database,
    turn_id: int,
    user_id: int,
    side: Side | str,
    text: str,
    *,
    sampling_params: dict[str, Any] | None,
    finish_reason: FinishReason | str,
    error: str | None = None,
    latency_ms: int | None = None,
    first_token_ms: int | None = None,
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
) -> CompareTurnRecord:
    """Record one side's answer, however it ended (once per side: Conflict after that).

    The variant is the turn's for that side. When both sides are in, the turn is `answered`.
    """
    side = as_enum(Side, side, "side")
    bounded_text(text, "answer", MAX_MESSAGE_CHARS, allow_empty=True)
    reason = as_enum(FinishReason, finish_reason, "finish_reason")
    params = json_object(sampling_params, "sampling_params", MAX_SAMPLING_PARAMS_CHARS)
    counts = {name: optional_count(value, name) for name, value in (
        ("latency_ms", latency_ms), ("first_token_ms", first_token_ms),
        ("prompt_tokens", prompt_tokens), ("completion_tokens", completion_tokens))}  # fmt: skip
    if error is not None and len(str(error)) > ERROR_LENGTH:
        error = str(error)[: ERROR_LENGTH - 1] + "…"
    with db.transaction() as session:
        turn, _ = access_compare_turn(session, turn_id, user_id, write=True, lock=True)
        present = set(session.scalars(select(ComparisonResponse.side)
                                      .where(ComparisonResponse.turn_id == turn_id)))  # fmt: skip
        if side in present:
            raise Conflict(f"turn {turn_id} side {side.value} recorded", user_message=_say("answered_already"))
        session.add(ComparisonResponse(
            turn_id=turn_id, side=side, variant_id=turn.variant_a_id if side is Side.A
            else turn.variant_b_id, text=text, sampling_params=params, finish_reason=reason,
            error=None if error is None else str(error), finished_at=utcnow(), **counts))  # fmt: skip
        if present | {side} == {Side.A, Side.B}:
            turn.state = CompareTurnState.ANSWERED
        session.flush()
        record = _turn_record(session, turn)
    logger.info("compare turn id={}: side {} recorded ({})", turn_id, side.value, reason.value)
    return record


def keep_response(db: Database, turn_id: int, user_id: int, side: Side | str) -> CompareTurnRecord:
    """Make side `side`'s answer the shared history the comparison continues with (after the
    vote; once: the same side again is a no-op, the other side is a Conflict).

    Clinician mode: the answer is stored in the consultation as its answer to the question
    (with its variant, sampling and timings), in the same transaction.
    """
    side = as_enum(Side, side, "side")
    with db.transaction() as session:
        turn, comparison = access_compare_turn(session, turn_id, user_id, write=True, lock=True)
        if turn.kept_side is not None:
            if turn.kept_side is not side:
                raise Conflict(f"turn {turn_id} kept {turn.kept_side.value}",
                               user_message=_say("kept_other"))  # fmt: skip
            return _turn_record(session, turn)
        if turn.state is not CompareTurnState.VOTED:
            raise InvalidInput(f"turn {turn_id} is {turn.state.value}", user_message=_say("not_voted"))
        kept = _response(session, turn_id, side)
        if not kept.text.strip():
            raise InvalidInput(f"turn {turn_id} side {side.value} is empty",
                               user_message=_say("empty_answer"))  # fmt: skip
        if comparison.source is CompareSource.CONSULTATION:
            turn.kept_message_id = _store_in_consultation(session, comparison, turn, kept, user_id)
        turn.kept_side = side
        session.flush()
        record = _turn_record(session, turn)
    logger.info("compare turn id={}: continues with side {}{}", turn_id, side.value,
                f" as message id={record.kept_message_id}" if record.kept_message_id else "")  # fmt: skip
    return record


def _store_in_consultation(session: Session, comparison: Comparison, turn: ComparisonTurn,
                           kept: ComparisonResponse, user_id: int) -> int:  # fmt: skip
    consultation = session.get(Consultation, comparison.consultation_id)
    # the write rule was checked (and the row locked) by access_compare_turn
    if turn.prompt_message_id is None or _current_leaf(session, consultation.id) != turn.prompt_message_id:
        raise Conflict(f"consultation {consultation.id} moved on",
                       user_message=_say("consultation_changed"))  # fmt: skip
    message = _append(session, consultation, Message(
        role=MessageRole.ASSISTANT, text=kept.text, model_variant_id=kept.variant_id,
        sampling_params=kept.sampling_params, latency_ms=kept.latency_ms,
        first_token_ms=kept.first_token_ms, prompt_tokens=kept.prompt_tokens,
        completion_tokens=kept.completion_tokens, finish_reason=kept.finish_reason,
        error=kept.error), turn.prompt_message_id)  # fmt: skip
    return message.id


# --- reading ------------------------------------------------------------------------------


def _turn_record(session: Session, turn: ComparisonTurn) -> CompareTurnRecord:
    responses = session.scalars(select(ComparisonResponse).where(ComparisonResponse.turn_id == turn.id)
                                .order_by(ComparisonResponse.side))  # fmt: skip
    links = list(session.scalars(
        select(ComparisonTurnAttachment.attachment_id)
        .where(ComparisonTurnAttachment.turn_id == turn.id)
        .order_by(ComparisonTurnAttachment.position)))  # fmt: skip
    loaded = attachments_by_id(session, links, with_png=False)
    return from_row(CompareTurnRecord, turn,
                    responses=tuple(from_row(ResponseRecord, r) for r in responses),
                    attachments=tuple(replace(loaded[a], position=i) for i, a in enumerate(links)))  # fmt: skip


def get_comparison(db: Database, comparison_id: int, *, user_id: int) -> ComparisonRecord:
    """The comparison, if `user_id` may read it (creator, voter, admin)."""
    with db.transaction(write=False) as session:
        return from_row(ComparisonRecord, access_comparison(session, comparison_id, user_id, write=False))


def get_compare_turn(db: Database, turn_id: int, *, user_id: int) -> CompareTurnRecord:
    """The turn with its answers so far and its question's files (no image bytes).

    It carries the variant ids of both sides: callers show them only after the vote.
    """
    with db.transaction(write=False) as session:
        turn, _ = access_compare_turn(session, turn_id, user_id, write=False)
        return _turn_record(session, turn)


def list_compare_turns(db: Database, comparison_id: int, *, user_id: int) -> list[CompareTurnRecord]:
    """The comparison's turns in order."""
    with db.transaction(write=False) as session:
        access_comparison(session, comparison_id, user_id, write=False)
        turns = session.scalars(select(ComparisonTurn).where(ComparisonTurn.comparison_id == comparison_id)
                                .order_by(ComparisonTurn.position))  # fmt: skip
        return [_turn_record(session, t) for t in turns]


# --- the log annotators compare on --------------------------------------------------------

#: Characters of a logged question shown in the picker: enough to recognise it.
LOG_PREVIEW_CHARS = 120


@dataclass(frozen=True)
class LoggedQuestion:
    """A clinician's message in a logged consultation, as an annotator picks it to compare on
    (`create_comparison(..., "log", consultation_id=, message_id=)`). Never who wrote it."""

    consultation_id: int
    message_id: int
    turn: int
    """1 for the consultation's first question, 2 for the next, ..."""
    asked_at: datetime
    preview: str
    files: int


def logged_questions(db: Database, user_id: int, *, limit: int = 200) -> list[LoggedQuestion]:
    """The clinicians' questions annotators and admins may compare on, newest first: every
    question on the current path of a consultation its owner has not deleted."""
    with db.transaction(write=False) as session:
        may_read_cases(session, user_id)
        files = (select(MessageAttachment.message_id, func.count().label("n"))
                 .group_by(MessageAttachment.message_id).subquery())  # fmt: skip
        rows = session.execute(
            select(Message, func.coalesce(files.c.n, 0))
            .join(Consultation, Consultation.id == Message.consultation_id)
            .outerjoin(files, files.c.message_id == Message.id)
            .where(Consultation.deleted_at.is_(None))
            .where(Message.superseded.is_(False))
            .where(Message.role == MessageRole.USER)
            .order_by(Message.created_at.desc(), Message.id.desc())
            .limit(limit)
        ).all()  # fmt: skip
        turns = _question_numbers(session, {m.consultation_id for m, _ in rows})
        return [LoggedQuestion(m.consultation_id, m.id, turns[m.id], m.created_at,
                               _preview(m.text), n) for m, n in rows]  # fmt: skip


def _question_numbers(session: Session, consultation_ids: set[int]) -> dict[int, int]:
    """Message id -> its number among its consultation's questions on the current path."""
    numbers: dict[int, int] = {}
    counts: dict[int, int] = {}
    for mid, cid in session.execute(
        select(Message.id, Message.consultation_id)
        .where(Message.consultation_id.in_(consultation_ids))
        .where(Message.superseded.is_(False)).where(Message.role == MessageRole.USER)
        .order_by(Message.consultation_id, Message.seq)
    ):  # fmt: skip
        counts[cid] = numbers[mid] = counts.get(cid, 0) + 1
    return numbers


def _preview(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= LOG_PREVIEW_CHARS else line[: LOG_PREVIEW_CHARS - 1] + "…"
