"""Photos and image files (PNG, JPEG, WebP, TIFF) -> one clean image for the model.

What happens, in order, and why:
1. `Image.open` reads only the header, so the decoded size (width x height) is checked
   against `max_image_pixels` before a single pixel is decoded (decompression bombs).
2. GIF, BMP, ICO and friends are refused with the list of accepted types; animated images
   (GIF, APNG, animated WebP) are refused (one still frame would silently drop the rest).
   Multi-page TIFF: the first page is used and a note says so (scanners write one page per
   file far more often than not; refusing would block the common case).
3. JPEGs are decoded at a reduced DCT scale when they are far over the model's pixel budget
   (`draft`): a 24 MP phone photo decodes in a fraction of the time.
4. EXIF orientation is applied, the image is converted to RGB or L (alpha on white, palettes,
   16-bit greyscale stretched, CMYK), downscaled to the model budget (aspect kept, never
   upscaled), colour-managed to sRGB when it carries an ICC profile, and finally rebuilt from
   its pixels alone: EXIF (camera serials, GPS position, dates), XMP, comments and PNG text
   chunks do not survive.
5. Printed text is found by OCR in the image that is sent (after downscaling) and every line
   that is not a technical label is filled black (`model.intake.ocr`): a photographed lab
   report or prescription names its patient. OCR reads the ~1 MP image that is sent, never
   the 12-24 MP original: measured on 2 cores (loaded), a phone photo of a printed page
   0.7-0.9 CPU s (1.3-2.3 s wall), a 1156x867 photo without text ~0.5 CPU s; a whole 12 MP
   JPEG intake 1.7 s wall (see `model.intake.ocr` for more).

The shared helpers `fit_within` and `pixels_only` are also used by the DICOM and PDF readers.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
import zlib

import numpy as np
from loguru import logger
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from .errors import (
    AnimatedImage,
    CorruptFile,
    ImageTooLarge,
    OddImageShape,
    UnsupportedFileType,
)
from .limits import ACCEPTED_TYPES, IntakeLimits
from .ocr import mask_images
from .passthrough import original_encoding
from .sniff import Sniffed
from .types import Derived, IntakeImage

#: Pillow format names we take. MPO is how Pillow names many phone JPEGs (a main image plus
#: a depth/preview image); its first frame is the photo.
ACCEPTED_IMAGE_FORMATS = frozenset({"PNG", "JPEG", "MPO", "WEBP", "TIFF"})
#: Formats that are photographs rather than screenshots or scans (only changes the label).
PHOTO_FORMATS = frozenset({"JPEG", "MPO"})
#: EXIF tags: Orientation, and the pointer to the GPS block.
EXIF_ORIENTATION = 0x0112
EXIF_GPS_IFD = 0x8825
#: Background for transparent pixels: documents and photos are read on white.
TRANSPARENT_BACKGROUND = (255, 255, 255)
#: What Pillow raises on damaged or truncated image data ("image file is truncated", bad
#: zlib stream, broken TIFF tags...).
#: Pillow's TIFF reader also raises TypeError/KeyError/ZeroDivisionError on broken tags.
PIL_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    TypeError,
    KeyError,
    ZeroDivisionError,
    struct.error,
    zlib.error,
)


def megapixels(w: int, h: int) -> str:
    return f"{w * h / 1e6:.0f} megapixels" if w * h >= 1e6 else f"{w * h:,} pixels"


def budget_size(w: int, h: int, max_pixels: int) -> tuple[int, int]:
    """The largest (w, h) with the same aspect that fits `max_pixels`; never larger than input."""
    if w * h <= max_pixels:
        return w, h
    scale = math.sqrt(max_pixels / (w * h))
    return max(1, math.floor(w * scale)), max(1, math.floor(h * scale))


def fit_within(img: Image.Image, max_pixels: int) -> Image.Image:
    """Downscale `img` (aspect kept, Lanczos) to at most `max_pixels` pixels; never upscale."""
    size = budget_size(img.width, img.height, max_pixels)
    if size == img.size:
        return img
    # reducing_gap: box-reduce first, then Lanczos; same look, several times faster on 24 MP.
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def pixels_only(img: Image.Image) -> Image.Image:
    """A new image holding only `img`'s pixels: no EXIF, XMP, ICC, comments or text chunks."""
    return Image.frombytes(img.mode, img.size, img.tobytes())


def check_pixel_count(w: int, h: int, limits: IntakeLimits, filename: str, what: str) -> None:
    """Refuse a decoded size over `max_image_pixels` (called with header dimensions)."""
    if w * h > limits.max_image_pixels:
        raise ImageTooLarge(
            f"This {what} is {w} x {h} pixels ({megapixels(w, h)}); at most "
            f"{megapixels(limits.max_image_pixels, 1)} can be opened safely. "
            "Save a smaller copy (for example 4000 x 3000) and upload that.",
            filename=filename,
        )


def check_aspect(w: int, h: int, limits: IntakeLimits, filename: str) -> None:
    if w < 1 or h < 1:
        raise CorruptFile("The image has no pixels (width or height is 0).", filename=filename)
    if max(w, h) / min(w, h) > limits.max_aspect_ratio:
        raise OddImageShape(
            f"The image is {w} x {h} pixels: one side is more than "
            f"{limits.max_aspect_ratio:.0f} times the other, which the model cannot read. "
            "Crop it to the part that matters.",
            filename=filename,
        )


def read_image(data: bytes, filename: str, sniffed: Sniffed, limits: IntakeLimits) -> Derived:
    """Decode an image upload into one clean image. Raises IntakeError subclasses."""
    try:
        with warnings.catch_warnings():
            # Pillow warns past ~89 MP at open; our own limit below decides and explains.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))  # lazy: header only
            fmt = im.format or "unknown"
            n_frames = getattr(im, "n_frames", 1)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(
            "The image declares a size too large to open safely.", filename=filename
        ) from exc
    except (UnidentifiedImageError, *PIL_DECODE_ERRORS) as exc:
        raise CorruptFile(
            f"The file looks like a {sniffed.description} but it cannot be read; it may be "
            "damaged or incomplete. Export it again.",
            filename=filename,
        ) from exc
    if fmt == "GIF":
        if n_frames > 1:
            raise AnimatedImage(
                f"This is an animated GIF ({n_frames} frames). Upload a still image "
                "(PNG or JPEG) of the frame that matters.",
                filename=filename,
            )
        raise UnsupportedFileType(
            f"GIF images are not accepted. Accepted: {ACCEPTED_TYPES}.", filename=filename
        )
    if fmt not in ACCEPTED_IMAGE_FORMATS:
        raise UnsupportedFileType(
            f"{fmt} images are not accepted. Accepted: {ACCEPTED_TYPES}.", filename=filename
        )
    w, h = im.size
    check_pixel_count(w, h, limits, filename, "image")
    check_aspect(w, h, limits, filename)
    if fmt in ("PNG", "WEBP") and getattr(im, "is_animated", False):
        kind = "animated PNG" if fmt == "PNG" else "animated WebP"
        raise AnimatedImage(
            f"This is an {kind} ({n_frames} frames). Upload a still image (PNG or JPEG) of the "
            "frame that matters.",
            filename=filename,
        )

    notes: list[str] = []
    if fmt == "TIFF" and n_frames > 1:
        notes.append(f"multi-page TIFF: page 1 of {n_frames} used; upload other pages separately")
    target = budget_size(w, h, limits.model_max_pixels)
    try:
        if fmt in PHOTO_FORMATS and target != (w, h):
            # Decode at 1/2, 1/4 or 1/8 scale where that still covers the target size.
            im.draft(im.mode if im.mode in ("RGB", "L") else None, target)
        im.load()
        removed = _metadata_present(im)  # PNG keeps EXIF after the pixels: read after load
        orientation = im.getexif().get(EXIF_ORIENTATION, 1)
        icc = im.info.get("icc_profile")
        im = ImageOps.exif_transpose(im) or im
        decoded_mode = im.mode
        im, mode_notes = to_model_mode(im, icc)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(
            "The image declares a size too large to open safely.", filename=filename
        ) from exc
    except PIL_DECODE_ERRORS as exc:
        raise CorruptFile(
            f"The {sniffed.description} is damaged or incomplete ({type(exc).__name__}); "
            "export it again.",
            filename=filename,
        ) from exc
    notes.extend(mode_notes)
    if orientation in range(2, 9):  # 1 is upright; other values are invalid and ignored
        notes.append(f"EXIF orientation {orientation} applied")
    im = fit_within(im, limits.model_max_pixels)
    if im.size not in ((w, h), (h, w)):
        notes.append(
            f"downscaled from {w}x{h} to {im.width}x{im.height} for the model's pixel budget"
        )
    if icc and im.mode == "RGB" and decoded_mode != "CMYK":  # CMYK was managed above
        im, icc_note = to_srgb(im, icc)
        if icc_note:
            notes.append(icc_note)
    if removed:
        notes.append("metadata removed: " + ", ".join(removed))
    clean = pixels_only(im)
    label = "photo" if fmt in PHOTO_FORMATS else "image"
    [checked], burned = mask_images([IntakeImage(clean, label)], filename)
    notes.append(burned.note())
    report = {
        "profile": "image metadata stripped (image rebuilt from its pixels)",
        "removed": removed,
        "pixels": "printed text found by OCR; all but technical labels masked",
        "burned_in_text": burned.report(),
    }
    logger.debug(
        "image intake: format={} size={}x{} -> {}x{} mode={}",
        fmt,
        w,
        h,
        clean.width,
        clean.height,
        clean.mode,
    )
    return Derived(
        # the file itself, metadata stripped, if its pixels are exactly what is sent (so not
        # once text was masked)
        images=[IntakeImage(checked.image, label, original_encoding(data, fmt, checked.image))],
        mime=Image.MIME.get(fmt, sniffed.mime),
        deidentified=True,  # nothing but pixels is kept, and printed text was masked
        deid_report=report,
        burned_in_annotation=burned.lines_masked > 0,
        notes=notes,
    )


def _metadata_present(im: Image.Image) -> list[str]:
    """Names (never values) of the metadata blocks the upload carries."""
    found = []
    exif = im.getexif()
    if len(exif):
        found.append("EXIF")
        if exif.get_ifd(EXIF_GPS_IFD) or EXIF_GPS_IFD in exif:
            found.append("GPS location")
    if any(k in im.info for k in ("xmp", "XML:com.adobe.xmp")):
        found.append("XMP")
    if "icc_profile" in im.info:
        found.append("ICC profile")
    if "comment" in im.info:
        found.append("comment")
    text_keys = set(getattr(im, "text", {}) or {}) if im.format == "PNG" else set()
    if text_keys:
        found.append("text chunks")
    return found


def to_model_mode(im: Image.Image, icc: bytes | None = None) -> tuple[Image.Image, list[str]]:
    """Convert any Pillow mode to RGB or L (what every model image encoder takes)."""
    notes: list[str] = []
    mode = im.mode
    if mode in ("RGB", "L"):
        return im, notes
    if mode == "1":
        return im.convert("L"), notes
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        notes.append("high-bit-depth greyscale stretched to 8 bits (darkest to brightest)")
        return stretch_to_l(np.asarray(im)), notes
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        if im.mode == "RGB":
            return im, notes
        mode = im.mode
    if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        base = "L" if mode in ("LA", "La") else "RGB"
        rgba = im.convert("RGBA")
        if rgba.getchannel("A").getextrema()[0] == 255:  # alpha channel, but all opaque
            return rgba.convert(base), notes
        bg = Image.new("RGBA", rgba.size, (*TRANSPARENT_BACKGROUND, 255))
        notes.append("transparent areas shown on white")
        return Image.alpha_composite(bg, rgba).convert(base), notes
    if mode == "CMYK":
        if icc:
            converted, failure = to_srgb(im, icc)
            if failure is None and converted.mode == "RGB":
                return converted, ["CMYK colour converted to RGB with its ICC profile"]
            notes.append(failure or "colour profile could not be applied")
        return im.convert("RGB"), [*notes, "CMYK colour converted to RGB"]
    return im.convert("RGB"), notes


def to_srgb(im: Image.Image, icc: bytes) -> tuple[Image.Image, str | None]:
    """Colour-manage to sRGB with the embedded profile (phones often shoot Display P3)."""
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        dst = ImageCms.createProfile("sRGB")
        out = ImageCms.profileToProfile(im, src, dst, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        logger.debug("ICC profile not applied: {}", type(exc).__name__)
        return im, "colour profile could not be applied; colours may be slightly off"
    return (out if out is not None else im), None


def stretch_to_l(arr: np.ndarray) -> Image.Image:
    """Min-max stretch a 2-D array of any numeric type to an 8-bit greyscale image."""
    a = np.asarray(arr, dtype=np.float64)
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return Image.fromarray(np.zeros(a.shape[:2], dtype=np.uint8))
    out = np.nan_to_num((a - lo) * (255.0 / (hi - lo)), nan=0.0)
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))
