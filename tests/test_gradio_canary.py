"""Canaries for the Gradio internals the app relies on: an upgrade that changes one fails here,
with a message that names what changed and which of our code reads it.

What we rely on, and where:
- `/login` sets `access-token-{cookie_id}` and `access-token-unsecure-{cookie_id}` cookies, and
  the mounted app's `tokens` maps the cookie's value to the user name: `app.server`'s
  `current_user` (who is calling, for `/attachments/...` and the request guard);
- `/gradio_api/upload` answers a JSON list of server paths: `app.request_guard` records them
  as the caller's uploads, and a turn may only attach those;
- `/gradio_api/file=PATH` serves an upload: the guard lets only its uploader through;
- a file value in an event's JSON payload is `{"path": ..., "meta": {"_type":
  "gradio.FileData"}}` (what `gradio_client.handle_file` sends) and reaches the handler as a
  dict with a readable `path` and the `orig_name`: `app.consult_api.file_path/display_name`;
- the routes gradio_client and scripts use (`/gradio_api/queue/join`, `queue/data`,
  `call/{api_name}` then `call/{api_name}/{event_id}`, `upload`, `file=`, `info`, `/config`)
  all pass the guard, which refuses any POST route it does not know.

Each test runs one of these against a tiny real Gradio app behind the real `RequestGuard`
(uvicorn in a thread on a free loopback port), as `app.server` mounts the real one.

    OMP_NUM_THREADS=1 python -m pytest tests/test_gradio_canary.py -q
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import gradio as gr
import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from gradio_client import Client, handle_file
from starlette.routing import Mount

from app.request_guard import RequestGuard
from model.serve import free_port
from storage import Uploads

USER, PASSWORD = "canary", "canary password"
START_TIMEOUT_S = 60


class _Recorder:
    """ASGI middleware: remembers (method, path) of every HTTP request (for failure messages)."""

    def __init__(self, app, *, seen: list[tuple[str, str]]):
        self.app, self.seen = app, seen

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            self.seen.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


def _describe(message: dict) -> dict:
    """What the handler received for the first file of `message` (as /consult reads it)."""
    f = message["files"][0]
    path = f.get("path") if isinstance(f, dict) else f
    return {
        "received": type(f).__name__,
        "keys": sorted(f) if isinstance(f, dict) else [],
        "orig_name": f.get("orig_name") if isinstance(f, dict) else None,
        "text": Path(path).read_text(),
    }


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(url, the mounted Gradio app, recorded requests) of a two-endpoint app with login."""
    tmp = tmp_path_factory.mktemp("canary")
    old_temp = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(tmp / "uploads")  # as app.server.use_upload_dir does
    with gr.Blocks() as blocks:
        box, out = gr.Textbox(), gr.Textbox()
        box.submit(lambda s: s.upper(), box, out, api_name="upper")
        gr.api(_describe, api_name="describe")
    seen: list[tuple[str, str]] = []
    mounted: list = []

    def current_user(request: Request) -> str | None:  # the same lookup as app.server's
        if not mounted:
            return None
        app = mounted[0]
        token = request.cookies.get(f"access-token-{app.cookie_id}") or request.cookies.get(
            f"access-token-unsecure-{app.cookie_id}"
        )
        return app.tokens.get(token) if token else None

    api = FastAPI()
    api.add_middleware(RequestGuard, uploads=Uploads(), current_user=current_user)
    api.add_middleware(_Recorder, seen=seen)
    api = gr.mount_gradio_app(api, blocks, path="", auth=lambda u, p: (u, p) == (USER, PASSWORD),
                              ssr_mode=False, enable_monitoring=False)  # fmt: skip
    mounted.append(next(r.app for r in api.routes if isinstance(r, Mount)))
    port = free_port("127.0.0.1")
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="gradio-canary", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "tiny Gradio app did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", mounted[0], seen
    finally:
        server.should_exit = True
        thread.join(30)
        if old_temp is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = old_temp


def _login(url: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=30)
    r = client.post("/login", data={"username": USER, "password": PASSWORD})
    assert r.status_code == 200, f"Gradio's /login form changed: HTTP {r.status_code} {r.text}"
    return client


def _upload(client: httpx.Client, name: str, data: bytes) -> str:
    r = client.post("/gradio_api/upload", files={"files": (name, data, "text/plain")})
    assert r.status_code == 200, f"/gradio_api/upload answered HTTP {r.status_code}: {r.text}"
    paths = r.json()
    assert isinstance(paths, list) and len(paths) == 1 and isinstance(paths[0], str), (
        f"/gradio_api/upload no longer answers a JSON list of path strings but {r.text!r}: "
        "app.request_guard records uploads from that list"
    )
    return paths[0]


def test_login_sets_the_cookies_and_token_table_current_user_reads(tiny):
    url, app, _ = tiny
    assert isinstance(getattr(app, "cookie_id", None), str), (
        "the mounted Gradio app has no str `cookie_id`: app.server.current_user builds the "
        "cookie names from it"
    )
    client = _login(url)
    names = set(client.cookies.keys())
    for name in (f"access-token-{app.cookie_id}", f"access-token-unsecure-{app.cookie_id}"):
        assert name in names, (
            f"Gradio's /login no longer sets cookie {name.replace(app.cookie_id, '{cookie_id}')!r}"
            f" (it set {sorted(n.replace(app.cookie_id, '{cookie_id}') for n in names)}): "
            "app.server.current_user reads it"
        )
    token = client.cookies[f"access-token-unsecure-{app.cookie_id}"]
    tokens = getattr(app, "tokens", None)
    assert isinstance(tokens, dict) and tokens.get(token) == USER, (
        "the mounted Gradio app's `tokens` no longer maps the login cookie's value to the user "
        "name: app.server.current_user reads it"
    )


def test_upload_answers_a_json_list_of_paths_and_file_route_serves_it(tiny):
    url, _, _ = tiny
    client = _login(url)
    path = _upload(client, "note.txt", b"canary upload")
    assert Path(path).read_bytes() == b"canary upload", "the uploaded path does not hold the file"
    r = client.get(f"/gradio_api/file={path}")
    assert r.status_code == 200 and r.content == b"canary upload", (
        f"GET /gradio_api/file=PATH no longer serves an upload to its uploader (HTTP "
        f"{r.status_code}): app.request_guard guards exactly this route"
    )
    anonymous = httpx.get(f"{url}/gradio_api/file={path}", timeout=30)
    assert anonymous.status_code in (401, 403, 404), "an upload was served without a login"


def test_file_values_are_filedata_dicts_that_reach_the_handler(tiny, tmp_path):
    url, _, _ = tiny
    local = tmp_path / "report.txt"
    local.write_text("canary file value")
    value = handle_file(str(local))
    assert value.get("meta") == {"_type": "gradio.FileData"} and value.get("path"), (
        f"gradio_client.handle_file no longer makes {{'path', 'meta': {{'_type': "
        f"'gradio.FileData'}}}} but {value!r}: app.request_guard looks for `path` keys"
    )
    client = _login(url)
    path = _upload(client, "report.txt", local.read_bytes())
    payload = {"text": "x", "files": [{"path": path, "orig_name": "report.txt",
                                        "meta": {"_type": "gradio.FileData"}}]}  # fmt: skip
    r = client.post("/gradio_api/call/describe", json={"data": [payload]})
    assert r.status_code == 200 and "event_id" in r.json(), (
        f"POST /gradio_api/call/{{api_name}} no longer answers {{'event_id'}} (HTTP "
        f"{r.status_code}: {r.text[:200]})"
    )
    result = client.get(f"/gradio_api/call/describe/{r.json()['event_id']}")
    events = [line for line in result.text.splitlines() if line]
    assert events[:1] == ["event: complete"] and events[1].startswith("data: "), (
        f"GET /gradio_api/call/{{api_name}}/{{event_id}} no longer streams 'event: complete' then "
        f"'data: [...]': {result.text[:300]!r}"
    )
    (got,) = json.loads(events[1].removeprefix("data: "))
    assert got["received"] == "dict" and "path" in got["keys"], (
        f"a gradio.FileData value reaches a gr.api handler as {got!r}, not a dict with 'path': "
        "app.consult_api.file_path reads it"
    )
    assert got["orig_name"] == "report.txt", "the file value lost `orig_name` (display_name)"
    assert got["text"] == "canary file value", "the handler's path does not hold the upload"


def test_gradio_client_uses_only_routes_the_request_guard_lets_through(tiny, tmp_path):
    url, _, seen = tiny
    local = tmp_path / "b.txt"
    local.write_text("through the client")
    seen.clear()
    client = Client(url, auth=(USER, PASSWORD), verbose=False)
    try:
        upper = client.predict("abc", api_name="/upper")
        described = client.predict({"text": "y", "files": [handle_file(str(local))]},
                                   api_name="/describe")  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - re-raised with the routes it used
        routes = sorted({f"{m} {p}" for m, p in seen})
        raise AssertionError(
            f"gradio_client failed behind app.request_guard ({exc!r}); routes it used: {routes}"
        ) from exc
    assert upper == "ABC"
    assert described["text"] == "through the client" and described["orig_name"] == "b.txt"
    posts = sorted({p for m, p in seen if m == "POST"})
    known = {"/login", "/gradio_api/upload", "/gradio_api/queue/join"}
    assert set(posts) <= known, (
        f"gradio_client now POSTs to {sorted(set(posts) - known)}; check that "
        "app.request_guard allows them (it refuses unknown POST routes)"
    )
