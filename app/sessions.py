"""Idle session expiry, the login throttle's edge and session-cookie flags, in front of Gradio.

Gradio keeps every session token it hands out (`tokens`: cookie -> username) for the life of
the process, lets its login form be tried without limit, and sets its session cookies the same
way whatever the scheme. `SessionGuard`, an ASGI middleware registered in `app.server`, adds:

- **Login throttle** (`app.login_throttle` keeps the counts): a locked address is refused
  before Gradio reads the form; otherwise the attempt's address goes to `Auth.check_login`,
  and a lockout it records is answered instead of Gradio's "incorrect credentials". API
  clients get 429 with `Retry-After` and the message. Gradio's login page can only show a
  fixed "incorrect credentials" (answer 400) or reload itself (answer 200), so its own request
  (a fetch of FormData, which follows redirects) is answered 303 to `/login/locked` (a 200)
  with a notice cookie; the page reloads and shows the notice — locked, why, for how long, in
  English and Chinese — once, with a link back to the form (a shared workstation's next user
  is not shown someone else's lockout). A locked address sees the notice until it ends.
- **Idle expiry.** Every request carrying a session cookie marks that session as seen. One
  idle longer than `session_idle_s` is removed from Gradio's `tokens` and answered as logged
  out: 401 with a message for API calls, a redirect to the login page for pages; an audit
  event (`logout`, detail reason `idle`). A sweep ends idle sessions that do not come back.
  Gradio's own `/logout` removes the user's tokens; the sweep then forgets them here.
- **Cookies.** Behind TLS (the request's scheme is https — directly, or from a proxy listed in
  `trusted_proxies`, whose `X-Forwarded-Proto` uvicorn applies) both of Gradio's session cookies
  get `Secure` (Gradio leaves `access-token-unsecure-*` without it). Gradio's `SameSite=None`
  (for embedding in other sites, which this app does not allow) becomes `SameSite=Lax`, so
  other sites' forms do not carry the session. Plain http on 127.0.0.1 keeps working through the
  unsecure cookie.

The client address is `scope["client"]`: the TCP peer, or — only when that peer is one of
`trusted_proxies` — the address from `X-Forwarded-For` (uvicorn's proxy-headers middleware,
configured from the app config by `uvicorn_proxy_options`). Sessions are in memory, as
Gradio's are (`app.login_throttle` says why that is enough for one process).
"""

from __future__ import annotations

import html
import math
import re
import threading
import time
from typing import TYPE_CHECKING

import anyio
from loguru import logger
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount

from app.login_throttle import (
    MESSAGES,
    Lockout,
    LoginAttempt,
    LoginThrottle,
    attempting,
    duration_text,
)
from storage import Database, get_user_by_name, record_audit

if TYPE_CHECKING:
    from app.config import AppConfig

#: A session unused this long is logged out. Shared ward workstations are left logged in; 15
#: minutes is the usual automatic-logoff setting for clinical workstations (HIPAA's automatic
#: logoff safeguard leaves the value to the organisation), and an answer being read does not
#: count as idle for longer than that in practice.
DEFAULT_SESSION_IDLE_S = 15 * 60
#: Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (uvicorn's syntax:
#: addresses or networks, comma-separated; "*" all; "" none). Loopback by default, as uvicorn
#: does: a TLS proxy on the same host is the usual deployment, and other peers' headers are
#: ignored. A proxy elsewhere must be named, or every client looks like the proxy's address.
DEFAULT_TRUSTED_PROXIES = "127.0.0.1,::1"

#: Sessions idle past the limit are swept at most this often (they are also refused at once
#: when they come back); the sweep walks every session, so not on every request.
SWEEP_INTERVAL_S = 30.0
#: A session the sweep ended is answered "your session ended" (not a bare 401) this long after.
ENDED_MEMORY_S = 24 * 3600.0
#: The browser's "your sign-in is locked" notice cookie lives this long (it is read once).
NOTICE_COOKIE_MAX_AGE_S = 60

NOTICE_COOKIE = "pulsemind-login-notice"
_LOGIN = re.compile(r"^/login/?$")
_LOGOUT = re.compile(r"^/logout/?$")
#: Where a refused login form's fetch lands (a 200, so the form reloads its page); the page then
#: shows the notice. Not the page itself: that would show, and use up, the notice unseen.
_LOCKED = re.compile(r"^/login/locked/?$")


def uvicorn_proxy_options(config: AppConfig) -> dict:
    """Keyword arguments for `uvicorn.Config`/`uvicorn.run`: whose proxy headers to believe."""
    trusted = config.trusted_proxies.strip()
    return {"proxy_headers": bool(trusted), "forwarded_allow_ips": trusted or None}


IDLE_MESSAGE = (
    "Your session ended after {en} without activity. Please sign in again.",
    "您的会话因 {zh} 无操作已结束。请重新登录。",
)


class SessionGuard:
    """ASGI middleware: login throttle, idle session expiry, session-cookie flags.

    Plain ASGI (like `RequestGuard`): streamed answers pass straight through; only `/login`'s
    small answer is looked at.
    """

    def __init__(self, app, *, db: Database, config: AppConfig) -> None:
        self.app, self.db = app, db
        self.throttle = LoginThrottle.from_config(config)
        self.idle_s = config.session_idle_s
        self.sweep_every_s = min(SWEEP_INTERVAL_S, self.idle_s / 2)
        self._seen: dict[str, float] = {}  # session token -> monotonic time last seen
        self._ended: dict[str, float] = {}  # tokens the sweep ended -> when (to say so)
        self._seen_lock = threading.Lock()
        self._last_sweep = time.monotonic()
        self._gradio = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gradio = self._gradio_app(scope)
        request = Request(scope)
        path, method = scope.get("path", ""), scope.get("method", "GET")
        await self._sweep(gradio)
        token = _session_token(request, gradio.cookie_id)
        if token is not None and await self._expired(gradio, token):
            await self._logged_out(scope, receive, send, gradio.cookie_id)
            return
        if (
            (token is None or token not in gradio.tokens)
            and method in ("GET", "HEAD")
            and path in ("", "/")
        ):
            lockout = self._notice(request)
            if lockout is not None:
                await _lockout_page(lockout, scope)(scope, receive, send)
                return
        if method in ("GET", "HEAD") and _LOCKED.match(path):
            lockout = self._notice(request)
            detail = lockout.text() if lockout else None
            await JSONResponse({"locked": lockout is not None, "detail": detail})(
                scope, receive, send
            )
            return
        if method == "POST" and _LOGIN.match(path):
            await self._login(scope, receive, send, gradio)
            return
        if _LOGOUT.match(path):
            send = self._forgetting_logout(send, token)
        await self.app(scope, receive, send)

    def _gradio_app(self, scope):
        """Gradio's app (mounted under ours): holds `tokens` and `cookie_id`."""
        if self._gradio is None:
            routes = getattr(scope.get("app"), "routes", [])
            found = [r.app for r in routes if isinstance(r, Mount) and hasattr(r.app, "tokens")]
            if not found:
                raise RuntimeError("SessionGuard needs the Gradio app mounted on this one")
            self._gradio = found[0]
        return self._gradio

    # idle expiry

    async def _expired(self, gradio, token: str) -> bool:
        """Whether this session just ended for being idle (now, or in a sweep before)."""
        now = time.monotonic()
        with self._seen_lock:
            if self._ended.pop(token, None) is not None:
                return True
            if token not in gradio.tokens:
                return False  # not a session (any more): Gradio answers as for a stranger
            last = self._seen.get(token, now)
            if now - last <= self.idle_s:
                self._seen[token] = now
                return False
            self._seen.pop(token, None)
        username = gradio.tokens.pop(token, None)
        await self._audit_idle(username, now - last)
        return True

    async def _sweep(self, gradio) -> None:
        now = time.monotonic()
        if now - self._last_sweep < self.sweep_every_s:
            return
        self._last_sweep = now
        idle: list[tuple[str | None, float]] = []
        with self._seen_lock:
            for token in list(gradio.tokens):
                last = self._seen.setdefault(token, now)  # a token made elsewhere: seen now
                if now - last > self.idle_s:
                    idle.append((gradio.tokens.pop(token, None), now - last))
                    del self._seen[token]
                    self._ended[token] = now
            for token in [t for t in self._seen if t not in gradio.tokens]:
                del self._seen[token]  # logged out
            for token in [t for t, at in self._ended.items() if now - at > ENDED_MEMORY_S]:
                del self._ended[token]
        for username, idle_s in idle:
            await self._audit_idle(username, idle_s)

    async def _audit_idle(self, username: str | None, idle_s: float) -> None:
        def write() -> None:
            user = get_user_by_name(self.db, username) if username else None
            record_audit(self.db, "logout", user_id=user.id if user else None,
                         detail={"reason": "idle", "idle_s": int(idle_s)})  # fmt: skip

        logger.info("session ended after {} s idle", int(idle_s))
        await anyio.to_thread.run_sync(write)

    async def _logged_out(self, scope, receive, send, cookie_id: str) -> None:
        request = Request(scope)
        if scope.get("method") in ("GET", "HEAD") and "text/html" in request.headers.get(
            "accept", ""
        ):
            response: Response = RedirectResponse(_root(scope), status_code=303)
        else:
            en, zh = duration_text(self.idle_s)
            text = "\n".join(m.format(en=en, zh=zh) for m in IDLE_MESSAGE)
            response = JSONResponse({"error": "session expired", "detail": text}, 401)
        for name in _cookie_names(cookie_id):
            response.delete_cookie(name, path="/")
        response.headers["Cache-Control"] = "no-store"
        await response(scope, receive, send)

    def _forgetting_logout(self, send, token: str | None):
        async def forgetting(message) -> None:
            if message["type"] == "http.response.start" and token is not None:
                with self._seen_lock:
                    self._seen.pop(token, None)
            await send(message)

        return forgetting

    # login

    async def _login(self, scope, receive, send, gradio) -> None:
        address = (scope.get("client") or (None,))[0]
        lockout = self.throttle.locked(None, address)
        if lockout is not None:  # refused before Gradio reads the form or checks a password
            await _lockout_answer(lockout, scope)(scope, receive, send)
            return
        attempt = LoginAttempt(self.throttle, address)
        replaced = False

        async def login_send(message) -> None:
            nonlocal replaced
            if message["type"] == "http.response.start":
                if attempt.lockout is not None:
                    replaced = True
                    answer = _lockout_answer(attempt.lockout, scope)
                    await answer(scope, receive, send)
                    return
                message = self._cookies_fixed(message, scope, gradio.cookie_id)
            elif replaced:
                return  # Gradio's "incorrect credentials" body: already answered
            await send(message)

        with attempting(attempt):
            await self.app(scope, receive, login_send)

    def _cookies_fixed(self, message: dict, scope, cookie_id: str) -> dict:
        """Session cookies: Secure over https, SameSite=Lax; the new token counts as seen."""
        https = scope.get("scheme") == "https"
        headers = []
        for name, value in message.get("headers", []):
            if name.lower() == b"set-cookie" and value.startswith(b"access-token-"):
                value = _fixed_cookie(value, https)
                if value.startswith(f"access-token-{cookie_id}=".encode()):
                    token = value.split(b";", 1)[0].split(b"=", 1)[1].decode()
                    with self._seen_lock:
                        self._seen[token] = time.monotonic()
            headers.append((name, value))
        return {**message, "headers": headers}

    def _notice(self, request: Request) -> Lockout | None:
        """For the login page: this address's lockout, or the notice left by a refused login."""
        lockout = self.throttle.locked(None, request.client.host if request.client else None)
        if lockout is not None:
            return lockout
        scope_name, _, until = request.cookies.get(NOTICE_COOKIE, "").partition(".")
        if scope_name in MESSAGES and until.isdigit():
            left = int(until) - time.time()
            if 0 < left <= self.throttle.lockout_s:
                return Lockout(scope_name, left)  # type: ignore[arg-type]
        return None


def _session_token(request: Request, cookie_id: str) -> str | None:
    secure, unsecure = _cookie_names(cookie_id)
    return request.cookies.get(secure) or request.cookies.get(unsecure)


def _cookie_names(cookie_id: str) -> tuple[str, str]:
    return f"access-token-{cookie_id}", f"access-token-unsecure-{cookie_id}"


def _fixed_cookie(value: bytes, https: bool) -> bytes:
    parts = [p.strip() for p in value.split(b";")]
    attrs = [p for p in parts[1:] if not p.lower().startswith(b"samesite")]
    attrs.append(b"SameSite=Lax")
    if https and not any(p.lower() == b"secure" for p in attrs):
        attrs.append(b"Secure")
    return b"; ".join([parts[0], *attrs])


def _root(scope) -> str:
    return scope.get("root_path", "").rstrip("/") + "/"


def _wants_page(scope) -> bool:
    """Gradio's login form (a browser fetch of FormData) rather than an API client."""
    headers = Request(scope).headers
    return "sec-fetch-mode" in headers or headers.get("content-type", "").startswith(
        "multipart/form-data"
    )


def _lockout_answer(lockout: Lockout, scope) -> Response:
    """A refused `POST /login`: 303 to the page with a notice (the login form), else 429."""
    seconds = max(1, math.ceil(lockout.seconds))
    if _wants_page(scope):
        response: Response = RedirectResponse(_root(scope) + "login/locked", status_code=303)
        response.set_cookie(
            NOTICE_COOKIE, f"{lockout.scope}.{int(time.time()) + seconds}",
            max_age=NOTICE_COOKIE_MAX_AGE_S, path="/", httponly=True, samesite="lax",
            secure=scope.get("scheme") == "https",
        )  # fmt: skip
    else:
        response = JSONResponse(
            {"error": "locked", "detail": lockout.text(), "retry_after_s": seconds}, 429
        )
        response.headers["Retry-After"] = str(seconds)
    response.headers["Cache-Control"] = "no-store"
    return response


def _lockout_page(lockout: Lockout, scope) -> Response:
    """The login page while locked: the notice in both languages and a way back to the form."""
    en, zh = (html.escape(m) for m in lockout.messages())
    root = html.escape(_root(scope))
    refresh = (
        f'<meta http-equiv="refresh" content="{max(1, math.ceil(lockout.seconds))}">'
        if lockout.scope == "address" else ""
    )  # fmt: skip
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">{refresh}
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>PulseMind — sign-in locked / 登录已锁定</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;
line-height:1.5}}</style></head>
<body><main role="alert">
<h1>Sign-in temporarily locked <span lang="zh">登录已暂时锁定</span></h1>
<p>{en}</p>
<p lang="zh">{zh}</p>
<p><a href="{root}">Back to sign-in</a> · <a href="{root}" lang="zh">返回登录</a></p>
</main></body></html>
"""
    response = HTMLResponse(page, headers={"Cache-Control": "no-store"})
    response.delete_cookie(NOTICE_COOKIE, path="/")  # shown once: the next visit shows the form
    return response
