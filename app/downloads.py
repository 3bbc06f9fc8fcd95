"""Files the server makes for one caller (an export's .zip, the leaderboard's CSVs).

Why: Gradio serves a handler's output files from its cache folder under `/gradio_api/file=`,
and the request guard (`app.request_guard`) lets a caller read a cached file only if it is
theirs (`storage.Uploads`). A file made for a caller is written straight into a private
folder of that cache (Gradio then serves it as it is, without copying) and recorded as the
caller's, so only they can fetch it.

    downloads = Downloads(uploads)
    folder = downloads.folder()                       # a new private folder in Gradio's cache
    zip_path = folder / "export.zip"; ...             # write the file
    return downloads.offer(user, [zip_path])[0]       # the path a gr.File output takes
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from pathlib import Path

from gradio.utils import get_upload_folder

from storage import Uploads, UserRecord

#: A subfolder of Gradio's cache, so made files are told apart from uploads on disk.
SUBFOLDER = "pulsemind-downloads"


class Downloads:
    """Made files, each readable by the user it was made for only."""

    def __init__(self, uploads: Uploads) -> None:
        self.uploads = uploads

    def folder(self) -> Path:
        """A new, empty folder (0700) inside Gradio's cache (`GRADIO_TEMP_DIR`, read now:
        the app sets it at start, `app.server.use_upload_dir`)."""
        folder = Path(get_upload_folder()).resolve() / SUBFOLDER / secrets.token_hex(8)
        folder.mkdir(mode=0o700, parents=True)
        return folder

    def offer(self, user: UserRecord, paths: Iterable[Path]) -> list[str]:
        """Record `paths` as `user`'s, so the request guard lets them (and only them) fetch."""
        out = [str(Path(p).resolve()) for p in paths]
        self.uploads.add(user.username, out)
        return out
