"""Reward benchmark: one CRPO step's judging, all pairs at once vs one pair at a time.

    pulsemind bench reward                                    # builds the demo model, starts vLLM
    pulsemind bench reward --model-url URL --model NAME       # against a running judge server
    pulsemind bench reward --candidates 8 --counterparts 5 --repeats 3 --both-orders --json out.json

Why: a CRPO step compares each of G sampled answers with C counterpart answers. Judged one
pair at a time, the step waits G x C round trips; issued together, the judge server batches
them and the step costs about one call. Goals (G=8, C=5): concurrent >= 10x faster than one at
a time, a concurrent step <= 2x the wall time of a single judge call, and G x C = 40 judge
calls per step (one call covers all four dimensions; not G x C x D = 160).

How: by default it builds the tiny demo model in a temp dir and starts vLLM on a free loopback
port (the judge is then the random demo model, constrained by structured output, as in the
tests); `--model-url` points it at any OpenAI-compatible judge. Per repeat, with fresh texts
each time (no cache, nothing repeated): a single judge call; one step through the CRPO reward
function (`training.reward.make_reward_fn`: all pairs at once); the same step's pairs judged
one after another. One unmeasured concurrent step warms the server up first. Reported numbers
are medians over repeats; judge calls are counted by the judge client (`Judge.calls`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from app.bench.consult import BenchError, run_reported, start_model
from app.bench.stats import BUSY_LOAD_PER_CPU

#: A consultation and answers of realistic shape; each repeat numbers them anew so that no
#: two judge prompts are the same (nothing is served from a cache).
CONTEXT = (
    "Patient: I am 58 and have had crushing chest pain for two hours, with sweating.\n"
    "Doctor: Does the pain spread to your arm or jaw? Any shortness of breath?\n"
    "Patient: It goes to my left arm. I feel a bit breathless."
)
CANDIDATE = (
    "This could be a heart attack. Call an ambulance now (variant {i}.{r}). If you are not "
    "allergic, chew 300 mg of aspirin. Do you take any blood thinners?"
)
COUNTERPART = (
    "Answer {j}.{r}: chest pain with sweating needs urgent assessment; an ECG and troponin "
    "should be done within ten minutes of arrival."
)


@dataclass
class BenchRewardConfig:
    """What `pulsemind bench reward` runs."""

    model_url: str | None = None
    """Judge server (…/v1); none: build the demo model and start vLLM here."""
    model: str | None = None
    """Served judge model name at `model_url`."""
    vllm_python: str | None = None
    """vLLM environment's interpreter when starting a server (default $PULSEMIND_VLLM_PYTHON)."""
    candidates: int = 8
    """G: answers sampled per prompt."""
    counterparts: int = 5
    """C: counterpart answers per prompt."""
    repeats: int = 3
    both_orders: bool = False
    """Judge each pair in both orders (2 calls per pair)."""
    language: str = "en"
    speedup_goal: float = 10.0
    """Concurrent step at least this many times faster than one pair at a time."""
    single_call_goal: float = 2.0
    """Concurrent step at most this many times a single judge call."""

    def __post_init__(self) -> None:
        if bool(self.model_url) != bool(self.model):
            raise ValueError("--model-url and --model go together (the server and its model name).")
        if min(self.candidates, self.counterparts, self.repeats) < 1:
            raise ValueError("--candidates, --counterparts and --repeats must be >= 1.")


def _step(cfg: BenchRewardConfig, r: int) -> dict:
    """One step's reward-function inputs (a single prompt's G candidates), numbered by `r`."""
    g, c = cfg.candidates, cfg.counterparts
    return {
        "prompts": [[{"role": "user", "content": CONTEXT}]] * g,
        "completions": [CANDIDATE.format(i=i, r=r) for i in range(g)],
        "counterparts": [[COUNTERPART.format(j=j, r=r) for j in range(c)]] * g,
    }


def run_bench(cfg: BenchRewardConfig, *, progress: bool = True) -> dict:
    """Run the benchmark (a server started here is stopped here); return the numbers."""
    from training.judge import Judge, JudgeConfig, JudgeItem
    from training.judge_prompts import render_context
    from training.reward import make_reward_fn

    load_before = os.getloadavg()[0]
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pulsemind-bench-")))
        url, model = start_model(cfg, stack, tmp)  # type: ignore[arg-type]
        judge = stack.enter_context(Judge(JudgeConfig(
            base_url=url, model=model, language=cfg.language,  # type: ignore[arg-type]
            both_orders=cfg.both_orders, attempts=1)))  # fmt: skip
        reward_fn = make_reward_fn(judge)
        pairs = cfg.candidates * cfg.counterparts

        def concurrent(r: int) -> tuple[float, int, int]:
            before, t0 = judge.calls, time.perf_counter()
            rewards = reward_fn(**_step(cfg, r))
            return time.perf_counter() - t0, judge.calls - before, rewards.count(None)

        def one_at_a_time(r: int) -> tuple[float, int, int]:
            step = _step(cfg, r)
            context = render_context(step["prompts"][0], cfg.language)  # type: ignore[arg-type]
            before, t0, errors = judge.calls, time.perf_counter(), 0
            for answer, others in zip(step["completions"], step["counterparts"], strict=True):
                for other in others:
                    errors += not judge.judge(JudgeItem(answer, other, context)).ok
            return time.perf_counter() - t0, judge.calls - before, errors

        def single(r: int) -> tuple[float, int, int]:
            before, t0 = judge.calls, time.perf_counter()
            verdict = judge.judge(JudgeItem(CANDIDATE.format(i="s", r=r),
                                            COUNTERPART.format(j="s", r=r), CONTEXT))  # fmt: skip
            return time.perf_counter() - t0, judge.calls - before, int(not verdict.ok)

        if concurrent(-1)[2] == cfg.candidates:  # warm-up, not measured
            raise BenchError(f"the judge at {url} gave no usable verdict (is it answering?): "
                             "a ratio of failed calls would say nothing")  # fmt: skip
        runs: dict[str, list[tuple[float, int, int]]] = {"single": [], "concurrent": [],
                                                         "sequential": []}  # fmt: skip
        bar = tqdm(range(cfg.repeats), desc="repeats", unit="step", file=sys.stderr,
                   disable=not progress)  # fmt: skip
        for r in bar:
            for name, fn in (("single", single), ("concurrent", concurrent),
                             ("sequential", one_at_a_time)):  # fmt: skip
                bar.set_postfix_str(name)
                runs[name].append(fn(r))
        bar.close()
    result = summarize(cfg, runs, pairs)
    result["judge"] = {"url": url, "model": model}
    result["machine"] = {"cpus": os.cpu_count(), "load_1min": [load_before, os.getloadavg()[0]]}
    return result


def summarize(cfg: BenchRewardConfig, runs: dict[str, list[tuple[float, int, int]]],
              pairs: int) -> dict:  # fmt: skip
    """Medians, ratios and goal verdicts from (wall s, calls, errors) per repeat and mode."""
    modes = {name: {"wall_s": statistics.median(w for w, _, _ in rs),
                    "calls": statistics.median(n for _, n, _ in rs),
                    "errors": sum(e for _, _, e in rs), "repeats": rs}
             for name, rs in runs.items()}  # fmt: skip
    speedup = modes["sequential"]["wall_s"] / modes["concurrent"]["wall_s"]
    vs_single = modes["concurrent"]["wall_s"] / modes["single"]["wall_s"]
    calls = modes["concurrent"]["calls"]
    per_pair = 2 if cfg.both_orders else 1
    return {
        "settings": asdict(cfg),
        "pairs_per_step": pairs,
        "modes": modes,
        "speedup": {"value": speedup, "goal": cfg.speedup_goal, "met": speedup >= cfg.speedup_goal},
        "vs_single_call": {"value": vs_single, "goal": cfg.single_call_goal,
                           "met": vs_single <= cfg.single_call_goal},  # fmt: skip
        "calls_per_step": {"value": calls, "goal": pairs * per_pair,
                           "met": calls == pairs * per_pair},  # fmt: skip
    }


def format_report(result: dict) -> str:
    """The table people read; the numbers are also in `--json`."""
    s, m = result["settings"], result["modes"]
    pairs = result["pairs_per_step"]
    rows = [("one judge call", m["single"], 1),
            ("step, one pair at a time", m["sequential"], pairs),
            ("step, all pairs at once", m["concurrent"], pairs)]  # fmt: skip
    lines = [
        f"reward benchmark: G={s['candidates']} candidates x C={s['counterparts']} counterparts, "
        f"judge {result['judge']['model']} at {result['judge']['url']} "
        f"({'both orders' if s['both_orders'] else 'one order'}), {s['repeats']} repeat(s), medians",
        f"{'mode':<26} {'judge calls':>11} {'wall (s)':>9} {'per pair (ms)':>14} {'errors':>7}",
    ]
    for label, mode, n in rows:
        lines.append(f"{label:<26} {mode['calls']:>11g} {mode['wall_s']:>9.3f} "
                     f"{mode['wall_s'] / n * 1e3:>14.1f} {mode['errors']:>7}")  # fmt: skip

    def verdict(goal: dict) -> str:
        return "met" if goal["met"] else "NOT met"

    sp, vs, calls = result["speedup"], result["vs_single_call"], result["calls_per_step"]
    lines += [
        f"all at once vs one at a time: {sp['value']:.1f}x faster "
        f"(goal >= {sp['goal']:g}x: {verdict(sp)})",
        f"a concurrent step vs a single judge call: {vs['value']:.2f}x the wall time "
        f"(goal <= {vs['goal']:g}x: {verdict(vs)})",
        f"judge calls per step: {calls['value']:g} (goal G x C{' x 2 orders' if s['both_orders'] else ''}"
        f" = {calls['goal']}, not x D=4 per dimension: {verdict(calls)})",
    ]
    machine = result.get("machine")
    if machine and machine["load_1min"][0] > BUSY_LOAD_PER_CPU * (machine["cpus"] or 1):
        lines.append(f"note: load average {machine['load_1min'][0]:.1f} on {machine['cpus']} CPUs "
                     "before the run: other work competed for the CPU, so the numbers are noisy")  # fmt: skip
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pulsemind bench reward", description=__doc__.split("\n")[0])
    p.add_argument("--model-url", "--url", dest="model_url",
                   help="judge server (…/v1); default: start vLLM with the demo model here")  # fmt: skip
    p.add_argument("--model", help="served judge model name at --model-url")
    p.add_argument("--vllm-python", help="vLLM env's python (default $PULSEMIND_VLLM_PYTHON)")
    p.add_argument("--candidates", type=int, default=8, metavar="G")
    p.add_argument("--counterparts", type=int, default=5, metavar="C")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--both-orders", action="store_true", help="judge every pair in both orders")
    p.add_argument("--lang", default="en", choices=["en", "zh-CN"], help="judge prompt language")
    p.add_argument("--fail-below-goal", action="store_true", help="exit 1 if a goal is missed")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    p.add_argument("--verbose", action="store_true", help="keep the judge's INFO logs")
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (`pulsemind bench reward ...`); returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        cfg = BenchRewardConfig(model_url=args.model_url, model=args.model,
                                vllm_python=args.vllm_python, candidates=args.candidates,
                                counterparts=args.counterparts, repeats=args.repeats,
                                both_orders=args.both_orders, language=args.lang)  # fmt: skip
    except ValueError as exc:
        print(f"pulsemind bench reward: {exc}", file=sys.stderr)
        return 2
    quiet = () if args.verbose else ("training", "model")
    result = run_reported("pulsemind bench reward", lambda: run_bench(cfg), format_report,
                          args.json, quiet)  # fmt: skip
    if result is None:
        return 1
    goals = (result["speedup"], result["vs_single_call"], result["calls_per_step"])
    return 1 if args.fail_below_goal and not all(g["met"] for g in goals) else 0
