"""Logins, roles and the one place where domain errors become messages in the browser.

Gradio's own login form calls `Auth.check_login`; every event handler is wrapped by
`Auth.guard(roles...)`, which looks the caller up in the database on the server, refuses other
roles (and records the refusal), and turns our typed errors into `gr.Error` with a message a
clinician understands, in the request's language. Hiding a tab is cosmetic; this check is the
rule.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable

import anyio
import gradio as gr
from fastapi import HTTPException
from loguru import logger

from app.edge import Denied, to_user_errors, user_message
from app.language import request_language, speaking, speaking_each
from app.login_throttle import login_attempt
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


class Auth:
    """Authentication against the users table and role checks for handlers."""

    def __init__(self, db: Database):
        self.db = db

    async def login(self, username: str, password: str) -> bool:
        """What Gradio's login route calls: `check_login` in a worker thread (argon2 takes
        ~0.4 s; on the event loop it stalled every other request), database faults as a
        plain 503 message instead of a 500."""
        try:
            return await anyio.to_thread.run_sync(self.check_login, username, password)
        except StorageError as exc:
            raise HTTPException(status_code=503, detail=user_message(exc)) from exc

    def check_login(self, username: str, password: str) -> bool:
        """Gradio's login check; throttled per account and address (`app.login_throttle`)."""
        attempt = login_attempt()  # the client's address and the throttle, from SessionGuard
        if attempt.refused(self.db, username):  # locked: not even the right password counts
            record_audit(self.db, "login", outcome="denied",
                         detail={"reason": "locked", **attempt.audit_detail})  # fmt: skip
            return False
        user = authenticate(self.db, username, password)
        detail = {} if user else {"reason": "bad credentials"}
        record_audit(
            self.db,
            "login",
            user_id=user.id if user else None,
            outcome="ok" if user else "denied",
            detail={**detail, **attempt.audit_detail} or None,
        )
        attempt.finished(self.db, username, user)
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
        """Decorate a handler `fn(user, *inputs)`; the wrapper takes Gradio's `request`.

        The handler runs in the request's language (`app.language`): `app.i18n.t` and the
        errors it raises speak it."""

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
                    language = request_language(request)
                    with to_user_errors(language):
                        with speaking(language):
                            user = self.require(request, roles, action)
                        yield from speaking_each(language, fn(user, *inputs))

                wrapper = gen_wrapper
            else:

                @functools.wraps(fn)
                def wrapper(*args, **kwargs):
                    inputs, request = split(args, kwargs)
                    language = request_language(request)
                    with to_user_errors(language), speaking(language):
                        user = self.require(request, roles, action)
                        return fn(user, *inputs)

            del wrapper.__wrapped__  # Gradio must see the wrapper's signature (with request)
            wrapper.__signature__ = sig
            annotations = {p.name: p.annotation for p in sig.parameters.values()}
            annotations["return"] = returns
            wrapper.__annotations__ = {k: v for k, v in annotations.items() if v is not empty}
            return wrapper

        return deco
