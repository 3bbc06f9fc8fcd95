"""DeepSpeed ZeRO-3 smoke run: `pulsemind sft --deepspeed training/zero3.json` in two processes
on CPU (gloo), launched by torchrun as a multi-GPU run would be, in a subprocess (DeepSpeed
leaves global state behind). The first run on a machine compiles DeepSpeed's small shared-memory
op (~1 minute); later runs take ~30 s.

Checks: both ranks train, the main one alone writes one complete adapter whose LoRA weights are
the gathered full tensors (ZeRO-3 partitions them during training) and not all zero.

Run: OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python -m pytest tests/test_zero3.py -q
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_sft import dialogue_records, sft_row, write_export
from training.common import ADAPTER_DIR, TRAINING_INFO_FILE

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
#: Generous: the first run compiles an op; two ranks share two cores.
TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_zero3_two_processes_on_cpu(demo_model_dir, tmp_path):
    from safetensors.torch import load_file

    row = sft_row(dialogue_records())
    data = write_export(tmp_path / "export", [row, row])
    out = tmp_path / "run"
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}  # fmt: skip
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
               "-m", "app.cli", "sft", "--data", str(data), "--base", str(demo_model_dir),
               "--out", str(out), "--steps", "2", "--lora-rank", "8", "--lr", "5e-3",
               "--save-steps", "1", "--no-progress",
               "--deepspeed", str(REPO / "training" / "zero3.json")]  # fmt: skip
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=TIMEOUT_S)  # fmt: skip
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert log.count(f"adapter: {out / ADAPTER_DIR}") == 2  # both ranks finished the run
    adapter = out / ADAPTER_DIR
    info = json.loads((adapter / TRAINING_INFO_FILE).read_text())
    assert info["steps"] == 2 and info["processes"] == 2
    assert info["config"]["deepspeed"].endswith("zero3.json")
    assert (out / "checkpoint-2").is_dir() and not (out / f"{ADAPTER_DIR}.partial").exists()
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    shapes = {name: tuple(t.shape) for name, t in weights.items()}
    assert shapes and all(
        len(s) == 2 and min(s) > 0 for s in shapes.values()
    )  # gathered, not shards
    assert any(name.endswith("lora_A.weight") and s == (8, 128) for name, s in shapes.items())
    assert all(t.abs().sum() > 0 for name, t in weights.items() if "lora_A" in name)
