"""The one authorization rule (storage.access), enforced by storage for writes; database faults
as storage errors people can read; one database URL for the app and every command."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from storage import (
    Database,
    DatabaseBusy,
    DatabaseUnavailable,
    NewAttachment,
    NewImage,
    NotFound,
    PermissionDenied,
    Uploads,
    add_assistant_message,
    add_user_message,
    check_writable,
    count_users,
    create_consultation,
    create_user,
    delete_consultation,
    get_consultation,
    get_user_by_name,
    history,
    rename_consultation,
    set_user_active,
    update_assistant_message,
    user_can_access_attachment,
)
from storage.db import resolve_database_url
from tests.test_storage import png_bytes

PASSWORD = "correct horse battery"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def people(db: Database):
    return {
        name: create_user(db, name, PASSWORD, role)
        for name, role in [("alice", "clinician"), ("bob", "clinician"), ("root", "admin"),
                           ("ann", "annotator")]  # fmt: skip
    }


def _answer(db, cid, user_id, text="How long?", **kw):
    return add_assistant_message(
        db, cid, text, user_id=user_id, model_variant_id=None, sampling_params=None,
        latency_ms=None, first_token_ms=None, prompt_tokens=None, completion_tokens=None,
        finish_reason=kw.pop("finish_reason", "stop"), **kw,
    )  # fmt: skip


def _attachment(color=(200, 10, 10)) -> NewAttachment:
    import hashlib

    png = png_bytes(color)
    return NewAttachment(sha256=hashlib.sha256(png).hexdigest(), kind="image", mime="image/png",
                         size_bytes=len(png), deidentified=True, original_name="x.png",
                         images=[NewImage("photo", 8, 6, png)])  # fmt: skip


def test_owner_writes_admin_reads_only_others_nothing(db, people):
    alice, bob, root, ann = (people[n] for n in ("alice", "bob", "root", "ann"))
    c = create_consultation(db, alice.id, "Headache")
    q = add_user_message(db, c.id, alice.id, "Headache for two days.", [_attachment()])
    a = _answer(db, c.id, alice.id)
    att_id = q.attachments[0].id

    # reading: owner and admin; not another clinician or an annotator
    assert get_consultation(db, c.id, root.id).id == c.id
    assert len(history(db, c.id, user_id=root.id)) == 2
    for outsider in (bob, ann):
        with pytest.raises(PermissionDenied):
            get_consultation(db, c.id, outsider.id)
        with pytest.raises(PermissionDenied):
            history(db, c.id, user_id=outsider.id)
        assert not user_can_access_attachment(db, outsider.id, att_id)
    assert user_can_access_attachment(db, root.id, att_id)
    assert user_can_access_attachment(db, alice.id, att_id)

    # writing: the owner only; an admin's retry cannot supersede her answer
    for intruder in (root, bob, ann):
        writes = [
            lambda u=intruder: check_writable(db, c.id, u.id),
            lambda u=intruder: add_user_message(db, c.id, u.id, "x"),
            lambda u=intruder: _answer(db, c.id, u.id, "replaced", replaces_id=a.id),
            lambda u=intruder: _answer(db, c.id, u.id, "added"),
            lambda u=intruder: update_assistant_message(db, a.id, "changed", user_id=u.id,
                                                        finish_reason="stop"),
            lambda u=intruder: rename_consultation(db, c.id, u.id, "mine now"),
            lambda u=intruder: delete_consultation(db, c.id, u.id),
        ]  # fmt: skip
        for write in writes:
            with pytest.raises(PermissionDenied):
                write()
    after = history(db, c.id, include_superseded=True)
    assert [(m.id, m.text, m.superseded) for m in after] == [
        (q.id, "Headache for two days.", False), (a.id, "How long?", False)
    ]
    assert get_consultation(db, c.id, alice.id).title == "Headache"

    # an inactive owner can do nothing either
    set_user_active(db, alice.id, False)
    with pytest.raises(PermissionDenied):
        get_consultation(db, c.id, alice.id)
    with pytest.raises(PermissionDenied):
        _answer(db, c.id, alice.id)


def test_checkpointed_answer_is_updated_in_place(db, people):
    alice = people["alice"]
    c = create_consultation(db, alice.id)
    add_user_message(db, c.id, alice.id, "Cough.")
    cp = _answer(db, c.id, alice.id, "Since wh", finish_reason="cut_off")
    done = update_assistant_message(db, cp.id, "Since when?", user_id=alice.id,
                                    finish_reason="stop", completion_tokens=4)  # fmt: skip
    assert (done.id, done.text, done.finish_reason.value, done.completion_tokens) == (
        cp.id, "Since when?", "stop", 4)  # fmt: skip
    with pytest.raises(NotFound):
        update_assistant_message(db, 10**6, "x", user_id=alice.id, finish_reason="stop")


def test_uploads_only_for_their_uploaders(tmp_path):
    uploads = Uploads()
    mine = tmp_path / "gradio" / "abc" / "ecg.png"
    uploads.add("Alice", [str(mine)])
    assert uploads.allowed("alice", str(mine))
    assert uploads.allowed("ALICE", str(tmp_path / "gradio" / "abc" / ".." / "abc" / "ecg.png"))
    uploads.add("bob", [str(mine)])  # same bytes uploaded by bob: Gradio's same path
    assert uploads.allowed("alice", str(mine)) and uploads.allowed("bob", str(mine))
    for user, path in [("carol", str(mine)), (None, str(mine)), ("alice", "/etc/passwd"),
                       ("alice", 42), ("alice", None), ("alice", ""), ("alice", "a\x00b"),
                       ("alice", {"path": str(mine)})]:  # fmt: skip
        assert not uploads.allowed(user, path), (user, path)
    with pytest.raises(PermissionDenied) as exc:
        uploads.require("carol", str(mine))
    assert exc.value.user_message == "Attach files by uploading them here first."


def test_ids_beyond_sql_integers_are_not_found(db, people):
    with pytest.raises(NotFound):
        get_consultation(db, 10**30, people["alice"].id)
    assert not user_can_access_attachment(db, people["root"].id, 10**30)


def test_locked_database_says_busy(db, people, tmp_path):
    other = sqlite3.connect(tmp_path / "pulsemind.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # an outside writer holds the lock
    try:
        with pytest.raises(DatabaseBusy) as exc:
            create_consultation(db, people["alice"].id, "blocked")
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert exc.value.user_message.startswith("The database is busy")
    assert "SQL" not in exc.value.user_message and "sqlite" not in exc.value.user_message
    assert create_consultation(db, people["alice"].id, "after").title == "after"


def test_read_only_database_says_unavailable(db, people, tmp_path):
    path = tmp_path / "pulsemind.db"
    ro = Database(f"sqlite+pysqlite:///file:{path}?mode=ro&uri=true")
    try:
        assert get_user_by_name(ro, "alice").id == people["alice"].id  # reads work
        with pytest.raises(DatabaseUnavailable) as exc:
            create_consultation(ro, people["alice"].id, "x")
    finally:
        ro.dispose()
    assert "I/O" not in exc.value.user_message and "readonly" not in exc.value.user_message


def test_one_database_url_for_every_command(tmp_path, monkeypatch):
    url = f"sqlite+pysqlite:///{tmp_path / 'env.db'}"
    env = {**os.environ, "PULSEMIND_DATABASE_URL": url, "HOME": str(tmp_path / "home"),
           "PULSEMIND_NEW_PASSWORD": PASSWORD, "PYTHONPATH": str(REPO)}  # fmt: skip
    env.pop("PULSEMIND_DATA_DIR", None)
    run = dict(cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    r = subprocess.run([sys.executable, "-m", "app.cli", "user", "add", "王医生", "--role",
                        "clinician"], **run)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert subprocess.run([sys.executable, "-m", "app.cli", "db", "upgrade"], **run).returncode == 0
    with Database(url) as db:
        assert count_users(db) == 1  # written where the app reads, not in ~/.local/share
    assert not (tmp_path / "home" / ".local" / "share" / "pulsemind" / "pulsemind.db").exists()
    # flag > env var > data dir
    monkeypatch.setenv("PULSEMIND_DATABASE_URL", url)
    assert resolve_database_url("sqlite:///flag.db") == "sqlite:///flag.db"
    assert resolve_database_url() == url
    monkeypatch.delenv("PULSEMIND_DATABASE_URL")
    monkeypatch.setenv("PULSEMIND_DATA_DIR", str(tmp_path / "data"))
    assert resolve_database_url().endswith(str(tmp_path / "data" / "pulsemind.db"))
    from app.config import AppConfig

    assert AppConfig().resolved_database_url == resolve_database_url()


def test_each_checkout_runs_its_own_code(tmp_path):
    """Two checkouts share the environment (dependencies only) but run their own code."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()  # fmt: skip
    copies = []
    for name in ("one", "two"):
        dest = tmp_path / name
        for f in files:
            if (REPO / f).is_file():
                (dest / f).parent.mkdir(parents=True, exist_ok=True)
                (dest / f).write_bytes((REPO / f).read_bytes())
                os.chmod(dest / f, (REPO / f).stat().st_mode)
        copies.append(dest)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    seen = []
    for dest in copies:
        r = subprocess.run([str(dest / "scripts" / "pulsemind"), "--version"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
        assert r.returncode == 0, r.stderr[-2000:]
        seen.append(r.stdout.strip())
    assert seen[0].endswith(f"({copies[0]})") and seen[1].endswith(f"({copies[1]})"), seen
    # the shared environment holds no checkout: importing the app from elsewhere fails
    venv_python = subprocess.run([str(copies[0] / "scripts" / "bootstrap"), "app"], env=env,
                                 capture_output=True, text=True, timeout=600).stdout.strip()  # fmt: skip
    r = subprocess.run([f"{venv_python}/bin/python", "-c", "import app.cli"], cwd=tmp_path,
                       env=env, capture_output=True, text=True)  # fmt: skip
    assert r.returncode != 0 and "No module named 'app'" in r.stderr


def test_login_hint_follows_the_users_table_and_db_location_is_checked(tmp_path):
    from apphelpers import running_app

    from app.config import AppConfig
    from app.server import StartupError
    from model.serve import free_port

    db = Database.sqlite(tmp_path / "db" / "pulsemind.db")
    db.upgrade()
    config = AppConfig(model_url=f"http://127.0.0.1:{free_port()}/v1", model="tiny",
                       data_dir=str(tmp_path / "db"), port=0)  # fmt: skip
    with running_app(config, db) as url:
        import httpx

        def hint() -> str:
            return httpx.get(f"{url}/config", timeout=30).json()["detail"]["auth_message"]

        assert "No users exist yet" in hint()
        create_user(db, "ada", PASSWORD, "admin")  # as `pulsemind user add` does, elsewhere
        assert "No users exist yet" not in hint() and "log in" in hint()

    # a database whose folder holds the upload folder (or lies inside it) is refused
    for upload_dir in (tmp_path / "db" / "uploads", tmp_path):
        bad = AppConfig(model_url=config.model_url, model="tiny", port=0,
                        upload_dir=str(upload_dir))  # fmt: skip
        saved = os.environ.pop("GRADIO_TEMP_DIR", None)
        try:
            with pytest.raises(StartupError, match="Put the database in a folder of its own"):
                with running_app(bad, db):
                    pass
        finally:
            if saved is not None:
                os.environ["GRADIO_TEMP_DIR"] = saved
    db.dispose()


def test_a_locked_database_says_busy_to_login_and_handlers(tmp_path):
    """An outside writer holds SQLite's lock: login and a handler answer "busy" in seconds,
    as sentences (before: HTTP 500 after 15 s, and the SQL text on the page)."""
    import time

    import httpx
    from apphelpers import make_users, running_app
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    from app.config import AppConfig
    from model.serve import free_port

    db = Database.sqlite(tmp_path / "db" / "pulsemind.db")
    db.upgrade()
    make_users(db)
    config = AppConfig(model_url=f"http://127.0.0.1:{free_port()}/v1", model="tiny",
                       data_dir=str(tmp_path / "db"), port=0)  # fmt: skip
    with running_app(config, db) as url:
        alice = Client(url, auth=("alice", PASSWORD), verbose=False)
        other = sqlite3.connect(tmp_path / "db" / "pulsemind.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            t0 = time.monotonic()
            r = httpx.post(f"{url}/login", data={"username": "bob", "password": PASSWORD},
                           timeout=60)  # fmt: skip
            took = time.monotonic() - t0
            assert r.status_code == 503 and "busy" in r.json()["detail"], r.text
            assert took < 12, took
            with pytest.raises(AppError) as exc:
                alice.predict({"text": "Cough", "files": []}, None, api_name="/send")
            assert "busy" in str(exc.value) and "SQL" not in str(exc.value)
        finally:
            other.execute("ROLLBACK")
            other.close()
        # and afterwards everything works again
        dropdown, *_ = alice.predict({"text": "Cough", "files": []}, None, api_name="/send")
        assert dropdown["value"]
    db.dispose()
