"""The app's configuration: built once from flags and environment, then passed down."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields

from app.login_throttle import (
    DEFAULT_LOGIN_ACCOUNT_FAILURES,
    DEFAULT_LOGIN_ADDRESS_FAILURES,
    DEFAULT_LOGIN_LOCKOUT_S,
    DEFAULT_LOGIN_WINDOW_S,
)
from app.sessions import DEFAULT_SESSION_IDLE_S, DEFAULT_TRUSTED_PROXIES
from storage.db import default_data_dir, resolve_database_url

#: Gradio refuses bigger uploads before they reach our code (intake has its own, per-type limits).
DEFAULT_MAX_UPLOAD_MB = 50
#: Events of one kind that run at once. Gradio's default is 1 (everyone queues behind one
#: clinician's answer); answers are I/O-bound waits on the model server, so allow many.
DEFAULT_CONCURRENCY = 64


#: Tokens per streamed chunk from vLLM (its `stream_interval`; the first token comes at once).
#: The chat repaints at most 20 times a second, so single-token chunks only cost CPU (vLLM's
#: and ours). Measured on 2 cores, 16 concurrent 128-token answers: through-app throughput
#: went from 0.66x to 0.86x of per-token direct streaming; direct itself gained ~12%.
DEFAULT_STREAM_INTERVAL = 4


#: How often a streaming answer's text so far is stored (as `cut_off`, then updated): what a
#: crash of the app can lose of an answer the clinician was reading. One small UPDATE per
#: answer every 2 s is nothing next to the model's work.
CHECKPOINT_INTERVAL_S = 2.0


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


@dataclass
class AppConfig:
    """Everything `pulsemind app` needs. Each field: flag, env var, default."""

    host: str = field(default="127.0.0.1", metadata={"help": "bind address (PULSEMIND_HOST)"})
    port: int = field(default=7860, metadata={"help": "port (PULSEMIND_PORT)"})
    database_url: str | None = field(
        default=None,
        metadata={
            "help": "SQLAlchemy URL (PULSEMIND_DATABASE_URL); default SQLite in the data dir"
        },
    )
    model_url: str | None = field(
        default=None,
        metadata={"help": "OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 "
                  "(PULSEMIND_MODEL_URL); none: the embedded demo model"},
    )  # fmt: skip
    model: str | None = field(
        default=None, metadata={"help": "served model name at --model-url (PULSEMIND_MODEL)"}
    )
    variant_name: str = field(
        default="default", metadata={"help": "name of the --model-url variant in the UI"}
    )
    demo_model_dir: str | None = field(
        default=None, metadata={"help": "demo model directory (built if missing)"}
    )
    data_dir: str = field(
        default_factory=lambda: str(default_data_dir()),
        metadata={"help": "where the SQLite file lives (PULSEMIND_DATA_DIR)"},
    )
    upload_dir: str | None = field(
        default=None,
        metadata={"help": "Gradio's upload folder (PULSEMIND_UPLOAD_DIR); default a private "
                  "folder in the system temp dir; never the database's folder"},
    )  # fmt: skip
    max_upload_mb: int = field(default=DEFAULT_MAX_UPLOAD_MB, metadata={"help": "upload size cap"})
    concurrency: int = field(
        default=DEFAULT_CONCURRENCY, metadata={"help": "answers streamed at once"}
    )
    answer_timeout_s: float = field(
        default=120.0, metadata={"help": "longest wait for the model server to say anything"}
    )
    checkpoint_s: float = field(
        default=CHECKPOINT_INTERVAL_S,
        metadata={"help": "store a streaming answer's text every N seconds, so a crash of the "
                  "app keeps what the clinician read (marked cut off)"},
    )  # fmt: skip
    stream_interval: int = field(
        default=DEFAULT_STREAM_INTERVAL,
        metadata={"help": "vLLM sends the answer every N tokens (the first at once); 0: every "
                  "token (also for servers other than vLLM)"},
    )  # fmt: skip
    # Login throttle and sessions (app.login_throttle, app.sessions: why these defaults).
    login_account_failures: int = field(
        default=DEFAULT_LOGIN_ACCOUNT_FAILURES,
        metadata={"help": "failed logins for one account (within --login-window-s) that lock it"},
    )
    login_address_failures: int = field(
        default=DEFAULT_LOGIN_ADDRESS_FAILURES,
        metadata={"help": "failed logins from one client address that lock that address"},
    )
    login_window_s: float = field(
        default=DEFAULT_LOGIN_WINDOW_S,
        metadata={"help": "failed logins older than this (seconds) no longer count"},
    )
    login_lockout_s: float = field(
        default=DEFAULT_LOGIN_LOCKOUT_S,
        metadata={"help": "how long (seconds) a locked account or address may not log in"},
    )
    session_idle_s: float = field(
        default=DEFAULT_SESSION_IDLE_S,
        metadata={"help": "a session unused this long (seconds) is logged out"},
    )
    trusted_proxies: str = field(
        default=DEFAULT_TRUSTED_PROXIES,
        metadata={"help": "reverse proxies whose X-Forwarded-For/-Proto are believed: addresses "
                  "or networks, comma-separated; '' none (PULSEMIND_TRUSTED_PROXIES)"},
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.model_url and not self.model:
            raise ValueError("--model-url needs --model (the served model name to ask for).")
        if self.model and not self.model_url:
            raise ValueError("--model needs --model-url (where that model is served).")
        if not (0 <= self.port < 65536):  # 0: any free port (tests, benchmarks)
            raise ValueError(f"--port {self.port} is not a TCP port.")
        for name in ("login_account_failures", "login_address_failures"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1.")
        for name in ("login_window_s", "login_lockout_s", "session_idle_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')} must be more than 0 seconds.")

    @property
    def resolved_database_url(self) -> str:
        """Flag > PULSEMIND_DATABASE_URL > SQLite in the data dir (`storage.resolve_database_url`)."""
        return resolve_database_url(self.database_url, self.data_dir)

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        for f in fields(cls):
            flag = "--" + f.name.replace("_", "-")
            typ = f.type if f.type in ("int", "float") else "str"
            parser.add_argument(
                flag, type={"int": int, "float": float}.get(typ, str), default=None,
                help=f.metadata.get("help"),
            )  # fmt: skip

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AppConfig:
        """Flags win over PULSEMIND_* environment variables, which win over defaults."""
        values = {}
        for f in fields(cls):
            v = getattr(args, f.name, None)
            if v is None:
                v = _env("PULSEMIND_" + f.name.upper())
                if v is not None and f.type in ("int", "float"):
                    v = {"int": int, "float": float}[f.type](v)
            if v is not None:
                values[f.name] = v
        return cls(**values)
