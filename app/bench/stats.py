"""`pulsemind bench consult`'s numbers: per-request samples, batch statistics, medians over
repeats, app/direct ratios, the goal verdict and the printed table (no I/O here)."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.bench.consult import BenchConsultConfig

#: Load average per CPU, before the run starts anything, above which other work skews timings.
BUSY_LOAD_PER_CPU = 0.5


class NoRates(ValueError):
    """A batch in which no request produced more than one token."""


@dataclass
class Sample:
    """One request's times (perf_counter seconds) and the tokens it produced."""

    start: float
    first: float
    end: float
    completion_tokens: int

    @property
    def ttft_s(self) -> float:
        return self.first - self.start

    @property
    def tok_s(self) -> float | None:
        decode = self.end - self.first
        return (
            (self.completion_tokens - 1) / decode
            if self.completion_tokens > 1 and decode > 0
            else None
        )


def batch_stats(samples: list[Sample]) -> dict:
    """TTFT p50, per-request tokens/s p50 and aggregate throughput of one batch."""
    rates = [r for s in samples if (r := s.tok_s) is not None]
    if not rates:
        raise NoRates("no request produced more than one token; raise --max-tokens")
    wall = max(s.end for s in samples) - min(s.start for s in samples)
    tokens = [s.completion_tokens for s in samples]
    return {
        "ttft_p50_s": statistics.median(s.ttft_s for s in samples),
        "tok_s_p50": statistics.median(rates),
        "throughput_tok_s": sum(tokens) / wall,
        "wall_s": wall,
        "completion_tokens": tokens,
    }


#: The app's paths, each compared with direct: name -> what the table calls it.
APP_PATHS = {"app": "/consult", "ui": "/send+/answer"}


def summarize(config: BenchConsultConfig, batches: dict[tuple[str, int], list[dict]]) -> dict:
    """Medians over repeats per path and level, app/direct ratios, and the goal verdict.

    The goal is judged on "app" (`/consult`, one call per turn: how programs use the app);
    "ui" (the browser's two events driven by gradio_client) is reported beside it when measured.
    """
    paths = ["direct", *(p for p in APP_PATHS if (p, config.concurrency[0]) in batches)]
    levels = []
    for c in config.concurrency:
        level: dict = {"concurrency": c, "ratios": {}}
        for path in paths:
            runs = batches[(path, c)]
            level[path] = {
                k: statistics.median(r[k] for r in runs)
                for k in ("ttft_p50_s", "tok_s_p50", "throughput_tok_s")
            } | {"repeats": runs}
        d = level["direct"]
        for path in paths[1:]:
            a = level[path]
            level["ratios"][path] = {
                "ttft": a["ttft_p50_s"] / d["ttft_p50_s"],
                "tok_s": a["tok_s_p50"] / d["tok_s_p50"],
                "throughput": a["throughput_tok_s"] / d["throughput_tok_s"],
            }
        counts = {p: sorted({t for r in level[p]["repeats"] for t in r["completion_tokens"]})
                  for p in paths}  # fmt: skip
        level["completion_tokens"] = counts
        level["tokens_match"] = all(v == counts["direct"] for v in counts.values())
        levels.append(level)
    top = levels[-1]
    ratio = top["ratios"]["app"]["throughput"]
    return {
        "settings": asdict(config),
        "levels": levels,
        "goal": {
            "concurrency": top["concurrency"],
            "throughput_ratio": ratio,
            "target": config.goal,
            "met": ratio >= config.goal,
        },
    }


def format_report(result: dict) -> str:
    """The table people read; the numbers are also in `--json`."""
    head = (
        f"{'':>11} {'':<14}  {'TTFT p50 (ms)':^28}  {'tokens/s per request (p50)':^28}  "
        f"{'aggregate tokens/s':^28}\n"
        f"{'concurrent':>11} {'app path':<14}" + f"  {'direct':>8} {'app':>8} {'app/dir':>10}" * 3
    )
    rows = []
    for lv in result["levels"]:
        d = lv["direct"]
        for path, r in lv["ratios"].items():
            a = lv[path]
            rows.append(
                f"{lv['concurrency']:>11} {APP_PATHS[path]:<14}"
                f"  {d['ttft_p50_s'] * 1e3:>8.1f} {a['ttft_p50_s'] * 1e3:>8.1f} {r['ttft']:>9.2f}x"
                f"  {d['tok_s_p50']:>8.1f} {a['tok_s_p50']:>8.1f} {r['tok_s']:>9.2f}x"
                f"  {d['throughput_tok_s']:>8.1f} {a['throughput_tok_s']:>8.1f} "
                f"{r['throughput']:>9.2f}x"
            )
    notes = []
    for lv in result["levels"]:
        if not lv["tokens_match"]:
            notes.append(f"note: at {lv['concurrency']} concurrent the paths generated different "
                         f"token counts {lv['completion_tokens']}; rates use the actual counts")  # fmt: skip
    machine = result.get("machine")
    if machine and machine["load_1min"][0] > BUSY_LOAD_PER_CPU * (machine["cpus"] or 1):
        notes.append(f"note: load average {machine['load_1min'][0]:.1f} on {machine['cpus']} CPUs "
                     "before the run: other work competed for the CPU, so the numbers are noisy")  # fmt: skip
    s, g = result["settings"], result["goal"]
    verdict = "met" if g["met"] else "NOT met"
    return "\n".join([
        f"consult benchmark: max_tokens {s['max_tokens']}, {s['repeats']} repeat(s), medians; "
        f"image {'yes' if s['image'] else 'no'}; vLLM stream_interval "
        f"{s['stream_interval'] or 1} on both paths; ratios are app/direct",
        head, *rows, *notes,
        f"through-app throughput (/consult) at {g['concurrency']} concurrent: "
        f"{g['throughput_ratio']:.2f}x direct (goal >= {g['target']:g}x: {verdict})",
    ])  # fmt: skip
