"""Attachment intake: turn an upload into what the model may see, or a clear refusal.

    from model.intake import intake_file
    result = intake_file("chest.dcm")          # IntakeResult: images, text, notes, deid report
    result.to_json()                           # summary without pixels

Types are told from content (magic bytes), never from the name alone:
- images (PNG, JPEG, WebP, TIFF): `model.intake.images`
- DICOM (with or without the DICM preamble): `model.intake.dicom` + `model.intake.deid`
- PDF: `model.intake.pdf`
Anything else raises an `IntakeError` subclass (`model.intake.errors`) whose `detail` tells
the clinician what was wrong and what to do. Pure functions: no database, no global state
(beyond withholding pydicom's value-quoting warnings), safe to call from worker threads.

File names are shown to users but never logged (they often hold patient names); logs carry a
prefix of the content hash instead. Try it: `pulsemind intake FILE... [--json]`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

from loguru import logger

from .deid import contains_identifier
from .dicom import looks_like_dicom, read_dicom
from .errors import (
    AnimatedImage,
    CorruptFile,
    DeidentificationFailed,
    DicomWithoutImage,
    EmptyFile,
    EncryptedPdf,
    FileTooLarge,
    ImageTooLarge,
    IntakeError,
    NotDicom,
    OddImageShape,
    TooManyFiles,
    TooManyPages,
    UnreadableFile,
    UnsupportedFileType,
)
from .images import read_image
from .limits import ACCEPTED_TYPES, IntakeLimits
from .pdf import read_pdf
from .sniff import has_dicom_extension, sniff
from .types import IntakeImage, IntakeKind, IntakeResult

__all__ = [
    "ACCEPTED_TYPES",
    "AnimatedImage",
    "CorruptFile",
    "DeidentificationFailed",
    "DicomWithoutImage",
    "EmptyFile",
    "EncryptedPdf",
    "FileTooLarge",
    "ImageTooLarge",
    "IntakeError",
    "IntakeImage",
    "IntakeLimits",
    "IntakeResult",
    "NotDicom",
    "OddImageShape",
    "TooManyFiles",
    "TooManyPages",
    "UnreadableFile",
    "UnsupportedFileType",
    "intake_bytes",
    "intake_file",
    "intake_files",
]


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n / 2**10:.0f} KB"


def _check_size(size: int, filename: str, limits: IntakeLimits) -> None:
    if size == 0:
        raise EmptyFile(
            "The file is empty (0 bytes); the upload may have failed. Upload it again.",
            filename=filename,
        )
    if size > limits.max_file_bytes:
        raise FileTooLarge(
            f"The file is {_mib(size)}; at most {_mib(limits.max_file_bytes)} per file is "
            "accepted. Upload a smaller export (fewer pages or frames, or a PNG/JPEG).",
            filename=filename,
        )


def intake_bytes(data: bytes, filename: str, *, limits: IntakeLimits | None = None) -> IntakeResult:
    """Take in one upload held in memory. Raises an `IntakeError` subclass if it cannot be used."""
    limits = limits or IntakeLimits()
    _check_size(len(data), filename, limits)
    digest = hashlib.sha256(data).hexdigest()
    sniffed = sniff(data)
    started = time.perf_counter()
    with logger.contextualize(upload=digest[:12]):
        kind: IntakeKind
        if sniffed.kind == "dicom":
            kind, derived = "dicom", read_dicom(data, filename, limits, forced=False)
        elif has_dicom_extension(filename):
            if sniffed.kind != "unknown" or not looks_like_dicom(data):
                raise NotDicom(
                    "The file is named like a DICOM file (.dcm) but its content is "
                    f"{_a(sniffed.description) if sniffed.kind != 'unknown' else 'not DICOM'}"
                    ". Export it again from the viewer, or upload it under its real type.",
                    filename=filename,
                )
            kind, derived = "dicom", read_dicom(data, filename, limits, forced=True)
        elif sniffed.kind == "image":
            kind, derived = "image", read_image(data, filename, sniffed, limits)
        elif sniffed.kind == "pdf":
            kind, derived = "pdf", read_pdf(data, filename, limits)
        else:
            raise UnsupportedFileType(
                f"This is {_a(sniffed.description)}, which cannot be used. "
                f"Accepted: {ACCEPTED_TYPES}.",
                filename=filename,
            )
        result = IntakeResult(
            kind=kind,
            filename=filename,
            sha256=digest,
            mime=derived.mime,
            size_bytes=len(data),
            images=derived.images,
            text=derived.text,
            page_count=derived.page_count,
            deidentified=derived.deidentified,
            deid_report=derived.deid_report,
            burned_in_annotation=derived.burned_in_annotation,
            notes=derived.notes,
            pixels=derived.pixels,
        )
        _check_no_identifiers(result, derived.identifying_tokens)
        logger.info(
            "intake ok: kind={} bytes={} images={} text_chars={} in {:.0f} ms",
            kind,
            len(data),
            len(result.images),
            len(result.text or ""),
            (time.perf_counter() - started) * 1000,
        )
    return result


def intake_file(
    path: str | Path, *, filename: str | None = None, limits: IntakeLimits | None = None
) -> IntakeResult:
    """Take in a file on disk; its size is checked before it is read."""
    limits = limits or IntakeLimits()
    path = Path(path)
    name = filename or path.name
    try:
        if path.is_dir():
            raise UnreadableFile("This is a folder, not a file.", filename=name)
        size = path.stat().st_size
        _check_size(size, name, limits)
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise UnreadableFile("The file does not exist.", filename=name) from exc
    except PermissionError as exc:
        raise UnreadableFile("The file cannot be read (permission denied).", filename=name) from exc
    except OSError as exc:
        raise UnreadableFile(f"The file cannot be read ({exc.strerror}).", filename=name) from exc
    return intake_bytes(data, name, limits=limits)


def intake_files(
    paths: Sequence[str | Path], *, limits: IntakeLimits | None = None
) -> list[IntakeResult]:
    """Take in the files of one turn; too many files are refused before any is read."""
    limits = limits or IntakeLimits()
    if len(paths) > limits.max_files_per_turn:
        raise TooManyFiles(
            f"{len(paths)} files were attached to one message; at most "
            f"{limits.max_files_per_turn} are accepted. Send the rest in another message."
        )
    return [intake_file(p, limits=limits) for p in paths]


def _check_no_identifiers(result: IntakeResult, tokens: frozenset[str]) -> None:
    """Fail closed if any identifier found in the file (DICOM header, PDF field) made it into
    what we hand on."""
    if not tokens:
        return
    summary = result.to_json()
    summary.pop("filename")  # the user's own label, not from the file
    if contains_identifier(json.dumps(summary, ensure_ascii=False), tokens):
        logger.warning("intake refused: an identifying value survived de-identification")
        raise DeidentificationFailed(
            "An identifying value from the file could not be kept out of what the model would "
            "read, so the file was not used. Export it anonymised and upload that.",
            filename=result.filename,
        )
