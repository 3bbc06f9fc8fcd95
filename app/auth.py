"""Logins, roles and the one place where domain errors become messages in the browser.

Gradio's own login form calls `Auth.check_login`; every event handler is wrapped by
`Auth.guard(roles...)`, which looks the caller up in the database on the server, refuses other
roles (and records the refusal), and turns our typed errors into `gr.Error` with a message a
clinician understands. Hiding a tab is cosmetic; this check is the rule.
"""

from __future__ import annotations

import functools
import inspect
import threading
import typing
from collections.abc import Callable
from pathlib import Path

import gradio as gr
from loguru import logger

from model.errors import IntakeError, PulseMindError
from storage import (
    Database,
    StorageError,
    UserRecord,
    UserRole,
    authenticate,
    get_user_by_name,
    record_audit,
)

CLINICAL = (UserRole.CLINICIAN, UserRole.ADMIN)


class Denied(PulseMindError):
    user_message = "You are not allowed to do this."


class Auth:
    """Authentication against the users table and role checks for handlers."""

    def __init__(self, db: Database):
        self.db = db

    def check_login(self, username: str, password: str) -> bool:
        user = authenticate(self.db, username, password)
        record_audit(
            self.db,
            "login",
            user_id=user.id if user else None,
            outcome="ok" if user else "denied",
            detail=None if user else {"reason": "bad credentials"},
        )
        return user is not None

    def user(self, request: gr.Request | None) -> UserRecord:
        name = getattr(request, "username", None) if request is not None else None
        user = get_user_by_name(self.db, name) if name else None
        if user is None or not user.active:
            raise Denied("Please log in.")
        return user

    def require(self, request: gr.Request | None, roles: tuple[UserRole, ...], action: str):
        user = self.user(request)
        if user.role not in roles:
            record_audit(
                self.db, "denied", user_id=user.id, outcome="denied", detail={"action": action}
            )
            logger.warning("user {} ({}) denied {}", user.id, user.role.value, action)
            raise Denied(f"Your role ({user.role.value}) cannot {action.replace('_', ' ')}.")
        return user

    def guard(self, *roles: UserRole) -> Callable:
        """Decorate a handler `fn(user, *inputs)`; the wrapper takes Gradio's `request`."""

        def deco(fn: Callable) -> Callable:
            action = fn.__name__
            # Real types, not strings: `gr.api` derives an endpoint's schema from them.
            hints = typing.get_type_hints(fn)
            params = [
                p.replace(annotation=hints.get(p.name, p.annotation))
                for p in list(inspect.signature(fn).parameters.values())[1:]  # drop `user`
            ]
            # Gradio passes gr.Request positionally, where the signature puts it: last (with a
            # default when the inputs have some, as a signature requires).
            empty = inspect.Parameter.empty
            req = inspect.Parameter(
                "request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request,
                default=None if any(p.default is not empty for p in params) else empty,
            )  # fmt: skip
            returns = hints.get("return", empty)
            sig = inspect.Signature([*params, req], return_annotation=returns)

            def split(args: tuple, kwargs: dict) -> tuple[tuple, gr.Request | None]:
                if "request" in kwargs:
                    return args, kwargs["request"]
                return args[:-1], args[-1] if args else None

            if inspect.isgeneratorfunction(fn):

                @functools.wraps(fn)
                def gen_wrapper(*args, **kwargs):
                    inputs, request = split(args, kwargs)
                    with to_user_errors():
                        user = self.require(request, roles, action)
                        yield from fn(user, *inputs)

                wrapper = gen_wrapper
            else:

                @functools.wraps(fn)
                def wrapper(*args, **kwargs):
                    inputs, request = split(args, kwargs)
                    with to_user_errors():
                        user = self.require(request, roles, action)
                        return fn(user, *inputs)

            del wrapper.__wrapped__  # Gradio must see the wrapper's signature (with request)
            wrapper.__signature__ = sig
            annotations = {p.name: p.annotation for p in sig.parameters.values()}
            annotations["return"] = returns
            wrapper.__annotations__ = {k: v for k, v in annotations.items() if v is not empty}
            return wrapper

        return deco


class UploadRegistry:
    """Who uploaded which of Gradio's cached files (in memory: that cache is per process too).

    The server's file guard fills it and lets only the uploaders read a file back; `/consult`
    takes only the caller's own uploads as attachments. Gradio files an upload under its
    content's hash, so two users who upload the same bytes share one path: both may use it.
    """

    def __init__(self) -> None:
        self._owners: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def add(self, user: str, paths: list[str]) -> None:
        with self._lock:
            for p in paths:
                self._owners.setdefault(str(Path(p).resolve()), set()).add(user.strip().lower())

    def allowed(self, user: str | None, path: str) -> bool:
        if not user:
            return False
        with self._lock:
            return user.strip().lower() in self._owners.get(str(Path(path).resolve()), ())


class to_user_errors:
    """Context manager: our typed errors -> gr.Error with their message (the UI's only edge)."""

    def __enter__(self):
        return self

    def __exit__(self, typ, exc, tb):
        if exc is None or isinstance(exc, gr.Error | GeneratorExit):
            return False
        if isinstance(exc, PulseMindError):
            raise gr.Error(_message(exc), title=type(exc).__name__) from exc
        if isinstance(exc, StorageError):
            raise gr.Error(str(exc) or exc.user_message) from exc
        return False


def _message(exc: PulseMindError) -> str:
    """Specific text for refusals and bad files; the plain-language message for model faults."""
    return str(exc) if isinstance(exc, Denied | IntakeError) else exc.user_message
