"""Consultations: create, list, rename, read, delete, and who may see them.

A consultation belongs to the clinician who started it. Its owner may read and change it;
an admin may read any consultation (not write to it); nobody else may do either. Inactive
users may do nothing. That rule lives in `storage.access`; every function here applies it.
"""

from __future__ import annotations

from loguru import logger
from sqlalchemy import select

from storage.access import access_consultation, active_user
from storage.checks import bounded_text
from storage.db import Database
from storage.errors import PermissionDenied
from storage.models import TITLE_LENGTH, Consultation, UserRole, utcnow
from storage.records import ConsultationRecord, from_row

DEFAULT_TITLE = "New consultation"


def _record(consultation: Consultation) -> ConsultationRecord:
    return from_row(ConsultationRecord, consultation)


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
        owner = active_user(session, owner_id)
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


def check_writable(db: Database, consultation_id: int, user_id: int) -> ConsultationRecord:
    """The consultation, if `user_id` may add to it (its owner); raises as `access_consultation`.

    For callers that must refuse before slow work (asking the model); the write itself
    checks again in its own transaction.
    """
    with db.transaction(write=False) as session:
        return _record(access_consultation(session, consultation_id, user_id, write=True))


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
