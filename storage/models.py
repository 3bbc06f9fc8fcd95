"""The SQL schema: SQLAlchemy 2.0 declarative models for users, consultations and the rest.

Works on SQLite and PostgreSQL alike: choices are Python enums stored as short strings (no
native enum types, no CHECK constraints, so a new choice needs no migration), JSON columns
use the generic `JSON` type, timestamps are timezone-aware and always UTC.
`storage/migrations/versions/` must match this file exactly; `tests/test_storage.py`
checks that an upgraded database shows no difference against `Base.metadata`.

How the current history of a consultation is derived (regenerate):
    Every message gets the next `seq` in its consultation (1, 2, 3, ...; never reused).
    Regenerating an answer writes a NEW assistant message whose `replaces_id` points at the
    answer it replaces, and marks the replaced message, and every message after it in the
    consultation, `superseded=True` (the conversation branches from there, as in an edited
    chat). The current history is the messages with `superseded=False` ordered by `seq`;
    superseded rows are kept for training and audit (`replaces_id` links the versions).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Constraint/index names are derived, so migrations can name what they alter on any backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Stored length of every enum column: room for future values without a migration.
ENUM_LENGTH = 32
USERNAME_LENGTH = 64
TITLE_LENGTH = 200
SHA256_HEX_LENGTH = 64
MIME_LENGTH = 100
#: Uploaded file names are kept for the owner's eyes; longer names are cut by the caller.
ORIGINAL_NAME_LENGTH = 255
LABEL_LENGTH = 200
ERROR_LENGTH = 500
NAME_LENGTH = 100
URL_LENGTH = 500
PATH_LENGTH = 1000
ACTION_LENGTH = 64
TARGET_ID_LENGTH = 100
PASSWORD_HASH_LENGTH = 255
#: `ModelVariant.endpoint` of variants served by the in-process engine, not over HTTP.
EMBEDDED_ENDPOINT = "embedded"


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC (the only zone stored)."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """`DateTime(timezone=True)` that always hands back aware UTC datetimes.

    SQLite keeps no zone, so values come back naive; they were written as UTC, so UTC is
    attached on the way out. Naive values are refused on the way in: their zone is a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use storage.models.utcnow()")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class UserRole(enum.StrEnum):
    CLINICIAN = "clinician"
    ANNOTATOR = "annotator"
    ADMIN = "admin"


class MessageRole(enum.StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


class FinishReason(enum.StrEnum):
    """Why an answer ended; the same values as `model.chat.FinishReason`."""

    STOP = "stop"
    LENGTH = "length"
    CUT_OFF = "cut_off"
    CANCELLED = "cancelled"
    ERROR = "error"


class AttachmentKind(enum.StrEnum):
    IMAGE = "image"
    DICOM = "dicom"
    PDF = "pdf"


class AuditOutcome(enum.StrEnum):
    OK = "ok"
    DENIED = "denied"
    ERROR = "error"


def _enum_column(enum_cls: type[enum.Enum]) -> Enum:
    """A string column holding `enum_cls` values ("clinician"), checked in Python."""
    return Enum(
        enum_cls,
        native_enum=False,
        validate_strings=True,
        length=ENUM_LENGTH,
        values_callable=lambda cls: [member.value for member in cls],
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: Lower-case login name (storage.users normalises it).
    username: Mapped[str] = mapped_column(String(USERNAME_LENGTH), unique=True)
    role: Mapped[UserRole] = mapped_column(_enum_column(UserRole))
    #: argon2id PHC string; never the password.
    password_hash: Mapped[str] = mapped_column(String(PASSWORD_HASH_LENGTH))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Consultation(Base):
    __tablename__ = "consultations"
    __table_args__ = (
        # The sidebar lists a user's consultations, most recently active first.
        Index(None, "owner_id", "updated_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    title: Mapped[str] = mapped_column(String(TITLE_LENGTH))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: Bumped by every new message.
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        # Also the index for "messages of consultation X": consultation_id leads it.
        UniqueConstraint("consultation_id", "seq"),
        Index(None, "model_variant_id"),
        Index(None, "replaces_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    consultation_id: Mapped[int] = mapped_column(ForeignKey("consultations.id", ondelete="CASCADE"))
    #: 1, 2, 3, ... within the consultation, in the order the messages were written.
    seq: Mapped[int] = mapped_column(Integer)
    role: Mapped[MessageRole] = mapped_column(_enum_column(MessageRole))
    text: Mapped[str] = mapped_column(Text)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    model_variant_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_variants.id", ondelete="RESTRICT")
    )
    sampling_params: Mapped[dict[str, Any] | None]
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    first_token_ms: Mapped[int | None] = mapped_column(Integer)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    finish_reason: Mapped[FinishReason | None] = mapped_column(_enum_column(FinishReason))
    #: Short technical description when the answer failed (no patient text).
    error: Mapped[str | None] = mapped_column(String(ERROR_LENGTH))
    #: The earlier answer this one regenerates (see the module docstring).
    replaces_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    superseded: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Attachment(Base):
    """One uploaded file, stored once per sha256 of its original bytes.

    The original bytes are never stored (a DICOM original holds identifiers): only what
    intake derived from it after de-identification (text, rendered images).
    """

    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(SHA256_HEX_LENGTH), unique=True)
    kind: Mapped[AttachmentKind] = mapped_column(_enum_column(AttachmentKind))
    mime: Mapped[str] = mapped_column(String(MIME_LENGTH))
    size_bytes: Mapped[int] = mapped_column(Integer)
    deidentified: Mapped[bool] = mapped_column(Boolean)
    #: What de-identification did (tags removed, counts); never the removed values.
    deid_report: Mapped[dict[str, Any] | None]
    #: The image itself carries burned-in text (DICOM BurnedInAnnotation or a detector).
    burned_in_annotation: Mapped[bool] = mapped_column(Boolean, default=False)
    text: Mapped[str | None] = mapped_column(Text)
    page_count: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AttachmentImage(Base):
    """A derived PNG: a rendered DICOM frame, a PDF page or the downscaled photo."""

    __tablename__ = "attachment_images"
    __table_args__ = (UniqueConstraint("attachment_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    attachment_id: Mapped[int] = mapped_column(ForeignKey("attachments.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(LABEL_LENGTH))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    # Deferred: listing images must not pull megabytes of PNG.
    png: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    #: What the model is sent for this image when it is not a re-encoding of `png`: the
    #: upload's own JPEG/PNG with its metadata stripped, pixel-identical to `png` (an upload
    #: is never sent bigger than it came). `sent` None with `sent_mime` "image/png": `png`
    #: itself is the stripped upload. Both None: `png` is encoded for the model.
    sent_mime: Mapped[str | None] = mapped_column(String(MIME_LENGTH))
    sent: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)


class MessageAttachment(Base):
    """Which attachments a user message carries, in order, under the name they had."""

    __tablename__ = "message_attachments"
    __table_args__ = (
        UniqueConstraint("message_id", "position"),
        # user_can_access_attachment looks up by attachment.
        Index(None, "attachment_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    attachment_id: Mapped[int] = mapped_column(ForeignKey("attachments.id", ondelete="RESTRICT"))
    position: Mapped[int] = mapped_column(Integer)
    #: The file name as uploaded: shown to the consultation's owner only.
    original_name: Mapped[str] = mapped_column(String(ORIGINAL_NAME_LENGTH))


class ModelVariant(Base):
    """A base model or base + LoRA adapter, served at `endpoint`, with its sampling defaults."""

    __tablename__ = "model_variants"
    __table_args__ = (Index(None, "parent_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    #: Base URL of an OpenAI-compatible server, or "embedded" for the in-process engine.
    endpoint: Mapped[str] = mapped_column(String(URL_LENGTH))
    #: The `model` field sent to the server (a LoRA module name for adapters). vLLM's
    #: default served name is the model path, and the embedded engine takes a path: long.
    served_model_name: Mapped[str] = mapped_column(String(PATH_LENGTH))
    adapter_path: Mapped[str | None] = mapped_column(String(PATH_LENGTH))
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_variants.id", ondelete="RESTRICT")
    )
    sampling_defaults: Mapped[dict[str, Any] | None]
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    notes: Mapped[str | None] = mapped_column(Text)


class AuditEvent(Base):
    """Who did what, when, with which outcome. `detail` holds ids and counts, never content."""

    __tablename__ = "audit_events"
    __table_args__ = (Index(None, "at"), Index(None, "user_id", "at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(ACTION_LENGTH))
    target_type: Mapped[str | None] = mapped_column(String(ACTION_LENGTH))
    target_id: Mapped[str | None] = mapped_column(String(TARGET_ID_LENGTH))
    outcome: Mapped[AuditOutcome] = mapped_column(_enum_column(AuditOutcome))
    detail: Mapped[dict[str, Any] | None]
