"""Where an attachment's re-windowable pixel values live: one .npz per sha256, on disk.

Intake keeps the de-identified values of a greyscale DICOM (`model.intake.pixels`: arrays, the
modality code, the header's window; no header, no identifiers) so the viewer can render lung,
bone or brain windows. They are a few hundred kB per CT slice, so they stay out of the
database, beside it: for an SQLite file `pulsemind.db`, in `pulsemind.pixels/`; for other
databases in `$PULSEMIND_PIXELS_DIR` (shared storage when several app instances serve one
PostgreSQL), else `pixels/` in the data folder. An in-memory SQLite keeps none.

Files are named by the attachment's sha256 (stored once, like the attachment row) and written
whole (a temporary file, then a rename), so a reader never sees half a file. The schema is
unchanged: an attachment without a file simply offers no re-windowing.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from loguru import logger
from sqlalchemy.engine import URL, make_url

from storage.db import default_data_dir

PIXELS_DIR_ENV = "PULSEMIND_PIXELS_DIR"
#: A CT slice is ~0.2-0.6 MB compressed and intake keeps at most a few frames: anything larger
#: than this is not ours.
MAX_PIXELS_BYTES = 64 * 2**20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NPZ_MAGIC = b"PK\x03\x04"  # .npz is a ZIP archive


def pixels_dir(url: str | URL) -> Path | None:
    """The folder of `url`'s pixel files, or None where none are kept (in-memory SQLite)."""
    folder = os.environ.get(PIXELS_DIR_ENV, "").strip()
    if folder:
        return Path(folder)
    url = make_url(url)
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        path = Path(database)
        return path.with_name(path.stem + ".pixels")  # not `<db>*`: the WAL files' pattern
    return default_data_dir() / "pixels"


def _path(folder: Path, sha256: str) -> Path:
    if not _SHA256.fullmatch(sha256):
        raise ValueError("sha256 must be 64 lower-case hex digits")
    return folder / sha256[:2] / f"{sha256}.npz"


def write_pixels(url: str | URL, sha256: str, data: bytes) -> Path | None:
    """Keep `data` (.npz bytes) for the attachment `sha256`; None where none are kept."""
    folder = pixels_dir(url)
    if folder is None:
        return None
    if not data.startswith(_NPZ_MAGIC) or len(data) > MAX_PIXELS_BYTES:
        raise ValueError("pixel data must be .npz bytes of at most 64 MB")
    path = _path(folder, sha256)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.debug("pixel values kept for attachment {}", sha256[:12])
    return path


def has_pixels(url: str | URL, sha256: str) -> bool:
    """Whether pixel values are kept for the attachment `sha256`."""
    folder = pixels_dir(url)
    return folder is not None and _path(folder, sha256).is_file()


def read_pixels(url: str | URL, sha256: str) -> bytes | None:
    """The .npz bytes kept for the attachment `sha256`, or None if none were kept."""
    folder = pixels_dir(url)
    if folder is None:
        return None
    path = _path(folder, sha256)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
