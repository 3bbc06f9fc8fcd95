"""The app's configuration: built once from flags and environment, then passed down."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, fields
from pathlib import Path

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
        default_factory=lambda: _env(
            "PULSEMIND_DATA_DIR", str(Path.home() / ".local" / "share" / "pulsemind")
        ),
        metadata={"help": "where the SQLite file lives (PULSEMIND_DATA_DIR)"},
    )
    max_upload_mb: int = field(default=DEFAULT_MAX_UPLOAD_MB, metadata={"help": "upload size cap"})
    concurrency: int = field(
        default=DEFAULT_CONCURRENCY, metadata={"help": "answers streamed at once"}
    )
    answer_timeout_s: float = field(
        default=120.0, metadata={"help": "longest wait for the model server to say anything"}
    )
    stream_interval: int = field(
        default=DEFAULT_STREAM_INTERVAL,
        metadata={"help": "vLLM sends the answer every N tokens (the first at once); 0: every "
                  "token (also for servers other than vLLM)"},
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.model_url and not self.model:
            raise ValueError("--model-url needs --model (the served model name to ask for).")
        if self.model and not self.model_url:
            raise ValueError("--model needs --model-url (where that model is served).")
        if not (0 <= self.port < 65536):  # 0: any free port (tests, benchmarks)
            raise ValueError(f"--port {self.port} is not a TCP port.")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        Path(self.data_dir).mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{Path(self.data_dir) / 'pulsemind.db'}"

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
