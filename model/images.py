"""Images on their way to a model: the bytes sent, scaled to the model's pixel budget.

Qwen2.5-VL tiles an image into 28x28 patches and spends one token per patch group, so pixels
past its budget only cost bandwidth and prompt tokens; we scale on our side, before sending,
instead of shipping a 24 MP photo for the server to shrink.

An image that is already within the budget is never sent bigger than it came: when intake
left an upload's pixels alone, the model gets the upload's own JPEG or PNG with its metadata
stripped (`model.intake.passthrough`), not a re-encoding (a 60 KB greyscale JPEG radiograph
went out as a 125 KB PNG before). A prompt image is therefore either pixels (`PIL.Image`,
encoded here: PNG for greyscale, JPEG for colour) or an `EncodedImage` (bytes sent as they
are while they fit the budget, decoded and scaled when they do not).

Where those bytes live between turns: storage keeps one derived PNG per image and, beside it,
the pass-through encoding (`AttachmentImage.sent_mime`/`sent`; `stored_image` makes them,
`from_stored` turns a stored image back into what the model is sent). Images stored without
one are sent re-encoded, as before.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from model.intake.images import fit_within
from model.intake.types import IntakeImage

#: Qwen2.5-VL's default max_pixels (1280 patches of 28x28): more is resized away by the server.
DEFAULT_MAX_PIXELS = 1280 * 28 * 28
#: JPEG quality for photos: visually lossless for clinical photos at a fraction of PNG's size.
JPEG_QUALITY = 90
MIME_JPEG, MIME_PNG = "image/jpeg", "image/png"


class StoredImage(Protocol):
    """A stored image as storage returns it (`storage.ImageRecord`, bytes loaded)."""

    width: int
    height: int
    png: bytes
    sent_mime: str | None
    sent: bytes | None


@dataclass(frozen=True)
class EncodedImage:
    """An image as a JPEG or PNG file, sent as is while `width` x `height` fits the budget."""

    mime: str
    data: bytes
    width: int
    height: int

    def pixels(self) -> Image.Image:
        """The decoded image (lazy: decoded on first use)."""
        return Image.open(io.BytesIO(self.data))


#: What a prompt carries per image.
ModelImage = Image.Image | EncodedImage


def as_pixels(img: ModelImage) -> Image.Image:
    """The image as pixels (what an in-process model's processor takes)."""
    return img.pixels() if isinstance(img, EncodedImage) else img


def fit_to_budget(img: Image.Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Return `img` downscaled (aspect kept, never upscaled) to at most `max_pixels` pixels."""
    return fit_within(img, max_pixels)


def _is_greyscale(img: Image.Image) -> bool:
    return img.mode in ("L", "LA", "1", "I", "I;16", "F")


def encode_image(img: ModelImage, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, bytes]:
    """The bytes the model is sent for `img`, and their MIME type.

    An `EncodedImage` within the budget goes as it is. Pixels (and an `EncodedImage` over the
    budget, decoded) are scaled to the budget and encoded: PNG for greyscale (DICOM, scans:
    keep every grey level), JPEG for photos.

    >>> mime, data = encode_image(Image.new("RGB", (4000, 3000)), max_pixels=100_000)
    >>> mime
    'image/jpeg'
    """
    if isinstance(img, EncodedImage):
        if img.width * img.height <= max_pixels:
            return img.mime, img.data
        img = img.pixels()
    img = fit_to_budget(img, max_pixels)
    buf = io.BytesIO()
    if _is_greyscale(img):
        img.convert("L").save(buf, format="PNG", optimize=True)
        return MIME_PNG, buf.getvalue()
    img.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
    return MIME_JPEG, buf.getvalue()


def to_data_url(img: ModelImage, max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """A `data:` URL for an OpenAI `image_url` content part."""
    mime, data = encode_image(img, max_pixels)
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# --- from intake, and through storage -----------------------------------------------------


def for_model(im: IntakeImage) -> ModelImage:
    """What the model is sent for an intake image: the upload's own (stripped) bytes if its
    pixels are still exactly what they decode to, else the pixels."""
    enc = im.encoded
    if enc is not None and enc.matches(im.image):
        return EncodedImage(enc.mime, enc.data, im.image.width, im.image.height)
    return im.image


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def stored_image(im: IntakeImage) -> tuple[bytes, str | None, bytes | None]:
    """(png, sent_mime, sent) as storage keeps an intake image (`AttachmentImage`): its pixels
    as PNG, plus the upload's own stripped encoding when that is what the model is sent. For
    a PNG upload the stripped upload itself is the stored PNG (nothing kept twice)."""
    sent = for_model(im)
    if not isinstance(sent, EncodedImage):
        return png_bytes(im.image), None, None
    if sent.mime == MIME_PNG:
        return sent.data, MIME_PNG, None
    return png_bytes(im.image), sent.mime, sent.data


def from_stored(img: StoredImage) -> ModelImage:
    """A stored image as a prompt image: its sent encoding if it has one, else the (lazy) PNG."""
    if img.sent_mime == MIME_PNG and img.sent is None:
        return EncodedImage(MIME_PNG, img.png, img.width, img.height)
    if img.sent_mime and img.sent:
        return EncodedImage(img.sent_mime, img.sent, img.width, img.height)
    return Image.open(io.BytesIO(img.png))
