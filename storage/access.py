"""Who may read and who may write what: PulseMind's one authorization rule.

    consultation  its owner reads and writes it; an admin reads any (never writes into
                  another's); nobody else does either; an inactive user does nothing
    message       as its consultation (answers included: an admin's retry cannot supersede
                  a clinician's answer)
    attachment    (its derived images and text) whoever may read a consultation carrying it
    upload        a file in the server's upload cache, before it is an attachment: only the
                  user(s) who uploaded those bytes may use or read it; a path nobody uploaded
                  (the database, another user's upload, any server file) is no upload at all

Storage enforces the rule for every write (`access_consultation(..., write=True)` inside the
writing transaction); the app asks the same functions before it reads, and `Uploads` before
it opens, copies or hashes a file named in a request. Refusals raise `PermissionDenied` /
`NotFound`, logged with ids only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

from loguru import logger
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from storage.errors import NotFound, PermissionDenied
from storage.models import Attachment, Consultation, Message, MessageAttachment, User, UserRole
from storage.users import username_key


def active_user(session: Session, user_id: int) -> User:
    """The user row, if it exists and is active; PermissionDenied otherwise."""
    user = session.get(User, user_id)
    if user is None or not user.active:
        raise PermissionDenied(f"user {user_id} is unknown or inactive")
    return user


def access_consultation(
    session: Session, consultation_id: int, user_id: int, *, write: bool, lock: bool = False
) -> Consultation:
    """The consultation, if `user_id` may read it (`write=False`) or change it (`write=True`).

    NotFound if it does not exist; PermissionDenied if the user is not its owner (for
    reading: not its owner and not an admin). `lock=True` locks the row until the
    transaction ends (PostgreSQL `FOR UPDATE`; SQLite writers are serialised anyway), which
    serialises writers appending to the same consultation.
    """
    user = active_user(session, user_id)
    query = select(Consultation).where(Consultation.id == consultation_id)
    if lock:
        query = query.with_for_update()
    consultation = session.scalar(query)
    if consultation is None:
        raise NotFound(f"consultation {consultation_id} does not exist")
    if consultation.owner_id == user_id:
        return consultation
    if not write and user.role is UserRole.ADMIN:
        return consultation
    logger.warning(
        "user id={} denied {} access to consultation id={}",
        user_id,
        "write" if write else "read",
        consultation_id,
    )
    raise PermissionDenied(f"user {user_id} may not access consultation {consultation_id}")


def may_read_attachment(session: Session, user_id: int, attachment_id: int) -> bool:
    """True if the attachment exists and the user may read a consultation that carries it."""
    user = session.get(User, user_id)
    if user is None or not user.active or session.get(Attachment, attachment_id) is None:
        return False
    if user.role is UserRole.ADMIN:
        return True
    owned = exists(
        select(MessageAttachment.id)
        .join(Message, Message.id == MessageAttachment.message_id)
        .join(Consultation, Consultation.id == Message.consultation_id)
        .where(MessageAttachment.attachment_id == attachment_id)
        .where(Consultation.owner_id == user_id)
    )
    return bool(session.scalar(select(owned)))


class Uploads:
    """Which user uploaded which file of the server's upload cache (in memory: the cache is
    per process too). The web server records each upload as it answers it; every other
    request that names a file is checked here first.

    Gradio files an upload under its content's hash, so two users who upload the same bytes
    share one path: both may use it. Usernames compare as stored (`users.username_key`).
    """

    def __init__(self) -> None:
        self._owners: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(path: str | Path) -> str:
        return str(Path(path).resolve())

    def add(self, username: str, paths: Iterable[str | Path]) -> None:
        with self._lock:
            for p in paths:
                self._owners.setdefault(self._key(p), set()).add(username_key(username))

    def allowed(self, username: str | None, path: object) -> bool:
        """True only for a path (str) that `username` uploaded."""
        if not username or not isinstance(path, str | Path) or not str(path).strip():
            return False
        try:
            key = self._key(path)
        except (OSError, ValueError, RuntimeError):  # NUL bytes, symlink loops: no upload
            return False
        with self._lock:
            return username_key(username) in self._owners.get(key, ())

    def require(self, username: str, path: object) -> str:
        """The path, if `username` uploaded it; PermissionDenied (with a plain message) if not."""
        if not self.allowed(username, path):
            logger.warning("refused a file the caller did not upload")
            raise PermissionDenied(
                "file not uploaded by the caller",
                user_message="Attach files by uploading them here first.",
            )
        return str(path)
