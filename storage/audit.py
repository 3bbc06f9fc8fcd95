"""The audit trail: who did what, when, and with which outcome.

Each event is written in its own transaction, so it is kept even when the work it
describes failed and was rolled back ("answer" with outcome "error", "denied" access).
`detail` holds ids, counts, error class names: never patient text. To make that hard to get
wrong, it must be a flat JSON object of short scalars (or lists of them).

    record_audit(db, "login", user_id=7)
    record_audit(db, "export", user_id=1, target_type="dataset", detail={"rows": 120})
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import select

from storage.checks import as_enum, json_object
from storage.db import Database
from storage.errors import InvalidInput
from storage.models import ACTION_LENGTH, TARGET_ID_LENGTH, AuditEvent, AuditOutcome
from storage.records import AuditRecord, from_row

ACTION_PATTERN = re.compile(rf"^[a-z][a-z0-9_.:-]{{0,{ACTION_LENGTH - 1}}}$")
#: A string in `detail` is an id, a class name or a short code; longer text is refused
#: because it is probably content (which may be patient text).
MAX_DETAIL_STRING_CHARS = 200
#: The whole `detail` object as JSON.
MAX_DETAIL_CHARS = 4000
#: `list_audit` returns at most this many events per call (page with `before_id`).
MAX_AUDIT_PAGE = 1000

_Scalar = str | int | float | bool | None


def _check_detail(detail: dict[str, Any] | None) -> dict[str, Any] | None:
    detail = json_object(detail, "audit detail", MAX_DETAIL_CHARS)
    if detail is None:
        return None
    for key, value in detail.items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            if not isinstance(item, _Scalar):
                raise InvalidInput(f"audit detail {key!r} must be a scalar or a list of scalars")
            if isinstance(item, str) and len(item) > MAX_DETAIL_STRING_CHARS:
                raise InvalidInput(
                    f"audit detail {key!r} is longer than {MAX_DETAIL_STRING_CHARS} characters"
                )
    return detail


def _check_name(value: str, field: str) -> str:
    if not isinstance(value, str) or not ACTION_PATTERN.fullmatch(value):
        raise InvalidInput(f"audit {field} must match {ACTION_PATTERN.pattern}")
    return value


def _record(event: AuditEvent) -> AuditRecord:
    return from_row(AuditRecord, event)


def record_audit(
    db: Database,
    action: str,
    *,
    user_id: int | None = None,
    target_type: str | None = None,
    target_id: str | int | None = None,
    outcome: AuditOutcome | str = AuditOutcome.OK,
    detail: dict[str, Any] | None = None,
) -> AuditRecord:
    """Write one audit event (in its own transaction) and return it."""
    event = AuditEvent(
        action=_check_name(action, "action"),
        user_id=user_id,
        target_type=_check_name(target_type, "target_type") if target_type is not None else None,
        target_id=str(target_id)[:TARGET_ID_LENGTH] if target_id is not None else None,
        outcome=as_enum(AuditOutcome, outcome, "outcome"),
        detail=_check_detail(detail),
    )
    with db.transaction() as session:
        session.add(event)
        session.flush()
        return _record(event)


def list_audit(
    db: Database,
    *,
    user_id: int | None = None,
    action: str | None = None,
    outcome: AuditOutcome | str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[AuditRecord]:
    """Audit events matching every given filter, newest first (at most `limit`)."""
    limit = max(1, min(int(limit), MAX_AUDIT_PAGE))
    query = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit)
    if user_id is not None:
        query = query.where(AuditEvent.user_id == user_id)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    if outcome is not None:
        query = query.where(AuditEvent.outcome == as_enum(AuditOutcome, outcome, "outcome"))
    if since is not None:
        query = query.where(AuditEvent.at >= since)
    if until is not None:
        query = query.where(AuditEvent.at < until)
    if before_id is not None:
        query = query.where(AuditEvent.id < before_id)
    with db.transaction(write=False) as session:
        return [_record(e) for e in session.scalars(query)]
