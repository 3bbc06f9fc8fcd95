"""Shared fixtures: the tiny demo model and the real vLLM CPU server on a loopback port.

The server fixture is session-scoped (engine start is 25-50 s on 2 cores) and uses the vLLM
environment that `scripts/test` builds (PULSEMIND_VLLM_PYTHON); run the suite through
`scripts/test` so that exists.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def db(tmp_path: Path):
    """A fresh SQLite database file at the newest schema."""
    from storage import Database

    database = Database.sqlite(tmp_path / "pulsemind.db")
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory) -> Path:
    """A tiny Qwen2.5-VL built from code (about a second)."""
    from model.demo_model import build_demo_model

    return build_demo_model(tmp_path_factory.mktemp("demo-model") / "model", seed=0)


@pytest.fixture(scope="session")
def adapter_dir(demo_model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter (rank 8, non-zero) on the demo model."""
    from model.demo_model import make_lora_adapter

    return make_lora_adapter(demo_model_dir, tmp_path_factory.mktemp("adapter") / "a1", rank=8)


def vllm_python() -> str:
    """The vLLM environment's interpreter, building it if the suite was not started by scripts/test."""
    py = os.environ.get("PULSEMIND_VLLM_PYTHON")
    if not py:
        env = subprocess.run(
            [str(REPO / "scripts" / "bootstrap"), "vllm"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        py = f"{env}/bin/python"
        os.environ["PULSEMIND_VLLM_PYTHON"] = py
    return py


def vllm_config(model_dir: Path, **kw):
    from model.serve import ServeConfig

    return ServeConfig(
        model=str(model_dir),
        served_model_name="tiny",
        python=vllm_python(),
        dtype="float32",
        max_model_len=4096,
        **kw,
    )


@pytest.fixture(scope="session")
def vllm_server(demo_model_dir, adapter_dir, tmp_path_factory):
    """The real vLLM CPU server with the demo model and adapter `a1` loaded at start."""
    from model.serve import VLLMServer

    log = tmp_path_factory.mktemp("vllm-log") / "vllm.log"
    cfg = vllm_config(demo_model_dir, lora_modules={"a1": str(adapter_dir)}, log_path=str(log))
    with VLLMServer(cfg) as srv:
        yield srv
