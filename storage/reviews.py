"""Second opinions: a voted compare turn is assigned to another annotator for an independent vote.

The leaderboard's agreement between annotators (training/leaderboard.py `agreement`) needs
turns voted by several people. A comparison's turns are voted by their creator; this module
hands an annotator (or admin) who asks for one a turn someone else made and voted on, so that
they judge the same context and the same two stored answers (blind, sides as stored). The
assignment is the reviewer's permission (storage.access): they read that turn and vote on it
(storage.votes, the ordinary vote row, time to vote counted from the assignment) — no answers
regenerated, no continuing, no keeping.

Which turn: the reviewer's pending assignment (assigned, not yet voted) if there is one, so a
reload shows the same turn; else the turn with the fewest annotators on it (voters plus pending
reviewers), then the oldest, among turns that

- were compared on a case, a logged consultation or a typed turn (by an annotator or admin:
  `storage.access.may_start_comparison`), never a clinician's own consultation;
- have both answers ended on their own (stop or length) and at least one vote;
- were not made, voted on or already assigned to this reviewer.

Two calls by the same reviewer at once make one assignment: the reviewer's user row is locked
for the transaction (PostgreSQL `FOR NO KEY UPDATE`; SQLite writers are serialised by
`Database`), and `UNIQUE(turn_id, reviewer_id)` is the backstop: the loser gets the winner's turn.

    turn = assign_review(db, ann2.id)       # None: nothing to review yet
    record_vote(db, turn.id, ann2.id, ..., idempotency_key=key)
"""

from __future__ import annotations

from loguru import logger
from sqlalchemy import Exists, exists, func, select, union
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from storage.access import ANNOTATING_ROLES
from storage.compare import _turn_record
from storage.db import Database
from storage.errors import PermissionDenied
from storage.i18n import bilingual
from storage.models import (
    CompareReview,
    CompareSource,
    Comparison,
    ComparisonResponse,
    ComparisonTurn,
    User,
    Vote,
    utcnow,
)
from storage.records import CompareTurnRecord
from storage.votes import JUDGEABLE

#: Comparisons whose turns get second opinions: everything but clinician compare mode (a
#: clinician's pick in their own consultation is theirs alone, and its context is private).
REVIEWABLE_SOURCES = (CompareSource.CASE, CompareSource.LOG, CompareSource.AD_HOC)

MESSAGES = {
    "role": {
        "en": "Only annotators and administrators give second opinions.",
        "zh-CN": "只有标注员和管理员可以进行复核。",
    },
}


def _reviewer(session: Session, user_id: int) -> User:
    """The user, locked for this transaction, if an active annotator or admin."""
    user = session.scalar(select(User).where(User.id == user_id).with_for_update(key_share=True))
    if user is None or not user.active:
        raise PermissionDenied(f"user {user_id} is unknown or inactive")
    if user.role not in ANNOTATING_ROLES:
        logger.warning("user id={} denied a second opinion", user_id)
        raise PermissionDenied(f"user {user_id} ({user.role.value}) may not review",
                               user_message=bilingual(MESSAGES["role"]))  # fmt: skip
    return user


def _voted_by(user_id: int) -> Exists:
    """EXISTS: the user voted on the ComparisonTurn of the enclosing query."""
    return exists(select(Vote.id).where(Vote.turn_id == ComparisonTurn.id)
                  .where(Vote.voter_id == user_id))  # fmt: skip


def _pending(session: Session, user_id: int) -> ComparisonTurn | None:
    """The reviewer's oldest assignment they have not voted on yet."""
    return session.scalar(
        select(ComparisonTurn)
        .join(CompareReview, CompareReview.turn_id == ComparisonTurn.id)
        .where(CompareReview.reviewer_id == user_id)
        .where(~_voted_by(user_id))
        .order_by(CompareReview.assigned_at, CompareReview.id)
        .limit(1)
    )  # fmt: skip


def _next_turn(session: Session, user_id: int) -> ComparisonTurn | None:
    """The reviewable turn with the fewest annotators on it (then the oldest), or None."""
    people = union(
        select(Vote.turn_id.label("turn_id"), Vote.voter_id.label("user_id")),
        select(CompareReview.turn_id.label("turn_id"), CompareReview.reviewer_id.label("user_id")),
    ).subquery()
    load = (select(people.c.turn_id, func.count().label("n"))
            .group_by(people.c.turn_id).subquery())  # fmt: skip
    ended = (select(ComparisonResponse.turn_id)
             .where(ComparisonResponse.finish_reason.in_(JUDGEABLE))
             .group_by(ComparisonResponse.turn_id).having(func.count() == 2))  # fmt: skip
    mine = exists(select(CompareReview.id).where(CompareReview.turn_id == ComparisonTurn.id)
                  .where(CompareReview.reviewer_id == user_id))  # fmt: skip
    return session.scalar(
        select(ComparisonTurn)
        .join(Comparison, Comparison.id == ComparisonTurn.comparison_id)
        .join(load, load.c.turn_id == ComparisonTurn.id)
        .where(Comparison.source.in_(REVIEWABLE_SOURCES))
        .where(Comparison.creator_id != user_id)
        .where(ComparisonTurn.id.in_(ended))
        .where(exists(select(Vote.id).where(Vote.turn_id == ComparisonTurn.id)))
        .where(~_voted_by(user_id))
        .where(~mine)
        .order_by(load.c.n, ComparisonTurn.created_at, ComparisonTurn.id)
        .limit(1)
    )  # fmt: skip


def assign_review(db: Database, user_id: int) -> CompareTurnRecord | None:
    """The turn `user_id` is to give a second opinion on (their pending one, else a new
    assignment), with its stored answers; None when nothing is left to review.

    PermissionDenied for a clinician (bilingual message) or an inactive user. The record
    carries the variant ids of both sides: callers show them only after the vote.
    """
    new = False
    with db.transaction() as session:
        _reviewer(session, user_id)
        turn = _pending(session, user_id)
        if turn is None:
            turn = _next_turn(session, user_id)
            if turn is None:
                logger.info("user id={}: nothing to review", user_id)
                return None
            try:
                with session.begin_nested():
                    session.add(CompareReview(turn_id=turn.id, reviewer_id=user_id,
                                              assigned_at=utcnow()))  # fmt: skip
                    session.flush()
                new = True
            except IntegrityError:
                # the same reviewer's other request assigned it at this moment: take theirs
                turn = _pending(session, user_id)
                if turn is None:
                    raise
        record = _turn_record(session, turn)
    logger.info("user id={} reviews compare turn id={}{}", user_id, record.id,
                " (new assignment)" if new else "")  # fmt: skip
    return record
