"""Images on their way to a model: scale to the model's pixel budget, encode, make data URLs.

Qwen2.5-VL tiles an image into 28x28 patches and spends one token per patch group, so pixels
past its budget only cost bandwidth and prompt tokens; we scale on our side, before sending,
instead of shipping a 24 MP photo for the server to shrink.
"""

from __future__ import annotations

import base64
import io

from PIL import Image

from model.intake.images import fit_within

#: Qwen2.5-VL's default max_pixels (1280 patches of 28x28): more is resized away by the server.
DEFAULT_MAX_PIXELS = 1280 * 28 * 28
#: JPEG quality for photos: visually lossless for clinical photos at a fraction of PNG's size.
JPEG_QUALITY = 90


def fit_to_budget(img: Image.Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Return `img` downscaled (aspect kept, never upscaled) to at most `max_pixels` pixels."""
    return fit_within(img, max_pixels)


def _is_greyscale(img: Image.Image) -> bool:
    return img.mode in ("L", "LA", "1", "I", "I;16", "F")


def encode_image(img: Image.Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, bytes]:
    """Encode for the wire: PNG for greyscale (DICOM, scans: keep every grey level), JPEG for photos.

    >>> mime, data = encode_image(Image.new("RGB", (4000, 3000)), max_pixels=100_000)
    >>> mime
    'image/jpeg'
    """
    img = fit_to_budget(img, max_pixels)
    buf = io.BytesIO()
    if _is_greyscale(img):
        img.convert("L").save(buf, format="PNG", optimize=True)
        return "image/png", buf.getvalue()
    img.convert("RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
    return "image/jpeg", buf.getvalue()


def to_data_url(img: Image.Image, max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """A `data:` URL for an OpenAI `image_url` content part."""
    mime, data = encode_image(img, max_pixels)
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
