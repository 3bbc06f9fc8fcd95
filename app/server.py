"""The web server: Gradio UI mounted on FastAPI, with per-user file access and attachment images.

    python app.py            # or: pulsemind app --help

Security choices (Gradio's security guidance): bound to 127.0.0.1 by default, no share links,
monitoring and analytics off, upload size capped, and files behind `/gradio_api/file=` readable
only by the user who uploaded them (Gradio itself lets any logged-in user read any cached file).
Attachment thumbnails come from the database through `/attachments/{id}/{position}.png`, which
checks that the caller may see that attachment.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote

import gradio as gr
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from loguru import logger
from starlette.routing import Mount

from app.auth import Auth, UploadRegistry
from app.config import AppConfig
from app.engines import EngineRegistry
from app.ui import CSS_PATH, build_ui
from app.workflow import Consultations
from model.serve import free_port
from storage import (
    Database,
    NotFound,
    count_users,
    ensure_model_variant,
    get_attachment_image,
    get_user_by_name,
    user_can_access_attachment,
)

#: Importing gradio/transformers and building the UI takes seconds on a loaded 2-core box.
APP_START_TIMEOUT_S = 60

FIRST_ADMIN_HINT = (
    "No users exist yet. Create the first admin with:\n    pulsemind user add NAME --role admin"
)


class FileGuard:
    """ASGI middleware: `/file=` paths only for their uploader; remembers who uploaded what.

    Plain ASGI rather than `@app.middleware("http")`, which would wrap every streamed SSE chunk
    of every answer; here other requests pass straight through.
    """

    def __init__(self, app, *, uploads: UploadRegistry, current_user) -> None:
        self.app, self.uploads, self.current_user = app, uploads, current_user

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if "/file=" in path:
            target = unquote(path.split("/file=", 1)[1])
            if not self.uploads.allowed(self.current_user(Request(scope)), target):
                await JSONResponse({"error": "not found"}, status_code=404)(scope, receive, send)
                return
        elif path.rstrip("/").endswith("/upload"):
            send = self._recording_uploads(scope, send)
        await self.app(scope, receive, send)

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


def ensure_variants(db: Database, config: AppConfig) -> None:
    """Register the configured model (or the demo model) as an active variant."""
    if config.model_url:
        ensure_model_variant(
            db, config.variant_name, endpoint=config.model_url, served_model_name=config.model
        )
        return
    from model.demo_model import ensure_demo_model

    path = ensure_demo_model(Path(config.demo_model_dir) if config.demo_model_dir else None)
    ensure_model_variant(
        db, "demo", endpoint="embedded", served_model_name=str(path),
        notes="tiny random demo model: answers are not medical advice or even sense",
    )  # fmt: skip


def _fail_fast_matplotlib() -> None:
    """Gradio runs every event step, each streamed update included, inside `import matplotlib`
    (to switch its backend). Without matplotlib installed, each such import searches sys.path
    and fails: 7% of the app's CPU while streaming 16 answers (py-spy). Marked absent in
    sys.modules, the same import fails at once. Nothing changes where matplotlib is installed.
    """
    if "matplotlib" not in sys.modules and importlib.util.find_spec("matplotlib") is None:
        sys.modules["matplotlib"] = None  # type: ignore[assignment]


def create_app(config: AppConfig, db: Database | None = None) -> tuple[FastAPI, gr.Blocks]:
    _fail_fast_matplotlib()
    db = db or Database(config.resolved_database_url)
    db.upgrade()
    ensure_variants(db, config)
    if count_users(db) == 0:
        logger.warning(FIRST_ADMIN_HINT)
    auth = Auth(db)
    engines = EngineRegistry(
        timeout_s=config.answer_timeout_s, stream_interval=config.stream_interval
    )
    flow = Consultations(db, engines)
    uploads = UploadRegistry()
    blocks = build_ui(config, db, auth, flow, uploads)
    blocks.max_threads = config.concurrency + 16

    api = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    gradio_app = None  # set after mounting; routes below read it at request time

    def current_user(request: Request) -> str | None:
        if gradio_app is None:
            return None
        token = request.cookies.get(f"access-token-{gradio_app.cookie_id}") or request.cookies.get(
            f"access-token-unsecure-{gradio_app.cookie_id}"
        )
        return gradio_app.tokens.get(token) if token else None

    @api.get("/attachments/{attachment_id}/{position}.png")
    def attachment_image(attachment_id: int, position: int, request: Request) -> Response:
        name = current_user(request)
        user = get_user_by_name(db, name) if name else None
        if user is None or not user_can_access_attachment(db, user.id, attachment_id):
            return JSONResponse({"error": "not found"}, status_code=404)
        try:
            img = get_attachment_image(db, attachment_id, position)
        except NotFound:
            return JSONResponse({"error": "not found"}, status_code=404)
        return Response(img.png, media_type="image/png", headers={"Cache-Control": "private"})

    api.add_middleware(FileGuard, uploads=uploads, current_user=current_user)

    api = gr.mount_gradio_app(
        api,
        blocks,
        path="",
        auth=auth.check_login,
        auth_message="PulseMind — log in with your account. "
        + ("" if count_users(db) else FIRST_ADMIN_HINT),
        max_file_size=f"{config.max_upload_mb}mb",
        ssr_mode=False,
        enable_monitoring=False,
        show_error=True,
        footer_links=["api"],
        run_history=False,
        css_paths=[CSS_PATH],
    )
    gradio_app = next(r.app for r in api.routes if isinstance(r, Mount))
    return api, blocks


def serve(config: AppConfig) -> None:
    api, _ = create_app(config)
    logger.info("PulseMind on http://{}:{}", config.host, config.port)
    uvicorn.run(api, host=config.host, port=config.port, log_level="warning")


@contextmanager
def serve_in_thread(config: AppConfig, db: Database | None = None) -> Iterator[str]:
    """The real app under uvicorn in a background thread (tests, benchmarks); yields its URL.

    Binds `config.host`; port 0 picks a free one.
    """
    api, _ = create_app(config, db)
    port = config.port or free_port(config.host)
    server = uvicorn.Server(uvicorn.Config(api, host=config.host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="pulsemind-app", daemon=True)
    thread.start()
    deadline = time.monotonic() + APP_START_TIMEOUT_S
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the app did not start on {config.host}:{port}")
        time.sleep(0.05)
    try:
        yield f"http://{config.host}:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
