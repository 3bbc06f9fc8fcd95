"""Evaluation benchmark: throughput of a PulseMind Benchmark run at 16 cases in flight vs 1.

    pulsemind bench eval                                   # builds the demo model, starts vLLM
    pulsemind bench eval --model-url URL --model NAME      # against a running server
    pulsemind bench eval --cases 160 --turns 2 --max-tokens 32 --concurrency 1 16 --json out.json

Why: the official CMtMedQA / MedDiagnose evaluations ask one request at a time; a run of
1,000 multi-turn cases, each answered turn by turn by two models and judged twice, then takes
hours. `pulsemind eval run` keeps `--concurrency` cases in flight so the server batches them.
Goal: a run at concurrency 16 finishes cases >= 8x faster than at 1, against the same server.

How: by default it builds the tiny demo model in a temp dir and starts vLLM on a free loopback
port (as `pulsemind bench consult`); the same server is the model, the opponent and the judge
(structured output), as in the tests. A generated CMtMedQA file (Chinese, `--turns` turns per
case) is read by the app's case reader. For each concurrency level a fresh SQLite database
(so no verdict comes from another level's cache) gets two variants of the served model (greedy
model; sampled opponent with a fixed seed, so the two answer differently) and one run over all
cases, timed from the first request to the stored totals (training.eval.EvalRunner.run). One
unmeasured run of one-turn cases at the highest level warms the server up first (its first
batches of that size and the judge's grammar are slower than the rest). Throughput = cases /
wall time; the ratio is the highest level's over the lowest's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from app.bench.consult import BenchError, run_reported, start_model
from app.bench.stats import BUSY_LOAD_PER_CPU

#: A short consultation turn and the doctor's reply; numbered so no two prompts are the same.
PATIENT = "第{i}位患者，第{t}轮：我咳嗽{i}天了，晚上更厉害，需要做什么检查？"
DOCTOR = "请问有没有发热、咳痰？痰是什么颜色？"
CATEGORIES = ("内科", "儿科", "外科")


@dataclass
class BenchEvalConfig:
    """What `pulsemind bench eval` runs."""

    model_url: str | None = None
    """OpenAI-compatible server (…/v1) serving model, opponent and judge; none: start vLLM here."""
    model: str | None = None
    """Served model name at `model_url`."""
    vllm_python: str | None = None
    """vLLM environment's interpreter when starting a server (default $PULSEMIND_VLLM_PYTHON)."""
    cases: int = 160
    """Ten cases per slot at 16: a real run (237 or 1,000 cases) is mostly steady state. With
    48 (three per slot) the level at 16 lasted ~3 s, mostly its first and last waves, and on a
    shared 2-core machine the ratio moved between 7.4x and 8.3x from run to run; at 160 the
    level at 16 lasts ~8 s (the level at 1 ~75 s)."""
    turns: int = 2
    max_tokens: int = 32
    """Answer length per turn (the tiny model rarely stops early)."""
    concurrency: tuple[int, ...] = (1, 16)
    language: str = "zh-CN"
    goal: float = 8.0
    """Cases/s at the highest concurrency at least this many times the lowest's."""

    def __post_init__(self) -> None:
        if bool(self.model_url) != bool(self.model):
            raise ValueError("--model-url and --model go together (the server and its model name).")
        self.concurrency = tuple(sorted(set(self.concurrency)))
        if not self.concurrency or self.concurrency[0] < 1 or len(self.concurrency) < 2:
            raise ValueError("--concurrency needs two or more whole numbers >= 1.")
        if min(self.cases, self.turns, self.max_tokens) < 1:
            raise ValueError("--cases, --turns and --max-tokens must be >= 1.")


def write_cases(path: Path, cases: int, turns: int) -> Path:
    """A CMtMedQA-format file: `cases` consultations of `turns` turns, in three categories."""
    records = []
    for i in range(cases):
        history = [[PATIENT.format(i=i, t=t), DOCTOR] for t in range(1, turns)]
        records.append({"id": i, "cate1": CATEGORIES[i % len(CATEGORIES)], "cate2": "",
                        "instruction": PATIENT.format(i=i, t=turns), "output": DOCTOR,
                        "history": history})  # fmt: skip
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    return path


def one_run(cfg: BenchEvalConfig, url: str, served: str, case_file: tuple, folder: Path,
            concurrency: int) -> dict:  # fmt: skip
    """One whole run at `concurrency` on a fresh database; its numbers."""
    from storage import Database, ensure_model_variant
    from training.eval import EvalConfig, EvalRunner, RunSpec, start_run

    db = Database.sqlite(folder / f"bench-{concurrency}-{os.urandom(4).hex()}.db")
    db.upgrade()
    try:
        ensure_model_variant(db, "model", url, served, sampling_defaults={
            "temperature": 0.0, "max_tokens": cfg.max_tokens, "seed": 0})  # fmt: skip
        ensure_model_variant(db, "opponent", url, served, sampling_defaults={
            "temperature": 1.0, "top_p": 1.0, "max_tokens": cfg.max_tokens, "seed": 1})  # fmt: skip
        run = start_run(db, RunSpec("model", "opponent", url, served, language=cfg.language),
                        case_file)  # fmt: skip
        result = EvalRunner(db, run.id, EvalConfig(concurrency=concurrency, bootstrap=0,
                                                   progress=False)).run()  # fmt: skip
    finally:
        db.dispose()
    requests = result.answer_requests + result.judge_calls
    return {"concurrency": concurrency, "wall_s": result.wall_s, "cases": result.cases,
            "cases_per_s": result.cases / result.wall_s, "answer_requests": result.answer_requests,
            "judge_calls": result.judge_calls, "requests_per_s": requests / result.wall_s,
            "failed": result.failed}  # fmt: skip


def run_bench(cfg: BenchEvalConfig, *, progress: bool = True) -> dict:
    """Run the benchmark (a server started here is stopped here); return the numbers."""
    from app.cases import read_case_file

    load_before = os.getloadavg()[0]
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pulsemind-bench-")))
        url, served = start_model(cfg, stack, tmp)  # type: ignore[arg-type]
        case_file = read_case_file(write_cases(tmp / "cases.json", cfg.cases, cfg.turns))
        # Warm-up, not measured: the highest level's batch shapes and the judge's grammar, so
        # that no level pays the server's first batches of that size.
        top = cfg.concurrency[-1]
        one_run(cfg, url, served, read_case_file(write_cases(tmp / "warm.json", top, 1)), tmp, top)
        levels = []
        for c in tqdm(cfg.concurrency, desc="concurrency levels", file=sys.stderr,
                      disable=not progress):  # fmt: skip
            levels.append(one_run(cfg, url, served, case_file, tmp, c))
            if levels[-1]["failed"]:  # a ratio of failures would say nothing about throughput
                raise BenchError(f"{levels[-1]['failed']} cases failed at concurrency {c} "
                                 f"(is the server at {url} answering?)")  # fmt: skip
    low, high = levels[0], levels[-1]
    ratio = high["cases_per_s"] / low["cases_per_s"]
    return {"settings": asdict(cfg), "server": {"url": url, "model": served}, "levels": levels,
            "ratio": {"value": ratio, "goal": cfg.goal, "met": ratio >= cfg.goal},
            "machine": {"cpus": os.cpu_count(), "load_1min": [load_before, os.getloadavg()[0]]}}  # fmt: skip


def format_report(result: dict) -> str:
    """The table people read; the numbers are also in `--json`."""
    s, r = result["settings"], result["ratio"]
    lines = [
        f"eval benchmark: {s['cases']} cases x {s['turns']} turns, model vs opponent answering "
        f"each turn ({s['max_tokens']} tokens max), judged in both orders; server "
        f"{result['server']['model']} at {result['server']['url']}",
        f"{'concurrency':>11} {'wall (s)':>9} {'cases/s':>8} {'requests/s':>11} "
        f"{'answers':>8} {'judge calls':>11} {'failed':>7}",
    ]
    for lv in result["levels"]:
        lines.append(f"{lv['concurrency']:>11} {lv['wall_s']:>9.2f} {lv['cases_per_s']:>8.2f} "
                     f"{lv['requests_per_s']:>11.2f} {lv['answer_requests']:>8} "
                     f"{lv['judge_calls']:>11} {lv['failed']:>7}")  # fmt: skip
    low, high = result["levels"][0]["concurrency"], result["levels"][-1]["concurrency"]
    lines.append(f"throughput at concurrency {high} vs {low}: {r['value']:.1f}x "
                 f"(goal >= {r['goal']:g}x: {'met' if r['met'] else 'NOT met'})")  # fmt: skip
    machine = result.get("machine")
    if machine and machine["load_1min"][0] > BUSY_LOAD_PER_CPU * (machine["cpus"] or 1):
        lines.append(f"note: load average {machine['load_1min'][0]:.1f} on {machine['cpus']} CPUs "
                     "before the run: other work competed for the CPU, so the numbers are noisy")  # fmt: skip
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pulsemind bench eval", description=__doc__.split("\n")[0])
    p.add_argument("--model-url", "--url", dest="model_url",
                   help="server for model, opponent and judge (…/v1); default: start vLLM here")  # fmt: skip
    p.add_argument("--model", help="served model name at --model-url")
    p.add_argument("--vllm-python", help="vLLM env's python (default $PULSEMIND_VLLM_PYTHON)")
    p.add_argument("--cases", type=int, default=160)
    p.add_argument("--turns", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16], metavar="N")
    p.add_argument("--lang", default="zh-CN", choices=["zh-CN", "en"])
    p.add_argument("--goal", type=float, default=8.0, help="throughput ratio to reach")
    p.add_argument("--fail-below-goal", action="store_true", help="exit 1 if the goal is missed")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    p.add_argument("--verbose", action="store_true", help="keep the INFO logs")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (`pulsemind bench eval ...`); returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        cfg = BenchEvalConfig(model_url=args.model_url, model=args.model,
                              vllm_python=args.vllm_python, cases=args.cases, turns=args.turns,
                              max_tokens=args.max_tokens, concurrency=tuple(args.concurrency),
                              language=args.lang, goal=args.goal)  # fmt: skip
    except ValueError as exc:
        print(f"pulsemind bench eval: {exc}", file=sys.stderr)
        return 2
    quiet = () if args.verbose else ("training", "model", "storage", "app")
    result = run_reported("pulsemind bench eval", lambda: run_bench(cfg), format_report,
                          args.json, quiet)  # fmt: skip
    if result is None:
        return 1
    return 1 if args.fail_below_goal and not result["ratio"]["met"] else 0
