"""Typed errors of the storage layer.

Each error carries a `user_message` a person at the UI can read (the app turns it into a
visible message once, at its edge) and a `detail` for logs and tests. Neither ever holds
patient text: repository functions put ids and field names in `detail`, never content.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of every error the repository functions raise on purpose."""

    user_message: str = "The database could not complete this request."

    def __init__(self, detail: str | None = None, *, user_message: str | None = None):
        # A specific message ("This username is taken.") overrides the class-wide one.
        if user_message is not None:
            self.user_message = user_message
        super().__init__(detail or self.user_message)
        self.detail = detail or self.user_message

    def __str__(self) -> str:
        return self.detail


class NotFound(StorageError):
    """The row asked for does not exist (or was deleted)."""

    user_message = "This item does not exist (any more)."


class PermissionDenied(StorageError):
    """The caller may not see or change this row."""

    user_message = "You do not have access to this."


class Conflict(StorageError):
    """The row would clash with an existing one (e.g. a username that is taken)."""

    user_message = "This already exists."


class InvalidInput(StorageError):
    """A value the schema does not accept (unknown role, empty title, too long text, ...)."""

    user_message = "Some of the input is not valid."


class DatabaseBusy(StorageError):
    """Another writer held the database longer than a writer waits (SQLite's busy timeout)."""

    user_message = "The database is busy. Nothing was lost; try again in a moment."


class DatabaseUnavailable(StorageError):
    """The database cannot be read or written (disk error, read-only file, server down)."""

    user_message = (
        "The database cannot be reached right now. Nothing you saved before is lost; try again "
        "in a moment, and tell your administrator if it persists."
    )
