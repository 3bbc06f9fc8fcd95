"""DICOM files -> de-identified header, a few display-ready frames and a technical summary.

Steps, and why:
1. Read with pydicom (compressed transfer syntaxes decode through the pylibjpeg plugins:
   JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE). A file without the DICM
   preamble is only force-read when its name ends in .dcm; a .dcm file that does not parse as
   DICOM is refused as `NotDicom`.
2. Rows x Columns is checked against `max_image_pixels` before any pixel is decoded, and only
   the kept frames are decoded (evenly spaced, including the middle one): a 1,000-frame cine
   never becomes one giant array.
3. The header is de-identified (`model.intake.deid`) and checked; the summary given to the
   model is built only from technical, coded values (modality, sizes, window, body part...).
4. Each frame becomes an 8-bit image the way a viewer shows it: modality LUT (rescale
   slope/intercept or LUT), then the VOI LUT or the header's window (first one if several), or
   a modality default (CT: soft tissue C40/W400; others: full range), MONOCHROME1 inverted,
   palette and YBR colour converted to RGB. Enhanced multi-frame per-frame windows are used.
5. Text burned into the kept frames (ultrasound banners: name, ID, birth date, hospital) is
   found by OCR and all but technical labels are filled black (`model.intake.ocr`), for
   every modality in `BURNED_IN_PRONE`, every Secondary Capture and every file whose header
   says BurnedInAnnotation=YES, whatever the header says otherwise (US machines often write
   NO and print the name anyway). CT/MR/PT/NM... without the flag are not OCR'd: their
   pixels are reconstructed from detector data and carry no printed text (a viewer draws
   its labels as overlays, which we do not render; a screenshot of one is a Secondary
   Capture), and OCR would cost ~0.3 CPU s per 512x512 slice for nothing. Measured on 2
   cores, warm engine: a 1024x768 ultrasound frame with a banner and labels 0.6-1.0 CPU s
   (0.36 s wall when the machine was less loaded), pydicom's 640x480 and 800x350 US samples
   0.27-0.44 s wall, its 4-of-30-frame 320x240 cine 3.6-6.3 s for the whole intake under
   load (small frames are enlarged for detection; see `model.intake.ocr`).

Run it on files: `pulsemind intake scan.dcm` (see `model.intake.cli`).
"""

from __future__ import annotations

import io
import logging
import re
import struct
import warnings
import zlib

import numpy as np
import pydicom
from loguru import logger
from pydicom.dataset import Dataset
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.pixels import get_decoder, iter_pixels
from pydicom.pixels.utils import get_nr_frames

from .deid import contains_identifier, deidentify
from .dicom_display import header_window, modality_values, multi_valued, render_frame
from .errors import CorruptFile, DicomWithoutImage, NotDicom, UnsupportedFileType
from .images import check_aspect, check_pixel_count, fit_within
from .limits import IntakeLimits
from .ocr import mask_images
from .pixels import PixelVolume, frame_values
from .types import Derived, IntakeImage

#: What pydicom and its decoders raise on damaged data (truncated elements, short pixel data,
#: broken codestreams, nonsense lengths).
DECODE_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    NotImplementedError,  # "Unknown Value Representation" from a garbled header
    BytesLengthException,  # an element whose length does not fit its VR
    EOFError,
    OSError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    OverflowError,
    struct.error,
    zlib.error,
)
#: Modalities that usually burn text (often the patient's name) into the pixels: ultrasound,
#: secondary captures, endoscopy, external-camera and microscopy photos.
BURNED_IN_PRONE = frozenset({"US", "OT", "SC", "ES", "XC", "GM", "SM", "DOC"})
#: Modalities whose single frame is a cross-section.
SLICE_MODALITIES = frozenset({"CT", "MR", "PT", "NM"})
#: Coded values we let into the summary: upper-case code strings only (no free text).
CODE_STRING = re.compile(r"^[A-Z0-9 _]{1,16}$")

_PYDICOM_LOGGER = "pydicom"


class _WithholdValues(logging.Filter):
    """pydicom's validation warnings quote element values (a malformed patient name among
    them); keep the fact of a warning, drop its text."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = "pydicom warning withheld (its text may quote DICOM header values)"
        record.args = ()
        return True


_WITHHOLD = _WithholdValues()


def quiet_pydicom() -> None:
    """Stop pydicom warnings from carrying header values into logs (idempotent, process-wide)."""
    logging.getLogger(_PYDICOM_LOGGER).addFilter(_WITHHOLD)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom(\.|$)")


def pick_frames(n_frames: int, k: int) -> list[int]:
    """`k` evenly spaced frame indices that include the middle frame.

    >>> pick_frames(40, 4)
    [0, 10, 20, 30]
    >>> pick_frames(3, 4)
    [0, 1, 2]
    """
    if n_frames <= k:
        return list(range(n_frames))
    mid = n_frames // 2
    step = n_frames / k
    picked = {
        min(n_frames - 1, max(0, mid + round(step * j))) for j in range(-(k // 2), k - k // 2)
    }
    return sorted(picked)


def read_dicom(data: bytes, filename: str, limits: IntakeLimits, *, forced: bool) -> Derived:
    """Decode, de-identify and summarise a DICOM upload. Raises IntakeError subclasses."""
    quiet_pydicom()
    ds = _parse(data, filename, forced=forced)
    try:
        if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            _raise_no_pixels(ds, filename)
        rows, cols = int(ds.Rows), int(ds.Columns)
        n_frames = max(1, int(get_nr_frames(ds, warn=False)))
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    except DECODE_ERRORS as exc:
        raise CorruptFile(
            "The DICOM header is missing or has invalid image size information "
            "(Rows, Columns or Number of Frames).",
            filename=filename,
        ) from exc
    check_pixel_count(cols, rows, limits, filename, "DICOM image")
    check_aspect(cols, rows, limits, filename)
    try:
        modality = _code(ds.get("Modality")) or ""
        burned_raw = str(ds.get("BurnedInAnnotation", "") or "").strip().upper()
        burned_suspected = not burned_raw and (
            modality in BURNED_IN_PRONE or "Secondary Capture" in _sop_class_name(ds)
        )
        summary_fields = _summary_fields(ds, modality)  # technical values, read before de-id
        transfer_syntax = _transfer_syntax_name(ds)
        deid = deidentify(ds)  # DeidentificationFailed passes through: it is no DECODE_ERROR
    except DECODE_ERRORS as exc:
        raise CorruptFile(
            "The DICOM header has damaged elements and cannot be read safely. Export it again.",
            filename=filename,
        ) from exc
    burned_yes = burned_raw == "YES"
    indices = pick_frames(n_frames, limits.dicom_max_frames)
    images, windows, values = _decode_frames(
        ds, indices, n_frames, modality, photometric, limits, filename
    )
    # See step 5 of the module docstring for why CT/MR without the flag are not OCR'd.
    ocr_checked = (
        burned_yes or modality in BURNED_IN_PRONE or "Secondary Capture" in _sop_class_name(ds)
    )
    burned = None
    if ocr_checked:
        images, burned = mask_images(images, filename)
    notes: list[str] = []
    if n_frames > len(indices):
        kept = ", ".join(str(i + 1) for i in indices)
        notes.append(f"multi-frame: {len(indices)} of {n_frames} frames kept (frames {kept})")
    if (rows * cols) > limits.model_max_pixels:
        notes.append(
            f"downscaled from {cols}x{rows} to {images[0].image.width}x"
            f"{images[0].image.height} for the model's pixel budget"
        )
    if burned_yes:
        notes.append(
            "burned-in annotation: the header says the pixels contain text, so they were "
            "checked by OCR"
        )
    elif burned_suspected:
        notes.append(
            f"burned-in text suspected ({modality or 'secondary capture'} images often carry "
            "it), so the pixels were checked by OCR"
        )
    if burned is not None:
        notes.append(burned.note())
    notes.extend(sorted({w for w in windows if w.startswith("window from header gave")}))
    report = dict(deid.report)
    report["burned_in_annotation"] = burned_raw or "absent"
    report["burned_in_suspected"] = burned_suspected
    report["burned_in_text"] = (
        burned.report()
        if burned is not None
        else {"checked": False, "why": f"{modality or 'this'} image without BurnedInAnnotation"}
    )
    burned_found = burned is not None and burned.lines_masked > 0
    # Values for re-windowing only where the pixels needed no masking: masked text would
    # come back in the raw values.
    pixels = (
        PixelVolume(np.stack(values), tuple(indices), modality, header_window(ds, indices[0]),
                    photometric == "MONOCHROME1")  # fmt: skip
        if not ocr_checked and values and len(values) == len(images)
        else None
    )
    notes.append(
        f"header de-identified ({report['library']}): {len(report['replaced'])} element kinds "
        f"replaced, {len(report['removed'])} removed, {report['private_tags_removed']} private "
        "tags removed"
    )
    text = _summary_text(
        summary_fields, cols, rows, n_frames, len(indices), windows, deid.identifying_tokens
    )
    logger.info(
        "DICOM intake: modality={} size={}x{} frames={}/{} syntax={} burned_in={}",
        modality or "-",
        cols,
        rows,
        len(indices),
        n_frames,
        transfer_syntax,
        burned_yes or burned_suspected or burned_found,
    )
    return Derived(
        images=images,
        mime="application/dicom",
        text=text,
        page_count=None,
        deidentified=True,  # header de-identified, and burned-in text masked where it occurs
        deid_report=report,
        burned_in_annotation=burned_yes or burned_suspected or burned_found,
        notes=notes,
        identifying_tokens=deid.identifying_tokens,
        pixels=pixels,
    )


def _decode_frames(
    ds: Dataset,
    indices: list[int],
    n_frames: int,
    modality: str,
    photometric: str,
    limits: IntakeLimits,
    filename: str,
) -> tuple[list[IntakeImage], list[str], list[np.ndarray]]:
    """Decode only the kept frames and render them: (images, how each was windowed, the
    modality-LUT values of greyscale frames at their image's size, for `PixelVolume`)."""
    images: list[IntakeImage] = []
    windows: list[str] = []
    values: list[np.ndarray] = []
    grey = photometric in ("MONOCHROME1", "MONOCHROME2")
    try:
        for idx, arr in zip(indices, iter_pixels(ds, indices=indices), strict=True):
            img, window = render_frame(arr, ds, idx, modality, photometric)
            windows.append(window)
            img = fit_within(img, limits.model_max_pixels)
            images.append(IntakeImage(img, _frame_label(idx, n_frames, modality)))
            if grey and arr.ndim == 2:
                values.append(frame_values(modality_values(arr, ds, idx), img.size))
    except (RuntimeError, NotImplementedError) as exc:
        # pydicom raises RuntimeError both when no plugin can decode the transfer syntax and
        # when every available plugin failed on the data: tell the two apart.
        syntax = _transfer_syntax_name(ds)
        if isinstance(exc, RuntimeError) and _decoder_available(ds):
            raise CorruptFile(
                f"The DICOM image data ({syntax}) could not be decoded: it is damaged "
                "or written in a non-standard way. Export it again from the viewer.",
                filename=filename,
            ) from exc
        raise UnsupportedFileType(
            f"The DICOM pixel data ({syntax}, {photometric}) cannot be decoded here. "
            "Export the image uncompressed or as PNG from the viewer.",
            filename=filename,
        ) from exc
    except DECODE_ERRORS as exc:
        raise _damaged_pixels(filename) from exc
    except BaseException as exc:
        # Rust decoders (pylibjpeg-rle) panic on some broken streams; pyo3 raises that as
        # PanicException, a BaseException. Everything else (KeyboardInterrupt...) goes on.
        if type(exc).__name__ != "PanicException":
            raise
        raise _damaged_pixels(filename) from exc
    return images, windows, values


def _damaged_pixels(filename: str) -> CorruptFile:
    return CorruptFile(
        "The DICOM image data is damaged or incomplete (the file may have been cut off "
        "during copying). Export it again from the viewer.",
        filename=filename,
    )


def looks_like_dicom(data: bytes) -> bool:
    """A preamble-less file parses as a plausible DICOM dataset (used for .dcm names)."""
    quiet_pydicom()
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        return _plausible(ds)
    except (InvalidDicomError, *DECODE_ERRORS):
        return False


def _parse(data: bytes, filename: str, *, forced: bool) -> Dataset:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=forced)
    except InvalidDicomError as exc:
        raise NotDicom(
            "The file is not a readable DICOM file. Export it again from the viewer as DICOM, "
            "or as PNG/JPEG.",
            filename=filename,
        ) from exc
    except DECODE_ERRORS as exc:
        raise CorruptFile(
            "The DICOM file is damaged or incomplete and cannot be read. Export it again.",
            filename=filename,
        ) from exc
    if forced and not _plausible(ds):
        raise NotDicom(
            "The file is named like a DICOM file (.dcm) but its content is not DICOM.",
            filename=filename,
        )
    return ds


def _plausible(ds: Dataset) -> bool:
    try:
        return "SOPClassUID" in ds or ("PixelData" in ds and "Rows" in ds and "Columns" in ds)
    except DECODE_ERRORS:
        return False


def _raise_no_pixels(ds: Dataset, filename: str) -> None:
    name = _sop_class_name(ds)
    if "Rows" in ds or "Image Storage" in name:
        raise CorruptFile(
            "The DICOM image has no pixel data: the file is incomplete (it may have been cut "
            "off during copying). Export it again.",
            filename=filename,
        )
    what = f" (it is a {name} object)" if name else ""
    raise DicomWithoutImage(
        f"This DICOM file holds no image{what}. Only DICOM images are accepted; export "
        "reports or waveforms as PDF.",
        filename=filename,
    )


def _frame_label(idx: int, n_frames: int, modality: str) -> str:
    if n_frames > 1:
        return f"frame {idx + 1} of {n_frames}"
    if modality in SLICE_MODALITIES:
        return f"{modality} slice"
    return f"{modality} image" if modality else "DICOM image"


def _code(value) -> str | None:
    """A coded string value, or None if it is not a plain upper-case code."""
    if value is None or multi_valued(value):
        return None
    s = str(value).strip().upper()
    return s if CODE_STRING.match(s) else None


def _sop_class_name(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID")
    if uid is None:
        return ""
    name = getattr(uid, "name", "") or ""
    return "" if name == str(uid) else name  # unknown UIDs "name" themselves


def _decoder_available(ds: Dataset) -> bool:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    if uid is None:
        return True  # native data read with a guessed syntax
    try:
        return bool(get_decoder(uid).is_available)
    except NotImplementedError:  # no decoder at all for this transfer syntax
        return False


def _transfer_syntax_name(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    uid = meta.get("TransferSyntaxUID") if meta is not None else None
    return (getattr(uid, "name", "") or str(uid)) if uid else "unknown transfer syntax"


def _number(value) -> str | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f"{f:.3g}" if np.isfinite(f) else None


def _summary_fields(ds: Dataset, modality: str) -> dict[str, str]:
    """Technical, non-identifying values for the model (no free text, no dates, no names)."""
    fields: dict[str, str] = {}
    if modality:
        fields["modality"] = modality
    name = _sop_class_name(ds)
    if name:
        fields["object"] = name
    for key, keyword in (
        ("body part", "BodyPartExamined"),
        ("view", "ViewPosition"),
        ("laterality", "ImageLaterality"),
        ("laterality", "Laterality"),  # series level, used when the image level is absent
        ("patient position", "PatientPosition"),
    ):
        code = _code(ds.get(keyword))
        if code and key not in fields:
            fields[key] = code
    spacing = ds.get("PixelSpacing")
    if spacing is not None and multi_valued(spacing) and len(spacing) == 2:
        a, b = _number(spacing[0]), _number(spacing[1])
        if a and b:
            fields["pixel spacing"] = f"{a} x {b} mm"
    thickness = _number(ds.get("SliceThickness"))
    if thickness:
        fields["slice thickness"] = f"{thickness} mm"
    return fields


def _summary_text(
    fields: dict[str, str],
    cols: int,
    rows: int,
    n_frames: int,
    kept: int,
    windows: list[str],
    tokens: frozenset[str],
) -> str:
    """One line for the model, e.g. "DICOM CT (CT Image Storage), 512x512, window C40 W400"."""
    head = f"DICOM {fields.get('modality', 'image')}"
    if "object" in fields:
        head += f" ({fields['object']})"
    parts = [head, f"{cols}x{rows} pixels"]
    if n_frames > 1:
        parts.append(f"{n_frames} frames, {kept} shown")
    if windows:
        parts.append(windows[0])
    for key in ("body part", "view", "laterality", "patient position", "pixel spacing"):
        if key in fields:
            parts.append(f"{key}: {fields[key]}")
    if "slice thickness" in fields:
        parts.append(f"slice thickness: {fields['slice thickness']}")
    # A coded value that happens to equal an identifier of this patient is dropped.
    return ", ".join(p for p in parts if not contains_identifier(p, tokens))
