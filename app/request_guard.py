"""In front of Gradio: no request can make the server read, copy or hash a file its caller did
not upload.

Gradio takes file values (`{"path": ..., "meta": {"_type": "gradio.FileData"}}`) in any event's
payload and copies the named file into its cache *before* our handler runs — for a caller the
handler then refuses too. Named at the SQLite database, that copied it (patient data, password
hashes) and, by opening and closing the file inside the app, dropped SQLite's locks: the live
WAL was later deleted under the app and acknowledged writes were lost. So this ASGI middleware
looks at every request before Gradio does:

- POST: only the routes the app uses pass (login, upload, queue/call/run/api, cancel, reset);
  the JSON body (bounded) is walked and any value with a `"path"` must be one of the caller's
  own uploads (`storage.access.Uploads`), else 403 with a plain message (in the request's
  language, `app.language`) and an audit event;
- GET `/file=...` and `/file/...`: only the file's uploader may read it; remote URLs and
  `/proxy=` are refused (the app loads no remote Gradio apps);
- the answers of `/upload` are recorded as the caller's uploads.

Plain ASGI rather than `@app.middleware("http")`, which would wrap every streamed SSE chunk of
every answer; streamed responses pass straight through.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from urllib.parse import unquote

import anyio
from loguru import logger
from starlette.requests import Request
from starlette.responses import JSONResponse

from app.i18n import SERVER, translate
from app.language import scope_language
from storage import Uploads

#: An event's JSON payload: a message (≤ 200k characters) and a few ids. Files travel through
#: `/upload` (multipart, capped by Gradio's max_file_size), never inside these bodies.
MAX_JSON_BODY_BYTES = 4 * 1024 * 1024
#: POST routes whose JSON body Gradio processes (file values included) and the app needs.
_JSON_ROUTES = re.compile(
    r"^/gradio_api/(?:queue/join|call/v2/[\w-]+|call/[\w-]+|run/[\w-]+|api/[\w-]+|cancel|reset)/?$"
)
_LOGIN = re.compile(r"^/login/?$")
_UPLOAD = re.compile(r"^/gradio_api/upload/?$")
_FILE = re.compile(r"^/gradio_api/file(?:=|/)(?P<target>.*)$")

NOT_UPLOADED = SERVER["guard.not_uploaded"]["en"]
NOT_FOUND = SERVER["guard.not_found"]["en"]
TOO_LARGE = SERVER["guard.too_large"]["en"]


class RequestGuard:
    """ASGI middleware: file values and file URLs only for their uploader; unknown POSTs 404."""

    def __init__(
        self,
        app,
        *,
        uploads: Uploads,
        current_user: Callable[[Request], str | None],
        on_refused: Callable[[str | None, str], None] | None = None,
    ) -> None:
        self.app, self.uploads, self.current_user = app, uploads, current_user
        self.on_refused = on_refused

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope.get("path", ""), scope.get("method", "GET")
        if "/proxy=" in path:
            await _reply(scope, receive, send, 404, NOT_FOUND)
            return
        file = _FILE.match(path)
        if file is not None:
            user = self.current_user(Request(scope))
            if not self.uploads.allowed(user, unquote(file.group("target"))):
                await _reply(scope, receive, send, 404, NOT_FOUND)
                return
        elif method == "POST":
            if _UPLOAD.match(path):
                send = self._recording_uploads(scope, send)
            elif _JSON_ROUTES.match(path):
                receive = await self._checked_body(scope, receive, send)
                if receive is None:
                    return
            elif not _LOGIN.match(path):
                await _reply(scope, receive, send, 404, NOT_FOUND)
                return
        await self.app(scope, receive, send)

    async def _checked_body(self, scope, receive, send):
        """The request's receive, replaying a body that names only the caller's uploads; None
        when the request was answered here (refused)."""
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return receive  # client went away: let the app see it
            body.extend(message.get("body", b""))
            more = message.get("more_body", False)
            if len(body) > MAX_JSON_BODY_BYTES:
                await _reply(scope, receive, send, 413, TOO_LARGE)
                return None
        try:
            payload = json.loads(bytes(body)) if body else None
        except (ValueError, UnicodeDecodeError):
            payload = None  # not JSON: Gradio refuses it before looking for files
        user = self.current_user(Request(scope))
        for named in _named_paths(payload):
            if not self.uploads.allowed(user, named):
                logger.warning("refused a request naming a file its caller did not upload")
                if self.on_refused is not None:
                    await anyio.to_thread.run_sync(self.on_refused, user, scope.get("path", ""))
                await _reply(scope, receive, send, 403, NOT_UPLOADED)
                return None

        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        return replay

    def _recording_uploads(self, scope, send):
        user = self.current_user(Request(scope))
        status, body = [0], bytearray()

        async def recording_send(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
                if not message.get("more_body") and status[0] == 200 and user is not None:
                    paths = json.loads(bytes(body))
                    self.uploads.add(user, [p for p in paths if isinstance(p, str)])
            await send(message)

        return recording_send


def _named_paths(value: object, depth: int = 0):
    """Every `"path"` value in a JSON payload (Gradio's file values), however deeply nested."""
    if depth > 64:  # deeper than any real payload: treat as naming something unknown
        yield None
        return
    if isinstance(value, dict):
        if "path" in value:
            yield value["path"]
        for v in value.values():
            yield from _named_paths(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            yield from _named_paths(v, depth + 1)


async def _reply(scope, receive, send, status: int, message: str) -> None:
    """Answer here: `message` (English, catalogued) in the request's language."""
    text = translate(message, scope_language(scope)) or message
    await JSONResponse({"error": text}, status_code=status)(scope, receive, send)
