"""The app's edge: the one place where errors become what a person or an API caller sees.

Every error of ours carries a `user_message` (shown) and a `detail` (logged); refusals
(`Denied`) and bad files (`IntakeError`) carry text written for the user in `detail` too,
naming the file or the role. Anything else — a bug, a driver error — is logged with its
traceback under a short reference, and the caller sees a plain sentence with that reference:
never SQL, Python or a stack. The English `user_message` is the source; `to_user_errors` shows
it in the request's language (`app.i18n.error_text`).

    with to_user_errors(language):  # in every Gradio handler (Auth.guard does this)
        ...
    cid = parse_id(value, "consultation")   # ids from requests: unknown = not found
"""

from __future__ import annotations

import html
import secrets

import gradio as gr
from loguru import logger

from app.i18n import SERVER, error_text, t
from app.language import current_language
from model.errors import IntakeError, PulseMindError
from storage import NotFound

#: SQL integers are 64-bit signed; a larger id cannot name a row.
MAX_ID = 2**63 - 1

#: Positions are pages or frames of one attachment: a few hundred at most.
MAX_INDEX_DIGITS = 6

GENERIC_MESSAGE = SERVER["edge.generic"]["en"]


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
    """Context manager: any error -> `gr.Error` with `user_message(exc)` (the UI's only edge),
    in `language` (default: the current request's, `app.language.speaking`)."""

    def __init__(self, language: str | None = None):
        self.language = language

    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        if exc is None or isinstance(exc, gr.Error | GeneratorExit):
            return False
        language = self.language or current_language()
        text = error_text(exc, user_message(exc), language)
        # gr.Error renders HTML: a file name like `<img onerror=...>.png` must stay text.
        raise gr.Error(html.escape(text), title=t("edge.error_title", language),
                       print_exception=False) from exc  # fmt: skip


def plain_input_errors(blocks: gr.Blocks) -> None:
    """Refuse values Gradio's components reject with our sentence, not Gradio's.

    Before a handler runs, Gradio checks each value against its component (a choice that is
    not offered, text in a number box, a malformed file payload) and answers a program with
    its own English text, naming Python types (`Value: 'x' (type: <class 'str'>) is not in the
    list of choices`) or with a bare "error". That check happens before `Auth.guard`, so it is
    caught here, around `Blocks.preprocess_data`: logged, and said in both languages (the
    request's language is not known yet at that point).
    """
    check = blocks.preprocess_data

    async def preprocess_data(block_fn, inputs, state, explicit_call=False):
        try:
            return await check(block_fn, inputs, state, explicit_call)
        except Exception as exc:  # noqa: BLE001 - Gradio's own checks; said in our words
            logger.info("values refused before {}: {}: {}", block_fn.name, type(exc).__name__,
                        str(exc)[:300])  # fmt: skip
            message = SERVER["edge.bad_value"]
            raise gr.Error(f"{message['en']} / {message['zh-CN']}", print_exception=False) from None

    blocks.preprocess_data = preprocess_data


def parse_id(value: object, what: str) -> int:
    """A row id from a request (int or digits), else NotFound: a malformed id names nothing."""
    if isinstance(value, bool):
        value = None
    if isinstance(value, str):
        digits = value.strip()  # ASCII only: int() would also read "１２" (full-width) as 12
        value = int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 19 else None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or not 0 < value <= MAX_ID:
        raise NotFound(f"malformed {what} id", user_message=f"This {what} does not exist.")
    return value


def parse_index(value: object, what: str) -> int:
    """A position within a row (0, 1, ...: an attachment's page or frame), else NotFound."""
    text = str(value).strip() if isinstance(value, int | str) and not isinstance(value, bool) else ""
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_INDEX_DIGITS:
        raise NotFound(f"malformed {what} position", user_message=f"This {what} does not exist.")
    return int(text)


def parse_choice(value: object, allowed: tuple[str, ...], what: str) -> str:
    """One of `allowed` (e.g. a window preset) from a request, else NotFound."""
    if not isinstance(value, str) or value not in allowed:
        raise NotFound(f"unknown {what}", user_message=f"This {what} does not exist.")
    return value


def optional_id(value: object, what: str) -> int | None:
    """None (or an empty value) stays None; anything else must be a valid id."""
    if value is None or value == "":
        return None
    return parse_id(value, what)
