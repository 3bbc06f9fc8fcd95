"""A throwaway PostgreSQL server for tests and benchmarks: initdb + pg_ctl in a temporary folder.

    with postgres_server() as url:           # postgresql+psycopg://pulsemind@/postgres?host=...
        db = Database(fresh_database(url, "t1"))

The server listens on a unix socket only (no TCP port to collide on), runs with fsync off
and is stopped and deleted on exit. PostgreSQL refuses to run as root: when the tests run
as root, the server runs as the `postgres` system user if there is one, else as a
`pulsemind-pg` system user created with `useradd`. Its folder is made with `mkdtemp` under
the system temp dir (pytest's tmp_path is private to root, so that user could not enter it).
`PostgresUnavailable` means no server can be had here (no binaries, no usable user): tests
skip with its message. Any other failure to start is an error, with the server log in it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

#: Where the PostgreSQL binaries are looked for, after $PATH.
BIN_DIRS = (
    "/usr/local/bin",
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
)
SERVER_USER = "pulsemind-pg"
SUPERUSER = "pulsemind"
#: initdb plus start take about a second; allow for a loaded 2-core machine.
START_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server can be started on this machine (the reason says why)."""


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for folder in BIN_DIRS:
        candidate = Path(folder) / name
        if candidate.exists():
            return str(candidate)
    raise PostgresUnavailable(f"PostgreSQL's {name} is not installed (looked in $PATH, {BIN_DIRS})")


def _server_user() -> str | None:
    """The user to run the server as, or None to run it as ourselves (not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", SERVER_USER):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    useradd = shutil.which("useradd")
    if useradd is None:
        raise PostgresUnavailable("running as root and no useradd to make a non-root user")
    made = subprocess.run(
        [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVER_USER],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        raise PostgresUnavailable(f"cannot create user {SERVER_USER}: {made.stderr.strip()}")
    return SERVER_USER


def _run(cmd: list[str], user: str | None) -> subprocess.CompletedProcess[str]:
    if user is not None:
        cmd = ["runuser", "-u", user, "--", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=START_TIMEOUT_S)


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a fresh server; yield a SQLAlchemy URL for its `postgres` database."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    user = _server_user()
    folder = Path(tempfile.mkdtemp(prefix="pulsemind-pg-"))
    data, log = folder / "data", folder / "server.log"
    started = False
    try:
        if user is not None:
            shutil.chown(folder, user=user)
        done = _run(
            [
                initdb,
                "-D",
                str(data),
                "-A",
                "trust",
                "-U",
                SUPERUSER,
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            user,
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip()[-2000:]}")
        options = f"-k {folder} -c listen_addresses='' -F -c max_connections=40"
        done = _run(
            [
                pg_ctl,
                "-D",
                str(data),
                "-l",
                str(log),
                "-w",
                "-t",
                str(START_TIMEOUT_S),
                "-o",
                options,
                "start",
            ],
            user,
        )
        if done.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()}\n{tail}")
        started = True
        yield f"postgresql+psycopg://{SUPERUSER}@/postgres?host={folder}"
    finally:
        if started:
            _run([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], user)
        shutil.rmtree(folder)


def fresh_database(server_url: str, name: str) -> str:
    """Create the (empty) database `name` on the server and return its URL."""
    host = server_url.split("host=", 1)[1]
    with psycopg.connect(host=host, user=SUPERUSER, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return server_url.replace("/postgres?", f"/{name}?")
