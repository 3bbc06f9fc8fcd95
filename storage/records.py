"""Plain data in and out of the repository functions.

Repository functions return frozen dataclasses, not ORM objects: they are safe to hand to
any thread after the session closed (nothing lazy-loads) and carry no password hash.
Inputs that have several parts (`NewAttachment`) are dataclasses too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, NamedTuple, TypeVar

from storage.models import (
    EMBEDDED_ENDPOINT,
    AttachmentKind,
    AuditOutcome,
    FinishReason,
    MessageRole,
    UserRole,
)

R = TypeVar("R")


def from_row(record_type: type[R], row: object, **given: Any) -> R:
    """The frozen record of an ORM row: every field of `record_type` read from the attribute
    of the same name, except those `given` (derived or withheld values, e.g. `png=None`).

    One mapping for every table: a column added to both the model and the record needs no
    hand-written copy line, and a record field the row lacks fails loudly here.
    """
    values = {f.name: getattr(row, f.name) for f in fields(record_type) if f.name not in given}
    return record_type(**values, **given)


# --- inputs -----------------------------------------------------------------------------


class NewImage(NamedTuple):
    """A derived, de-identified PNG of an upload (a DICOM frame, a PDF page, the photo)."""

    label: str
    width: int
    height: int
    png: bytes
    sent_mime: str | None = None
    """The upload's own stripped encoding to send instead of re-encoding (see
    `storage.models.AttachmentImage.sent`)."""
    sent: bytes | None = None


@dataclass(frozen=True)
class NewAttachment:
    """What intake made of one upload, ready to store with a user message.

    `sha256` is the hex digest of the original upload bytes: an upload seen before is stored
    once and reused (its images are not stored again). The original bytes are not stored.
    `images` takes `NewImage`s or plain `(label, width, height, png_bytes)` tuples.
    """

    sha256: str
    kind: AttachmentKind | str
    mime: str
    size_bytes: int
    deidentified: bool
    original_name: str
    images: Sequence[NewImage | tuple[str, int, int, bytes]] = ()
    deid_report: dict[str, Any] | None = None
    burned_in_annotation: bool = False
    text: str | None = None
    page_count: int | None = None


# --- outputs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class UserRecord:
    id: int
    username: str
    role: UserRole
    active: bool
    created_at: datetime

    @property
    def is_admin(self) -> bool:
        return self.role is UserRole.ADMIN


@dataclass(frozen=True)
class ConsultationRecord:
    id: int
    owner_id: int
    title: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ImageRecord:
    """A stored derived image; `png` and `sent` are None unless the bytes were asked for."""

    id: int
    attachment_id: int
    position: int
    label: str
    width: int
    height: int
    png: bytes | None = None
    sent_mime: str | None = None
    sent: bytes | None = None


@dataclass(frozen=True)
class AttachmentRecord:
    """A stored attachment as it appears in one message (`position`, `original_name`)."""

    id: int
    sha256: str
    kind: AttachmentKind
    mime: str
    size_bytes: int
    deidentified: bool
    deid_report: dict[str, Any] | None
    burned_in_annotation: bool
    text: str | None
    page_count: int | None
    created_at: datetime
    position: int
    original_name: str
    images: tuple[ImageRecord, ...] = ()


@dataclass(frozen=True)
class MessageRecord:
    id: int
    consultation_id: int
    seq: int
    role: MessageRole
    text: str
    created_at: datetime
    author_id: int | None = None
    model_variant_id: int | None = None
    sampling_params: dict[str, Any] | None = None
    latency_ms: int | None = None
    first_token_ms: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: FinishReason | None = None
    error: str | None = None
    replaces_id: int | None = None
    superseded: bool = False
    attachments: tuple[AttachmentRecord, ...] = field(default=())


@dataclass(frozen=True)
class VariantRecord:
    id: int
    name: str
    endpoint: str
    served_model_name: str
    adapter_path: str | None
    parent_id: int | None
    sampling_defaults: dict[str, Any] | None
    active: bool
    created_at: datetime
    notes: str | None

    @property
    def embedded(self) -> bool:
        """Served by the in-process engine rather than an HTTP server."""
        return self.endpoint == EMBEDDED_ENDPOINT


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: datetime
    user_id: int | None
    action: str
    target_type: str | None
    target_id: str | None
    outcome: AuditOutcome
    detail: dict[str, Any] | None
