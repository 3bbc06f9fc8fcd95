"""Tell a file's type from its first bytes (magic numbers), not from its name.

A name can lie (a PNG saved as `scan.dcm`, a DICOM exported without an extension); content
decides. The extension only matters for DICOM files written without the 128-byte preamble,
which have no magic number: those are tried only when the name ends in .dcm/.dicom.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Literal

SniffKind = Literal["image", "dicom", "pdf", "unknown"]

#: Extensions that allow a forced (preamble-less) DICOM read.
DICOM_EXTENSIONS = frozenset({".dcm", ".dicom", ".dic"})
#: The PDF header may follow some junk; readers look this far for "%PDF-".
PDF_HEADER_WINDOW = 1024


@dataclass(frozen=True)
class Sniffed:
    kind: SniffKind
    mime: str
    description: str  # what the content is, in words, for error messages ("PNG image")


# (prefix, offset, kind, mime, description); first match wins.
_SIGNATURES: tuple[tuple[bytes, int, SniffKind, str, str], ...] = (
    (b"DICM", 128, "dicom", "application/dicom", "DICOM file"),
    (b"\x89PNG\r\n\x1a\n", 0, "image", "image/png", "PNG image"),
    (b"\xff\xd8\xff", 0, "image", "image/jpeg", "JPEG image"),
    (b"II*\x00", 0, "image", "image/tiff", "TIFF image"),
    (b"MM\x00*", 0, "image", "image/tiff", "TIFF image"),
    (b"II+\x00", 0, "image", "image/tiff", "TIFF image"),
    (b"MM\x00+", 0, "image", "image/tiff", "TIFF image"),
    (b"GIF87a", 0, "image", "image/gif", "GIF image"),
    (b"GIF89a", 0, "image", "image/gif", "GIF image"),
    (b"BM", 0, "unknown", "image/bmp", "BMP image"),
    (b"\x00\x00\x01\x00", 0, "unknown", "image/vnd.microsoft.icon", "icon (ICO) file"),
    (b"8BPS", 0, "unknown", "image/vnd.adobe.photoshop", "Photoshop document"),
    (b"PK\x03\x04", 0, "unknown", "application/zip", "ZIP archive or Office document (.docx)"),
    (b"\xd0\xcf\x11\xe0", 0, "unknown", "application/x-ole-storage", "old Office document (.doc)"),
    (b"MZ", 0, "unknown", "application/x-msdownload", "Windows program (.exe)"),
    (b"\x7fELF", 0, "unknown", "application/x-executable", "program (ELF)"),
    (b"\x1f\x8b", 0, "unknown", "application/gzip", "compressed archive (.gz)"),
    (b"{\\rtf", 0, "unknown", "application/rtf", "RTF document"),
)

_HEIF_BRANDS = (b"heic", b"heix", b"hevc", b"heim", b"heis", b"mif1", b"msf1", b"avif")


def sniff(data: bytes) -> Sniffed:
    """Classify `data` by its magic bytes.

    >>> sniff(b"%PDF-1.7 ...").kind
    'pdf'
    >>> sniff(b"hello").description
    'plain text file'
    """
    for prefix, offset, kind, mime, description in _SIGNATURES:
        if data[offset : offset + len(prefix)] == prefix:
            return Sniffed(kind, mime, description)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return Sniffed("image", "image/webp", "WebP image")
    if data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return Sniffed(
            "unknown", "image/heif", "HEIC/HEIF photo (export it as JPEG on the phone or computer)"
        )
    if b"%PDF-" in data[:PDF_HEADER_WINDOW]:
        return Sniffed("pdf", "application/pdf", "PDF document")
    if _looks_like_text(data[:4096]):
        return Sniffed("unknown", "text/plain", "plain text file")
    return Sniffed("unknown", "application/octet-stream", "file of unknown type")


def has_dicom_extension(filename: str) -> bool:
    return PurePath(filename).suffix.lower() in DICOM_EXTENSIONS


def _looks_like_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut at the window's end is still text.
        return exc.start >= len(head) - 3
    return True
