"""Judge-clinician agreement: how often the judge picks what the clinicians voted, judging
pairwise (relative) vs scoring each answer 1-5 (absolute), per dimension and overall.

    pulsemind eval agreement --judge http://judge:8000/v1 --judge-model judge [--lang zh-CN]
    pulsemind eval agreement                       # the last measurement's report again

    result = measure_agreement(turns, judge, scorer, language="en")   # turns: storage.evals.voted_turns

Why: the paper chose comparisons over scores because clinicians agreed with relative judgments
86.1% of the time and with absolute ones 51.5%; this measures the same on this deployment's
votes, for its judge. On every compare turn with votes:
- relative: the judge compares the two answers in both orders (training/judge.py; a win only
  where both orders agree, else a tie);
- absolute: the judge scores each answer alone, 1-5 per dimension (`score_messages`); the
  higher score wins, equal scores tie; overall compares the sums.
A vote agrees on a dimension when the judge's a / b / tie is the clinician's. Dimensions a
clinician left unrated (compare mode's quick pick) are skipped; an overall "both bad" counts as
a tie; a judge error leaves that vote out of that mode (counted). Overall for the relative
judge is the majority of its four dimensions. Intervals: 95% bootstrap over votes.
The result is kept as an evaluation run of kind "agreement" (its totals), for the Admin tab.
"""

from __future__ import annotations

import sys
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from loguru import logger

from storage.evals import FIELDS
from storage.votes import DIMENSIONS

if TYPE_CHECKING:
    import argparse

    from storage import Database
    from storage.evals import EvalRunRecord, VotedTurn
    from training.judge import JudgeConfig, JudgeItem, Verdict

#: What the paper measured (PulseMind, AAAI 2026): relative vs absolute agreement.
PAPER = {"relative": 0.861, "absolute": 0.515}
MODES = ("relative", "absolute")


# --- absolute mode: one answer scored ----------------------------------------------------------


@dataclass(frozen=True)
class ScoreItem:
    answer: str
    context: str = ""
    reference: str | None = None


@dataclass(frozen=True)
class Scores:
    """1-5 per dimension, or an error (never a score of its own)."""

    scores: dict[str, int] | None = None
    error: str | None = None
    calls: int = 0


class AbsoluteScorer:
    """Scores answers through one OpenAI-compatible endpoint, as `training.judge.Judge` judges
    pairs: structured output (vLLM regex, else response_format), unusable replies asked again,
    HTTP 429 waited for (Retry-After, else backoff), transport failures retried. No cache."""

    def __init__(self, config: JudgeConfig):
        import openai

        from model.openai_engine import http_client

        self.config = config
        self._client = openai.OpenAI(base_url=config.base_url, api_key=config.api_key,
                                     timeout=config.timeout_s, max_retries=0,
                                     http_client=http_client())  # fmt: skip
        self._lock = threading.Lock()
        self._mode = "json_schema" if config.structured == "json_schema" else config.structured
        if self._mode == "auto":
            self._mode = "vllm"
        self.calls = 0

    def close(self) -> None:
        self._client.close()

    def score_many(self, items: Sequence[ScoreItem]) -> list[Scores]:
        if not items:
            return []
        with ThreadPoolExecutor(min(self.config.concurrency, len(items))) as pool:
            return list(pool.map(self._one, items))

    def _request(self, item: ScoreItem, mode: str, attempt: int) -> dict[str, Any]:
        from training.judge import RETRY_TEMPERATURE
        from training.judge_prompts import SCORE_REGEX, SCORE_SCHEMA, score_messages

        cfg = self.config
        req: dict[str, Any] = {
            "model": cfg.model,
            "messages": score_messages(item.answer, item.context, item.reference, cfg.language),
            "temperature": cfg.temperature if attempt == 0 or cfg.temperature > 0 else RETRY_TEMPERATURE,
            "max_tokens": cfg.max_tokens,
        }
        if cfg.seed is not None:
            req["seed"] = cfg.seed + attempt
        if mode == "vllm":
            req["extra_body"] = {"structured_outputs": {"regex": SCORE_REGEX}}
        elif mode == "json_schema":
            req["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "pulsemind_scores", "schema": SCORE_SCHEMA, "strict": True}}  # fmt: skip
        return req

    def _one(self, item: ScoreItem) -> Scores:
        import openai

        from training.judge import BACKOFF_MAX_S, BACKOFF_START_S, MAX_RETRY_AFTER_S, retry_after_s
        from training.judge_prompts import parse_scores

        cfg = self.config
        mode, made, attempts, waits, waited = self._mode, 0, 0, 0, 0.0
        while True:
            made += 1
            with self._lock:
                self.calls += 1
            try:
                resp = self._client.chat.completions.create(**self._request(item, mode, attempts))
            except openai.RateLimitError as exc:
                delay = retry_after_s(exc.response.headers)
                delay = min(delay, MAX_RETRY_AFTER_S) if delay is not None else min(
                    BACKOFF_START_S * 2**waits, BACKOFF_MAX_S)  # fmt: skip
                if waits >= cfg.rate_limit_waits or waited + delay > cfg.max_rate_limit_wait_s:
                    return Scores(error=f"rate limited (HTTP 429) after {waits} waits", calls=made)
                time.sleep(delay)
                waits, waited = waits + 1, waited + delay
                continue
            except openai.APIStatusError as exc:
                if exc.status_code == 400 and mode == "vllm" and cfg.structured == "auto":
                    mode = self._mode = "json_schema"
                    continue
                problem = f"HTTP {exc.status_code}"
                if exc.status_code not in (408, 409) and exc.status_code < 500:
                    return Scores(error=problem, calls=made)
            except openai.APIConnectionError as exc:
                problem = f"judge unreachable: {type(exc).__name__}"
            except openai.OpenAIError as exc:
                problem = f"bad reply: {type(exc).__name__}"
            else:
                choices = getattr(resp, "choices", None)
                scores = parse_scores(choices[0].message.content if choices else None)
                if scores is not None:
                    return Scores(scores, None, made)
                problem = "unusable scores"
            attempts += 1
            if attempts >= cfg.attempts:
                return Scores(error=f"{problem} ({attempts} attempts)", calls=made)
            time.sleep(min(BACKOFF_START_S * 2 ** (attempts - 1), BACKOFF_MAX_S))


# --- agreement ------------------------------------------------------------------------------------


class PairJudge(Protocol):
    def judge_many(self, items: Sequence[JudgeItem]) -> list[Verdict]: ...


class Scorer(Protocol):
    def score_many(self, items: Sequence[ScoreItem]) -> list[Scores]: ...


@dataclass(frozen=True)
class AgreementRow:
    """One field: votes compared per mode, the share that agreed with its 95% interval, and
    the votes a judge error left out."""

    field: str
    n: dict[str, int]
    agreement: dict[str, float | None]
    lower: dict[str, float | None]
    upper: dict[str, float | None]
    errors: dict[str, int]


@dataclass(frozen=True)
class AgreementResult:
    turns: int
    votes: int
    rows: list[AgreementRow]
    mean_scores: dict[str, float | None]
    """Mean absolute score per dimension (the paper saw them bunch at 4.01-4.35)."""

    def to_json(self) -> dict:
        return {"turns": self.turns, "votes": self.votes, "mean_scores": self.mean_scores,
                "rows": [r.__dict__ for r in self.rows]}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict) -> AgreementResult:
        return cls(data["turns"], data["votes"], [AgreementRow(**r) for r in data["rows"]],
                   data["mean_scores"])  # fmt: skip


def _winner(x: float, y: float) -> str:
    return "a" if x > y else "b" if y > x else "tie"


def relative_choices(verdict: Verdict) -> dict[str, str] | None:
    """The judge's a / b / tie per field from a both-orders verdict (overall: majority)."""
    if not verdict.ok:
        return None
    w = dict(verdict.winners)
    wins, losses = sum(v == "a" for v in w.values()), sum(v == "b" for v in w.values())
    return {**w, "overall": _winner(wins, losses)}


def absolute_choices(a: Scores, b: Scores) -> dict[str, str] | None:
    """a / b / tie per field by comparing the two answers' scores (overall: the sums)."""
    if a.scores is None or b.scores is None:
        return None
    out = {d: _winner(a.scores[d], b.scores[d]) for d in DIMENSIONS}
    out["overall"] = _winner(sum(a.scores.values()), sum(b.scores.values()))
    return out


def judge_context(turn: VotedTurn, language: str) -> str:
    """What both answers replied to, as the judge reads it (the prompt builder's text)."""
    from model.prompt import to_chat_messages
    from training.judge_prompts import render_context

    chat = [{"role": m.role, "content": [{"type": "image"} for _ in m.images]
             + [{"type": "text", "text": m.text}]}
            for m in to_chat_messages(list(turn.context), language=turn.language)]  # fmt: skip
    return render_context(chat, language)  # type: ignore[arg-type]


def measure_agreement(turns: Sequence[VotedTurn], judge: PairJudge, scorer: Scorer, *,
                      language: str = "en", bootstrap: int = 1000,
                      seed: int = 0) -> AgreementResult:  # fmt: skip
    """Agreement of the relative and the absolute judge with every vote on `turns`."""
    from training.judge import JudgeItem

    contexts = [judge_context(t, language) for t in turns]
    verdicts = judge.judge_many([JudgeItem(t.text_a, t.text_b, c, t.reference)
                                 for t, c in zip(turns, contexts, strict=True)])  # fmt: skip
    scores = scorer.score_many([ScoreItem(text, c, t.reference)
                                for t, c in zip(turns, contexts, strict=True)
                                for text in (t.text_a, t.text_b)])  # fmt: skip
    votes = [(t, v) for t in turns for v in t.votes]
    # agree[mode][vote, field]: 1 agreed, 0 did not, NaN not compared (unrated or judge error)
    agree = {m: np.full((len(votes), len(FIELDS)), np.nan) for m in MODES}
    errors = {m: np.zeros(len(FIELDS), dtype=int) for m in MODES}
    n = 0
    for i, t in enumerate(turns):
        judged = {"relative": relative_choices(verdicts[i]),
                  "absolute": absolute_choices(scores[2 * i], scores[2 * i + 1])}  # fmt: skip
        for _, choices, overall in t.votes:
            human = {**choices, "overall": "tie" if overall == "both_bad" else overall}
            for j, f in enumerate(FIELDS):
                if human[f] is None:
                    continue
                for m in MODES:
                    if judged[m] is None:
                        errors[m][j] += 1
                    else:
                        agree[m][n, j] = float(judged[m][f] == human[f])
            n += 1
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(votes), (bootstrap, len(votes))) if bootstrap and votes else None
    rows = []
    for j, f in enumerate(FIELDS):
        counts, point, lower, upper = {}, {}, {}, {}
        for m in MODES:
            col = agree[m][:, j]
            seen = ~np.isnan(col)
            counts[m] = int(seen.sum())
            point[m] = float(col[seen].mean()) if counts[m] else None
            lower[m] = upper[m] = None
            if idx is not None and counts[m]:
                with warnings.catch_warnings():  # a resample with no vote on f: dropped
                    warnings.simplefilter("ignore", RuntimeWarning)
                    shares = np.nanmean(col[idx], axis=1)
                shares = shares[~np.isnan(shares)]
                if shares.size:
                    lower[m] = float(np.percentile(shares, 2.5))
                    upper[m] = float(np.percentile(shares, 97.5))
        rows.append(AgreementRow(f, counts, point, lower, upper,
                                 {m: int(errors[m][j]) for m in MODES}))  # fmt: skip
    usable = [s.scores for s in scores if s.scores is not None]
    means = {d: (float(np.mean([s[d] for s in usable])) if usable else None) for d in DIMENSIONS}
    return AgreementResult(len(turns), len(votes), rows, means)


# --- report ----------------------------------------------------------------------------------------


def _pct(value: float | None, lo: float | None = None, hi: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" + (f" [{lo:.1%}, {hi:.1%}]" if lo is not None and hi is not None else "")


def format_agreement(result: AgreementResult, title: str) -> str:
    lines = [f"## {title}", "",
             f"{result.votes} votes on {result.turns} compare turns. Share of votes whose choice "
             "(a / b / tie) the judge made, with 95% bootstrap intervals; unrated dimensions "
             f"skipped. Paper: relative {PAPER['relative']:.1%}, absolute {PAPER['absolute']:.1%}.",
             "", "| dimension | relative (pairwise) | n | absolute (1-5 scores) | n | judge errors rel/abs |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in result.rows:
        lines.append(f"| {r.field} | {_pct(r.agreement['relative'], r.lower['relative'], r.upper['relative'])} "
                     f"| {r.n['relative']} | {_pct(r.agreement['absolute'], r.lower['absolute'], r.upper['absolute'])} "
                     f"| {r.n['absolute']} | {r.errors['relative']}/{r.errors['absolute']} |")  # fmt: skip
    means = ", ".join(f"{d} {v:.2f}" for d, v in result.mean_scores.items() if v is not None)
    lines += ["", f"Mean absolute scores: {means or '-'}."]
    return "\n".join(lines) + "\n"


def agreement_rows(result: AgreementResult) -> list[dict]:
    return [{"field": r.field, **{f"{m}_{k}": getattr(r, k)[m] for m in MODES
                                  for k in ("agreement", "lower", "upper", "n", "errors")}}
            for r in result.rows]  # fmt: skip


def plot_agreement(result: AgreementResult, path: str | Path, title: str) -> Path:
    """Relative (blue) and absolute (orange) agreement per field with 95% intervals."""
    from PIL import Image, ImageDraw

    from training.eval_stats import font

    row, label, width = 22, 200, 900
    image = Image.new("RGB", (width, (3 * len(result.rows) + 4) * row), "white")
    draw = ImageDraw.Draw(image)
    text = font(14)
    span = width - label - 30
    draw.text((10, 6), title, fill="black", font=text)
    draw.text((10, 6 + row), "agreement with clinicians: relative (blue), absolute (orange); "
              "grey line: paper's relative 86.1%", fill="black", font=text)  # fmt: skip
    x_paper = label + PAPER["relative"] * span
    y = 3 * row
    draw.line([(x_paper, y), (x_paper, y + 3 * row * len(result.rows))], fill=(200, 200, 200))
    colours = {"relative": (31, 119, 180), "absolute": (255, 127, 14)}
    for r in result.rows:
        draw.text((10, y + row // 2), r.field, fill="black", font=text)
        for m in MODES:
            value = r.agreement[m]
            if value is not None:
                draw.rectangle([label, y + 4, label + value * span, y + row - 4], fill=colours[m])
                if r.lower[m] is not None and r.upper[m] is not None:
                    mid = y + row // 2
                    draw.line([(label + r.lower[m] * span, mid), (label + r.upper[m] * span, mid)],
                              fill="black", width=2)  # fmt: skip
            y += row
        y += row
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def agreement_report(run: EvalRunRecord, path: Path) -> tuple[str, Path, list[dict]]:
    """(markdown, PNG, CSV rows) of a stored agreement run."""
    if not run.totals:
        return f"Agreement run {run.id}: {run.status.value}, no result.\n", path, []
    result = AgreementResult.from_json(run.totals)
    title = f"Run {run.id}: judge {run.judge_model} vs clinicians ({run.language})"
    return format_agreement(result, title), plot_agreement(result, path, title), agreement_rows(result)


# --- command line ----------------------------------------------------------------------------------


def cli_main(args: argparse.Namespace, database: Callable[[], Database]) -> int:
    """`pulsemind eval agreement` (see app/cli.py)."""
    import os

    from storage import StorageError
    from storage.evals import (
        create_eval_run,
        finish_eval_run,
        interrupt_eval_run,
        list_eval_runs,
        voted_turns,
    )
    from training.eval import write_outputs
    from training.judge import Judge, JudgeConfig

    db = database()
    try:
        if not args.judge:
            runs = list_eval_runs(db, kind="agreement", limit=1)
            if not runs:
                print("pulsemind eval agreement: no measurement yet; give --judge and "
                      "--judge-model", file=sys.stderr)  # fmt: skip
                return 1
            run = runs[0]
        else:
            if not args.judge_model:
                raise SystemExit("pulsemind eval agreement: --judge needs --judge-model")
            config = JudgeConfig(base_url=args.judge, model=args.judge_model, language=args.lang,
                                 both_orders=True, max_tokens=args.judge_max_tokens,
                                 concurrency=args.concurrency)  # fmt: skip
            turns, skipped = voted_turns(db)
            if not turns:
                print("pulsemind eval agreement: no compare turn has votes yet (or none "
                      "still resolves); nothing was measured / 尚无带投票的比较，未进行测量",
                      file=sys.stderr)  # fmt: skip
                return 1
            run = create_eval_run(db, "agreement", judge_model=args.judge_model,
                                  judge_url=args.judge, language=args.lang,
                                  config={"bootstrap": args.bootstrap, "turns": len(turns),
                                          "skipped_turns": skipped}, pid=os.getpid())  # fmt: skip
            t0 = time.perf_counter()
            with Judge(config, cache=db) as judge:
                scorer = AbsoluteScorer(config)
                try:
                    result = measure_agreement(turns, judge, scorer, language=args.lang,
                                               bootstrap=args.bootstrap)  # fmt: skip
                except BaseException:
                    interrupt_eval_run(db, run.id)
                    raise
                finally:
                    scorer.close()
            logger.info("agreement: {} turns, {} votes in {:.1f}s", result.turns, result.votes,
                        time.perf_counter() - t0)  # fmt: skip
            run = finish_eval_run(db, run.id, result.to_json())
        markdown, png, rows = agreement_report(run, Path(args.out) / f"run-{run.id}.png")
        print(markdown)
        print("wrote " + ", ".join(str(p) for p in write_outputs(Path(args.out), run.id, markdown,
                                                                  png, rows)))  # fmt: skip
        return 0
    except ValueError as exc:
        raise SystemExit(f"pulsemind eval agreement: {exc}") from exc
    except StorageError as exc:
        print(f"pulsemind eval agreement: {exc.user_message}", file=sys.stderr)
        return 1
    finally:
        db.dispose()
