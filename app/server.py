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
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import gradio as gr
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from loguru import logger
from starlette.routing import Mount

from app.auth import Auth
from app.compare import Comparisons
from app.config import AppConfig
from app.edge import parse_id, parse_index, plain_input_errors, user_message
from app.i18n import I18N, SERVER, error_text, t
from app.language import LANGUAGES, LanguagePage, request_language
from app.request_guard import RequestGuard
from app.retrain import Retrain
from app.sessions import SessionGuard, uvicorn_proxy_options
from app.ui import CSS_PATH, build_ui
from app.workflow import Consultations
from model.engines import EngineRegistry
from model.serve import free_port
from storage import (
    Database,
    NotFound,
    StorageError,
    Uploads,
    count_users,
    ensure_model_variant,
    get_attachment_image,
    get_user_by_name,
    record_audit,
    user_can_access_attachment,
)

#: Importing gradio/transformers and building the UI takes seconds on a loaded 2-core box.
APP_START_TIMEOUT_S = 60

FIRST_ADMIN_COMMAND = "scripts/pulsemind user add NAME --role admin"
FIRST_ADMIN_HINT = f"{SERVER['login.first_admin']['en']}\n    {FIRST_ADMIN_COMMAND}"
#: The login page comes before anyone is known: it speaks both languages.
LOGIN_MESSAGE = " / ".join(SERVER["login.message"][lang] for lang in LANGUAGES)
#: Shown on the login page while nobody can log in yet (the operator's next step).
FIRST_ADMIN_PAGE_HINT = (
    " / ".join(SERVER["login.first_admin"][lang] for lang in LANGUAGES)
    + f" <code>{FIRST_ADMIN_COMMAND}</code>"
)


class LoginHint:
    """ASGI middleware: the login page's hint follows the users table.

    Gradio fixes `auth_message` when the app is mounted; the first admin is created later by
    another process (`pulsemind user add`). While the page still says "no users exist yet",
    each page load checks again (one COUNT), and drops the hint once someone exists.
    """

    PAGES = frozenset({"/", "/config", "/gradio_api/login_check"})

    def __init__(self, app, *, db: Database, blocks: gr.Blocks) -> None:
        self.app, self.db, self.blocks = app, db, blocks

    async def __call__(self, scope, receive, send) -> None:
        if (
            scope["type"] == "http"
            and scope.get("path") in self.PAGES
            and self.blocks.auth_message != LOGIN_MESSAGE
        ):
            await anyio.to_thread.run_sync(self.refresh)
        await self.app(scope, receive, send)

    def refresh(self) -> None:
        try:
            has_users = count_users(self.db) > 0
        except StorageError:  # a busy database: keep the page as it is this time
            return
        self.blocks.auth_message = (
            LOGIN_MESSAGE if has_users else f"{LOGIN_MESSAGE} {FIRST_ADMIN_PAGE_HINT}"
        )


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
    warm_up_intake()
    upload_dir = use_upload_dir(config)
    blocked = check_database_location(db, upload_dir)
    auth = Auth(db)
    engines = EngineRegistry(
        timeout_s=config.answer_timeout_s, stream_interval=config.stream_interval
    )
    uploads = Uploads()
    flow = Consultations(db, engines, uploads, checkpoint_s=config.checkpoint_s)
    comparisons = Comparisons(db, engines, uploads)  # the same engines and uploads
    retrain = Retrain(db, db.url.render_as_string(hide_password=False), config.data_dir)
    for run in retrain.recover():  # its process went away with the machine or was killed
        logger.warning("training run {} was interrupted; resume it from the Retrain tab", run.id)
    blocks = build_ui(config, db, auth, flow, comparisons, retrain)
    plain_input_errors(blocks)  # Gradio's own value checks answered in our words (app.edge)
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
    def attachment_image(attachment_id: str, position: str, request: Request) -> Response:
        try:
            att, pos = parse_id(attachment_id, "attachment"), parse_index(position, "image")
            name = current_user(request)
            user = get_user_by_name(db, name) if name else None
            if user is None or not user_can_access_attachment(db, user.id, att):
                raise NotFound("attachment not visible to the caller")
            img = get_attachment_image(db, att, pos)
        except NotFound:
            return JSONResponse({"error": t("guard.not_found", request_language(request))},
                                status_code=404)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - the edge: a message for people, detail logged
            status = 503 if isinstance(exc, StorageError) else 500
            text = error_text(exc, user_message(exc), request_language(request))
            return JSONResponse({"error": text}, status_code=status)
        return Response(img.png, media_type="image/png", headers={"Cache-Control": "private"})

    def refused(username: str | None, route: str) -> None:
        user = get_user_by_name(db, username) if username else None
        record_audit(db, "denied", user_id=user.id if user else None, outcome="denied",
                     detail={"action": "file_not_uploaded", "route": route[:100]})  # fmt: skip

    api.add_middleware(
        RequestGuard, uploads=uploads, current_user=current_user, on_refused=refused
    )
    api.add_middleware(LanguagePage)  # the page in the request's language (app.language)
    api.add_middleware(SessionGuard, db=db, config=config)  # outermost: expired sessions first

    api = gr.mount_gradio_app(
        api,
        blocks,
        path="",
        auth=auth.login,
        auth_message=(
            LOGIN_MESSAGE if count_users(db) else f"{LOGIN_MESSAGE} {FIRST_ADMIN_PAGE_HINT}"
        ),
        max_file_size=f"{config.max_upload_mb}mb",
        ssr_mode=False,
        enable_monitoring=False,
        show_error=False,  # only our gr.Error messages (app.edge) reach the page
        blocked_paths=blocked,
        footer_links=["api"],  # shown to admins only (app.ui, assets/app.css)
        run_history=False,
        css_paths=[CSS_PATH],
        theme=theme(),
        i18n=I18N,
    )
    gradio_app = next(r.app for r in api.routes if isinstance(r, Mount))
    api.add_middleware(LoginHint, db=db, blocks=blocks)
    api.router.on_shutdown.append(flow.close)  # turns being stored finish; the writer ends
    api.router.on_shutdown.append(comparisons.close)
    return api, blocks


def theme() -> gr.themes.Base:
    """Gradio's default theme with WCAG AA contrast (4.5:1) where its defaults fall short, on
    every page including the login form: white on the orange primary (2.8:1) and on the red
    stop buttons (3.8:1), and the pale subdued text of hints, info lines, the API link and
    placeholders (1.9:1)."""
    return gr.themes.Default().set(
        button_primary_background_fill="#c2410c",
        button_primary_background_fill_hover="#9a3412",
        button_primary_border_color="#c2410c",
        button_cancel_background_fill="#b91c1c",
        button_cancel_background_fill_hover="#991b1b",
        button_cancel_border_color="#b91c1c",
        body_text_color_subdued="#5f6470",
        input_placeholder_color="#5f6470",
    )


def warm_up_intake() -> None:
    """Load the identifier recognizer (~5 s) and the OCR engine (~2 s) in the background, so
    the first clinician to upload after a start does not wait for them."""

    def load() -> None:
        from model.intake import ocr, phi

        try:
            phi.load()
            ocr.warm_up()
        except Exception as exc:  # noqa: BLE001 - the first upload loads (and reports) again
            logger.opt(exception=exc).warning("intake warm-up failed; uploads will load it")

    threading.Thread(target=load, name="pulsemind-intake-warm-up", daemon=True).start()


def use_upload_dir(config: AppConfig) -> Path:
    """Gradio's upload cache: a folder of its own (0700), never one that holds the database.

    Gradio reads `GRADIO_TEMP_DIR` when it stores and checks uploads, so it is set for the
    process (an operator's own `GRADIO_TEMP_DIR` wins).
    """
    folder = Path(
        os.environ.get("GRADIO_TEMP_DIR")
        or config.upload_dir
        or Path(tempfile.gettempdir()) / f"pulsemind-uploads-{os.getuid()}"
    ).resolve()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    return folder


def check_database_location(db: Database, upload_dir: Path) -> list[str]:
    """Refuse to start when Gradio could serve the database; return the folders to block.

    The SQLite file's folder (with its -wal and -shm files) goes into Gradio's blocked_paths.
    Blocking cannot cover a database inside the upload folder, nor one whose folder holds the
    upload folder (blocking it would block every upload): those are refused, with the fix.
    """
    if not db.is_sqlite:
        return []
    db_dir = Path(db.url.database).expanduser().resolve().parent
    if upload_dir.is_relative_to(db_dir) or db_dir.is_relative_to(upload_dir):
        raise StartupError(
            f"The database folder {db_dir} and the upload folder {upload_dir} overlap: Gradio "
            "serves uploads from the one. Put the database in a folder of its own "
            "(--data-dir or --database-url) or move uploads (--upload-dir)."
        )
    return [str(db_dir)]


class StartupError(RuntimeError):
    """A configuration the app refuses to start with; the message names the fix."""


def serve(config: AppConfig) -> None:
    api, _ = create_app(config)
    logger.info("PulseMind on http://{}:{}", config.host, config.port)
    uvicorn.run(api, host=config.host, port=config.port, log_level="warning",
                **uvicorn_proxy_options(config))  # fmt: skip


@contextmanager
def serve_in_thread(config: AppConfig, db: Database | None = None) -> Iterator[str]:
    """The real app under uvicorn in a background thread (tests, benchmarks); yields its URL.

    Binds `config.host`; port 0 picks a free one.
    """
    api, _ = create_app(config, db)
    port = config.port or free_port(config.host)
    server = uvicorn.Server(uvicorn.Config(api, host=config.host, port=port, log_level="warning",
                                           **uvicorn_proxy_options(config)))  # fmt: skip
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
