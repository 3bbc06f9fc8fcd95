"""The app tried as an attacker would, over HTTP against the launched app and the real vLLM
server: every endpoint x every role x server paths in file payloads, someone else's ids,
malformed values. What callers see must be written for them (no SQL, Python or stack text)."""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

import httpx
import pytest
from apphelpers import PASSWORD, USERS, login, make_users, png_file, running_app
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from app.config import AppConfig
from storage import Database, get_user_by_name, history, list_audit

pytestmark = pytest.mark.vllm

#: What must never reach a page or an API caller.
LEAKS = re.compile(
    r"Traceback|sqlite|SQL|OperationalError|psycopg|invalid literal|int too large|"
    r"\.py\"|line \d+|KeyError|TypeError|ValueError|AttributeError|None of|NoneType",
    re.IGNORECASE,
)


@pytest.fixture(scope="module")
def world(vllm_server, tmp_path_factory):
    """The app on the real vLLM server; alice has a consultation with an uploaded file."""
    tmp = tmp_path_factory.mktemp("attack")
    db = Database.sqlite(tmp / "db" / "pulsemind.db")
    db.upgrade()
    make_users(db)
    config = AppConfig(model_url=vllm_server.base_url, model="tiny", variant_name="tiny",
                       data_dir=str(tmp / "db"), port=0)  # fmt: skip
    with running_app(config, db) as url:
        alice = Client(url, auth=("alice", PASSWORD), verbose=False)
        scan = png_file(tmp / "scan.png", 3)
        last = alice.predict({"text": "Rash on the arm.", "files": [handle_file(str(scan))]},
                             None, "tiny", api_name="/consult")  # fmt: skip
        secret = tmp / "secret.txt"
        secret.write_text("TOP-SECRET-MARKER server file")
        # alice's upload, as the server cached it (what an attacker would name)
        alice_http = login(url, "alice")
        upload = alice_http.post("/gradio_api/upload", files={
            "files": ("labs.png", png_file(tmp / "labs.png", 9).read_bytes(), "image/png")}).json()[0]  # fmt: skip
        yield {"url": url, "db": db, "cid": last["consultation_id"], "tmp": tmp,
               "upload": upload, "secret": secret}  # fmt: skip


def _dependencies(http: httpx.Client) -> list[dict]:
    config = http.get("/config").json()
    return [d for d in config["dependencies"] if d.get("backend_fn")]


def _file(path: str) -> dict:
    return {"path": path, "orig_name": "x.png", "meta": {"_type": "gradio.FileData"}}


def _copies_of(markers: list[bytes], folders: list[Path]) -> list[Path]:
    found = []
    for folder in folders:
        for p in folder.rglob("*") if folder.is_dir() else []:
            if p.is_file() and any(p.read_bytes()[:64].startswith(m) for m in markers):
                found.append(p)
    return found


def test_no_request_makes_the_server_touch_a_file_its_caller_did_not_upload(world):
    url, db, tmp = world["url"], world["db"], world["tmp"]
    db_file = Path(db.url.database)
    targets = [str(db_file), f"{db_file}-wal", str(world["secret"]), "/etc/hostname",
               str(Path.cwd() / "README.md"), world["upload"], "../" * 8 + "etc/hostname",
               "http://127.0.0.1:1/x", f"{world['upload']}/../../../{db_file.name}"]  # fmt: skip
    attempts = refused = allowed = 0
    clients = {name: login(url, name) for name in USERS}
    clients[None] = httpx.Client(base_url=url, timeout=30)  # not logged in
    deps = _dependencies(clients["alice"])
    assert len(deps) >= 8  # every event of the page, named or not
    for (who, http), target, dep in itertools.product(clients.items(), targets, deps):
        if who == "alice" and target == world["upload"]:
            continue  # her own upload: legitimately hers
        n = max(len(dep["inputs"]), 1)
        shapes = [[_file(target)] * n, [{"text": "x", "files": [_file(target)]}] * n]
        for data in shapes:
            routes = [("/gradio_api/queue/join",
                       {"data": data, "fn_index": dep["id"], "session_hash": "s1"})]  # fmt: skip
            if dep.get("api_name"):
                for prefix in ("call", "run", "api"):
                    routes.append((f"/gradio_api/{prefix}/{dep['api_name']}", {"data": data}))
            for route, body in routes:
                r = http.post(route, json=body)
                attempts += 1
                refused += r.status_code in (401, 403)
                assert r.status_code in (401, 403), (who, route, target, r.status_code, r.text)
                assert not LEAKS.search(r.text), r.text
    # reading files straight by path: only an uploader reads her upload
    for (who, http), target in itertools.product(clients.items(), targets):
        for route in (f"/gradio_api/file={target}", f"/gradio_api/file/{target}"):
            r = http.get(route)
            attempts += 1
            ok = who == "alice" and target == world["upload"]
            assert (r.status_code == 200) == ok, (who, route, r.status_code)
            refused += not ok
            allowed += ok
    # routes the app does not use are not there
    for route in ("/gradio_api/component_server", "/gradio_api/process_recording",
                  "/gradio_api/stream/x", "/gradio_api/vibe-edit"):  # fmt: skip
        assert clients["alice"].post(route, json={"data": []}).status_code == 404
    assert clients["alice"].get("/gradio_api/proxy=http://127.0.0.1:1/").status_code == 404

    # no copy of the database or the server file anywhere Gradio keeps files
    folders = [Path(os.environ["GRADIO_TEMP_DIR"]), Path("/tmp/gradio"), tmp]
    copies = _copies_of([b"SQLite format 3", b"TOP-SECRET-MARKER"], folders)
    assert copies == [db_file] or set(copies) <= {db_file, world["secret"]}, copies
    denied = [e for e in list_audit(db, action="denied") if (e.detail or {}).get("action")
              == "file_not_uploaded"]  # fmt: skip
    assert denied, "refusals are audited"
    print(f"\nfile-path attacks: {attempts} requests, {refused} refused, {allowed} allowed "
          "(alice reading her own upload), 0 other successes")


def test_send_takes_only_the_callers_own_uploads(world, tmp_path):
    url, db = world["url"], world["db"]
    bob = Client(url, auth=("bob", PASSWORD), verbose=False)
    # through the normal client his own copy is fine; alice's path named raw is refused
    theirs = {"text": "mine now", "files": [{"path": world["upload"]}]}
    for args, api in [((theirs, None), "/send"), ((theirs, None, "tiny"), "/send"),
                      (({"text": "x", "files": [{"path": world["upload"]}]}, None, None), "/consult")]:
        # refused before Gradio reads the payload: gradio_client raises the HTTP 403
        with pytest.raises(httpx.HTTPStatusError) as exc:
            bob.predict(*args, api_name=api)
        assert exc.value.response.status_code == 403
        assert exc.value.response.json() == {"error": "Attach files by uploading them here first."}
    bob_id = get_user_by_name(db, "bob").id
    with db.transaction(write=False) as s:
        from storage.models import Consultation

        assert s.query(Consultation).filter_by(owner_id=bob_id).count() == 0


def test_others_consultations_every_endpoint_every_role(world):
    """bob (another clinician), ann (annotator) and root (admin) on alice's consultation."""
    url, db, cid = world["url"], world["db"], world["cid"]
    before = [(m.id, m.text, m.superseded) for m in history(db, cid, include_superseded=True)]
    calls = [  # endpoint, args on alice's consultation
        ("/open_consultation", (cid,)), ("/report_text", (cid, f"{before[0][0]}:0")),
        ("/rename", (cid, "hijacked")), ("/answer", (cid, "tiny")), ("/retry", (cid, "tiny")),
        ("/send", ({"text": "injected", "files": []}, cid)),
        ("/send", ({"text": "injected", "files": []}, cid, "tiny")),  # the answer would start
        ("/consult", ({"text": "injected", "files": []}, cid, "tiny")),
    ]  # fmt: skip
    reads = {"/open_consultation", "/report_text"}
    tried = 0
    for who in ("bob", "ann", "root"):
        c = Client(url, auth=(who, PASSWORD), verbose=False)
        for api, args in calls:
            tried += 1
            if who == "root" and api in reads:
                c.predict(*args, api_name=api)  # an admin reads
                continue
            with pytest.raises(AppError) as exc:
                c.predict(*args, api_name=api)
            assert not LEAKS.search(str(exc.value)), (who, api, str(exc.value))
    after = [(m.id, m.text, m.superseded) for m in history(db, cid, include_superseded=True)]
    assert after == before  # an admin's /retry did not supersede her answer
    print(f"\nother people's consultation: {tried} calls, writes all refused")


MALFORMED = ["abc", -1, 0, 10**30, 1.5, [], {}, "1; DROP TABLE users", "１２", True]


def test_malformed_ids_get_plain_messages(world):
    url = world["url"]
    alice = Client(url, auth=("alice", PASSWORD), verbose=False)
    answered = 0
    for bad in MALFORMED:
        for api, args in [("/open_consultation", (bad,)), ("/rename", (bad, "t")),
                          ("/answer", (bad, "tiny")), ("/retry", (bad, "tiny")),
                          ("/report_text", (world["cid"], bad)),
                          ("/send", ({"text": "x", "files": []}, bad)),
                          ("/send", ({"text": "x", "files": []}, bad, "tiny")),
                          ("/send", ({"text": "x", "files": []}, world["cid"], bad)),  # variant
                          ("/consult", ({"text": "x", "files": []}, bad, None)),
                          ]:  # fmt: skip
            try:
                alice.predict(*args, api_name=api)
            except AppError as exc:
                assert not LEAKS.search(str(exc)), (api, bad, str(exc))
            except ValueError:
                pass  # gradio_client refuses to send it (not JSON): nothing reached us
            answered += 1
    for bad in ("10" + "0" * 30, "-1", "abc", "1e3"):
        r = login(url, "alice").get(f"/attachments/{bad}/0.png")
        assert r.status_code == 404 and not LEAKS.search(r.text), (bad, r.text)
    r = login(url, "alice").get(f"/attachments/1/{'9' * 40}.png")
    assert r.status_code == 404
    print(f"\nmalformed values: {answered} calls answered with plain messages")
