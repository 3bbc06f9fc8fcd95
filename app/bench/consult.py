"""Consult benchmark: time to first token and tokens/s through the app vs straight to vLLM.

    pulsemind bench consult                                   # all built here; a few minutes
    pulsemind bench consult --model-url URL --model NAME      # against a running server
    pulsemind bench consult --concurrency 1 16 --repeats 3 --max-tokens 128 --json out.json

Why: the app sits between the clinician and the model server (Gradio's queue and SSE stream,
the database writes of each turn). It should add next to nothing; the goal is through-app
throughput at 16 concurrent consultations >= 0.9x direct.

How: by default it builds the tiny demo model in a temp dir, starts vLLM on a free loopback
port, makes a temp SQLite database with one clinician per concurrent consultation, and runs
the app as its own process (`pulsemind app`, as deployed; in this process it would share the
GIL with the clients). For each concurrency level and repeat it runs one batch of N
simultaneous requests on each path:

- direct: N threads stream one chat completion each with `OpenAIEngine` (the client the app
  itself uses), with exactly the messages, sampling and stream interval the app sent (the
  messages taken from the warm-up turn in the database), so both paths ask for the same thing;
- app (`/consult`, the goal's path): N `gradio_client` Clients, each logged in as its own
  clinician, each ask one new consultation turn with one call, as programs use the app;
- ui (`/send` + `/answer`, skip with --no-ui-path): the browser's two events for the same
  turn, driven by gradio_client (which waits up to 50 ms between them, a browser does not).
  Like the page, `/send` names the variant, so the answer starts as the turn is stored and
  `/answer` follows it (app.prestart).

On the app paths TTFT runs from the first call to the first output with answer text, and the
end is the arrival of `process_completed`; arrival times are taken in the client's SSE reader
thread, because gradio_client hands messages on to the job by polling every 50 ms, which
would otherwise be counted against the app.

Sampling is greedy with a fixed seed (temperature 0, the variant's `sampling_defaults`), so both
paths generate the same text; token counts are the ones recorded (vLLM's usage on the direct
path, `messages.completion_tokens` in the database on the app path). Per request,
tokens/s = (completion tokens - 1) / (total time - TTFT): the rate after the first token.
Per batch, throughput = all completion tokens / batch wall time. Each number is the median over
repeats (after one unmeasured warm-up batch per path); ratios are app path / direct.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from loguru import logger
from tqdm import tqdm

from app.bench.stats import APP_PATHS, NoRates, Sample, batch_stats, format_report, summarize
from app.config import DEFAULT_STREAM_INTERVAL
from model.chat import SamplingParams

#: The answer length the app asks for by default. Each turn through the app carries a fixed
#: cost (Gradio's queue and SSE, gradio_client; ~70-150 ms at 16 concurrent on 2 cores,
#: measured with an empty handler), so a short answer makes any app look slow: judge it on
#: the answers it gives.
APP_MAX_TOKENS = SamplingParams().max_tokens

#: Bounds every wait so a stuck server fails the run instead of hanging it.
REQUEST_TIMEOUT_S = 300.0
#: uvicorn starts in about a second; Gradio's first config build can take a few more.
APP_START_TIMEOUT_S = 60.0
#: Threads of a batch wait for each other this long before starting together.
BARRIER_TIMEOUT_S = 120.0
#: Pause before each batch. vLLM's CPU server answers a request that arrives right after
#: another one finished up to ~0.6 s late (measured: 15-20 ms TTFT with a 0.1 s gap, 50-750 ms
#: with none); without the pause whichever path runs second would pay for the first.
SETTLE_S = 0.5
#: A short clinical question, text only (the model is greedy, so its length decides nothing).
PROMPT = (
    "58-year-old man with crushing central chest pain for two hours, sweating, BP 150/90, "
    "ECG pending. What do you suspect and what should I do first?"
)
VARIANT = "bench"
#: Finish reasons of an answer that ran to its end (others: cut off, error, cancelled).
FINISHED = ("stop", "length")
SERVED_NAME = "tiny"


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to (a failed answer, a broken setup)."""


@dataclass
class BenchConsultConfig:
    """What `pulsemind bench consult` runs."""

    model_url: str | None = None
    """OpenAI-compatible server (…/v1); none: build the demo model and start vLLM here."""
    model: str | None = None
    """Served model name at `model_url`."""
    vllm_python: str | None = None
    """vLLM environment's interpreter when starting a server (default $PULSEMIND_VLLM_PYTHON)."""
    concurrency: tuple[int, ...] = (1, 16)
    """Concurrent consultations per batch; the largest is the one the goal is about."""
    repeats: int = 3
    """Measured batches per path and level; medians are reported."""
    max_tokens: int = APP_MAX_TOKENS
    """Answer length (greedy: the tiny model does not stop early); default: the app's own."""
    seed: int = 0
    stream_interval: int = DEFAULT_STREAM_INTERVAL
    """vLLM's tokens per streamed chunk, on both paths (the app's default)."""
    image: bool = False
    """Attach one small PNG to each turn (the app path then includes upload and intake)."""
    goal: float = 0.9
    """Through-app throughput at the largest concurrency should be at least this x direct."""
    ui_path: bool = True
    """Also measure the browser's two events (/send, /answer) driven by gradio_client."""

    def __post_init__(self) -> None:
        if bool(self.model_url) != bool(self.model):
            raise ValueError("--model-url and --model go together (the server and its model name).")
        self.concurrency = tuple(sorted(set(self.concurrency)))
        if not self.concurrency or self.concurrency[0] < 1:
            raise ValueError("--concurrency needs whole numbers >= 1.")
        if self.repeats < 1 or self.max_tokens < 2:
            raise ValueError("--repeats must be >= 1 and --max-tokens >= 2.")


# --- the app path -----------------------------------------------------------------------------


class _StampedDeque(deque):
    """gradio_client's per-event message queue, noting when each SSE message arrived."""

    def __init__(self, items=(), arrivals: list | None = None):
        super().__init__(items)
        self.arrivals = arrivals if arrivals is not None else []

    def append(self, msg) -> None:
        if isinstance(msg, dict):
            self.arrivals.append((time.perf_counter(), msg.get("msg")))
        super().append(msg)


class _StampedEvents(dict):
    """Replaces `Client.pending_messages_per_event` so every event's queue is stamped."""

    def __init__(self) -> None:
        super().__init__()
        self.arrivals: list[tuple[float, str | None]] = []

    def _wrap(self, value):
        if isinstance(value, deque) and not isinstance(value, _StampedDeque):
            return _StampedDeque(value, self.arrivals)
        return value

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, self._wrap(value))

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]


def _answer_text(output) -> str:
    """The answer text in a streamed output: /consult's dict, or /answer's (chat, status) whose
    chat ends with an assistant message."""
    from app.consult_tab import chat_text

    if isinstance(output, dict):
        return output.get("text") or ""
    chat = output[0] if isinstance(output, list | tuple) and output else None
    if not isinstance(chat, list) or not chat or not isinstance(chat[-1], dict):
        return ""
    return chat_text(chat[-1]) if chat[-1].get("role") == "assistant" else ""


def _consultation_id(dropdown) -> int:
    """The consultation id /send put in the dropdown (an update dict or a plain value)."""
    value = dropdown.get("value") if isinstance(dropdown, dict) else dropdown
    if isinstance(value, int | str) and str(value).isdigit():
        return int(value)
    raise BenchError("/send never said which consultation it created")


@dataclass
class AppPath:
    """Logged-in gradio_client Clients, one per concurrent consultation."""

    url: str
    db: object
    users: list[tuple[str, str]]
    message: dict
    clients: list = field(default_factory=list)

    def connect(self) -> None:
        from gradio_client import Client

        for name, password in self.users:
            # ssl_verify=False: the app is plain HTTP on loopback, so nothing is verified either
            # way, but gradio_client opens two httpx clients per request and each would load the
            # CA bundle (~0.1 s of CPU), a client cost a browser does not have.
            client = Client(self.url, auth=(name, password), verbose=False, ssl_verify=False,
                            download_files=False, analytics_enabled=False)  # fmt: skip
            if not isinstance(getattr(client, "pending_messages_per_event", None), dict):
                raise BenchError("this gradio_client keeps no per-event message queue to time")
            client.pending_messages_per_event = _StampedEvents()
            self.clients.append(client)

    def close(self) -> None:
        for c in self.clients:
            c.close()

    def request(self, i: int, path: str = "app") -> tuple[Sample, int]:
        """One new consultation turn by client i on `path` ("app": /consult, "ui": /send then
        /answer); returns its timings and the consultation id."""
        from gradio_client.exceptions import AppError

        from storage import MessageRole, history

        client = self.clients[i]
        events: _StampedEvents = client.pending_messages_per_event
        events.arrivals.clear()
        start = time.perf_counter()
        try:
            if path == "app":  # one call per turn, as programs use the app
                job = client.submit(self.message, None, VARIANT, api_name="/consult")
                cid = job.result(timeout=REQUEST_TIMEOUT_S)["consultation_id"]
            else:  # what the browser does on Enter: /send stores the turn, /answer streams
                dropdown, *_ = client.predict(self.message, None, VARIANT, api_name="/send")
                cid = _consultation_id(dropdown)
                events.arrivals.clear()
                job = client.submit(cid, VARIANT, api_name="/answer")
                job.result(timeout=REQUEST_TIMEOUT_S)
        except TimeoutError as exc:
            raise BenchError(f"{path}: no result in {REQUEST_TIMEOUT_S:.0f}s") from exc
        except AppError as exc:
            raise BenchError(f"{path}: the app refused the turn: {exc}") from exc
        outputs = job.outputs()
        generating = [t for t, kind in events.arrivals if kind == "process_generating"]
        done = [t for t, kind in events.arrivals if kind == "process_completed"]
        if len(generating) != len(outputs) or not done:
            raise BenchError(f"cannot line up {len(outputs)} outputs with {len(generating)} "
                             "stamped SSE messages (has gradio_client changed?)")  # fmt: skip
        first = next((t for t, o in zip(generating, outputs, strict=True) if _answer_text(o)), None)
        answer = history(self.db, cid)[-1]
        finished = answer.finish_reason is not None and answer.finish_reason.value in FINISHED
        if answer.role is not MessageRole.ASSISTANT or not finished:
            raise BenchError(f"consultation {cid}: the answer did not finish ({answer.error})")
        if first is None or not answer.completion_tokens:
            raise BenchError(f"consultation {cid}: no streamed answer text or no token count")
        return Sample(start, first, done[-1], answer.completion_tokens), cid


@contextmanager
def serve_in_subprocess(config, database_url: str, log_path: Path) -> Iterator[str]:
    """`pulsemind app` in a child process on a free loopback port; yields its URL."""
    import httpx

    from model.serve import free_port

    port = free_port()
    argv = [sys.executable, "-m", "app.cli", "app", "--host", "127.0.0.1", "--port", str(port),
            "--database-url", database_url, "--model-url", config.model_url,
            "--model", config.model, "--variant-name", config.variant_name,
            "--concurrency", str(config.concurrency), "--data-dir", config.data_dir,
            "--stream-interval", str(config.stream_interval)]  # fmt: skip
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + APP_START_TIMEOUT_S
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise BenchError(f"the app did not start (exit {proc.returncode}):\n{tail}")
            try:
                if httpx.get(f"{url}/", timeout=2).status_code == 200:  # the login page
                    break
            except httpx.HTTPError:
                pass  # not listening yet
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


# --- the direct path and batches --------------------------------------------------------------


def direct_request(engine, messages, sampling) -> Sample:
    """One streamed completion with the app's own model client, timed at our side."""
    from model.chat import Completion, Delta
    from model.errors import ModelError

    start = time.perf_counter()
    first, done = None, None
    try:
        for ev in engine.stream(messages, sampling):
            if isinstance(ev, Delta) and first is None and ev.text:
                first = time.perf_counter()
            elif isinstance(ev, Completion):
                done = ev
    except ModelError as exc:
        raise BenchError(f"direct request failed: {exc.detail}") from exc
    end = time.perf_counter()
    if first is None or done is None or not done.completion_tokens:
        raise BenchError("the direct stream produced no text or no token count")
    return Sample(start, first, end, done.completion_tokens)


def run_batch(fn: Callable[[int], Sample], n: int) -> list[Sample]:
    """n requests started together (a barrier), one thread each; the first failure is raised."""
    barrier = threading.Barrier(n)
    results: list[Sample | None] = [None] * n
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait(BARRIER_TIMEOUT_S)
            results[i] = fn(i)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + BARRIER_TIMEOUT_S + REQUEST_TIMEOUT_S
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    if errors:
        raise next(
            (e for e in errors if not isinstance(e, threading.BrokenBarrierError)), errors[0]
        )
    if any(t.is_alive() for t in threads) or any(r is None for r in results):
        raise BenchError(f"a batch of {n} did not finish within {REQUEST_TIMEOUT_S:.0f}s")
    return results  # type: ignore[return-value]


# --- putting it together ----------------------------------------------------------------------


def start_model(cfg: BenchConsultConfig, stack: ExitStack, tmp: Path) -> tuple[str, str]:
    if cfg.model_url:
        return cfg.model_url, cfg.model  # type: ignore[return-value]
    from model.demo_model import build_demo_model
    from model.serve import ServeConfig, VLLMServer

    python = cfg.vllm_python or os.environ.get("PULSEMIND_VLLM_PYTHON") or _bootstrap_vllm()
    model_dir = build_demo_model(tmp / "model", seed=0)
    tqdm.write("starting vLLM with the demo model (25-50 s on 2 cores)...", file=sys.stderr)
    server = VLLMServer(ServeConfig(
        model=str(model_dir), served_model_name=SERVED_NAME, python=python, dtype="float32",
        max_model_len=4096, log_path=str(tmp / "vllm.log"),
    ))  # fmt: skip
    stack.callback(server.stop)  # also when it never became healthy: it may still be running
    try:
        server.start()
    except (RuntimeError, TimeoutError) as exc:
        raise BenchError(f"vLLM did not start: {exc}") from exc
    return server.base_url, SERVED_NAME


def run_reported(prog: str, run: Callable[[], dict], report: Callable[[dict], str],
                 json_path: Path | None, quiet: tuple[str, ...]) -> dict | None:
    """Run a benchmark with the loggers of `quiet` off (an INFO line per request would bury
    the progress bar), print its report and write its numbers to `json_path`; None (after
    saying why on stderr) when it could not measure."""
    for name in quiet:
        logger.disable(name)
    try:
        result = run()
    except BenchError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None
    finally:
        for name in quiet:
            logger.enable(name)
    print(report(result))
    if json_path:
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        print(f"numbers written to {json_path}")
    return result


def _bootstrap_vllm() -> str:
    """The vLLM environment the tests use (`scripts/bootstrap vllm`: instant once it exists)."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "bootstrap"
    if not script.is_file():
        raise BenchError("no vLLM environment: pass --vllm-python or set PULSEMIND_VLLM_PYTHON, "
                         "or use --model-url")  # fmt: skip
    tqdm.write("finding the vLLM environment (scripts/bootstrap vllm)...", file=sys.stderr)
    try:
        out = subprocess.run([str(script), "vllm"], check=True, stdout=subprocess.PIPE, text=True)
    except subprocess.CalledProcessError as exc:
        raise BenchError(f"scripts/bootstrap vllm failed with code {exc.returncode}") from exc
    return f"{out.stdout.strip()}/bin/python"


def run_bench(cfg: BenchConsultConfig, *, progress: bool = True) -> dict:
    """Run the whole benchmark (servers started and stopped here); return `summarize`'s dict."""
    from PIL import Image

    from app.config import DEFAULT_CONCURRENCY, AppConfig
    from model.chat import SamplingParams
    from model.openai_engine import OpenAIEngine, OpenAIEngineConfig
    from model.prompt import to_chat_messages
    from storage import Database, create_user, ensure_model_variant, history

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    sampling = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=cfg.max_tokens, seed=cfg.seed)
    n_max = cfg.concurrency[-1]
    load_before = os.getloadavg()[0]
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pulsemind-bench-")))
        url, model = start_model(cfg, stack, tmp)
        db = Database.sqlite(tmp / "bench.db")
        stack.callback(db.dispose)
        db.upgrade()
        users = [(f"bench-clinician-{i:02d}", secrets.token_urlsafe(18)) for i in range(n_max)]
        for name, password in users:
            create_user(db, name, password, "clinician")
        app_cfg = AppConfig(model_url=url, model=model, variant_name=VARIANT, data_dir=str(tmp),
                            stream_interval=cfg.stream_interval,
                            concurrency=max(DEFAULT_CONCURRENCY, n_max), port=0)  # fmt: skip
        # The app runs as its own process, as deployed: in this one it would share the GIL with
        # the 16 gradio_client "browsers" and the direct path's threads.
        app_url = stack.enter_context(
            serve_in_subprocess(
                app_cfg, db.url.render_as_string(hide_password=False), tmp / "app.log"
            )
        )
        # after create_app, which registers the variant without sampling settings
        ensure_model_variant(db, VARIANT, endpoint=url, served_model_name=model,
                             sampling_defaults=sampling.to_dict())  # fmt: skip
        message = {"text": PROMPT, "files": []}
        if cfg.image:
            from gradio_client import handle_file

            message["files"] = [handle_file(str(_bench_image(tmp / "scan.png")))]
        app = AppPath(app_url, db, users, message)
        stack.callback(app.close)
        app.connect()
        # the same request as the app's, chunking included
        engine = OpenAIEngine(OpenAIEngineConfig(base_url=url, model=model,
                                                 stream_interval=cfg.stream_interval))  # fmt: skip

        # Warm-up: one app turn gives the exact prompt the app sent; then a batch per path.
        _, cid = app.request(0)
        messages = to_chat_messages(history(db, cid, with_png=True)[:-1])
        for img in (im for m in messages for im in m.images):
            if isinstance(img, Image.Image):
                img.load()  # decode once here: the direct threads share these lazy PIL images
        paths = {"direct": lambda i: direct_request(engine, messages, sampling)}
        for name in APP_PATHS if cfg.ui_path else ["app"]:
            paths[name] = lambda i, name=name: app.request(i, name)[0]
        plan = [(p, n_max, -1) for p in paths] + [
            (p, c, r) for c in cfg.concurrency for r in range(cfg.repeats) for p in paths
        ]
        batches: dict[tuple[str, int], list[dict]] = {
            (p, c): [] for p in paths for c in cfg.concurrency
        }
        bar = tqdm(plan, desc="batches", unit="batch", file=sys.stderr, disable=not progress)
        for path, c, rep in bar:
            bar.set_postfix_str(f"{path} x{c} " + ("warm-up" if rep < 0 else f"#{rep + 1}"))
            time.sleep(SETTLE_S)
            stats = batch_stats(run_batch(paths[path], c))
            if rep >= 0:
                batches[(path, c)].append(stats)
        bar.close()
        result = summarize(cfg, batches)
    result["machine"] = {"cpus": os.cpu_count(), "load_1min": [load_before, os.getloadavg()[0]]}
    return result


def _bench_image(path: Path) -> Path:
    """A small seeded noise PNG: a scan-like attachment without any patient data."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(path)
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pulsemind bench consult", description=__doc__.split("\n")[0])
    p.add_argument("--model-url", help="OpenAI-compatible server (…/v1); default: start vLLM here")
    p.add_argument("--model", help="served model name at --model-url")
    p.add_argument("--vllm-python", help="vLLM env's python (default $PULSEMIND_VLLM_PYTHON)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16], metavar="N")
    p.add_argument("--repeats", type=int, default=3, help="measured batches per path and level")
    p.add_argument("--max-tokens", type=int, default=APP_MAX_TOKENS,
                   help="answer length (default: the app's, %(default)s)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image", action="store_true", help="attach one small PNG to every turn")
    p.add_argument("--stream-interval", type=int, default=DEFAULT_STREAM_INTERVAL, metavar="N",
                   help="vLLM's tokens per streamed chunk, both paths (0: every token)")  # fmt: skip
    p.add_argument("--goal", type=float, default=0.9, help="throughput ratio to reach")
    p.add_argument("--no-ui-path", action="store_true",
                   help="skip the browser's /send + /answer path (measure /consult only)")  # fmt: skip
    p.add_argument("--fail-below-goal", action="store_true", help="exit 1 if the goal is missed")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    p.add_argument("--verbose", action="store_true", help="keep the app's INFO logs")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (`pulsemind bench consult ...`); returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        cfg = BenchConsultConfig(
            model_url=args.model_url, model=args.model, vllm_python=args.vllm_python,
            concurrency=tuple(args.concurrency), repeats=args.repeats,
            max_tokens=args.max_tokens, seed=args.seed, image=args.image, goal=args.goal,
            ui_path=not args.no_ui_path, stream_interval=args.stream_interval,
        )  # fmt: skip
    except ValueError as exc:
        print(f"pulsemind bench consult: {exc}", file=sys.stderr)
        return 2
    quiet = () if args.verbose else ("app", "model", "storage")
    for name in quiet:  # one INFO line per answer would bury the progress bar
        logger.disable(name)
    try:
        result = run_bench(cfg)
    except (BenchError, NoRates) as exc:
        print(f"pulsemind bench consult: {exc}", file=sys.stderr)
        return 1
    finally:
        for name in quiet:
            logger.enable(name)
    print(format_report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"numbers written to {args.json}")
    return 1 if args.fail_below_goal and not result["goal"]["met"] else 0
