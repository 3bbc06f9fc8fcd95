"""Input checks shared by the repository modules: each failure is an `InvalidInput`.

Messages name the field and the limit, never the value (it may be patient text).
"""

from __future__ import annotations

import enum
import json
from typing import Any, TypeVar

from storage.errors import InvalidInput

E = TypeVar("E", bound=enum.Enum)


def as_enum(enum_cls: type[E], value: object, field: str) -> E:
    """`value` (an `enum_cls` member or its string value) as a member, else InvalidInput."""
    if isinstance(value, enum_cls):
        return value
    try:
        return enum_cls(value)
    except ValueError:
        allowed = ", ".join(str(member.value) for member in enum_cls)
        raise InvalidInput(
            f"{field} must be one of: {allowed}",
            user_message=f"Invalid {field.replace('_', ' ')}.",
        ) from None


def bounded_text(value: object, field: str, max_chars: int, *, allow_empty: bool = False) -> str:
    """A str of at most `max_chars` characters (and not blank unless allowed)."""
    if not isinstance(value, str):
        raise InvalidInput(f"{field} must be text, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise InvalidInput(f"{field} is empty", user_message=f"The {field} must not be empty.")
    if len(value) > max_chars:
        raise InvalidInput(
            f"{field} has {len(value)} characters; at most {max_chars}",
            user_message=f"The {field} is too long (at most {max_chars} characters).",
        )
    return value


def optional_count(value: object, field: str) -> int | None:
    """None or a non-negative int (token counts, milliseconds, sizes)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInput(f"{field} must be a non-negative integer or None")
    return value


def json_object(value: object, field: str, max_chars: int) -> dict[str, Any] | None:
    """None or a dict that serialises to JSON of at most `max_chars` characters."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidInput(f"{field} must be a JSON object (dict) or None")
    try:
        encoded = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{field} is not JSON-serialisable: {type(exc).__name__}") from None
    if len(encoded) > max_chars:
        raise InvalidInput(f"{field} is {len(encoded)} characters as JSON; at most {max_chars}")
    return value
