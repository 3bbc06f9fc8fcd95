"""An upload's own encoding, metadata stripped, for the model when intake left its pixels alone.

Re-encoding an image that is already within the model's pixel budget can only make it bigger
or worse: a 60 KB greyscale JPEG radiograph went out as a 125 KB PNG. When intake changed
nothing about the pixels (no rotation, scaling, colour management, mode conversion or masking),
the model may as well get the file itself, minus everything that is not pixels:

- JPEG: the markers are re-muxed, not re-encoded (lossless): APP0-APP15 segments (JFIF, EXIF
  with GPS and camera serials, XMP, ICC, MPF with its appended preview images, maker notes)
  and comments are dropped; tables, frame, scans and Adobe's colour-transform flag (APP14,
  12 bytes of flags that decide how the colours decode) are kept; bytes after EOI go.
- PNG: only the critical chunks (IHDR, PLTE, IDAT, IEND) are kept: text chunks, EXIF, ICC,
  timestamps and any private chunk go.

`original_encoding` only hands bytes on after decoding them again and finding exactly the
pixels intake produced, so a stripped file that would look different (an unusual colour
transform, a decoder quirk) is never sent. `EncodedOriginal.matches` lets whoever consumes it
later check that nobody changed the pixels in between (masking burned-in text, for example).
"""

from __future__ import annotations

import hashlib
import io
import struct
from dataclasses import dataclass

from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: JPEG markers without a length field: TEM, RST0-7, SOI, EOI.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xDA)})
_SOS, _EOI, _APP14, _COM = 0xDA, 0xD9, 0xEE, 0xFE
#: Pillow format names -> the MIME type of the stripped bytes (MPO: its first frame is a JPEG).
PASSTHROUGH_FORMATS = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png"}


@dataclass(frozen=True)
class EncodedOriginal:
    """The upload's own bytes, metadata stripped, decoding to exactly `pixels_sha256`."""

    mime: str
    data: bytes
    pixels_sha256: str
    """Digest of the decoded pixels (mode, size and bytes): see `matches`."""

    def matches(self, image: Image.Image) -> bool:
        """True if `image` still holds the pixels these bytes decode to."""
        return pixel_digest(image) == self.pixels_sha256


def pixel_digest(image: Image.Image) -> str:
    h = hashlib.sha256(f"{image.mode} {image.width}x{image.height}\n".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def strip_jpeg(data: bytes) -> bytes | None:
    """The JPEG's markers re-muxed without APPn (but Adobe's) and COM; None if malformed."""
    if not data.startswith(b"\xff\xd8"):
        return None
    out = [b"\xff\xd8"]
    pos, n = 2, len(data)
    while pos < n:
        if data[pos] != 0xFF:
            return None
        while pos < n and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= n:
            return None
        marker = data[pos]
        pos += 1
        if marker == _EOI:
            out.append(b"\xff\xd9")
            return b"".join(out)  # anything after EOI (MPO previews, trailers) is dropped
        if marker in _STANDALONE:
            out.append(bytes((0xFF, marker)))
            continue
        if pos + 2 > n:
            return None
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        end = pos + length
        if length < 2 or end > n:
            return None
        segment = data[pos - 2 : end]
        metadata = 0xE0 <= marker <= 0xEF or marker == _COM
        if not metadata or (marker == _APP14 and data[pos + 2 : pos + 7] == b"Adobe"):
            out.append(segment)
        pos = end
        if marker == _SOS:  # entropy-coded data runs to the next marker that is not RSTn
            scan_end = _end_of_scan(data, pos)
            out.append(data[pos:scan_end])
            pos = scan_end
    return None  # no EOI: truncated


def _end_of_scan(data: bytes, pos: int) -> int:
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            return len(data)
        nxt = data[pos + 1]
        if nxt == 0x00 or 0xD0 <= nxt <= 0xD7:  # stuffed 0xFF or a restart marker
            pos += 2
        elif nxt == 0xFF:  # fill byte: the marker follows
            pos += 1
        else:
            return pos


def strip_png(data: bytes) -> bytes | None:
    """The PNG with its critical chunks only; None if malformed."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    out = [PNG_SIGNATURE]
    pos, n = len(PNG_SIGNATURE), len(data)
    while pos + 12 <= n:
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > n:
            return None
        if kind[:1].isupper():  # critical chunk: bit 5 of the first letter clear
            out.append(data[pos:end])
        if kind == b"IEND":
            return b"".join(out)
        pos = end
    return None


def original_encoding(data: bytes, fmt: str, image: Image.Image) -> EncodedOriginal | None:
    """The upload's stripped bytes if they decode to exactly `image`; None otherwise.

    `fmt` is Pillow's format name of the upload. Costs one decode when the format and size
    allow a pass-through; nothing otherwise.
    """
    mime = PASSTHROUGH_FORMATS.get(fmt)
    if mime is None:
        return None
    stripped = strip_png(data) if mime == "image/png" else strip_jpeg(data)
    if stripped is None or len(stripped) > len(data):
        return None
    try:
        with Image.open(io.BytesIO(stripped)) as decoded:
            if decoded.size != image.size or decoded.mode != image.mode:
                return None
            decoded.load()
            digest = pixel_digest(decoded)
    except (OSError, SyntaxError, ValueError, EOFError, struct.error):
        return None  # not decodable on its own: send a re-encoding instead
    if digest != pixel_digest(image):
        return None
    return EncodedOriginal(mime, stripped, digest)
