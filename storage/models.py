"""The SQL schema: SQLAlchemy 2.0 declarative models for users, consultations and the rest.

Works on SQLite and PostgreSQL alike: choices are Python enums stored as short strings (no
native enum types, no CHECK constraints, so a new choice needs no migration), JSON columns
use the generic `JSON` type, timestamps are timezone-aware and always UTC.
`storage/migrations/versions/` must match this file exactly; `tests/test_storage.py`
checks that an upgraded database shows no difference against `Base.metadata`.

How the current history of a consultation is derived (regenerate, answer versions):
    Every message gets the next `seq` in its consultation (1, 2, 3, ...; never reused) and a
    `parent_id`: the message it follows (None for the first), so a consultation is a tree.
    Regenerating an answer writes a NEW assistant message with the same parent as the answer
    it replaces (`replaces_id` names that answer): the answers to one question are siblings,
    the versions ‹1/n› of that answer in `seq` order. Among the children of a message exactly
    one is `chosen` (a new message is; `storage.messages.choose_version` moves the choice).
    The current history is the path from the first message down through chosen children;
    `superseded=True` marks every message off that path, so readers (history, prompts,
    exports) filter on one column. Regenerating supersedes the replaced answer and every
    later message of the path (the conversation branches there, as in an edited chat);
    choosing another version brings it back with the turns that followed it, and the
    version it replaces leaves with its own. Nothing is deleted: superseded rows are kept
    for training and audit.

Deleting a consultation sets `deleted_at` (soft delete): its owner no longer sees or
changes it, admins still read it, and its messages stay for audit and training.
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
    Float,
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
#: A clinician's comment on an answer: a few sentences, not a second consultation.
FEEDBACK_COMMENT_LENGTH = 2000
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


class Thumbs(enum.StrEnum):
    """A clinician's rating of an answer."""

    UP = "up"
    DOWN = "down"


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
    #: Set when its owner deleted it (soft delete: see the module docstring).
    deleted_at: Mapped[datetime | None]


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        # Also the index for "messages of consultation X": consultation_id leads it.
        UniqueConstraint("consultation_id", "seq"),
        Index(None, "model_variant_id"),
        Index(None, "replaces_id"),
        Index(None, "parent_id"),
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
    #: The message this one follows in the consultation's tree (see the module docstring).
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"))
    #: The one child of its parent that the conversation continues with.
    chosen: Mapped[bool] = mapped_column(Boolean, default=True)


class AnswerFeedback(Base):
    """A user's thumbs up or down on an answer, with an optional comment: one per user and
    answer, changed in place (`storage.feedback.set_feedback`)."""

    __tablename__ = "answer_feedback"
    __table_args__ = (UniqueConstraint("message_id", "user_id"), Index(None, "user_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    thumbs: Mapped[Thumbs] = mapped_column(_enum_column(Thumbs))
    comment: Mapped[str | None] = mapped_column(String(FEEDBACK_COMMENT_LENGTH))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


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


# --- Compare: imported cases, blind side-by-side comparisons and their votes ----------------
# (storage/cases.py, storage/compare.py, storage/votes.py; rules in storage/access.py)

#: A case's id in its source data set (CMtMedQA ids are numbers; kept as text).
SOURCE_ID_LENGTH = 100
#: A case category (CMtMedQA `cate1`/`cate2`: "内科", "消化内科").
CATEGORY_LENGTH = 100
#: A client-made key (a UUID is 36 characters) that makes a vote's retries one vote.
IDEMPOTENCY_KEY_LENGTH = 64
#: A prompt language code ("en", "zh-CN"): model.prompt.SYSTEM_PROMPTS keys.
LANGUAGE_LENGTH = 16


class CaseFormat(enum.StrEnum):
    """The file a case set was read from (docs/design.md, "Case files")."""

    PULSEMIND_JSONL = "pulsemind_jsonl"
    CMTMEDQA = "cmtmedqa"
    MEDDIAGNOSE = "meddiagnose"  # dialogues whose patient turns carry images, + images folder


class CompareSource(enum.StrEnum):
    """Where a comparison's context comes from."""

    CASE = "case"
    CONSULTATION = "consultation"  # the clinician compare mode: their own consultation
    AD_HOC = "ad_hoc"  # a patient turn typed by the annotator
    LOG = "log"  # an annotator's comparison on a clinician's logged consultation, up to a turn


class Side(enum.StrEnum):
    A = "a"
    B = "b"


class Preference(enum.StrEnum):
    """A vote on one dimension (proactiveness, accuracy, usefulness, language quality)."""

    A = "a"
    B = "b"
    TIE = "tie"


class Overall(enum.StrEnum):
    """The overall vote."""

    A = "a"
    B = "b"
    TIE = "tie"
    BOTH_BAD = "both_bad"


class CompareTurnState(enum.StrEnum):
    ANSWERING = "answering"  # both answers are being written
    ANSWERED = "answered"  # both answers recorded, however they ended
    VOTED = "voted"


class CaseSet(Base):
    """One imported case file (`pulsemind cases load`)."""

    __tablename__ = "case_sets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    format: Mapped[CaseFormat] = mapped_column(_enum_column(CaseFormat))
    #: sha256 of the file as read: which version of a data set this is.
    file_sha256: Mapped[str] = mapped_column(String(SHA256_HEX_LENGTH))
    case_count: Mapped[int] = mapped_column(Integer)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Case(Base):
    """An imported consultation: patient turns with the reference doctor's answers."""

    __tablename__ = "cases"
    __table_args__ = (UniqueConstraint("case_set_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_set_id: Mapped[int] = mapped_column(ForeignKey("case_sets.id", ondelete="CASCADE"))
    #: 1, 2, 3, ... in the order of the file.
    position: Mapped[int] = mapped_column(Integer)
    source_id: Mapped[str | None] = mapped_column(String(SOURCE_ID_LENGTH))
    cate1: Mapped[str | None] = mapped_column(String(CATEGORY_LENGTH))
    cate2: Mapped[str | None] = mapped_column(String(CATEGORY_LENGTH))


class CaseTurn(Base):
    """One patient turn of a case and the reference doctor's answer to it."""

    __tablename__ = "case_turns"
    __table_args__ = (UniqueConstraint("case_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    patient_text: Mapped[str] = mapped_column(Text)
    #: None only on a case's last turn (the question the models answer without a reference).
    reference_answer: Mapped[str | None] = mapped_column(Text)


class CaseTurnAttachment(Base):
    """The files (images, reports) of a case turn, in order; stored as any upload is."""

    __tablename__ = "case_turn_attachments"
    __table_args__ = (
        UniqueConstraint("case_turn_id", "position"),
        Index(None, "attachment_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_turn_id: Mapped[int] = mapped_column(ForeignKey("case_turns.id", ondelete="CASCADE"))
    attachment_id: Mapped[int] = mapped_column(ForeignKey("attachments.id", ondelete="RESTRICT"))
    position: Mapped[int] = mapped_column(Integer)


class Comparison(Base):
    """One compare session: who, from which context, in which prompt language."""

    __tablename__ = "comparisons"
    __table_args__ = (
        Index(None, "creator_id", "created_at"),
        Index(None, "case_id"),
        Index(None, "consultation_id"),
        Index(None, "up_to_message_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    creator_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    source: Mapped[CompareSource] = mapped_column(_enum_column(CompareSource))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id", ondelete="RESTRICT"))
    #: Clinician compare mode. A deleted consultation leaves the comparison and its votes
    #: (the turns' snapshots keep the ids and hashes of what was shown).
    consultation_id: Mapped[int | None] = mapped_column(
        ForeignKey("consultations.id", ondelete="SET NULL")
    )
    #: The consultation's message the first turn answered.
    up_to_message_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="SET NULL")
    )
    language: Mapped[str] = mapped_column(String(LANGUAGE_LENGTH))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ComparisonTurn(Base):
    """One question answered by two variants side by side, and exactly what they were sent.

    `context` is the snapshot of the history before the question: per message its role, a
    reference (case turn, consultation message, or an earlier turn's question/kept answer),
    the sha256 of its text and its attachments as (id, sha256); the question itself is
    `prompt_text` with `comparison_turn_attachments`. `context_sha256` hashes all of it.
    """

    __tablename__ = "comparison_turns"
    __table_args__ = (
        UniqueConstraint("comparison_id", "position"),
        Index(None, "prompt_message_id"),
        Index(None, "prompt_case_turn_id"),
        Index(None, "kept_message_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    comparison_id: Mapped[int] = mapped_column(ForeignKey("comparisons.id", ondelete="RESTRICT"))
    position: Mapped[int] = mapped_column(Integer)
    state: Mapped[CompareTurnState] = mapped_column(_enum_column(CompareTurnState))
    context: Mapped[dict[str, Any]]
    context_sha256: Mapped[str] = mapped_column(String(SHA256_HEX_LENGTH))
    prompt_text: Mapped[str] = mapped_column(Text)
    prompt_message_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="SET NULL")
    )
    prompt_case_turn_id: Mapped[int | None] = mapped_column(
        ForeignKey("case_turns.id", ondelete="RESTRICT")
    )
    #: The case's doctor answer to this question, when there is one (for judges, exports).
    reference_answer: Mapped[str | None] = mapped_column(Text)
    #: The blind side assignment: which variant answered as A, which as B.
    variant_a_id: Mapped[int] = mapped_column(ForeignKey("model_variants.id", ondelete="RESTRICT"))
    variant_b_id: Mapped[int] = mapped_column(ForeignKey("model_variants.id", ondelete="RESTRICT"))
    #: The answer that became shared history (the next turn's context), once chosen.
    kept_side: Mapped[Side | None] = mapped_column(_enum_column(Side))
    #: Clinician mode: the consultation message the kept answer was stored as.
    kept_message_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ComparisonTurnAttachment(Base):
    """The files of a turn's question, in order (whatever the question came from)."""

    __tablename__ = "comparison_turn_attachments"
    __table_args__ = (
        UniqueConstraint("turn_id", "position"),
        Index(None, "attachment_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    turn_id: Mapped[int] = mapped_column(ForeignKey("comparison_turns.id", ondelete="RESTRICT"))
    attachment_id: Mapped[int] = mapped_column(ForeignKey("attachments.id", ondelete="RESTRICT"))
    position: Mapped[int] = mapped_column(Integer)


class ComparisonResponse(Base):
    """One side's answer, recorded however it ended (two per turn)."""

    __tablename__ = "comparison_responses"
    __table_args__ = (
        UniqueConstraint("turn_id", "side"),
        Index(None, "variant_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    turn_id: Mapped[int] = mapped_column(ForeignKey("comparison_turns.id", ondelete="RESTRICT"))
    side: Mapped[Side] = mapped_column(_enum_column(Side))
    variant_id: Mapped[int] = mapped_column(ForeignKey("model_variants.id", ondelete="RESTRICT"))
    text: Mapped[str] = mapped_column(Text)
    sampling_params: Mapped[dict[str, Any] | None]
    finish_reason: Mapped[FinishReason] = mapped_column(_enum_column(FinishReason))
    error: Mapped[str | None] = mapped_column(String(ERROR_LENGTH))
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    first_token_ms: Mapped[int | None] = mapped_column(Integer)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    finished_at: Mapped[datetime] = mapped_column(default=utcnow)


class Vote(Base):
    """A voter's judgement of one turn's two answers. Never changed, never deleted."""

    __tablename__ = "votes"
    __table_args__ = (
        UniqueConstraint("turn_id", "voter_id"),
        Index(None, "voter_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    turn_id: Mapped[int] = mapped_column(ForeignKey("comparison_turns.id", ondelete="RESTRICT"))
    voter_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    #: NULL: not rated (allowed only in clinician compare mode, where only overall is asked).
    proactiveness: Mapped[Preference | None] = mapped_column(_enum_column(Preference))
    accuracy: Mapped[Preference | None] = mapped_column(_enum_column(Preference))
    usefulness: Mapped[Preference | None] = mapped_column(_enum_column(Preference))
    language_quality: Mapped[Preference | None] = mapped_column(_enum_column(Preference))
    overall: Mapped[Overall] = mapped_column(_enum_column(Overall))
    safety_flag_a: Mapped[bool] = mapped_column(Boolean)
    safety_flag_b: Mapped[bool] = mapped_column(Boolean)
    comment: Mapped[str | None] = mapped_column(Text)
    #: From the later of the two answers finishing (a second opinion: from its assignment,
    #: `CompareReview.assigned_at`) to the vote's commit.
    time_to_vote_ms: Mapped[int | None] = mapped_column(Integer)
    idempotency_key: Mapped[str] = mapped_column(String(IDEMPOTENCY_KEY_LENGTH), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CompareReview(Base):
    """A voted compare turn assigned to another annotator for an independent second vote
    (storage/reviews.py): the assignment lets them read and vote on that one turn. The vote
    itself is an ordinary row in `votes`; never changed, never deleted."""

    __tablename__ = "compare_reviews"
    __table_args__ = (
        UniqueConstraint("turn_id", "reviewer_id"),
        Index(None, "reviewer_id", "assigned_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    turn_id: Mapped[int] = mapped_column(ForeignKey("comparison_turns.id", ondelete="RESTRICT"))
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    assigned_at: Mapped[datetime] = mapped_column(default=utcnow)


# --- Retrain: judge verdicts (cache) and training runs with their metrics -------------------
# (storage/judge_cache.py, storage/runs.py; training/judge.py, training/reward.py)

#: A host name as `socket.gethostname()` gives it (the runs' pid is only meaningful there).
HOST_LENGTH = 255
#: A metric's name ("loss", "crpo/accuracy").
METRIC_NAME_LENGTH = 100


class RunKind(enum.StrEnum):
    SFT = "sft"
    CRPO = "crpo"


class RunStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # its process went away; resumable from its last checkpoint


class JudgeVerdict(Base):
    """A judge's verdict on two answers in one order, cached by the content hash of everything
    that decides it (`training.judge.cache_key`): the texts themselves are not stored."""

    __tablename__ = "judge_verdicts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_sha256: Mapped[str] = mapped_column(String(SHA256_HEX_LENGTH), unique=True)
    judge_model: Mapped[str] = mapped_column(String(PATH_LENGTH))
    language: Mapped[str] = mapped_column(String(LANGUAGE_LENGTH))
    #: Per dimension: which of the two answers, in the order they were shown, is better.
    proactiveness: Mapped[Preference] = mapped_column(_enum_column(Preference))
    accuracy: Mapped[Preference] = mapped_column(_enum_column(Preference))
    usefulness: Mapped[Preference] = mapped_column(_enum_column(Preference))
    language_quality: Mapped[Preference] = mapped_column(_enum_column(Preference))
    #: The judge's reply as it came (a short JSON object), for audit.
    raw: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrainingRun(Base):
    """One SFT or CRPO run: what it trains from, where its process runs, how it ended."""

    __tablename__ = "training_runs"
    __table_args__ = (
        Index(None, "status"),
        Index(None, "created_at"),
        Index(None, "base_variant_id"),
        Index(None, "variant_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[RunKind] = mapped_column(_enum_column(RunKind))
    status: Mapped[RunStatus] = mapped_column(_enum_column(RunStatus))
    #: The trainer's settings as given (steps, learning rate, judge URL, ...).
    config: Mapped[dict[str, Any]]
    base_variant_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_variants.id", ondelete="RESTRICT")
    )
    #: The exported dataset the run reads, and the ids of the rows it was exported from.
    data_path: Mapped[str | None] = mapped_column(String(PATH_LENGTH))
    data_ids: Mapped[dict[str, Any] | None]
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: The training process and the machine it runs on (`storage.runs.mark_interrupted_if_dead`).
    pid: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String(HOST_LENGTH))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    last_checkpoint: Mapped[str | None] = mapped_column(String(PATH_LENGTH))
    output_dir: Mapped[str | None] = mapped_column(String(PATH_LENGTH))
    #: The variant the trained adapter was registered as (set only when the run succeeded).
    variant_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_variants.id", ondelete="RESTRICT")
    )
    error: Mapped[str | None] = mapped_column(String(ERROR_LENGTH))


class TrainingMetric(Base):
    """One number a run logged at one step (loss, learning rate, reward, ...): curves are drawn
    from these rows. A step logged again (a run resumed from an earlier checkpoint) replaces
    the earlier value. NULL: the value was not finite (SQLite cannot keep NaN)."""

    __tablename__ = "training_metrics"
    __table_args__ = (UniqueConstraint("run_id", "name", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("training_runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(METRIC_NAME_LENGTH))
    value: Mapped[float | None] = mapped_column(Float)
    at: Mapped[datetime] = mapped_column(default=utcnow)


# --- The PulseMind Benchmark: evaluation runs, their cases, answers and verdicts -------------
# (storage/evals.py; training/eval.py, training/eval_agreement.py)


class EvalKind(enum.StrEnum):
    BENCHMARK = "benchmark"  # a variant vs an opponent (or the reference) on a case set
    AGREEMENT = "agreement"  # the judge vs the clinicians' votes, relative and absolute


class EvalCaseStatus(enum.StrEnum):
    PENDING = "pending"  # nothing stored yet
    ANSWERED = "answered"  # every turn answered on both sides; not judged yet
    JUDGED = "judged"  # both orders judged: `EvalCase` carries the outcome
    FAILED = "failed"  # an answer or the judge failed: `error` says which; --resume retries


class EvalSide(enum.StrEnum):
    MODEL = "model"
    OPPONENT = "opponent"


class EvalOutcome(enum.StrEnum):
    """A case's result for the evaluated model, on one dimension or overall."""

    WIN = "win"
    TIE = "tie"
    LOSS = "loss"


class EvalRun(Base):
    """One benchmark run (a variant vs an opponent on a case set, judged per case) or one
    judge-clinician agreement measurement. `totals` holds the counts once it finished."""

    __tablename__ = "eval_runs"
    __table_args__ = (
        Index(None, "created_at"),
        Index(None, "case_set_id"),
        Index(None, "model_variant_id"),
        Index(None, "opponent_variant_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[EvalKind] = mapped_column(_enum_column(EvalKind))
    status: Mapped[RunStatus] = mapped_column(_enum_column(RunStatus))
    case_set_id: Mapped[int | None] = mapped_column(ForeignKey("case_sets.id", ondelete="RESTRICT"))
    model_variant_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_variants.id", ondelete="RESTRICT")
    )
    #: NULL in a benchmark run: the opponent is the reference doctor's answers.
    opponent_variant_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_variants.id", ondelete="RESTRICT")
    )
    judge_model: Mapped[str] = mapped_column(String(PATH_LENGTH))
    #: The judge endpoint last used (a resumed run may be judged at a new address).
    judge_url: Mapped[str] = mapped_column(String(URL_LENGTH))
    language: Mapped[str] = mapped_column(String(LANGUAGE_LENGTH))
    #: The settings as given (case file, selection, seed, concurrency, bootstrap, ...).
    config: Mapped[dict[str, Any]]
    totals: Mapped[dict[str, Any] | None]
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: The process running it and its machine (a dead one makes the run resumable).
    pid: Mapped[int | None] = mapped_column(Integer)
    host: Mapped[str | None] = mapped_column(String(HOST_LENGTH))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(String(ERROR_LENGTH))


class EvalCase(Base):
    """One case of a benchmark run, its status and (once judged) the model's outcome per
    dimension and overall, from both orders (a win only where both agree)."""

    __tablename__ = "eval_cases"
    __table_args__ = (
        UniqueConstraint("run_id", "position"),
        UniqueConstraint("run_id", "case_id"),
        Index(None, "case_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"))
    #: 1, 2, 3, ... in the order of the run's selection.
    position: Mapped[int] = mapped_column(Integer)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="RESTRICT"))
    status: Mapped[EvalCaseStatus] = mapped_column(_enum_column(EvalCaseStatus))
    proactiveness: Mapped[EvalOutcome | None] = mapped_column(_enum_column(EvalOutcome))
    accuracy: Mapped[EvalOutcome | None] = mapped_column(_enum_column(EvalOutcome))
    usefulness: Mapped[EvalOutcome | None] = mapped_column(_enum_column(EvalOutcome))
    language_quality: Mapped[EvalOutcome | None] = mapped_column(_enum_column(EvalOutcome))
    overall: Mapped[EvalOutcome | None] = mapped_column(_enum_column(EvalOutcome))
    #: Why the case has no outcome: which side's answer or the judge failed (no patient text).
    error: Mapped[str | None] = mapped_column(String(ERROR_LENGTH))
    #: Judge HTTP requests this case cost (0: every verdict came from the cache).
    judge_calls: Mapped[int] = mapped_column(Integer, default=0)
    finished_at: Mapped[datetime | None]


class EvalResponse(Base):
    """One side's answer to one turn of a case, given the reference history before it."""

    __tablename__ = "eval_responses"
    __table_args__ = (
        UniqueConstraint("eval_case_id", "side", "turn"),
        Index(None, "variant_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    eval_case_id: Mapped[int] = mapped_column(ForeignKey("eval_cases.id", ondelete="CASCADE"))
    side: Mapped[EvalSide] = mapped_column(_enum_column(EvalSide))
    #: The case turn's position (1, 2, ...).
    turn: Mapped[int] = mapped_column(Integer)
    #: NULL: the reference doctor's answer (the opponent "reference").
    variant_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_variants.id", ondelete="RESTRICT")
    )
    text: Mapped[str] = mapped_column(Text)
    finish_reason: Mapped[FinishReason] = mapped_column(_enum_column(FinishReason))
    error: Mapped[str | None] = mapped_column(String(ERROR_LENGTH))
    sampling_params: Mapped[dict[str, Any] | None]
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class EvalVerdict(Base):
    """The judge's verdict on a case in one order: `model_side` says where the model's answers
    were shown (A or B); the dimensions say which shown answer won (as `judge_verdicts`)."""

    __tablename__ = "eval_verdicts"
    __table_args__ = (UniqueConstraint("eval_case_id", "model_side"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    eval_case_id: Mapped[int] = mapped_column(ForeignKey("eval_cases.id", ondelete="CASCADE"))
    model_side: Mapped[Side] = mapped_column(_enum_column(Side))
    proactiveness: Mapped[Preference | None] = mapped_column(_enum_column(Preference))
    accuracy: Mapped[Preference | None] = mapped_column(_enum_column(Preference))
    usefulness: Mapped[Preference | None] = mapped_column(_enum_column(Preference))
    language_quality: Mapped[Preference | None] = mapped_column(_enum_column(Preference))
    #: Set when the judge gave no usable verdict (then the dimensions are NULL).
    error: Mapped[str | None] = mapped_column(String(ERROR_LENGTH))
    calls: Mapped[int] = mapped_column(Integer, default=0)
    cached: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
