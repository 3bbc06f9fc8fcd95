"""Attachments: stored once per sha256, their derived images, and who may fetch them.

An upload is identified by the sha256 of its original bytes. The first time it is seen,
its derived content (de-identified text, rendered PNGs, the de-identification report) is
stored; later uploads of the same bytes reuse that row and only add a link
(`message_attachments`) with the name the file had this time. The original file is never
stored (a DICOM original holds patient identifiers); for an image intake left untouched, the
upload's own encoding with its metadata stripped is kept beside the PNG (`sent`), because that
is what the model is sent. A greyscale DICOM's de-identified pixel values, for the viewer's
window presets, are kept as a file beside the database (`storage.pixels`).

`store_attachment` runs inside the caller's transaction (`add_user_message`), so a message
and its attachments are written together or not at all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, undefer

from storage.access import may_read_attachment
from storage.checks import as_enum, bounded_text, json_object, optional_count
from storage.db import Database
from storage.errors import InvalidInput, NotFound
from storage.models import (
    LABEL_LENGTH,
    MIME_LENGTH,
    Attachment,
    AttachmentImage,
    AttachmentKind,
    MessageAttachment,
)
from storage.pixels import MAX_PIXELS_BYTES, has_pixels, read_pixels, write_pixels
from storage.records import AttachmentRecord, ImageRecord, NewAttachment, NewImage, from_row

SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Extracted text of one attachment (a long PDF report runs to a few hundred kB).
MAX_ATTACHMENT_TEXT_CHARS = 2_000_000
#: The de-identification report lists what was done, not values: a few kB at most.
MAX_DEID_REPORT_CHARS = 100_000
#: Rendered pages/frames kept per attachment; intake caps lower, this is the backstop.
MAX_IMAGES_PER_ATTACHMENT = 200
#: Side of a derived image; intake downscales far below this.
MAX_IMAGE_SIDE = 16_384
#: Encodings the model may be sent as they are (`AttachmentImage.sent`).
SENT_MIMES = (None, "image/jpeg", "image/png")
#: An upload sent as it came fits the model's pixel budget (~1 MP): a few MB at the very most.
MAX_SENT_BYTES = 20 * 2**20


def _check_image(image: NewImage | tuple, index: int) -> NewImage:
    try:
        label, width, height, png, *rest = image
        sent_mime, sent = (*rest, None, None)[:2]
    except (TypeError, ValueError):
        raise InvalidInput(f"image {index} is not (label, width, height, png)") from None
    label = bounded_text(label, f"image {index} label", LABEL_LENGTH, allow_empty=True)
    for name, side in (("width", width), ("height", height)):
        if isinstance(side, bool) or not isinstance(side, int) or not 0 < side <= MAX_IMAGE_SIDE:
            raise InvalidInput(f"image {index} {name} must be an int in 1..{MAX_IMAGE_SIDE}")
    if not isinstance(png, bytes) or not png.startswith(PNG_SIGNATURE):
        raise InvalidInput(f"image {index} is not PNG bytes")
    if sent_mime not in SENT_MIMES or (sent is not None and not isinstance(sent, bytes)):
        raise InvalidInput(f"image {index} sent encoding must be JPEG/PNG bytes or None")
    if (sent is not None and sent_mime is None) or len(sent or b"") > MAX_SENT_BYTES:
        raise InvalidInput(f"image {index} sent bytes without a type, or too large")
    return NewImage(label, width, height, png, sent_mime, sent)


def _check_new_attachment(new: NewAttachment) -> list[NewImage]:
    """Validate everything about `new` before anything of it is written."""
    if not isinstance(new.sha256, str) or not SHA256_PATTERN.fullmatch(new.sha256):
        raise InvalidInput("sha256 must be 64 lower-case hex digits")
    as_enum(AttachmentKind, new.kind, "attachment kind")
    bounded_text(new.mime, "mime type", MIME_LENGTH)
    if optional_count(new.size_bytes, "size_bytes") is None:
        raise InvalidInput("size_bytes is required")
    optional_count(new.page_count, "page_count")
    if new.text is not None:
        bounded_text(new.text, "attachment text", MAX_ATTACHMENT_TEXT_CHARS, allow_empty=True)
    json_object(new.deid_report, "deid_report", MAX_DEID_REPORT_CHARS)
    if new.pixels is not None and (
        not isinstance(new.pixels, bytes) or len(new.pixels) > MAX_PIXELS_BYTES
    ):
        raise InvalidInput("pixels must be .npz bytes of at most 64 MB")
    if len(new.images) > MAX_IMAGES_PER_ATTACHMENT:
        raise InvalidInput(f"more than {MAX_IMAGES_PER_ATTACHMENT} images in one attachment")
    return [_check_image(image, i) for i, image in enumerate(new.images)]


def store_attachment(session: Session, new: NewAttachment) -> tuple[Attachment, bool]:
    """The attachment row for `new.sha256`, created (with its images) if new.

    Returns (row, created). Runs in the caller's transaction. Raises InvalidInput for bad
    input before writing anything of this attachment.
    """
    images = _check_new_attachment(new)
    existing = session.scalar(select(Attachment).where(Attachment.sha256 == new.sha256))
    if existing is not None:
        _keep_pixels(session, new, only_if_missing=True)  # stored before values were kept
        return existing, False
    attachment = Attachment(
        sha256=new.sha256,
        kind=as_enum(AttachmentKind, new.kind, "attachment kind"),
        mime=new.mime,
        size_bytes=new.size_bytes,
        deidentified=bool(new.deidentified),
        deid_report=new.deid_report,
        burned_in_annotation=bool(new.burned_in_annotation),
        text=new.text,
        page_count=new.page_count,
    )
    try:
        # A savepoint: if another writer stored the same sha256 a moment ago (PostgreSQL;
        # SQLite serialises writers), fall back to its row without losing our transaction.
        with session.begin_nested():
            session.add(attachment)
            session.flush()
    except IntegrityError:
        existing = session.scalar(select(Attachment).where(Attachment.sha256 == new.sha256))
        if existing is None:
            raise
        return existing, False
    session.add_all(
        AttachmentImage(
            attachment_id=attachment.id,
            position=position,
            label=image.label,
            width=image.width,
            height=image.height,
            png=image.png,
            sent_mime=image.sent_mime,
            sent=image.sent,
        )
        for position, image in enumerate(images)
    )
    _keep_pixels(session, new)
    return attachment, True


def _keep_pixels(session: Session, new: NewAttachment, *, only_if_missing: bool = False) -> None:
    """Write `new.pixels` beside the database (`storage.pixels`). Before the transaction
    commits: if it rolls back, the file (de-identified values under the upload's hash) waits
    for the same upload to be stored again."""
    if new.pixels is None:
        return
    url = session.get_bind().url
    if only_if_missing and has_pixels(url, new.sha256):
        return
    try:
        write_pixels(url, new.sha256, new.pixels)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from exc


def _image_record(image: AttachmentImage, *, with_png: bool) -> ImageRecord:
    return from_row(ImageRecord, image, **({} if with_png else {"png": None, "sent": None}))


def _images_of(
    session: Session, attachment_ids: Iterable[int], *, with_png: bool
) -> dict[int, list[ImageRecord]]:
    """The derived images of each attachment, in position order (bytes only `with_png`)."""
    ids = set(attachment_ids)
    if not ids:
        return {}
    query = (
        select(AttachmentImage)
        .where(AttachmentImage.attachment_id.in_(ids))
        .order_by(AttachmentImage.attachment_id, AttachmentImage.position)
    )
    if with_png:
        query = query.options(undefer(AttachmentImage.png), undefer(AttachmentImage.sent))
    images: dict[int, list[ImageRecord]] = {}
    for image in session.scalars(query):
        images.setdefault(image.attachment_id, []).append(_image_record(image, with_png=with_png))
    return images


def load_attachments(
    session: Session, message_ids: Iterable[int], *, with_png: bool
) -> dict[int, list[AttachmentRecord]]:
    """Attachments of each message (in position order), keyed by message id."""
    ids = list(message_ids)
    if not ids:
        return {}
    links = session.execute(
        select(MessageAttachment, Attachment)
        .join(Attachment, Attachment.id == MessageAttachment.attachment_id)
        .where(MessageAttachment.message_id.in_(ids))
        .order_by(MessageAttachment.message_id, MessageAttachment.position)
    ).all()
    images = _images_of(session, {attachment.id for _, attachment in links}, with_png=with_png)
    result: dict[int, list[AttachmentRecord]] = {}
    for link, attachment in links:
        result.setdefault(link.message_id, []).append(
            from_row(
                AttachmentRecord, attachment, position=link.position,
                original_name=link.original_name, images=tuple(images.get(attachment.id, ())),
            )  # fmt: skip
        )
    return result


def get_attachment_images(
    db: Database, attachment_id: int, *, with_png: bool = True
) -> list[ImageRecord]:
    """The derived images of an attachment, in order. NotFound if there is no attachment.

    Check `user_can_access_attachment` first: this function does not know the caller.
    """
    query = (
        select(AttachmentImage)
        .where(AttachmentImage.attachment_id == attachment_id)
        .order_by(AttachmentImage.position)
    )
    if with_png:
        query = query.options(undefer(AttachmentImage.png), undefer(AttachmentImage.sent))
    with db.transaction(write=False) as session:
        if session.get(Attachment, attachment_id) is None:
            raise NotFound(f"attachment {attachment_id} does not exist")
        return [_image_record(image, with_png=with_png) for image in session.scalars(query)]


def get_attachment_image(db: Database, attachment_id: int, position: int) -> ImageRecord:
    """One derived image with its PNG bytes (what a file URL serves). NotFound if absent."""
    query = (
        select(AttachmentImage)
        .where(AttachmentImage.attachment_id == attachment_id)
        .where(AttachmentImage.position == position)
        .options(undefer(AttachmentImage.png))
    )
    with db.transaction(write=False) as session:
        image = session.scalar(query)
        if image is None:
            raise NotFound(f"attachment {attachment_id} has no image {position}")
        return _image_record(image, with_png=True)


def get_attachment_pixels(db: Database, attachment_id: int) -> bytes | None:
    """The attachment's kept pixel values (.npz bytes), or None if it has none. NotFound if
    there is no attachment. Check `user_can_access_attachment` first."""
    with db.transaction(write=False) as session:
        attachment = session.get(Attachment, attachment_id)
        if attachment is None:
            raise NotFound(f"attachment {attachment_id} does not exist")
        sha256 = attachment.sha256
    return read_pixels(db.url, sha256)


def user_can_access_attachment(db: Database, user_id: int, attachment_id: int) -> bool:
    """True if the user may read a consultation that carries the attachment (`storage.access`)."""
    try:
        with db.transaction(write=False) as session:
            return may_read_attachment(session, user_id, attachment_id)
    except NotFound:  # an id no row can have
        return False


def attachments_by_id(
    session: Session, attachment_ids: Iterable[int], *, with_png: bool
) -> dict[int, AttachmentRecord]:
    """Attachments by id with their images (bytes only `with_png`), outside any message: for
    case turns and compare questions. `position` 0 and no name: callers place them."""
    ids = sorted(set(attachment_ids))
    if not ids:
        return {}
    images = _images_of(session, ids, with_png=with_png)
    return {
        a.id: from_row(AttachmentRecord, a, position=0, original_name="",
                       images=tuple(images.get(a.id, ())))  # fmt: skip
        for a in session.scalars(select(Attachment).where(Attachment.id.in_(ids)))
    }
