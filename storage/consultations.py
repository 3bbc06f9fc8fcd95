"""Consultations: create, list and search, rename, read, delete, and who may see them.

A consultation belongs to the clinician who started it. Its owner may read and change it;
an admin may read any consultation (not write to it); nobody else may do either. Inactive
users may do nothing. That rule lives in `storage.access`; every function here applies it.

Deleting is soft (`deleted_at`): the consultation leaves its owner's list and can no longer
be opened or changed by anyone, but it stays, with its messages, for audit and training;
admins still read it and list deleted consultations (`list_consultations_of`).
"""

from __future__ import annotations

from loguru import logger
from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from storage.access import access_consultation, active_user, require_admin
from storage.checks import bounded_text
from storage.db import Database
from storage.errors import InvalidInput, PermissionDenied
from storage.models import TITLE_LENGTH, Consultation, UserRole, utcnow
from storage.records import ConsultationRecord, from_row

DEFAULT_TITLE = "New consultation"
SEARCH_INVALID = (
    f"Search for up to {TITLE_LENGTH} characters of a title. "
    f"/ 请输入不超过 {TITLE_LENGTH} 个字符的标题关键词。"
)


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
    with db.transaction() as session:
        record = _record(new_consultation(session, owner_id, title))
    logger.info("created consultation id={} owner id={}", record.id, owner_id)
    return record


def new_consultation(session: Session, owner_id: int, title: str | None) -> Consultation:
    """`create_consultation` inside the caller's transaction."""
    clean_title = _title(title)
    owner = active_user(session, owner_id)
    if owner.role is UserRole.ANNOTATOR:
        raise PermissionDenied(f"user {owner_id} is an annotator; cannot own consultations")
    now = utcnow()
    consultation = Consultation(
        owner_id=owner_id, title=clean_title, created_at=now, updated_at=now
    )
    session.add(consultation)
    session.flush()
    return consultation


def _listing(
    owner_id: int, search: str | None, include_deleted: bool, limit: int | None
) -> Select[tuple[Consultation]]:
    """`owner_id`'s consultations whose title contains `search` (any case), newest activity
    first. SQLite's case folding is ASCII-only; titles in scripts without case (Chinese)
    match as typed."""
    query = select(Consultation).where(Consultation.owner_id == owner_id)
    if search is not None and not isinstance(search, str):
        raise InvalidInput("search must be text", user_message=SEARCH_INVALID)
    term = (search or "").strip()
    if len(term) > TITLE_LENGTH:
        raise InvalidInput(f"search longer than {TITLE_LENGTH}", user_message=SEARCH_INVALID)
    if term:
        escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Consultation.title.ilike(f"%{escaped}%", escape="\\"))
    if not include_deleted:
        query = query.where(Consultation.deleted_at.is_(None))
    return query.order_by(Consultation.updated_at.desc(), Consultation.id.desc()).limit(limit)


def list_consultations(
    db: Database,
    user_id: int,
    search: str | None = None,
    include_deleted: bool = False,
    *,
    limit: int | None = None,
) -> list[ConsultationRecord]:
    """The consultations `user_id` owns, most recently active first, optionally only those
    whose title contains `search` (case-insensitive). Deleted ones are left out; only an
    admin may ask for them (`include_deleted`), here for their own, in
    `list_consultations_of` for anyone's."""
    with db.transaction(write=False) as session:
        if include_deleted:
            require_admin(session, user_id)
        else:
            active_user(session, user_id)
        query = _listing(user_id, search, include_deleted, limit)
        return [_record(c) for c in session.scalars(query)]


def list_consultations_of(
    db: Database,
    admin_id: int,
    owner_id: int,
    search: str | None = None,
    include_deleted: bool = False,
    *,
    limit: int | None = None,
) -> list[ConsultationRecord]:
    """What `list_consultations` gives `owner_id`, asked by an admin (deleted ones too with
    `include_deleted`); PermissionDenied for anyone else."""
    with db.transaction(write=False) as session:
        require_admin(session, admin_id)
        query = _listing(owner_id, search, include_deleted, limit)
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


def delete_consultation(db: Database, consultation_id: int, user_id: int) -> ConsultationRecord:
    """Delete the consultation (owner only): soft, see the module docstring.

    Afterwards nobody writes it, and only admins read it; its owner is told it was deleted.
    """
    with db.transaction() as session:
        consultation = access_consultation(session, consultation_id, user_id, write=True, lock=True)
        consultation.deleted_at = utcnow()
        session.flush()
        record = _record(consultation)
    logger.info("deleted consultation id={} by user id={}", consultation_id, user_id)
    return record
