"""CRPO's comparison reward (the PulseMind paper's method), and the TRL reward function on it.

For a query q the policy samples G answers o_1..o_G; each o_g is compared with the answers of
C counterpart models CP_1..CP_C on the D = 4 dimensions:

    r_{g,c,d} = 1 if o_g beats CP_c on d, `tie` if they tie (0 by default, 0.5 by option), else 0
    R_g       = mean over c and d of r_{g,c,d}

A comparison the judge could not make (`Verdict.error`) is left out of the mean and counted,
never scored as a loss; with none left, R_g is None and the caller decides (TRL gives a None
reward no advantage: the sample then teaches nothing). Advantages and loss are GRPO's, on
TRL's GRPOTrainer, with `make_reward_fn(judge)` as its reward function:

    judge = Judge(JudgeConfig(base_url="http://127.0.0.1:8000/v1", model="judge"), cache=db)
    reward_fn = make_reward_fn(judge, tie=0.0, on_metrics=lambda step, m: add_metrics(db, run, step, m))
    GRPOTrainer(model=..., reward_funcs=[reward_fn], train_dataset=crpo_export, ...)

    reward_fn(prompts=["Patient: chest pain"], completions=["Any sweating?"],
              counterparts=[["Take an aspirin.", "See a doctor."]])     # -> [0.375] (say)

The dataset needs a `counterparts` column (list of answers per row: `pulsemind export --kind
crpo` writes it); a `reference` column (the reference doctor's reply) is used when present.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loguru import logger

from training.judge import DIMENSIONS, JudgeItem, Verdict, Winner
from training.judge_prompts import completion_text, render_context

if TYPE_CHECKING:
    from training.judge import Judge

__all__ = [
    "DIMENSIONS",
    "CandidateScore",
    "StepMetrics",
    "Verdict",
    "Winner",
    "crpo_reward",
    "make_reward_fn",
    "score_candidate",
]

#: `on_metrics(step, metrics)`: the same shape as training.common's metrics hook.
MetricsHook = Callable[[int, dict[str, float]], None]
#: Prefix of the metric names this reward reports ("crpo/reward", "crpo/accuracy", ...).
METRIC_PREFIX = "crpo"


@dataclass(frozen=True)
class CandidateScore:
    """One candidate's reward, its per-dimension parts, and how many comparisons counted."""

    reward: float | None
    """R_g, or None when no comparison could be made."""
    per_dimension: dict[str, float | None]
    """Mean over counterparts of r_{g,c,d}, per dimension d."""
    judged: int
    """Comparisons that gave a verdict."""
    errors: int
    """Comparisons that failed (left out of the mean)."""


def score_candidate(verdicts: Sequence[Verdict], *, tie: float = 0.0) -> CandidateScore:
    """R_g and its parts from the verdicts of candidate g against each counterpart, where in
    every verdict the candidate is "a" (`Verdict.swapped()` turns one judged the other way)."""
    if not 0.0 <= tie <= 1.0:
        raise ValueError(f"tie must be between 0 and 1, not {tie}")
    value: dict[Winner, float] = {"a": 1.0, "tie": tie, "b": 0.0}
    usable = [v.winners for v in verdicts if v.winners is not None]
    errors = len(verdicts) - len(usable)
    if not usable:
        return CandidateScore(None, dict.fromkeys(DIMENSIONS), 0, errors)
    per_dimension: dict[str, float | None] = {
        d: sum(value[w[d]] for w in usable) / len(usable) for d in DIMENSIONS
    }
    reward = sum(per_dimension.values()) / len(DIMENSIONS)  # type: ignore[arg-type]
    return CandidateScore(reward, per_dimension, len(usable), errors)


def crpo_reward(verdicts: Sequence[Verdict], *, tie: float = 0.0) -> float | None:
    """R_g = mean over counterparts c and dimensions d of r_{g,c,d} (candidate = "a" in each
    verdict); errors are excluded from the mean; None if every comparison failed.

    >>> win = Verdict(dict.fromkeys(DIMENSIONS, "a")); even = Verdict(dict.fromkeys(DIMENSIONS, "tie"))
    >>> crpo_reward([win, even]), crpo_reward([win, even], tie=0.5), crpo_reward([Verdict(error="x")])
    (0.5, 0.75, None)
    """
    return score_candidate(verdicts, tie=tie).reward


@dataclass(frozen=True)
class StepMetrics:
    """What one reward call (one training step's batch) measured."""

    step: int
    reward: float | None
    """Mean R_g over the candidates that got one."""
    per_dimension: dict[str, float | None]
    """Mean over those candidates of their per-dimension reward."""
    judge_calls: int
    """HTTP requests to the judge this step (G x C pairs, x2 with both orders; retries count)."""
    judge_errors: int
    """Comparisons that failed, left out of the rewards."""
    unscored: int
    """Candidates without any usable comparison (their reward is None)."""
    wall_s: float
    """Time spent judging the step."""

    def as_dict(self) -> dict[str, float]:
        """Flat metric names -> numbers ("crpo/reward", "crpo/accuracy", ...); None left out."""
        values: dict[str, float | None] = {
            "reward": self.reward,
            **self.per_dimension,
            "judge_calls": self.judge_calls,
            "judge_errors": self.judge_errors,
            "unscored": self.unscored,
            "judge_wall_s": self.wall_s,
        }
        return {f"{METRIC_PREFIX}/{k}": float(v) for k, v in values.items() if v is not None}


def _mean(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None and not math.isnan(v)]
    return sum(known) / len(known) if known else None


def make_reward_fn(
    judge: Judge, *, tie: float = 0.0, on_metrics: MetricsHook | None = None
) -> Callable[..., list[float | None]]:
    """A TRL GRPOTrainer reward function `(prompts, completions, counterparts, **columns)`
    giving each completion its CRPO reward R_g (None where no comparison could be made).

    Per call (one step's batch: B prompts x G completions), every (candidate, counterpart)
    pair is one judge call covering all four dimensions, and all of them are issued at once
    (`Judge.judge_many`). Without `both_orders`, the candidate is shown first against even-
    numbered counterparts and second against odd ones, so a judge's position bias does not
    favour every candidate alike. Metrics (`StepMetrics.as_dict()`) go to `on_metrics(step,
    metrics)` and to TRL's `log_metric` when the trainer passes it (they then appear in the
    trainer's logs beside kl and loss).
    """
    if not 0.0 <= tie <= 1.0:
        raise ValueError(f"tie must be between 0 and 1, not {tie}")
    calls_so_far = 0

    def crpo(
        prompts: Sequence[Any],
        completions: Sequence[Any],
        counterparts: Sequence[Sequence[str]] | None = None,
        reference: Sequence[str | None] | None = None,
        trainer_state: Any = None,
        log_metric: Callable[[str, float], None] | None = None,
        **columns: Any,
    ) -> list[float | None]:
        nonlocal calls_so_far
        if counterparts is None:
            raise ValueError("the CRPO reward needs a `counterparts` column in the dataset "
                             "(pulsemind export --kind crpo writes it)")  # fmt: skip
        language = judge.config.language
        items: list[JudgeItem] = []
        owners: list[tuple[int, bool]] = []  # (candidate index, candidate shown first)
        for g, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            context = render_context(prompt, language)
            answer = completion_text(completion)
            ref = reference[g] if reference is not None else None
            for c, other in enumerate(counterparts[g] or []):
                first = judge.config.both_orders or c % 2 == 0
                a, b = (answer, other) if first else (other, answer)
                items.append(JudgeItem(a, b, context, ref))
                owners.append((g, first))
        t0 = time.perf_counter()
        before = judge.calls
        verdicts = judge.judge_many(items)
        wall = time.perf_counter() - t0
        per_candidate: list[list[Verdict]] = [[] for _ in completions]
        for (g, first), verdict in zip(owners, verdicts, strict=True):
            per_candidate[g].append(verdict if first else verdict.swapped())
        scores = [score_candidate(v, tie=tie) for v in per_candidate]
        step = getattr(trainer_state, "global_step", None)
        metrics = StepMetrics(
            step=step if isinstance(step, int) else calls_so_far,
            reward=_mean([s.reward for s in scores]),
            per_dimension={d: _mean([s.per_dimension[d] for s in scores]) for d in DIMENSIONS},
            judge_calls=judge.calls - before,
            judge_errors=sum(s.errors for s in scores),
            unscored=sum(1 for s in scores if s.reward is None),
            wall_s=wall,
        )
        calls_so_far += 1
        _report(metrics, on_metrics, log_metric)
        return [s.reward for s in scores]

    return crpo


def _report(
    metrics: StepMetrics,
    on_metrics: MetricsHook | None,
    log_metric: Callable[[str, float], None] | None,
) -> None:
    numbers = metrics.as_dict()
    logger.info("crpo step {}: reward {} from {} judge calls, {} errors, {:.2f}s", metrics.step,
                "-" if metrics.reward is None else f"{metrics.reward:.3f}", metrics.judge_calls,
                metrics.judge_errors, metrics.wall_s)  # fmt: skip
    if log_metric is not None:
        for name, value in numbers.items():
            log_metric(name, value)
    if on_metrics is not None:
        on_metrics(metrics.step, numbers)

