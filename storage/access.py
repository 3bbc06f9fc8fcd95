"""Who may read and who may write what: PulseMind's one authorization rule.

    consultation  its owner reads and writes it; an admin reads any (never writes into
                  another's); nobody else does either; an inactive user does nothing
    deleted       (soft-deleted consultation) nobody writes it; only admins read it, and
                  only admins list deleted consultations; its owner is told it was deleted
    message       as its consultation (answers included: an admin's retry cannot supersede
                  a clinician's answer; choosing an answer's version is a write)
    feedback      on an answer, by whoever may write its consultation (its owner)
    attachment    (its derived images and text) whoever may read a consultation carrying it
    upload        a file in the server's upload cache, before it is an attachment: only the
                  user(s) who uploaded those bytes may use or read it; a path nobody uploaded
                  (the database, another user's upload, any server file) is no upload at all
    comparison    started by annotators and admins from a case or a typed patient turn, and by
                  a consultation's owner from it (clinician compare mode; never an annotator);
                  its creator writes it (answers, votes, continuing); its creator, whoever
                  voted in it and admins read it. An annotator reads no consultation: only
                  what a comparison shows (its cases' turns and its questions' files)
    second opinion  an annotator or admin assigned a voted turn of someone else's comparison
                  (storage.reviews) reads that turn (its context, both answers, its files)
                  and votes on it; nothing else (no answers, no keep, no next turn) until the
                  vote, after which they read the comparison as any voter does
    case          (imported consultations) annotators and admins read them
    training run  started, watched and stopped by admins only (a run started from the
                  command line, or its own training process, acts without a user)
    evaluation    benchmark runs and judge-clinician agreement: started and read by admins
                  only (they reveal which variant answered what; the command line acts
                  without a user)

Storage enforces the rule for every write (`access_consultation(..., write=True)` inside the
writing transaction); the app asks the same functions before it reads, and `Uploads` before
it opens, copies or hashes a file named in a request. Refusals raise `PermissionDenied` /
`NotFound`, logged with ids only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from loguru import logger
from sqlalchemy import exists, select
from sqlalchemy.orm import Session, aliased

from storage.errors import NotFound, PermissionDenied
from storage.models import (
    Attachment,
    CaseTurn,
    CaseTurnAttachment,
    CompareReview,
    CompareSource,
    Comparison,
    ComparisonTurn,
    ComparisonTurnAttachment,
    Consultation,
    Message,
    MessageAttachment,
    User,
    UserRole,
    Vote,
)
from storage.users import username_key

#: What the owner of a deleted consultation is told when it is asked for.
DELETED_MESSAGE = "This consultation was deleted. / 此会诊已删除。"
ADMINS_ONLY_MESSAGE = (
    "Only an administrator can see deleted consultations. / 只有管理员可以查看已删除的会诊。"
)


T = TypeVar("T")


def _row(session: Session, model: type[T], row_id: int, *, lock: bool) -> T | None:
    """The row of `model` with this id, locked until the transaction ends if `lock`
    (PostgreSQL `FOR UPDATE`; SQLite writers are serialised anyway)."""
    query = select(model).where(model.id == row_id)
    return session.scalar(query.with_for_update() if lock else query)


def active_user(session: Session, user_id: int) -> User:
    """The user row, if it exists and is active; PermissionDenied otherwise."""
    user = session.get(User, user_id)
    if user is None or not user.active:
        raise PermissionDenied(f"user {user_id} is unknown or inactive")
    return user


def access_consultation(
    session: Session, consultation_id: int, user_id: int, *, write: bool, lock: bool = False
) -> Consultation:
    """The consultation, if `user_id` may read it (`write=False`) or change it (`write=True`).

    NotFound if it does not exist, or (for its owner) was deleted; PermissionDenied if the
    user is not its owner (for reading: not its owner and not an admin). A deleted
    consultation is read by admins only and written by nobody. `lock=True` locks the row
    until the transaction ends (PostgreSQL `FOR UPDATE`; SQLite writers are serialised
    anyway), which serialises writers appending to the same consultation.
    """
    user = active_user(session, user_id)
    consultation = _row(session, Consultation, consultation_id, lock=lock)
    if consultation is None:
        raise NotFound(f"consultation {consultation_id} does not exist")
    deleted = consultation.deleted_at is not None
    if consultation.owner_id == user_id and not deleted:
        return consultation
    if not write and user.role is UserRole.ADMIN:
        return consultation
    if consultation.owner_id == user_id:
        raise NotFound(f"consultation {consultation_id} was deleted", user_message=DELETED_MESSAGE)
    logger.warning(
        "user id={} denied {} access to consultation id={}",
        user_id,
        "write" if write else "read",
        consultation_id,
    )
    raise PermissionDenied(f"user {user_id} may not access consultation {consultation_id}")


def require_admin(session: Session, user_id: int) -> User:
    """The user, if an active admin (who alone may list deleted consultations)."""
    user = active_user(session, user_id)
    if user.role is not UserRole.ADMIN:
        logger.warning("user id={} denied an admin-only listing", user_id)
        raise PermissionDenied(f"user {user_id} is not an admin", user_message=ADMINS_ONLY_MESSAGE)
    return user


def may_read_attachment(session: Session, user_id: int, attachment_id: int) -> bool:
    """True if the attachment exists and the user may read a consultation that carries it."""
    user = session.get(User, user_id)
    if user is None or not user.active or session.get(Attachment, attachment_id) is None:
        return False
    if user.role is UserRole.ADMIN:
        return True
    owned = exists(
        select(MessageAttachment.id)
        .join(Message, Message.id == MessageAttachment.message_id)
        .join(Consultation, Consultation.id == Message.consultation_id)
        .where(MessageAttachment.attachment_id == attachment_id)
        .where(Consultation.owner_id == user_id)
        .where(Consultation.deleted_at.is_(None))
    )
    return bool(session.scalar(select(owned))) or may_read_compared_attachment(
        session, user_id, attachment_id
    )


class Uploads:
    """Which user uploaded which file of the server's upload cache (in memory: the cache is
    per process too). The web server records each upload as it answers it; every other
    request that names a file is checked here first.

    Gradio files an upload under its content's hash, so two users who upload the same bytes
    share one path: both may use it. Usernames compare as stored (`users.username_key`).
    """

    def __init__(self) -> None:
        self._owners: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(path: str | Path) -> str:
        return str(Path(path).resolve())

    def add(self, username: str, paths: Iterable[str | Path]) -> None:
        with self._lock:
            for p in paths:
                self._owners.setdefault(self._key(p), set()).add(username_key(username))

    def allowed(self, username: str | None, path: object) -> bool:
        """True only for a path (str) that `username` uploaded."""
        if not username or not isinstance(path, str | Path) or not str(path).strip():
            return False
        try:
            key = self._key(path)
        except (OSError, ValueError, RuntimeError):  # NUL bytes, symlink loops: no upload
            return False
        with self._lock:
            return username_key(username) in self._owners.get(key, ())

    def require(self, username: str, path: object) -> str:
        """The path, if `username` uploaded it; PermissionDenied (with a plain message) if not."""
        if not self.allowed(username, path):
            logger.warning("refused a file the caller did not upload")
            raise PermissionDenied(
                "file not uploaded by the caller",
                user_message="Attach files by uploading them here first.",
            )
        return str(path)


# --- Compare: cases, comparisons, votes --------------------------------------------------

#: Who compares on cases and typed patient turns (and votes there).
ANNOTATING_ROLES = (UserRole.ANNOTATOR, UserRole.ADMIN)


def _denied(user_id: int, what: str) -> PermissionDenied:
    logger.warning("user id={} denied: {}", user_id, what)
    return PermissionDenied(f"user {user_id} may not {what}")


def may_read_cases(session: Session, user_id: int) -> User:
    """The user, if they may read imported cases (annotators, admins); PermissionDenied if not."""
    user = active_user(session, user_id)
    if user.role not in ANNOTATING_ROLES:
        raise _denied(user_id, "read cases")
    return user


def may_start_comparison(
    session: Session, user_id: int, source: CompareSource, consultation_id: int | None = None
) -> User:
    """The user, if they may start a comparison from `source`; PermissionDenied if not.

    Cases and typed turns: annotators and admins. A consultation: its owner only (clinician
    compare mode; the consultation row is locked as for any write into it). A logged
    consultation (`log`): annotators and admins, on any consultation its owner has not
    deleted; the comparison only reads it (its owner is never shown).
    """
    user = active_user(session, user_id)
    if source is CompareSource.CONSULTATION:
        if user.role is UserRole.ANNOTATOR or consultation_id is None:
            raise _denied(user_id, f"compare in consultation {consultation_id}")
        access_consultation(session, consultation_id, user_id, write=True, lock=True)
    elif user.role not in ANNOTATING_ROLES:
        raise _denied(user_id, f"start a {source.value} comparison")
    elif source is CompareSource.LOG:
        logged = _row(session, Consultation, consultation_id, lock=False) if consultation_id else None
        if logged is None or logged.deleted_at is not None:
            raise NotFound(f"consultation {consultation_id} is not in the log")
    return user


def access_comparison(
    session: Session, comparison_id: int, user_id: int, *, write: bool, lock: bool = False
) -> Comparison:
    """The comparison, if `user_id` may read it (`write=False`) or add to it (`write=True`:
    record answers, vote, continue).

    Writing: its creator only, while still allowed to start it (a clinician: while owning the
    consultation). Reading: its creator, whoever voted in it, admins. NotFound if absent.
    """
    user = active_user(session, user_id)
    comparison = _row(session, Comparison, comparison_id, lock=lock)
    if comparison is None:
        raise NotFound(f"comparison {comparison_id} does not exist")
    if comparison.creator_id == user_id:
        if write:
            may_start_comparison(session, user_id, comparison.source, comparison.consultation_id)
        return comparison
    if not write:
        if user.role is UserRole.ADMIN:
            return comparison
        voted = exists(
            select(Vote.id)
            .join(ComparisonTurn, ComparisonTurn.id == Vote.turn_id)
            .where(ComparisonTurn.comparison_id == comparison_id)
            .where(Vote.voter_id == user_id)
        )
        if session.scalar(select(voted)):
            return comparison
    raise _denied(user_id, f"{'write' if write else 'read'} comparison {comparison_id}")


def access_compare_turn(
    session: Session, turn_id: int, user_id: int, *, write: bool, lock: bool = False,
    vote: bool = False,
) -> tuple[ComparisonTurn, Comparison]:  # fmt: skip
    """The turn and its comparison, as `access_comparison` allows; `lock` locks the turn row
    (PostgreSQL `FOR UPDATE`), which serialises votes and answers recorded on one turn.

    A reviewer assigned the turn (a second opinion) reads it, and writes only a vote
    (`write=True, vote=True`: storage.votes); any other write stays the creator's."""
    user = active_user(session, user_id)
    turn = _row(session, ComparisonTurn, turn_id, lock=lock)
    if turn is None:
        raise NotFound(f"compare turn {turn_id} does not exist")
    if (vote or not write) and is_assigned_reviewer(session, user, turn.id):
        return turn, session.get(Comparison, turn.comparison_id)
    return turn, access_comparison(session, turn.comparison_id, user_id, write=write)


def is_assigned_reviewer(session: Session, user: User, turn_id: int) -> bool:
    """True if the (active) user is an annotator or admin assigned the turn for a second
    opinion (`storage.reviews.assign_review`)."""
    if user.role not in ANNOTATING_ROLES:
        return False
    assigned = exists(select(CompareReview.id).where(CompareReview.turn_id == turn_id)
                      .where(CompareReview.reviewer_id == user.id))  # fmt: skip
    return bool(session.scalar(select(assigned)))


def _shown_for_review(session: Session, user_id: int, attachment_id: int) -> bool:
    """True if a turn the user was assigned to review, and has not voted on yet, shows the
    attachment (in its question or its history: the turn's snapshot names every file). Once
    they voted, they read the comparison as a voter."""
    user = session.get(User, user_id)
    if user is None or not user.active or user.role not in ANNOTATING_ROLES:
        return False
    voted = exists(select(Vote.id).where(Vote.turn_id == CompareReview.turn_id)
                   .where(Vote.voter_id == user_id))  # fmt: skip
    contexts = session.scalars(
        select(ComparisonTurn.context)
        .join(CompareReview, CompareReview.turn_id == ComparisonTurn.id)
        .where(CompareReview.reviewer_id == user_id)
        .where(~voted)
    )  # fmt: skip
    return any(
        f.get("id") == attachment_id
        for context in contexts
        for item in [*context["history"], context["prompt"]]
        for f in item.get("attachments", ())
    )


def may_read_compared_attachment(session: Session, user_id: int, attachment_id: int) -> bool:
    """True if a comparison the user created or voted in shows the attachment: a file of one
    of its questions, of its case's turns up to the one asked, or of its logged consultation's
    messages up to the one asked; or a turn they are assigned to review shows it."""
    readable = select(Comparison.id).where(Comparison.creator_id == user_id).union(
        select(ComparisonTurn.comparison_id)
        .join(Vote, Vote.turn_id == ComparisonTurn.id)
        .where(Vote.voter_id == user_id)
    )
    in_question = exists(
        select(ComparisonTurnAttachment.id)
        .join(ComparisonTurn, ComparisonTurn.id == ComparisonTurnAttachment.turn_id)
        .where(ComparisonTurnAttachment.attachment_id == attachment_id)
        .where(ComparisonTurn.comparison_id.in_(readable))
    )
    asked = aliased(CaseTurn)
    in_case = exists(
        select(CaseTurnAttachment.id)
        .join(CaseTurn, CaseTurn.id == CaseTurnAttachment.case_turn_id)
        .join(asked, asked.case_id == CaseTurn.case_id)
        .join(ComparisonTurn, ComparisonTurn.prompt_case_turn_id == asked.id)
        .where(CaseTurnAttachment.attachment_id == attachment_id)
        .where(CaseTurn.position <= asked.position)
        .where(ComparisonTurn.comparison_id.in_(readable))
    )
    shown = aliased(Message)
    in_log = exists(
        select(MessageAttachment.id)
        .join(Message, Message.id == MessageAttachment.message_id)
        .join(Comparison, Comparison.consultation_id == Message.consultation_id)
        .join(shown, shown.id == Comparison.up_to_message_id)
        .where(MessageAttachment.attachment_id == attachment_id)
        .where(Comparison.source == CompareSource.LOG)
        .where(Message.seq <= shown.seq)
        .where(Comparison.id.in_(readable))
    )
    return bool(session.scalar(select(in_question | in_case | in_log))) or _shown_for_review(
        session, user_id, attachment_id
    )


def may_train(session: Session, user_id: int) -> User:
    """The user, if they may start or change a training run (active admins); PermissionDenied
    if not."""
    user = active_user(session, user_id)
    if user.role is not UserRole.ADMIN:
        raise _denied(user_id, "manage training runs")
    return user


def may_evaluate(session: Session, user_id: int) -> User:
    """The user, if they may start or read evaluation runs (active admins); PermissionDenied
    if not."""
    user = active_user(session, user_id)
    if user.role is not UserRole.ADMIN:
        raise _denied(user_id, "run or read evaluations")
    return user
