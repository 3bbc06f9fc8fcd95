"""From stored DICOM pixel values to what a viewer shows: an 8-bit greyscale or RGB image.

Order, as in DICOM PS3.3 C.11 (the grayscale pipeline): modality LUT (a LUT, or rescale slope
and intercept: CT values become Hounsfield units), then the VOI transform (the header's VOI
LUT, else its first window centre/width with its LINEAR / LINEAR_EXACT / SIGMOID function),
else a modality default (CT: soft tissue C40/W400; others: darkest to brightest value), then
MONOCHROME1 inverted (0 is white). Enhanced multi-frame objects keep rescale and window per
frame in functional groups; those are used. Colour: palette LUTs applied, RGB scaled to 8 bit
(pydicom already converted YBR to RGB while decoding).
"""

from __future__ import annotations

import numpy as np
from loguru import logger
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi

from .images import stretch_to_l

#: CT default when the header has no window: soft tissue (abdomen/chest mediastinum).
CT_DEFAULT_WINDOW = (40.0, 400.0)


def render_frame(
    arr: np.ndarray, ds: Dataset, index: int, modality: str, photometric: str
) -> tuple[Image.Image, str]:
    """One decoded frame -> (8-bit RGB or L image, how it was windowed)."""
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        return Image.fromarray(_to_uint8(rgb)), "palette colour"
    if arr.ndim == 3:  # colour; pixel_array already converted YBR_* to RGB
        return Image.fromarray(np.ascontiguousarray(_to_uint8(arr[..., :3], ds))), "colour"
    values = _modality_lut(arr, ds, index)
    window = _window(ds, index)
    if ds.get("VOILUTSequence") and window is None:
        out = apply_voi(np.asarray(np.rint(values), dtype=np.int64), ds)
        img, how = stretch_to_l(out), "VOI LUT from header"
    elif window is not None:
        img = _apply_window(values, *window)
        how = f"window C{window[0]:g} W{window[1]:g} from header"
        if _blank(img) and float(np.ptp(values)) > 0:
            img = stretch_to_l(values)
            how = "window from header gave a blank image; full range shown"
    elif modality == "CT":
        img = _apply_window(values, *CT_DEFAULT_WINDOW, "LINEAR")
        how = f"window C{CT_DEFAULT_WINDOW[0]:g} W{CT_DEFAULT_WINDOW[1]:g} (CT soft tissue)"
    else:
        img, how = stretch_to_l(values), "full range (no window in header)"
    if photometric == "MONOCHROME1":  # 0 is white
        img = Image.fromarray(255 - np.asarray(img))
    return img, how


def modality_values(arr: np.ndarray, ds: Dataset, index: int) -> np.ndarray:
    """A greyscale frame's stored values through the modality LUT (CT: Hounsfield units)."""
    return _modality_lut(arr, ds, index)


def header_window(ds: Dataset, index: int) -> tuple[float, float] | None:
    """The header's (centre, width) for a frame, if it has a usable one."""
    window = _window(ds, index)
    return window[:2] if window is not None else None


def _modality_lut(arr: np.ndarray, ds: Dataset, index: int) -> np.ndarray:
    if ds.get("ModalityLUTSequence"):
        return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    slope = _functional(ds, index, "PixelValueTransformationSequence", "RescaleSlope")
    intercept = _functional(ds, index, "PixelValueTransformationSequence", "RescaleIntercept")
    out = np.asarray(arr, dtype=np.float32)
    try:
        if slope is not None and float(slope) != 1.0:
            out = out * np.float32(float(slope))
        if intercept is not None and float(intercept) != 0.0:
            out = out + np.float32(float(intercept))
    except (TypeError, ValueError):  # malformed DS: show the stored values
        logger.debug("rescale slope/intercept not numeric; ignored")
    return out


def _window(ds: Dataset, index: int) -> tuple[float, float, str] | None:
    center = _functional(ds, index, "FrameVOILUTSequence", "WindowCenter")
    width = _functional(ds, index, "FrameVOILUTSequence", "WindowWidth")
    func = _functional(ds, index, "FrameVOILUTSequence", "VOILUTFunction") or "LINEAR"
    if center is None or width is None:
        return None
    try:
        c = float(center[0] if multi_valued(center) else center)
        w = float(width[0] if multi_valued(width) else width)
    except (TypeError, ValueError, IndexError):
        return None
    if not np.isfinite(c) or not np.isfinite(w) or w <= 0:
        return None
    return c, w, str(func).strip().upper()


def _apply_window(values: np.ndarray, center: float, width: float, func: str) -> Image.Image:
    """DICOM PS3.3 C.11.2.1.2 windowing to 0..255."""
    x = np.asarray(values, dtype=np.float32)
    if func == "SIGMOID":
        y = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    elif func == "LINEAR_EXACT":
        y = (x - center) / width + 0.5
    elif width <= 1.0:  # LINEAR with width 1 is a threshold
        y = (x > center - 0.5).astype(np.float32)
    else:
        y = (x - (center - 0.5)) / (width - 1.0) + 0.5
    out = np.clip(y * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(out)


def _functional(ds: Dataset, index: int, seq: str, keyword: str):
    """A value from the per-frame, then shared functional groups, then the top level."""
    for groups, item in (
        ("PerFrameFunctionalGroupsSequence", index),
        ("SharedFunctionalGroupsSequence", 0),
    ):
        seq_groups = ds.get(groups)
        if seq_groups and len(seq_groups) > item:
            inner = seq_groups[item].get(seq)
            if inner and keyword in inner[0]:
                return inner[0].get(keyword)
    return ds.get(keyword)


def multi_valued(value) -> bool:
    """A DICOM value with several entries (VM > 1)."""
    return isinstance(value, list | tuple) or type(value).__name__ == "MultiValue"


def _blank(img: Image.Image) -> bool:
    lo, hi = img.getextrema()
    return lo == hi


def _to_uint8(arr: np.ndarray, ds: Dataset | None = None) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    bits = int(ds.get("BitsStored", 16)) if ds is not None else 16
    top = float(2**bits - 1) if np.issubdtype(arr.dtype, np.integer) else float(np.max(arr) or 1)
    return np.clip(arr.astype(np.float32) * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)
