"""CRPO's reward on fixed verdicts: the paper's formula with hand-computed values, ties at 0 and
0.5, judge errors left out and counted, and the TRL reward function's plumbing (which side the
candidate was shown on, metrics to `on_metrics` and TRL's `log_metric`).

Run: OMP_NUM_THREADS=1 python -m pytest tests/test_reward.py -q   (under a second)
The judge behind `make_reward_fn` is a stub returning fixed verdicts here (the formula is
what is tested); tests/test_judge.py runs the same function against the real vLLM server.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from training.judge import JudgeItem, combine_orders
from training.judge_prompts import parse_verdict
from training.reward import (
    DIMENSIONS,
    Verdict,
    crpo_reward,
    make_reward_fn,
    score_candidate,
)


def v(p: str, a: str, u: str, lq: str) -> Verdict:
    """A verdict from the candidate's side ("a" = the candidate won that dimension)."""
    return Verdict(dict(zip(DIMENSIONS, (p, a, u, lq), strict=True)))


ERROR = Verdict(error="unusable verdict (3 attempts)", calls=3)
# One candidate against three counterparts (dimensions: proactiveness, accuracy, usefulness,
# language quality). Per counterpart: 2 wins + 1 tie, 0 wins + 1 tie, 3 wins + 1 tie.
AGAINST_THREE = [v("a", "a", "b", "tie"), v("b", "b", "b", "tie"), v("a", "tie", "a", "a")]


def test_dimensions_are_the_votes_dimensions():
    from storage.votes import DIMENSIONS as VOTE_DIMENSIONS

    assert DIMENSIONS == VOTE_DIMENSIONS == (
        "proactiveness", "accuracy", "usefulness", "language_quality")  # fmt: skip


def test_reward_is_the_mean_of_binary_wins_over_counterparts_and_dimensions():
    # ties count 0: (2 + 0 + 3) wins out of 3 x 4 comparisons
    assert crpo_reward(AGAINST_THREE) == pytest.approx(5 / 12)
    score = score_candidate(AGAINST_THREE)
    assert score.per_dimension == pytest.approx(
        {"proactiveness": 2 / 3, "accuracy": 1 / 3, "usefulness": 1 / 3, "language_quality": 1 / 3}
    )
    assert (score.judged, score.errors) == (3, 0)
    # the reward is the mean of the per-dimension parts
    assert score.reward == pytest.approx(sum(score.per_dimension.values()) / 4)


def test_ties_count_half_by_option():
    # ties 0.5: (2 + 0.5) + (0 + 0.5) + (3 + 0.5) = 6.5 out of 12
    assert crpo_reward(AGAINST_THREE, tie=0.5) == pytest.approx(6.5 / 12)
    per_dimension = score_candidate(AGAINST_THREE, tie=0.5).per_dimension
    assert per_dimension["accuracy"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert per_dimension["language_quality"] == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert crpo_reward([v("tie", "tie", "tie", "tie")], tie=0.5) == 0.5
    with pytest.raises(ValueError, match="tie"):
        crpo_reward(AGAINST_THREE, tie=2)


def test_extremes():
    assert crpo_reward([v("a", "a", "a", "a")] * 5) == 1.0
    assert crpo_reward([v("b", "b", "b", "b")] * 5) == 0.0


def test_errors_are_left_out_and_counted_never_a_loss():
    with_errors = [ERROR, *AGAINST_THREE, ERROR]
    score = score_candidate(with_errors)
    assert score.reward == pytest.approx(5 / 12)  # as without the two failed comparisons
    assert (score.judged, score.errors) == (3, 2)
    # a loss would have pulled it down: 5 wins out of 5 x 4
    assert score.reward != pytest.approx(5 / 20)


def test_all_errors_give_none_for_the_caller_to_decide():
    score = score_candidate([ERROR, ERROR])
    assert score.reward is None and crpo_reward([ERROR]) is None
    assert score.per_dimension == dict.fromkeys(DIMENSIONS)
    assert (score.judged, score.errors) == (0, 2)
    assert crpo_reward([]) is None  # no counterpart at all


def test_verdict_swapping_and_validation():
    assert v("a", "b", "tie", "a").swapped() == v("b", "a", "tie", "b")
    assert ERROR.swapped() is ERROR
    with pytest.raises(ValueError):
        Verdict()  # neither winners nor error
    with pytest.raises(ValueError):
        Verdict({"accuracy": "a"})  # not every dimension
    with pytest.raises(ValueError):
        Verdict(dict.fromkeys(DIMENSIONS, "A"))  # "a", not "A"


def test_both_orders_keep_only_consistent_wins():
    first = v("a", "a", "b", "tie")
    second_swapped = v("a", "b", "b", "a")  # judged (B, A), already swapped back
    combined = combine_orders(Verdict(first.winners, calls=1), Verdict(second_swapped.winners, calls=1))
    assert combined.winners == dict(zip(DIMENSIONS, ("a", "tie", "b", "tie"), strict=True))
    assert combined.calls == 2
    failed = combine_orders(Verdict(first.winners, calls=1), ERROR)
    assert failed.error and failed.calls == 4 and failed.winners is None


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"proactiveness":"A","accuracy":"tie","usefulness":"B","language_quality":"A"}',
         ("a", "tie", "b", "a")),
        ('Sure!\n```json\n{"proactiveness": "b", "accuracy": "TIE", "usefulness": "a", '
         '"language_quality": "b", "why": "..."}\n```', ("b", "tie", "a", "b")),
        ('{"proactiveness":"A","accuracy":"A","usefulness":"A"}', None),  # a dimension missing
        ('{"proactiveness":"C","accuracy":"A","usefulness":"A","language_quality":"A"}', None),
        ("A is better on every dimension.", None),
        ('{"proactiveness": "A",', None),
        ("", None),
        (None, None),
    ],
)  # fmt: skip
def test_parse_verdict(reply, expected):
    parsed = parse_verdict(reply)
    assert parsed == (None if expected is None else dict(zip(DIMENSIONS, expected, strict=True)))


# --- the TRL reward function, on a stub judge with fixed verdicts --------------------------------


@dataclass
class _StubConfig:
    both_orders: bool = False
    language: str = "en"


@dataclass
class StubJudge:
    """Answers each pair from `table[(a, b)]` (a fixed verdict in the order shown)."""

    table: dict[tuple[str, str], Verdict]
    config: _StubConfig = field(default_factory=_StubConfig)
    calls: int = 0
    seen: list[JudgeItem] = field(default_factory=list)

    def judge_many(self, items):
        self.seen.extend(items)
        self.calls += len(items)
        return [self.table[(item.a, item.b)] for item in items]


def test_reward_fn_orients_verdicts_and_reports_metrics():
    # Candidate "good" is shown first against counterpart 0 and second against counterpart 1.
    table = {
        ("good", "cp0"): v("a", "a", "a", "a"),  # candidate first: "a" = candidate
        ("cp1", "good"): v("b", "b", "tie", "a"),  # candidate second: "b" = candidate
        ("bad", "cp0"): ERROR,
        ("cp1", "bad"): ERROR,
    }
    judge = StubJudge(table)
    got: list[tuple[int, dict]] = []
    logged: dict[str, float] = {}
    fn = make_reward_fn(judge, on_metrics=lambda step, m: got.append((step, m)))

    class State:
        global_step = 7

    prompt = [{"role": "system", "content": "x"},
              {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "cough"}]}]  # fmt: skip
    rewards = fn(
        prompts=[prompt, prompt],
        completions=[[{"role": "assistant", "content": "good"}], [{"role": "assistant", "content": "bad"}]],
        counterparts=[["cp0", "cp1"], ["cp0", "cp1"]],
        trainer_state=State(),
        log_metric=lambda name, value: logged.__setitem__(name, value),
        completion_ids=[[1], [2]],
        images=[[], []],
    )  # fmt: skip
    # good: vs cp0 wins 4/4; vs cp1 (swapped back) wins proactiveness, accuracy, ties
    # usefulness, loses language quality: 2/4. R = 6/8. bad: every comparison failed -> None.
    assert rewards == [pytest.approx(6 / 8), None]
    assert judge.calls == 4 and len(judge.seen) == 4  # one call per (candidate, counterpart)
    assert judge.seen[0].context == "Patient: [image] cough"
    [(step, metrics)] = got
    assert step == 7
    assert metrics["crpo/reward"] == pytest.approx(6 / 8)
    assert metrics["crpo/proactiveness"] == 1.0 and metrics["crpo/usefulness"] == 0.5
    assert metrics["crpo/language_quality"] == 0.5
    assert metrics["crpo/judge_calls"] == 4 and metrics["crpo/judge_errors"] == 2
    assert metrics["crpo/unscored"] == 1
    assert logged == metrics  # the same numbers through TRL's hook


def test_reward_fn_with_ties_as_half_and_both_orders():
    table = {("mine", "theirs"): v("tie", "tie", "a", "b")}
    judge = StubJudge(table, _StubConfig(both_orders=True))  # candidate always shown first
    fn = make_reward_fn(judge, tie=0.5)
    assert fn(prompts=["q"], completions=["mine"], counterparts=[["theirs"]]) == [0.5]


def test_reward_fn_needs_counterparts():
    fn = make_reward_fn(StubJudge({}))
    with pytest.raises(ValueError, match="counterparts"):
        fn(prompts=["q"], completions=["a"])
