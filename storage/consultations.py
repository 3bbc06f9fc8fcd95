"""Consultations: create, list, rename, read, delete, and who may see them.

A consultation belongs to the clinician who started it. Its owner may read and change it;
an admin may read any consultation (not write to it); nobody else may do either. Inactive
users may do nothing. `access_consultation` is the one place that rule lives: the message
functions use it too.
"""

from __future__ import annotations

from loguru import logger
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.checks import bounded_text
from storage.db import Database
from storage.errors import NotFound, PermissionDenied
from storage.models import TITLE_LENGTH, Consultation, User, UserRole, utcnow
from storage.records import ConsultationRecord

DEFAULT_TITLE = "New consultation"


def _record(consultation: Consultation) -> ConsultationRecord:
    return ConsultationRecord(
        id=consultation.id,
        owner_id=consultation.owner_id,
        title=consultation.title,
        created_at=consultation.created_at,
        updated_at=consultation.updated_at,
    )


def _active_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None or not user.active:
        raise PermissionDenied(f"user {user_id} is unknown or inactive")
    return user


def access_consultation(
    session: Session, consultation_id: int, user_id: int, *, write: bool, lock: bool = False
) -> Consultation:
    """The consultation, if `user_id` may read it (`write=False`) or change it (`write=True`).

    NotFound if it does not exist; PermissionDenied if the user is not its owner (for
    reading: not its owner and not an admin). `lock=True` locks the row until the
    transaction ends (PostgreSQL `FOR UPDATE`; SQLite writers are serialised anyway), which
    serialises writers appending to the same consultation.
    """
    user = _active_user(session, user_id)
    query = select(Consultation).where(Consultation.id == consultation_id)
    if lock:
        query = query.with_for_update()
    consultation = session.scalar(query)
    if consultation is None:
        raise NotFound(f"consultation {consultation_id} does not exist")
    if consultation.owner_id == user_id:
        return consultation
    if not write and user.role is UserRole.ADMIN:
        return consultation
    logger.warning(
        "user id={} denied {} access to consultation id={}",
        user_id,
        "write" if write else "read",
        consultation_id,
    )
    raise PermissionDenied(f"user {user_id} may not access consultation {consultation_id}")


def _title(title: str | None) -> str:
    if title is None:
        return DEFAULT_TITLE
    return bounded_text(title, "title", TITLE_LENGTH).strip()


def create_consultation(
    db: Database, owner_id: int, title: str | None = None
) -> ConsultationRecord:
    """Start a consultation owned by `owner_id` (clinicians and admins may)."""
    clean_title = _title(title)
    with db.transaction() as session:
        owner = _active_user(session, owner_id)
        if owner.role is UserRole.ANNOTATOR:
            raise PermissionDenied(f"user {owner_id} is an annotator; cannot own consultations")
        now = utcnow()
        consultation = Consultation(
            owner_id=owner_id, title=clean_title, created_at=now, updated_at=now
        )
        session.add(consultation)
        session.flush()
        record = _record(consultation)
    logger.info("created consultation id={} owner id={}", record.id, owner_id)
    return record


def list_consultations(
    db: Database, owner_id: int, *, limit: int | None = None
) -> list[ConsultationRecord]:
    """The consultations `owner_id` owns, most recently active first."""
    query = (
        select(Consultation)
        .where(Consultation.owner_id == owner_id)
        .order_by(Consultation.updated_at.desc(), Consultation.id.desc())
        .limit(limit)
    )
    with db.transaction(write=False) as session:
        return [_record(c) for c in session.scalars(query)]


def get_consultation(db: Database, consultation_id: int, user_id: int) -> ConsultationRecord:
    """The consultation, if `user_id` may read it (owner or admin)."""
    with db.transaction(write=False) as session:
        return _record(access_consultation(session, consultation_id, user_id, write=False))


def rename_consultation(
    db: Database, consultation_id: int, user_id: int, title: str
) -> ConsultationRecord:
    """Give the consultation a new title (owner only)."""
    clean_title = _title(title)
    with db.transaction() as session:
        consultation = access_consultation(session, consultation_id, user_id, write=True)
        consultation.title = clean_title
        return _record(consultation)


def delete_consultation(db: Database, consultation_id: int, user_id: int) -> None:
    """Delete the consultation and its messages (owner only).

    Attachments stay: they are stored once and may belong to other messages too.
    """
    with db.transaction() as session:
        consultation = access_consultation(session, consultation_id, user_id, write=True)
        session.delete(consultation)
    logger.info("deleted consultation id={} by user id={}", consultation_id, user_id)
