"""Start a vLLM server with the flags PulseMind needs, and wait until it is healthy.

    pulsemind serve MODEL_DIR [--port 8000] [--lora name=DIR ...]

The server runs in its own Python environment (vLLM pins its own torch): `python` below is
that environment's interpreter, from `--python`, `PULSEMIND_VLLM_PYTHON`, or this one.
Flags: many images per prompt (`--limit-mm-per-prompt`), LoRA enabled at rank 64, adapters
loadable at runtime (`VLLM_ALLOW_RUNTIME_LORA_UPDATING`). Tests use `VLLMServer` as a context
manager on a free loopback port, the way vLLM's own test harness does.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from loguru import logger

#: The paper's inference setting: up to 30 images in one prompt.
MAX_IMAGES_PER_PROMPT = 30
#: LoRA rank of the paper's adapters.
MAX_LORA_RANK = 64
#: LoRA slots: a CRPO run's policy plus the paper's C = 5 counterpart adapters. vLLM reserves
#: the slots' weights up front: at rank 64, about 1 GB each for a 32B model in bf16.
MAX_LORAS = 6


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@dataclass
class ServeConfig:
    """How to start one vLLM server."""

    model: str
    """Model directory (or name vLLM can resolve offline)."""
    served_model_name: str | None = None
    """Name clients ask for; defaults to the model path."""
    host: str = "127.0.0.1"
    """Loopback by default: the app is the server's only client."""
    port: int | None = None
    """None picks a free port."""
    python: str = field(
        default_factory=lambda: os.environ.get("PULSEMIND_VLLM_PYTHON", sys.executable)
    )
    """Interpreter of the environment vLLM is installed in."""
    lora_modules: dict[str, str] = field(default_factory=dict)
    """Adapters to load at start: name -> directory."""
    max_lora_rank: int = MAX_LORA_RANK
    max_loras: int = MAX_LORAS
    """Adapters resident at once: each adapter variant in Compare is one, and a CRPO run
    serves its policy beside C counterpart adapters."""
    max_images: int = MAX_IMAGES_PER_PROMPT
    dtype: str = "auto"
    """'float32' on CPU for the tiny test model; 'auto' (bf16) on a GPU."""
    max_model_len: int | None = None
    cpu_kv_cache_gib: int = 1
    """VLLM_CPU_KVCACHE_SPACE for the CPU build; ignored on GPU."""
    startup_timeout_s: float = 600.0
    """Engine start is 25-50 s on 2 CPU cores for the tiny model; minutes for a 32B on GPU."""
    extra_args: list[str] = field(default_factory=list)
    log_path: str | None = None
    """Server output goes here (a temp file by default)."""

    def __post_init__(self) -> None:
        for name, path in self.lora_modules.items():
            if not Path(path, "adapter_config.json").is_file():
                raise ValueError(f"LoRA adapter {name!r}: no adapter_config.json in {path}")

    def argv(self, port: int) -> list[str]:
        args = [
            self.python, "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model,
            "--host", self.host, "--port", str(port),
            "--dtype", self.dtype,
            "--limit-mm-per-prompt", json.dumps({"image": self.max_images}),
            "--enable-lora", "--max-lora-rank", str(self.max_lora_rank),
            "--max-loras", str(self.max_loras),
        ]  # fmt: skip
        if self.served_model_name:
            args += ["--served-model-name", self.served_model_name]
        if self.max_model_len:
            args += ["--max-model-len", str(self.max_model_len)]
        if self.lora_modules:
            args += ["--lora-modules", *(f"{k}={v}" for k, v in self.lora_modules.items())]
        return args + list(self.extra_args)


def _descendants(root: int) -> dict[int, str]:
    """pid -> command line of every process under `root` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(entry.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone, or not a process
        children.setdefault(ppid, []).append(int(entry.parent.name))
    out, todo = {}, [root]
    while todo:
        for pid in children.get(todo.pop(), []):
            try:
                out[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            todo.append(pid)
    return out


def colocate_engine_core(server_pid: int) -> set[int] | None:
    """Put vLLM's engine-core process on the cores vLLM bound its worker to; return them.

    vLLM's CPU build binds its worker to some cores and leaves the rest to the API server,
    but its engine-core process may run anywhere, and between steps both busy-wait on each
    other (shared-memory queues polled with sched_yield for 1 s after each message). On a
    small machine the engine core then spins on the cores meant for the API server and the
    app: measured on 2 cores, 16 requests arriving over 50-400 ms took 0.8-3.3 s (varying
    from run to run) instead of 0.55-0.85 s. Beside its worker the two spinners yield to
    each other. A no-op when the
    worker is not bound (GPU builds; VLLM_CPU_OMP_THREADS_BIND=nobind) or off Linux.
    """
    if not hasattr(os, "sched_setaffinity"):
        return None
    procs = _descendants(server_pid)
    try:
        workers = [
            os.sched_getaffinity(p) for p, cmd in procs.items() if cmd.startswith("VLLM::Worker")
        ]
    except OSError:
        return None
    cpus = set().union(*workers) if workers else set()
    if not cpus or cpus == os.sched_getaffinity(0):
        return None
    for pid, cmd in procs.items():
        if cmd.startswith("VLLM::EngineCore"):
            for task in Path(f"/proc/{pid}/task").iterdir():
                try:
                    os.sched_setaffinity(int(task.name), cpus)
                except OSError:
                    continue  # a thread that just ended
            logger.info(
                "vLLM engine core (pid {}) placed on its worker's cores {}", pid, sorted(cpus)
            )
    return cpus


class VLLMServer:
    """A running vLLM OpenAI-compatible server: `with VLLMServer(cfg) as srv: srv.base_url`."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.port = config.port or free_port(config.host)
        self.proc: subprocess.Popen | None = None
        self.log_path = config.log_path or tempfile.mkstemp(prefix="vllm-", suffix=".log")[1]

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> VLLMServer:
        env = dict(os.environ)
        env.update(
            VLLM_ALLOW_RUNTIME_LORA_UPDATING="True",
            VLLM_CPU_KVCACHE_SPACE=str(self.config.cpu_kv_cache_gib),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            VLLM_NO_USAGE_STATS="1",
            DO_NOT_TRACK="1",
        )
        # The app's venv must not leak into vLLM's (it pins other torch/transformers).
        env.pop("PYTHONPATH", None)
        argv = self.config.argv(self.port)
        logger.info("starting vLLM on {} (log {})", self.url, self.log_path)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self.proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        self.wait_healthy()
        colocate_engine_core(self.proc.pid)
        return self

    def wait_healthy(self, timeout_s: float | None = None) -> None:
        """Poll /health until 200; raise with the log's tail if the process dies or time runs out."""
        deadline = time.monotonic() + (timeout_s or self.config.startup_timeout_s)
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"vLLM exited with code {self.proc.returncode} while starting:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    logger.info("vLLM healthy on {}", self.url)
                    return
            except httpx.HTTPError:
                pass  # not listening yet: keep polling
            time.sleep(0.5)
        raise TimeoutError(
            f"vLLM not healthy after {self.config.startup_timeout_s}s:\n{self.log_tail()}"
        )

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-n:])
        except OSError as exc:
            return f"(no log: {exc})"

    def load_lora_adapter(self, name: str, path: str) -> None:
        """Load an adapter into the running server (`model.lora.ensure_adapter_loaded`)."""
        from model.lora import ensure_adapter_loaded

        ensure_adapter_loaded(self.base_url, name, path)

    def kill(self) -> None:
        """SIGKILL the whole server process group (tests: a server that dies mid-answer)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
