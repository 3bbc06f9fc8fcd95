"""Typed errors of the storage layer.

Each error carries a `user_message` a person at the UI can read (the app turns it into a
visible message once, at its edge) and a `detail` for logs and tests; the root of the one
hierarchy is `model.errors.PulseMindError` (dependency-free, so storage may import it). Neither ever holds
patient text: repository functions put ids and field names in `detail`, never content.
"""

from __future__ import annotations

from model.errors import PulseMindError


class StorageError(PulseMindError):
    """Base of every error the repository functions raise on purpose (in the project's one
    hierarchy, `model.errors.PulseMindError`: a specific `user_message=` such as "This
    username is taken." overrides the class-wide one)."""

    user_message: str = "The database could not complete this request."


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
