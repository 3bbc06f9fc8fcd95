"""Votes: a voter's judgement of a compare turn's two answers, kept exactly once.

A vote says, for each of the four dimensions (proactiveness, accuracy, usefulness,
language quality), which answer was better (A, B or tie), plus an overall verdict (A, B,
tie, both bad), a safety flag per side and an optional comment. It is written in one
transaction, after checking:

- the voter may write the comparison (`storage.access`: its creator; annotators and admins
  on cases and typed questions, a clinician in their own consultation), or was assigned the
  turn for a second opinion (storage/reviews.py; their time to vote counts from then);
- both answers were recorded and ended on their own (stop or length): an answer that failed,
  was cut off or cancelled, or is missing, cannot be judged;
- the values are valid (InvalidInput with a message naming the field); the four dimensions
  are required, except in clinician compare mode (a comparison inside a consultation), where
  the clinician's overall pick is enough and an unrated dimension is stored as NULL.

Exactly once: the client sends an idempotency key with each vote (one per vote it means to
cast, reused for retries and double clicks). A replay with the same key returns the stored
vote; a different vote by the same voter on the same turn is a Conflict (votes are never
changed); `UNIQUE(turn_id, voter_id)` and `UNIQUE(idempotency_key)` are the backstop when
two requests race (PostgreSQL; SQLite writers are serialised by `Database`): the loser of the
race gets the winner's outcome, not a database error.

    vote = record_vote(db, turn.id, ann.id, proactiveness="a", accuracy="tie",
                       usefulness="a", language_quality="b", overall="a",
                       idempotency_key=str(uuid.uuid4()))
    reveal(db, turn.id, ann.id)      # {Side.A: VariantRecord, Side.B: ...}, after the vote
"""

from __future__ import annotations

import re
from typing import Any

from loguru import logger
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.access import access_compare_turn
from storage.checks import as_enum
from storage.db import Database
from storage.errors import Conflict, InvalidInput, PermissionDenied
from storage.i18n import bilingual
from storage.models import (
    IDEMPOTENCY_KEY_LENGTH,
    CompareReview,
    CompareSource,
    CompareTurnState,
    ComparisonResponse,
    FinishReason,
    ModelVariant,
    Overall,
    Preference,
    Side,
    User,
    UserRole,
    Vote,
    utcnow,
)
from storage.records import VariantRecord, VoteRecord, from_row

#: The four dimensions of the PulseMind method, in the order the UI shows them.
DIMENSIONS = ("proactiveness", "accuracy", "usefulness", "language_quality")
#: A comment is a few sentences about the answers, not a third answer.
MAX_COMMENT_CHARS = 5000
#: 8 to 64 characters: letters, digits, '-', '_', '.', ':' (a UUID fits).
IDEMPOTENCY_KEY_PATTERN = re.compile(rf"^[A-Za-z0-9][A-Za-z0-9_.:-]{{7,{IDEMPOTENCY_KEY_LENGTH - 1}}}$")
#: Only answers that ended on their own can be judged.
JUDGEABLE = (FinishReason.STOP, FinishReason.LENGTH)

FIELD_NAMES = {
    "proactiveness": {"en": "proactiveness", "zh-CN": "主动性"},
    "accuracy": {"en": "accuracy", "zh-CN": "准确性"},
    "usefulness": {"en": "usefulness", "zh-CN": "实用性"},
    "language_quality": {"en": "language quality", "zh-CN": "语言质量"},
    "overall": {"en": "the overall verdict", "zh-CN": "总体评价"},
}
MESSAGES = {
    "dimension": {
        "en": "Choose A, B or tie for {field[en]}.",
        "zh-CN": "请为{field[zh-CN]}选择 A、B 或平局。",
    },
    "overall": {
        "en": "Choose A, B, tie or both bad for the overall verdict.",
        "zh-CN": "请为总体评价选择 A、B、平局或都不好。",
    },
    "flag": {
        "en": "The safety flags must be yes or no.",
        "zh-CN": "安全标记只能是“是”或“否”。",
    },
    "comment": {
        "en": "The comment is too long (at most {limit} characters).",
        "zh-CN": "评论过长（最多 {limit} 个字符）。",
    },
    "key": {
        "en": "This vote cannot be sent (its request key is missing or malformed); reload "
        "the page and vote again.",
        "zh-CN": "无法提交此投票（请求标识缺失或格式错误），请刷新页面后重新投票。",
    },
    "already_voted": {
        "en": "You have already voted on these two answers; a vote cannot be changed.",
        "zh-CN": "您已对这两个回答投过票，投票不能修改。",
    },
    "key_reused": {
        "en": "This vote was already sent with different choices; reload the page.",
        "zh-CN": "此投票已以不同的选择提交过，请刷新页面。",
    },
    "not_finished": {
        "en": "Both answers must be complete before you vote; this pair cannot be judged "
        "(an answer failed, was cut off or stopped).",
        "zh-CN": "两个回答都完整后才能投票；这一对无法评判（有回答失败、被截断或被停止）。",
    },
    "not_revealed": {
        "en": "The models are shown after your vote.",
        "zh-CN": "投票后才会显示模型名称。",
    },
}


def _say(key: str, **fields: object) -> str:
    return bilingual(MESSAGES[key], **fields)


def _choices(
    proactiveness: object, accuracy: object, usefulness: object, language_quality: object,
    overall: object, safety_flag_a: object, safety_flag_b: object, comment: object,
) -> dict[str, Any]:  # fmt: skip
    """The vote's values, checked and normalised; InvalidInput naming the field."""
    values: dict[str, Any] = {}
    given = dict(zip(DIMENSIONS, (proactiveness, accuracy, usefulness, language_quality), strict=True))
    for name, value in given.items():
        if value is None or value == "":
            values[name] = None  # not rated: allowed in clinician mode only (record_vote)
            continue
        try:
            values[name] = as_enum(Preference, value, name)
        except InvalidInput as exc:
            raise InvalidInput(exc.detail, user_message=_say("dimension", field=FIELD_NAMES[name])) from None
    try:
        values["overall"] = as_enum(Overall, overall, "overall")
    except InvalidInput as exc:
        raise InvalidInput(exc.detail, user_message=_say("overall")) from None
    for name, flag in (("safety_flag_a", safety_flag_a), ("safety_flag_b", safety_flag_b)):
        if not isinstance(flag, bool):
            raise InvalidInput(f"{name} must be a bool", user_message=_say("flag"))
        values[name] = flag
    if comment is not None and not isinstance(comment, str):
        raise InvalidInput("comment must be text", user_message=_say("comment", limit=MAX_COMMENT_CHARS))
    if isinstance(comment, str) and len(comment) > MAX_COMMENT_CHARS:
        raise InvalidInput(f"comment has {len(comment)} characters",
                           user_message=_say("comment", limit=MAX_COMMENT_CHARS))  # fmt: skip
    values["comment"] = comment.strip() or None if isinstance(comment, str) else None
    return values


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not IDEMPOTENCY_KEY_PATTERN.fullmatch(key):
        raise InvalidInput("malformed idempotency key", user_message=_say("key"))
    return key


def _same(vote: Vote, turn_id: int, voter_id: int, values: dict[str, Any]) -> bool:
    return (vote.turn_id, vote.voter_id) == (turn_id, voter_id) and all(
        getattr(vote, name) == value for name, value in values.items()
    )


def _existing(session: Session, turn_id: int, voter_id: int, key: str,
              values: dict[str, Any]) -> Vote | None:  # fmt: skip
    """The vote this request repeats (same key, same choices), or None if there is none yet;
    Conflict if the key or the voter's vote on this turn belongs to a different vote."""
    by_key = session.scalar(select(Vote).where(Vote.idempotency_key == key))
    if by_key is not None:
        if _same(by_key, turn_id, voter_id, values):
            return by_key
        raise Conflict(f"idempotency key of vote {by_key.id} reused", user_message=_say("key_reused"))
    mine = session.scalar(select(Vote).where(Vote.turn_id == turn_id).where(Vote.voter_id == voter_id))
    if mine is not None:
        raise Conflict(f"user {voter_id} voted on turn {turn_id} (vote {mine.id})",
                       user_message=_say("already_voted"))  # fmt: skip
    return None


def record_vote(
    db: Database,
    turn_id: int,
    voter_id: int,
    *,
    proactiveness: Preference | str,
    accuracy: Preference | str,
    usefulness: Preference | str,
    language_quality: Preference | str,
    overall: Overall | str,
    safety_flag_a: bool = False,
    safety_flag_b: bool = False,
    comment: str | None = None,
    idempotency_key: str,
) -> VoteRecord:
    """Store the vote (one transaction) and return it; a replay returns the stored vote.

    Raises InvalidInput (malformed values, answers not both complete), PermissionDenied,
    NotFound, Conflict (a different vote by this voter on this turn, or the key reused for
    different choices). The turn becomes `voted`.
    """
    values = _choices(proactiveness, accuracy, usefulness, language_quality, overall,
                      safety_flag_a, safety_flag_b, comment)  # fmt: skip
    key = _check_key(idempotency_key)
    replayed = False
    with db.transaction() as session:
        # The turn's row lock serialises votes on one turn (PostgreSQL): a racing duplicate
        # waits here, then finds the vote that won.
        turn, comparison = access_compare_turn(session, turn_id, voter_id, write=True, lock=True,
                                               vote=True)  # fmt: skip
        unrated = [name for name in DIMENSIONS if values[name] is None]
        if unrated and comparison.source is not CompareSource.CONSULTATION:
            raise InvalidInput(f"dimension {unrated[0]} not rated",
                               user_message=_say("dimension", field=FIELD_NAMES[unrated[0]]))  # fmt: skip
        vote = _existing(session, turn_id, voter_id, key, values)
        if vote is not None:
            replayed = True
        else:
            responses = list(session.scalars(
                select(ComparisonResponse).where(ComparisonResponse.turn_id == turn_id)))  # fmt: skip
            if len(responses) != 2 or any(r.finish_reason not in JUDGEABLE for r in responses):
                ends = sorted(f"{r.side.value}={r.finish_reason.value}" for r in responses)
                raise InvalidInput(f"turn {turn_id} answers not both complete: {ends}",
                                   user_message=_say("not_finished"))  # fmt: skip
            now = utcnow()
            # a second opinion starts when the turn was assigned, not when its answers ended
            shown = session.scalar(select(CompareReview.assigned_at)
                                   .where(CompareReview.turn_id == turn_id)
                                   .where(CompareReview.reviewer_id == voter_id))  # fmt: skip
            shown = shown or max(r.finished_at for r in responses)
            vote = Vote(turn_id=turn_id, voter_id=voter_id, idempotency_key=key, created_at=now,
                        time_to_vote_ms=max(0, int((now - shown).total_seconds() * 1000)),
                        **values)  # fmt: skip
            try:
                with session.begin_nested():
                    session.add(vote)
                    session.flush()
            except IntegrityError:
                # The same key used on another turn at this moment (the turn lock does not
                # cover that): whatever won is the outcome.
                vote = _existing(session, turn_id, voter_id, key, values)
                if vote is None:
                    raise
                replayed = True
            turn.state = CompareTurnState.VOTED
        record = from_row(VoteRecord, vote)
    logger.info("vote id={} on compare turn id={} by user id={}{}", record.id, turn_id, voter_id,
                " (replay)" if replayed else "")  # fmt: skip
    return record


def get_vote(db: Database, turn_id: int, voter_id: int) -> VoteRecord | None:
    """The voter's vote on the turn, or None."""
    with db.transaction(write=False) as session:
        vote = session.scalar(select(Vote).where(Vote.turn_id == turn_id).where(Vote.voter_id == voter_id))
        return from_row(VoteRecord, vote) if vote is not None else None


def list_votes(db: Database, *, turn_id: int | None = None) -> list[VoteRecord]:
    """Votes in the order they were cast (all, or one turn's): for exports and leaderboards,
    whose callers check the role."""
    query = select(Vote).order_by(Vote.id)
    if turn_id is not None:
        query = query.where(Vote.turn_id == turn_id)
    with db.transaction(write=False) as session:
        return [from_row(VoteRecord, v) for v in session.scalars(query)]


def reveal(db: Database, turn_id: int, user_id: int) -> dict[Side, VariantRecord]:
    """Which variant answered on each side: for a reader of the turn who voted on it (admins
    always). PermissionDenied before the vote."""
    with db.transaction(write=False) as session:
        turn, _ = access_compare_turn(session, turn_id, user_id, write=False)
        voted = session.scalar(select(Vote.id).where(Vote.turn_id == turn_id)
                               .where(Vote.voter_id == user_id))  # fmt: skip
        if voted is None and session.get(User, user_id).role is not UserRole.ADMIN:
            raise PermissionDenied(f"user {user_id} has not voted on turn {turn_id}",
                                   user_message=_say("not_revealed"))  # fmt: skip
        ids = {Side.A: turn.variant_a_id, Side.B: turn.variant_b_id}
        return {side: from_row(VariantRecord, session.get(ModelVariant, ids[side])) for side in Side}
