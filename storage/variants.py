"""Model variants: a base model or base + LoRA adapter, where it is served, how it samples.

`ensure_model_variant` is idempotent by name: the app calls it at start-up for the variants
its configuration names, the admin tab when it registers a trained adapter. Variants are
never deleted (messages and votes point at them); they are deactivated instead.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from loguru import logger
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from storage.checks import bounded_text, json_object
from storage.db import Database
from storage.errors import InvalidInput, NotFound
from storage.models import (
    EMBEDDED_ENDPOINT,
    NAME_LENGTH,
    PATH_LENGTH,
    URL_LENGTH,
    ModelVariant,
)
from storage.records import VariantRecord, from_row

#: Sampling defaults are a handful of numbers.
MAX_SAMPLING_DEFAULTS_CHARS = 10_000
#: Free-text notes an admin writes about a variant.
MAX_NOTES_CHARS = 10_000


def _record(variant: ModelVariant) -> VariantRecord:
    return from_row(VariantRecord, variant)


def _check_endpoint(endpoint: str) -> str:
    endpoint = bounded_text(endpoint, "endpoint", URL_LENGTH).strip()
    if endpoint == EMBEDDED_ENDPOINT:
        return endpoint
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput(
            "endpoint must be an http(s) URL or 'embedded'",
            user_message="The endpoint must be an http:// or https:// URL, or 'embedded'.",
        )
    return endpoint


def ensure_model_variant(
    db: Database,
    name: str,
    endpoint: str,
    served_model_name: str,
    adapter_path: str | None = None,
    parent: str | None = None,
    sampling_defaults: dict[str, Any] | None = None,
    active: bool = True,
    notes: str | None = None,
) -> VariantRecord:
    """Create the variant `name`, or update its fields to these values if it exists.

    `parent` is the name of the variant this one derives from (e.g. the base model of an
    adapter); NotFound if there is no such variant.
    """
    name = bounded_text(name, "variant name", NAME_LENGTH).strip()
    endpoint = _check_endpoint(endpoint)
    served_model_name = bounded_text(str(served_model_name), "served model name", PATH_LENGTH)
    if adapter_path is not None:
        adapter_path = bounded_text(str(adapter_path), "adapter path", PATH_LENGTH)
    sampling_defaults = json_object(
        sampling_defaults, "sampling_defaults", MAX_SAMPLING_DEFAULTS_CHARS
    )
    if notes is not None:
        notes = bounded_text(notes, "notes", MAX_NOTES_CHARS, allow_empty=True)
    fields = {
        "endpoint": endpoint,
        "served_model_name": served_model_name,
        "adapter_path": adapter_path,
        "sampling_defaults": sampling_defaults,
        "active": bool(active),
        "notes": notes,
    }
    with db.transaction() as session:
        parent_id = None
        if parent is not None:
            parent_id = session.scalar(select(ModelVariant.id).where(ModelVariant.name == parent))
            if parent_id is None:
                raise NotFound(f"parent variant {parent!r} does not exist")
        variant = session.scalar(select(ModelVariant).where(ModelVariant.name == name))
        created = variant is None
        if variant is None:
            variant = ModelVariant(name=name, parent_id=parent_id, **fields)
            try:
                # Two processes starting at once may both insert (PostgreSQL): keep theirs.
                with session.begin_nested():
                    session.add(variant)
                    session.flush()
            except IntegrityError:
                variant = session.scalar(select(ModelVariant).where(ModelVariant.name == name))
                if variant is None:
                    raise
                created = False
        if not created:
            if parent_id == variant.id:
                raise InvalidInput(f"variant {name!r} cannot be its own parent")
            variant.parent_id = parent_id
            for key, value in fields.items():
                setattr(variant, key, value)
        session.flush()
        record = _record(variant)
    logger.info(
        "model variant id={} name={} {}", record.id, name, "created" if created else "updated"
    )
    return record


def get_variant(db: Database, variant_id: int) -> VariantRecord:
    """The variant with this id; NotFound if absent."""
    with db.transaction(write=False) as session:
        variant = session.get(ModelVariant, variant_id)
        if variant is None:
            raise NotFound(f"model variant {variant_id} does not exist")
        return _record(variant)


def get_variant_by_name(db: Database, name: str) -> VariantRecord | None:
    """The variant called `name`, or None."""
    with db.transaction(write=False) as session:
        variant = session.scalar(select(ModelVariant).where(ModelVariant.name == name))
        return _record(variant) if variant is not None else None


def list_variants(db: Database, *, active_only: bool = False) -> list[VariantRecord]:
    """Variants in the order they were registered (all, or only the active ones)."""
    query = select(ModelVariant).order_by(ModelVariant.id)
    if active_only:
        query = query.where(ModelVariant.active.is_(True))
    with db.transaction(write=False) as session:
        return [_record(v) for v in session.scalars(query)]


def list_active_variants(db: Database) -> list[VariantRecord]:
    """The variants the app may use now."""
    return list_variants(db, active_only=True)


def set_variant_active(db: Database, name: str, active: bool) -> VariantRecord:
    """Turn a variant on or off (off: kept for history, not offered). NotFound if absent."""
    with db.transaction() as session:
        variant = session.scalar(select(ModelVariant).where(ModelVariant.name == name))
        if variant is None:
            raise NotFound(f"model variant {name!r} does not exist")
        variant.active = bool(active)
        record = _record(variant)
    logger.info("model variant id={} active={}", record.id, record.active)
    return record
