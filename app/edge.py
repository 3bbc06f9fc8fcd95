"""The app's edge: the one place where errors become what a person or an API caller sees.

Every error of ours carries a `user_message` (shown) and a `detail` (logged); refusals
(`Denied`) and bad files (`IntakeError`) carry text written for the user in `detail` too,
naming the file or the role. Anything else — a bug, a driver error — is logged with its
traceback under a short reference, and the caller sees a plain sentence with that reference:
never SQL, Python or a stack.

    with to_user_errors():          # in every Gradio handler (Auth.guard does this)
        ...
    cid = parse_id(value, "consultation")   # ids from requests: unknown = not found
"""

from __future__ import annotations

import html
import secrets

import gradio as gr
from loguru import logger

from model.errors import IntakeError, PulseMindError
from storage import NotFound

#: SQL integers are 64-bit signed; a larger id cannot name a row.
MAX_ID = 2**63 - 1

#: Positions are pages or frames of one attachment: a few hundred at most.
MAX_INDEX_DIGITS = 6

GENERIC_MESSAGE = (
    "Something went wrong on the server (reference {ref}). What you saved before is kept; "
    "try again, and give the reference to your administrator if it happens again."
)


class Denied(PulseMindError):
    """A caller without the right role, or not logged in; `detail` says which, for the user."""

    user_message = "You are not allowed to do this."


def user_message(exc: BaseException) -> str:
    """What the person sees for `exc`; logs what they do not see."""
    if isinstance(exc, Denied | IntakeError):
        return str(exc)
    if isinstance(exc, PulseMindError):  # model, intake and storage errors alike
        logger.info("{}: {}", type(exc).__name__, exc.detail)
        return exc.user_message
    ref = secrets.token_hex(4)
    logger.opt(exception=exc).error("unexpected error (reference {})", ref)
    return GENERIC_MESSAGE.format(ref=ref)


class to_user_errors:
    """Context manager: any error -> `gr.Error` with `user_message(exc)` (the UI's only edge)."""

    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        if exc is None or isinstance(exc, gr.Error | GeneratorExit):
            return False
        # gr.Error renders HTML: a file name like `<img onerror=...>.png` must stay text.
        raise gr.Error(html.escape(user_message(exc)), print_exception=False) from exc


def parse_id(value: object, what: str) -> int:
    """A row id from a request (int or digits), else NotFound: a malformed id names nothing."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) <= 19:
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or not 0 < value <= MAX_ID:
        raise NotFound(f"malformed {what} id", user_message=f"This {what} does not exist.")
    return value


def parse_index(value: object, what: str) -> int:
    """A position within a row (0, 1, ...: an attachment's page or frame), else NotFound."""
    text = str(value).strip() if isinstance(value, int | str) and not isinstance(value, bool) else ""
    if not text.isdigit() or len(text) > MAX_INDEX_DIGITS:
        raise NotFound(f"malformed {what} position", user_message=f"This {what} does not exist.")
    return int(text)


def optional_id(value: object, what: str) -> int | None:
    """None (or an empty value) stays None; anything else must be a valid id."""
    if value is None or value == "":
        return None
    return parse_id(value, what)
