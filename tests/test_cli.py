"""The `pulsemind` command line: users, database, the app's entry point."""

from __future__ import annotations

import subprocess
import sys

from storage import Database, authenticate

REPO_ARGS = {"capture_output": True, "text": True, "timeout": 120}


def pulsemind(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], input=stdin, **REPO_ARGS)


def test_user_add_and_login(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    r = pulsemind("user", "add", "Dr.House", "--role", "clinician", "--database-url", url,
                  stdin="a long enough password\n")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "created clinician 'dr.house'" in r.stdout
    db = Database(url)
    assert authenticate(db, "dr.house", "a long enough password").role.value == "clinician"
    assert authenticate(db, "dr.house", "wrong password!!") is None

    again = pulsemind("user", "add", "dr.house", "--role", "admin", "--database-url", url,
                      stdin="another long password\n")  # fmt: skip
    assert again.returncode != 0 and "taken" in again.stderr.lower()
    short = pulsemind(
        "user", "add", "xavier", "--role", "admin", "--database-url", url, stdin="short\n"
    )
    assert short.returncode != 0 and "12" in short.stderr
    bad_role = pulsemind("user", "add", "y", "--role", "root", "--database-url", url)
    assert bad_role.returncode == 2


def test_db_upgrade_reports_revision(tmp_path):
    r = pulsemind("db", "upgrade", "--database-url", f"sqlite:///{tmp_path / 'u.db'}")
    assert r.returncode == 0 and "revision" in r.stdout


def test_app_entry_point_help_and_config_errors():
    r = subprocess.run([sys.executable, "app.py", "--help"], **REPO_ARGS)
    assert r.returncode == 0 and "--model-url" in r.stdout and "--database-url" in r.stdout
    bad = subprocess.run([sys.executable, "app.py", "--model-url", "http://127.0.0.1:1/v1"],
                         **REPO_ARGS)  # fmt: skip
    assert bad.returncode != 0 and "--model" in bad.stderr
