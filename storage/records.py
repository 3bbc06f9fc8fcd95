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
    CaseFormat,
    CompareSource,
    CompareTurnState,
    FinishReason,
    MessageRole,
    Overall,
    Preference,
    Side,
    Thumbs,
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
    #: Re-windowable pixel values (`.npz` bytes, `storage.pixels`), kept beside the database.
    pixels: bytes | None = None


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
    deleted_at: datetime | None = None


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
    parent_id: int | None = None
    chosen: bool = True
    attachments: tuple[AttachmentRecord, ...] = field(default=())


@dataclass(frozen=True)
class AnswerVersions:
    """The versions of one answer (the answers to the same question), oldest first, and
    which of them the consultation continues with (`storage.messages.answer_versions`)."""

    consultation_id: int
    versions: tuple[MessageRecord, ...]
    current_id: int

    @property
    def current_number(self) -> int:
        """1-based, as shown: ‹current_number / len(versions)›."""
        return next(i for i, m in enumerate(self.versions, 1) if m.id == self.current_id)


@dataclass(frozen=True)
class FeedbackRecord:
    id: int
    message_id: int
    user_id: int
    thumbs: Thumbs
    comment: str | None
    created_at: datetime
    updated_at: datetime


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


# --- Compare: cases, comparisons, answers, votes ------------------------------------------


@dataclass(frozen=True)
class NewCaseTurn:
    """A patient turn of a case to import; its files already through intake."""

    patient_text: str
    reference_answer: str | None
    attachments: Sequence[NewAttachment] = ()


@dataclass(frozen=True)
class NewCase:
    """A consultation to import (`storage.cases.import_case_set`)."""

    turns: Sequence[NewCaseTurn]
    source_id: str | None = None
    cate1: str | None = None
    cate2: str | None = None


@dataclass(frozen=True)
class CaseSetRecord:
    id: int
    name: str
    format: CaseFormat
    file_sha256: str
    case_count: int
    created_by_id: int | None
    created_at: datetime


@dataclass(frozen=True)
class CaseTurnRecord:
    id: int
    case_id: int
    position: int
    patient_text: str
    reference_answer: str | None
    attachments: tuple[AttachmentRecord, ...] = ()


@dataclass(frozen=True)
class CaseRecord:
    id: int
    case_set_id: int
    position: int
    source_id: str | None
    cate1: str | None
    cate2: str | None
    turns: tuple[CaseTurnRecord, ...] = ()


@dataclass(frozen=True)
class ComparisonRecord:
    id: int
    creator_id: int
    source: CompareSource
    case_id: int | None
    consultation_id: int | None
    up_to_message_id: int | None
    language: str
    created_at: datetime


@dataclass(frozen=True)
class ResponseRecord:
    """One side's answer of a compare turn."""

    id: int
    turn_id: int
    side: Side
    variant_id: int
    text: str
    sampling_params: dict[str, Any] | None
    finish_reason: FinishReason
    error: str | None
    latency_ms: int | None
    first_token_ms: int | None
    prompt_tokens: int | None
    completion_tokens: int | None
    finished_at: datetime

    @property
    def finished(self) -> bool:
        """Ended on its own (stop or length): the only answers a vote may judge."""
        return self.finish_reason in (FinishReason.STOP, FinishReason.LENGTH)


@dataclass(frozen=True)
class CompareTurnRecord:
    """A compare turn; `responses` in side order (A, B) as far as recorded, `attachments` are
    its question's files. Variant ids are here: show them only after the vote."""

    id: int
    comparison_id: int
    position: int
    state: CompareTurnState
    context: dict[str, Any]
    context_sha256: str
    prompt_text: str
    prompt_message_id: int | None
    prompt_case_turn_id: int | None
    reference_answer: str | None
    variant_a_id: int
    variant_b_id: int
    kept_side: Side | None
    kept_message_id: int | None
    created_at: datetime
    responses: tuple[ResponseRecord, ...] = ()
    attachments: tuple[AttachmentRecord, ...] = ()

    def response(self, side: Side | str) -> ResponseRecord | None:
        return next((r for r in self.responses if r.side == side), None)

    def variant_id(self, side: Side | str) -> int:
        return self.variant_a_id if side == Side.A else self.variant_b_id


@dataclass(frozen=True)
class ContextMessage:
    """A message of a compare turn's context, resolved from its snapshot (what the models
    were sent); shaped like `MessageRecord` for `model.prompt.to_chat_messages`."""

    role: MessageRole
    text: str
    attachments: tuple[AttachmentRecord, ...] = ()


@dataclass(frozen=True)
class VoteRecord:
    id: int
    turn_id: int
    voter_id: int
    #: None: not rated (clinician compare mode asks only for the overall pick).
    proactiveness: Preference | None
    accuracy: Preference | None
    usefulness: Preference | None
    language_quality: Preference | None
    overall: Overall
    safety_flag_a: bool
    safety_flag_b: bool
    comment: str | None
    time_to_vote_ms: int | None
    idempotency_key: str
    created_at: datetime
