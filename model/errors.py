"""Typed errors of the model layer: what went wrong talking to a model or taking in a file.

Each error carries a `user_message` a clinician can read; the UI turns it into a visible
message once, at its edge (app/). Nothing here holds patient text or identifiers.
"""

from __future__ import annotations


class PulseMindError(Exception):
    """Root of the project's one error hierarchy (model, intake and storage errors alike):
    `user_message` is shown to people, `detail` goes to the log. A specific message
    (`user_message=`) overrides the class-wide one for one error."""

    user_message: str = "Something went wrong."

    def __init__(self, detail: str | None = None, *, user_message: str | None = None):
        if user_message is not None:
            self.user_message = user_message
        super().__init__(detail or self.user_message)
        self.detail = detail or self.user_message

    def __str__(self) -> str:
        return self.detail


# --- talking to a model -------------------------------------------------------------------


class ModelError(PulseMindError):
    """The model could not produce (all of) an answer."""

    user_message = "The model could not answer."
    retryable = True


class ModelUnreachable(ModelError):
    user_message = (
        "The model server cannot be reached. Your conversation is saved; retry in a moment."
    )


class ModelTimeout(ModelError):
    user_message = "The model server took too long to answer. Your conversation is saved; retry."


class ModelDiedMidAnswer(ModelError):
    """The stream broke after some text arrived; `partial` is what came before the break."""

    user_message = (
        "The model server stopped in the middle of the answer. The partial answer is kept; retry."
    )

    def __init__(self, detail: str | None = None, partial: str = ""):
        super().__init__(detail)
        self.partial = partial


class ModelRejectedInput(ModelError):
    """The server refused the request (HTTP 4xx): retrying the same input will not help."""

    user_message = "The model refused this request."
    retryable = False


# --- taking in uploads --------------------------------------------------------------------


class IntakeError(PulseMindError):
    """An upload that cannot be used; `filename` is the name the user gave it."""

    user_message = "This file cannot be used."

    def __init__(self, detail: str | None = None, filename: str | None = None):
        super().__init__(detail)
        self.filename = filename

    def __str__(self) -> str:
        return f"{self.filename}: {self.detail}" if self.filename else self.detail
