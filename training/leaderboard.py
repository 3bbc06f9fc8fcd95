"""The leaderboard: Bradley-Terry ratings of model variants from Compare votes, with checks.

Why: votes are pairwise (A/B/tie per dimension, plus an overall verdict), and the Bradley-Terry
model turns pairwise outcomes into one strength per variant, on an Elo-like scale
(400/ln 10 points per unit of log-odds, mean 1000) with 95% bootstrap intervals. Beside the
raw fit sits a style-controlled fit (as Chatbot Arena's style control): the log ratio of the
answers' lengths and the difference of their markdown element counts enter the same logistic
model as covariates, so a variant cannot climb by writing longer or more decorated answers.
Also: a win-rate matrix, votes per annotator, agreement on turns voted by several annotators,
and quality flags (a vote faster than anyone can read, an answer that names its model, votes
past a daily cap).

How ties count: a tie is half a win each way (its outcome is 0.5 in the log-likelihood), and
an overall "both bad" is a tie for rating purposes (neither answer was preferred).
Fitting: the BT log-likelihood with a small L2 prior (which pins the otherwise free overall
level, so the fitted strengths sum to zero) minimised by scipy.optimize (L-BFGS-B, analytic
gradient). Plot: drawn with Pillow (matplotlib is not a dependency).

    board = build_leaderboard(leaderboard_rows(db, user_id=admin.id), LeaderboardConfig())
    board.to_csv("out/")   # one CSV per table
    board.plot("out/leaderboard.png")

CLI: `pulsemind leaderboard [--dimension overall] [--csv DIR] [--plot FILE]`.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np

from storage.leaderboard_data import VoteRow
from storage.votes import DIMENSIONS

#: Everything a vote rates: the four dimensions, then the overall verdict.
FIELDS = (*DIMENSIONS, "overall")
#: Elo-like scale: 400 points per factor of 10 in the odds of winning.
ELO_SCALE = 400 / math.log(10)
ELO_MEAN = 1000.0
#: Outcome of a vote for side A: a win, a loss, or half (tie; overall "both bad" too).
OUTCOME = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}
STYLE_FEATURES = ("length_log_ratio", "markdown_difference")


class LeaderboardError(ValueError):
    """The votes cannot be rated as asked (too few, or a fit that did not converge)."""


@dataclass(frozen=True)
class LeaderboardConfig:
    """How the leaderboard is computed."""

    bootstrap: int = 200
    """Bootstrap resamples of the votes for the 95% intervals (0: no intervals)."""
    seed: int = 0
    """Seed of the bootstrap resampling (same votes and seed, same intervals)."""
    prior: float = 0.01
    """L2 prior strength on the log-strengths: identifiability and finite ratings for a
    variant that never lost; small against any real number of votes."""
    style_control: bool = True
    """Also fit with length and markdown covariates."""
    min_vote_seconds: float = 3.0
    """A vote sooner than this after the answers ended is flagged too_fast."""
    skim_chars_per_second: float = 150.0
    """Faster than this over both answers' characters is flagged too_fast. Generous on purpose:
    the clock starts when the later answer ends, and the voter may read while answers stream."""
    daily_cap: int = 300
    """Votes by one annotator past this many in one UTC day are flagged daily_cap."""
    drop_flagged: bool = False
    """Leave flagged votes out of the ratings and win rates (they are reported either way)."""

    def __post_init__(self) -> None:
        if self.bootstrap < 0:
            raise ValueError("bootstrap must be 0 or more (0 turns the intervals off)")
        if self.prior <= 0:
            raise ValueError("prior must be positive: without it the ratings have no fixed level")
        if self.skim_chars_per_second <= 0 or self.daily_cap < 1:
            raise ValueError("skim_chars_per_second must be positive and daily_cap at least 1")


def _write_csv(path: str | Path, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@dataclass(frozen=True)
class Rating:
    variant_id: int
    variant: str
    rating: float
    lower: float | None
    upper: float | None
    votes: int


@dataclass(frozen=True)
class RatingTable:
    """Ratings on one field, best first; `coefficients` are the style covariates' log-odds
    per unit (per unit of log length ratio, per markdown element) in a style-controlled fit."""

    field: str
    style_controlled: bool
    ratings: list[Rating]
    coefficients: dict[str, float]
    votes: int

    def to_csv(self, path: str | Path) -> Path:
        return _write_csv(path, ["rank", "variant_id", "variant", "rating", "lower_95", "upper_95",
                                 "votes"],
                          [[i + 1, r.variant_id, r.variant, round(r.rating, 1),
                            None if r.lower is None else round(r.lower, 1),
                            None if r.upper is None else round(r.upper, 1), r.votes]
                           for i, r in enumerate(self.ratings)])  # fmt: skip

    def order(self) -> list[str]:
        return [r.variant for r in self.ratings]


@dataclass(frozen=True)
class WinRates:
    """`rates[i][j]`: share of votes variant i won against variant j (ties half); None: never met."""

    field: str
    variants: list[str]
    rates: list[list[float | None]]
    games: list[list[int]]

    def to_csv(self, path: str | Path) -> Path:
        return _write_csv(path, ["variant", *self.variants],
                          [[name, *("" if r is None else round(r, 4) for r in row)]
                           for name, row in zip(self.variants, self.rates, strict=True)])  # fmt: skip


@dataclass(frozen=True)
class AnnotatorStats:
    voter_id: int
    votes: int
    overall_a: int
    overall_b: int
    overall_tie: int
    overall_both_bad: int
    flagged: int


@dataclass(frozen=True)
class Agreement:
    """Percent agreement on one field over pairs of annotators who voted on the same turn."""

    field: str
    turns: int
    pairs: int
    agreement: float | None


@dataclass(frozen=True)
class QualityFlag:
    vote_id: int
    turn_id: int
    voter_id: int
    reason: str  # too_fast | names_model | daily_cap
    detail: str


@dataclass(frozen=True)
class Table:
    """A list of dataclass rows written as one CSV (annotators, agreement, flags)."""

    rows: list
    header: tuple[str, ...]

    def to_csv(self, path: str | Path) -> Path:
        return _write_csv(
            path, self.header, [[getattr(r, h) for h in self.header] for r in self.rows]
        )


@dataclass
class Leaderboard:
    raw: dict[str, RatingTable]
    style: dict[str, RatingTable]
    win_rates: dict[str, WinRates]
    annotators: Table
    agreement: Table
    flags: Table
    config: LeaderboardConfig = field(default_factory=LeaderboardConfig)

    def to_csv(self, directory: str | Path) -> list[Path]:
        """Every table as a CSV file in `directory`; returns the paths."""
        out = Path(directory)
        paths = [t.to_csv(out / f"ratings_{name}.csv") for name, t in self.raw.items()]
        paths += [t.to_csv(out / f"ratings_{name}_style.csv") for name, t in self.style.items()]
        paths += [t.to_csv(out / f"win_rates_{name}.csv") for name, t in self.win_rates.items()]
        paths += [self.annotators.to_csv(out / "annotators.csv"),
                  self.agreement.to_csv(out / "agreement.csv"),
                  self.flags.to_csv(out / "quality_flags.csv")]  # fmt: skip
        return paths

    def plot(self, path: str | Path) -> Path:
        """A PNG (Pillow): per field, each variant's rating and 95% interval, raw (blue) and
        style-controlled (orange) on one shared axis."""
        return plot_ratings(self, path)


# --- Bradley-Terry --------------------------------------------------------------------------


def fit_bradley_terry(a: np.ndarray, b: np.ndarray, outcome: np.ndarray, n_items: int, *,
                      features: np.ndarray | None = None, weights: np.ndarray | None = None,
                      prior: float = 0.01) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Maximum a-posteriori BT log-strengths (natural log-odds units, summing to zero) and
    covariate coefficients.

    P(A beats B) = sigmoid(theta[a] - theta[b] + features @ beta); `outcome` is 1 (A won),
    0 (B won) or 0.5 (tie: half a win each way); `weights` count each vote (the bootstrap's
    resample counts). The L2 prior `prior/2 * |params|^2` fixes the level.
    """
    from scipy.optimize import minimize
    from scipy.special import expit

    n_feat = 0 if features is None else features.shape[1]
    w = np.ones(len(a)) if weights is None else weights

    def objective(params: np.ndarray) -> tuple[float, np.ndarray]:
        theta, beta = params[:n_items], params[n_items:]
        z = theta[a] - theta[b] + (features @ beta if n_feat else 0.0)
        nll = float(np.sum(w * (np.logaddexp(0.0, z) - outcome * z)))
        g = w * (expit(z) - outcome)
        grad = np.concatenate([np.bincount(a, g, n_items) - np.bincount(b, g, n_items),
                               features.T @ g if n_feat else np.zeros(0)])  # fmt: skip
        return nll + 0.5 * prior * float(params @ params), grad + prior * params

    result = minimize(objective, np.zeros(n_items + n_feat), jac=True, method="L-BFGS-B")
    if not result.success:
        raise LeaderboardError(f"the Bradley-Terry fit did not converge: {result.message}")
    theta = result.x[:n_items]
    return theta - theta.mean(), result.x[n_items:]


def to_elo(theta: np.ndarray) -> np.ndarray:
    return ELO_MEAN + ELO_SCALE * (theta - theta.mean())


@dataclass(frozen=True)
class _Design:
    ids: list[int]
    names: list[str]
    a: np.ndarray
    b: np.ndarray
    outcome: np.ndarray
    style: np.ndarray  # raw covariates, one row per vote


def _design(rows: Sequence[VoteRow], name: str) -> _Design:
    names = {}
    for r in rows:
        names[r.variant_a_id], names[r.variant_b_id] = r.variant_a, r.variant_b
    ids = sorted(names)
    index = {vid: i for i, vid in enumerate(ids)}
    outcome = [OUTCOME[r.overall if name == "overall" else r.choices[name]] for r in rows]
    style = [
        [math.log((r.length_a + 1) / (r.length_b + 1)), r.markdown_a - r.markdown_b] for r in rows
    ]
    return _Design(ids, [names[i] for i in ids],
                   np.array([index[r.variant_a_id] for r in rows], dtype=np.intp),
                   np.array([index[r.variant_b_id] for r in rows], dtype=np.intp),
                   np.array(outcome, dtype=float), np.array(style, dtype=float).reshape(len(rows), 2))  # fmt: skip


def rate(rows: Sequence[VoteRow], name: str, config: LeaderboardConfig, *,
         style_control: bool = False) -> RatingTable:  # fmt: skip
    """Ratings of the variants in `rows` on field `name` (a dimension or "overall")."""
    if name not in FIELDS:
        raise LeaderboardError(f"unknown field {name!r}; choose one of {', '.join(FIELDS)}")
    if name != "overall":  # clinician picks may leave a dimension unrated
        rows = [r for r in rows if r.choices[name] is not None]
    if not rows:
        raise LeaderboardError("there are no votes to rate")
    d = _design(rows, name)
    features = None
    scale = np.ones(2)
    if style_control:
        # Scaled to unit spread so the prior weighs both covariates alike; reported per raw unit.
        scale = d.style.std(axis=0)
        scale[scale == 0] = 1.0
        features = d.style / scale
    n = len(d.ids)
    theta, beta = fit_bradley_terry(d.a, d.b, d.outcome, n, features=features, prior=config.prior)
    ratings = to_elo(theta)
    lower = upper = [None] * n
    if config.bootstrap:
        rng = np.random.default_rng(config.seed)
        samples = np.empty((config.bootstrap, n))
        for k in range(config.bootstrap):
            counts = np.bincount(rng.integers(0, len(rows), len(rows)), minlength=len(rows))
            boot, _ = fit_bradley_terry(d.a, d.b, d.outcome, n, features=features,
                                        weights=counts.astype(float), prior=config.prior)  # fmt: skip
            samples[k] = to_elo(boot)
        lower, upper = np.percentile(samples, 2.5, axis=0), np.percentile(samples, 97.5, axis=0)
    votes = np.bincount(d.a, minlength=n) + np.bincount(d.b, minlength=n)
    table = [Rating(d.ids[i], d.names[i], float(ratings[i]),
                    None if lower[i] is None else float(lower[i]),
                    None if upper[i] is None else float(upper[i]), int(votes[i]))
             for i in range(n)]  # fmt: skip
    table.sort(key=lambda r: -r.rating)
    coefficients = (
        dict(zip(STYLE_FEATURES, (beta / scale).tolist(), strict=True)) if style_control else {}
    )
    return RatingTable(name, style_control, table, coefficients, len(rows))


# --- Tables ---------------------------------------------------------------------------------


def win_rates(rows: Sequence[VoteRow], name: str) -> WinRates:
    """Share of head-to-head votes each variant won against each other (ties half)."""
    d = _design(rows, name)
    n = len(d.ids)
    won = np.zeros((n, n))
    games = np.zeros((n, n), dtype=int)
    for i, j, s in zip(d.a, d.b, d.outcome, strict=True):
        won[i, j] += s
        won[j, i] += 1 - s
        games[i, j] += 1
        games[j, i] += 1
    rates = [[float(won[i, j] / games[i, j]) if games[i, j] else None for j in range(n)]
             for i in range(n)]  # fmt: skip
    return WinRates(name, d.names, rates, games.tolist())


def agreement(rows: Sequence[VoteRow]) -> list[Agreement]:
    """Percent agreement per field over every pair of annotators on each turn voted by several."""
    by_turn: dict[int, dict[int, VoteRow]] = defaultdict(dict)
    for r in rows:
        by_turn[r.turn_id][r.voter_id] = r
    shared = [list(v.values()) for v in by_turn.values() if len(v) > 1]
    out = []
    for name in FIELDS:
        pick = (lambda r: r.overall) if name == "overall" else (lambda r, n=name: r.choices[n])
        pairs = [(pick(x), pick(y)) for votes in shared for x, y in combinations(votes, 2)
                 if pick(x) is not None and pick(y) is not None]  # unrated: no evidence
        same = sum(x == y for x, y in pairs)
        out.append(Agreement(name, len(shared), len(pairs), same / len(pairs) if pairs else None))
    return out


def quality_flags(rows: Sequence[VoteRow], config: LeaderboardConfig) -> list[QualityFlag]:
    """Votes to look at: too fast to have read both answers, an answer naming a model (the vote
    was not blind), votes past the annotator's daily cap."""
    flags = []
    for r in rows:
        if r.time_to_vote_ms is not None:
            needed = max(
                config.min_vote_seconds, (r.length_a + r.length_b) / config.skim_chars_per_second
            )
            if r.time_to_vote_ms / 1000 < needed:
                flags.append(QualityFlag(r.vote_id, r.turn_id, r.voter_id, "too_fast",
                                         f"{r.time_to_vote_ms / 1000:.1f}s < {needed:.1f}s"))  # fmt: skip
        sides = [s for s, named in (("a", r.names_model_a), ("b", r.names_model_b)) if named]
        if sides:
            flags.append(QualityFlag(r.vote_id, r.turn_id, r.voter_id, "names_model",
                                     f"answer {'/'.join(sides)} names a model"))  # fmt: skip
    per_day: dict[tuple[int, object], list[VoteRow]] = defaultdict(list)
    for r in rows:
        per_day[(r.voter_id, r.created_at.date())].append(r)
    for (voter, day), votes in per_day.items():
        for r in sorted(votes, key=lambda v: (v.created_at, v.vote_id))[config.daily_cap :]:
            flags.append(QualityFlag(r.vote_id, r.turn_id, voter, "daily_cap",
                                     f"more than {config.daily_cap} votes on {day}"))  # fmt: skip
    return sorted(flags, key=lambda f: (f.vote_id, f.reason))


def annotator_stats(rows: Sequence[VoteRow], flags: Sequence[QualityFlag]) -> list[AnnotatorStats]:
    flagged: dict[int, set[int]] = defaultdict(set)
    for f in flags:
        flagged[f.voter_id].add(f.vote_id)
    by_voter: dict[int, list[VoteRow]] = defaultdict(list)
    for r in rows:
        by_voter[r.voter_id].append(r)
    return [AnnotatorStats(voter, len(votes), *(sum(v.overall == o for v in votes)
                                                for o in ("a", "b", "tie", "both_bad")),
                           len(flagged[voter]))
            for voter, votes in sorted(by_voter.items())]  # fmt: skip


def build_leaderboard(rows: Sequence[VoteRow], config: LeaderboardConfig | None = None,
                      fields: Sequence[str] = FIELDS) -> Leaderboard:  # fmt: skip
    """Every table from plain vote rows (storage.leaderboard_data.leaderboard_rows)."""
    config = config or LeaderboardConfig()
    flags = quality_flags(rows, config)
    rated = rows
    if config.drop_flagged:
        dropped = {f.vote_id for f in flags}
        rated = [r for r in rows if r.vote_id not in dropped]
    return Leaderboard(
        raw={f: rate(rated, f, config) for f in fields},
        style={f: rate(rated, f, config, style_control=True) for f in fields} if config.style_control else {},
        win_rates={f: win_rates(rated, f) for f in fields},
        annotators=Table(annotator_stats(rows, flags), ("voter_id", "votes", "overall_a", "overall_b",
                                                        "overall_tie", "overall_both_bad", "flagged")),
        agreement=Table(agreement(rows), ("field", "turns", "pairs", "agreement")),
        flags=Table(flags, ("vote_id", "turn_id", "voter_id", "reason", "detail")),
        config=config,
    )  # fmt: skip


def format_table(board: Leaderboard, name: str) -> str:
    """The ratings on `name` as text, raw and (if fitted) style-controlled side by side."""
    raw, style = board.raw[name], board.style.get(name)
    styled = {r.variant_id: r for r in style.ratings} if style else {}

    def cell(r: Rating | None) -> str:
        if r is None:
            return ""
        ci = f" [{r.lower:.0f}, {r.upper:.0f}]" if r.lower is not None else ""
        return f"{r.rating:7.1f}{ci}"

    lines = [
        f"{name} ({raw.votes} votes; ties and 'both bad' count half a win each way)",
        f"{'rank':>4}  {'variant':<24} {'rating [95% CI]':<24} {'style-controlled':<24} votes",
    ]
    for i, r in enumerate(raw.ratings, 1):
        lines.append(
            f"{i:>4}  {r.variant:<24} {cell(r):<24} {cell(styled.get(r.variant_id)):<24} {r.votes}"
        )
    if style:
        lines.append(
            "style coefficients (log-odds per unit): "
            + ", ".join(f"{k}={v:+.3f}" for k, v in style.coefficients.items())
        )
    return "\n".join(lines)


# --- Plot (Pillow) --------------------------------------------------------------------------

PLOT_WIDTH = 900
ROW_HEIGHT = 22
LABEL_WIDTH = 220
RAW_COLOUR, STYLE_COLOUR = (31, 119, 180), (255, 127, 14)


def plot_ratings(board: Leaderboard, path: str | Path) -> Path:
    """Draw every field's ratings with their intervals; returns the PNG's path."""
    from PIL import Image, ImageDraw

    tables = [t for f in board.raw for t in (board.raw[f], board.style.get(f)) if t is not None]
    values = [
        v for t in tables for r in t.ratings for v in (r.rating, r.lower, r.upper) if v is not None
    ]
    lo, hi = min(values) - 10, max(values) + 10
    n_rows = sum(len(t.ratings) + 2 for t in board.raw.values())
    image = Image.new("RGB", (PLOT_WIDTH, (n_rows + 2) * ROW_HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    span = PLOT_WIDTH - LABEL_WIDTH - 30

    def x(v: float) -> float:
        return LABEL_WIDTH + (v - lo) / (hi - lo) * span

    draw.text((10, 4), f"Bradley-Terry ratings, 95% bootstrap CI: raw (blue), style-controlled "
                       f"(orange); axis {lo:.0f}-{hi:.0f}", fill="black")  # fmt: skip
    y = 2 * ROW_HEIGHT
    for name, raw in board.raw.items():
        draw.text((10, y), name, fill="black")
        draw.line([(x(ELO_MEAN), y), (x(ELO_MEAN), y + (len(raw.ratings) + 1) * ROW_HEIGHT)],
                  fill=(200, 200, 200))  # fmt: skip
        y += ROW_HEIGHT
        style = {r.variant_id: r for r in board.style[name].ratings} if name in board.style else {}
        for r in raw.ratings:
            draw.text((20, y + 4), r.variant[:30], fill="black")
            for offset, rating, colour in (
                (6, r, RAW_COLOUR),
                (14, style.get(r.variant_id), STYLE_COLOUR),
            ):
                if rating is None:
                    continue
                if rating.lower is not None and rating.upper is not None:
                    draw.line(
                        [(x(rating.lower), y + offset), (x(rating.upper), y + offset)],
                        fill=colour,
                        width=2,
                    )
                cx = x(rating.rating)
                draw.ellipse([cx - 3, y + offset - 3, cx + 3, y + offset + 3], fill=colour)
            y += ROW_HEIGHT
        y += ROW_HEIGHT
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path
