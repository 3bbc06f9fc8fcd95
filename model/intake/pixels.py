"""The de-identified pixel values a viewer re-windows: kept at intake, rendered on request.

A DICOM's stored PNGs show one window (the header's, or a modality default); a clinician
looking at a CT wants lung, bone or brain too, which needs the values behind the pixels. Intake
keeps them for greyscale DICOM it did not have to mask (CT, MR, CR... without burned-in text:
`model.intake.dicom` step 5): the modality LUT applied (CT in Hounsfield units), only the frames
kept for the model, at the size of their stored images. Nothing of the header is kept but the
modality code, the header's window and whether 0 is white: `to_npz` writes arrays and those
three values, and `from_npz` reads them back without pickle.

    volume = result.pixels                        # IntakeResult.pixels, or None
    data = to_npz(volume)                         # compressed .npz bytes (storage keeps them)
    png = window_png(from_npz(data).values[0], *PRESETS["lung"])
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

#: Window presets in Hounsfield units, (centre, width): the usual CT reading windows.
PRESETS: dict[str, tuple[float, float]] = {
    "soft_tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}
#: Modalities whose values are Hounsfield units, so the presets above mean something.
HU_MODALITIES = frozenset({"CT"})
#: Keys of an .npz written by `to_npz`: anything else in a file is refused.
NPZ_KEYS = frozenset({"values", "frames", "modality", "window", "invert"})
#: Integer values in this range are stored as int16 (CT: -1024..3071 HU): half of float32.
_INT16 = (np.iinfo(np.int16).min, np.iinfo(np.int16).max)


@dataclass(frozen=True)
class PixelVolume:
    """Modality-LUT values of the frames intake kept: `values` (frames, rows, cols)."""

    values: np.ndarray
    frames: tuple[int, ...]  # 0-based frame numbers in the file, one per entry of `values`
    modality: str  # coded value, e.g. "CT" (empty if the header had none)
    window: tuple[float, float] | None  # the header's own (centre, width), if any
    invert: bool  # MONOCHROME1: 0 is white

    @property
    def hounsfield(self) -> bool:
        return self.modality in HU_MODALITIES


def frame_values(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One frame's modality-LUT values at `size` (width, height) of its stored image."""
    out = np.asarray(values, dtype=np.float32)
    if (out.shape[1], out.shape[0]) != size:
        out = np.asarray(Image.fromarray(out).resize(size, Image.Resampling.BILINEAR))
    return out


def to_npz(volume: PixelVolume) -> bytes:
    """The volume as compressed .npz bytes (integers as int16 when they fit)."""
    values = np.asarray(volume.values, dtype=np.float32)
    rounded = np.rint(values)
    if np.array_equal(rounded, values) and _INT16[0] <= values.min() and values.max() <= _INT16[1]:
        values = rounded.astype(np.int16)
    window = np.array(volume.window if volume.window else (np.nan, np.nan), dtype=np.float64)
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        values=values,
        frames=np.array(volume.frames, dtype=np.int64),
        modality=np.array(volume.modality, dtype="<U16"),
        window=window,
        invert=np.array(volume.invert),
    )
    return buf.getvalue()


def from_npz(data: bytes) -> PixelVolume:
    """Read `to_npz` bytes back (no pickle; ValueError if they are not such a file)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        if set(npz.files) != NPZ_KEYS:
            raise ValueError("not a pixel volume .npz")
        values = npz["values"].astype(np.float32)
        window = tuple(float(v) for v in npz["window"])
        if values.ndim != 3 or len(npz["frames"]) != values.shape[0] or len(window) != 2:
            raise ValueError("pixel volume .npz has inconsistent shapes")
        return PixelVolume(
            values=values,
            frames=tuple(int(f) for f in npz["frames"]),
            modality=str(npz["modality"]),
            window=None if any(np.isnan(window)) else (window[0], window[1]),
            invert=bool(npz["invert"]),
        )


def full_range(values: np.ndarray) -> tuple[float, float]:
    """(centre, width) spanning the darkest to the brightest value."""
    lo, hi = float(np.min(values)), float(np.max(values))
    return (lo + hi) / 2.0, max(hi - lo, 1.0)


def window_array(
    values: np.ndarray, center: float, width: float, invert: bool = False
) -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 LINEAR window to 0..255 (uint8); MONOCHROME1 inverted."""
    x = np.asarray(values, dtype=np.float32)
    if width <= 1.0:  # LINEAR with width 1 is a threshold
        y = (x > center - 0.5).astype(np.float32)
    else:
        y = (x - (center - 0.5)) / (width - 1.0) + 0.5
    out = np.clip(y * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return 255 - out if invert else out


def window_png(values: np.ndarray, center: float, width: float, invert: bool = False) -> bytes:
    """One frame windowed and encoded as PNG (8-bit greyscale)."""
    buf = io.BytesIO()
    Image.fromarray(window_array(values, center, width, invert)).save(buf, "PNG")
    return buf.getvalue()
