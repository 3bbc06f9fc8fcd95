"""The app process killed with SIGKILL while clinicians write: every write it acknowledged is in
the database afterwards, the live WAL is never deleted under it, and the answer a clinician
was reading is kept (checkpointed), marked cut off."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from apphelpers import PASSWORD, make_users
from gradio_client import Client

from model.serve import free_port
from storage import Database, MessageRole, ensure_model_variant, history

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
#: Kill rounds: each restarts the app (~10 s on 2 cores).
ROUNDS = 3
APP_START_S = 120


def _start_app(db_url: str, model_url: str, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port), "--database-url", db_url,
         "--model-url", model_url, "--model", "tiny", "--variant-name", "tiny",
         "--checkpoint-s", "0.2"],
        cwd=REPO, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + APP_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"app exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise AssertionError("app did not start")


def _deleted_wal(pid: int) -> list[str]:
    fds = Path(f"/proc/{pid}/fd")
    targets = []
    for fd in fds.iterdir():
        try:
            targets.append(os.readlink(fd))
        except OSError:
            continue
    return [t for t in targets if "pulsemind.db" in t and "(deleted)" in t]


def test_kill9_loses_no_acknowledged_write_and_keeps_the_answer_being_read(vllm_server, tmp_path):
    db_path = tmp_path / "data" / "pulsemind.db"
    db_url = f"sqlite+pysqlite:///{db_path}"
    with Database.sqlite(db_path) as db:
        db.upgrade()
        make_users(db)
        # answers at length: the one alice is reading when the app dies is still streaming
        ensure_model_variant(db, "long", vllm_server.base_url, "tiny",
                             sampling_defaults={"max_tokens": 3000, "min_tokens": 3000})  # fmt: skip
    acknowledged: list[tuple[int, int]] = []  # (consultation id, answer message id)
    cut: list[tuple[int, str, str]] = []  # (consultation id, text shown 0.5 s before, last)
    for round_ in range(ROUNDS):
        proc, url = _start_app(db_url, vllm_server.base_url, tmp_path / "app.log")
        try:
            alice = httpx.Client(base_url=url, timeout=30)
            assert alice.post("/login", data={"username": "alice", "password": PASSWORD}).is_success
            # the database named in a file payload is refused before Gradio opens it
            for target in (str(db_path), f"{db_path}-wal", f"{db_path}-shm"):
                r = alice.post("/gradio_api/queue/join", json={
                    "data": [{"path": target, "meta": {"_type": "gradio.FileData"}}, None, None],
                    "fn_index": 0, "session_hash": "x"})  # fmt: skip
                assert r.status_code == 403
            # an ordinary outside reader opens and closes the database
            outside = sqlite3.connect(db_path)
            outside.execute("SELECT count(*) FROM messages").fetchone()
            outside.close()
            assert _deleted_wal(proc.pid) == []

            client = Client(url, auth=("alice", PASSWORD), verbose=False)
            for i in range(3):
                last = client.predict({"text": f"Round {round_} question {i}", "files": []},
                                      None, "tiny", api_name="/consult")  # fmt: skip
                assert last["message_id"], last
                acknowledged.append((last["consultation_id"], last["message_id"]))
            # a long answer streams; the app dies while alice reads it
            job = client.submit({"text": f"Round {round_}: explain at length", "files": []},
                                None, "long", api_name="/consult")  # fmt: skip
            t0, shown, cid = time.monotonic(), [], None  # (when, text) as alice saw it
            for update in job:
                cid = update.get("consultation_id") or cid
                shown.append((time.monotonic(), update.get("text") or ""))
                if shown[-1][0] - t0 > 0.8 and len(shown[-1][1]) > 40:
                    break
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            proc.wait(10)
            # what she had on screen half a second before the crash must survive it
            early = [text for when, text in shown if when <= killed_at - 0.5]
            cut.append((cid, early[-1] if early else "", shown[-1][1]))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    with Database(db_url) as db:
        for cid, message_id in acknowledged:
            ids = [m.id for m in history(db, cid)]
            assert message_id in ids, (cid, message_id, ids)
        for cid, early, last in cut:
            question, answer = history(db, cid)
            assert question.role is MessageRole.USER
            assert answer.role is MessageRole.ASSISTANT and answer.finish_reason.value == "cut_off", (len(answer.text), answer.completion_tokens, len(last), len(early))
            # the stored text and the screen are prefixes of one answer; the store is at most
            # one checkpoint (0.2 s) behind the screen
            assert answer.text.startswith(early), (answer.text, early)
            assert answer.text.startswith(last) or last.startswith(answer.text)
    print(f"\nkill -9: {ROUNDS} rounds, {len(acknowledged)} acknowledged answers, 0 lost; "
          f"{len(cut)} answers being read kept as cut off")
