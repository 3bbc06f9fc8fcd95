"""The PulseMind Benchmark's numbers: win / tie / loss rates with 95% bootstrap intervals, per
dimension and overall, for all cases and per category; the markdown table, the CSV rows and
the plot. Plain functions on plain lists (no database, no I/O but the PNG), so the report of a
stored run can be rebuilt at any time and tested without a server.

    groups = summarize([CaseOutcome(1, "内科", {"overall": "win", ...}, None), ...])
    print(format_markdown(groups, "tiny vs reference"))
    plot_groups(groups, "out/eval.png", "tiny vs reference")

How: a case's outcome per field is the model's win, tie or loss from both orders of the judge
(training/eval.py). Rates are shares of the judged cases; cases whose answers or verdicts
failed are counted apart (`judge_errors`, `model_errors`), never as losses. Intervals: the
2.5th and 97.5th percentiles of the rates over `bootstrap` resamples of the cases (with
replacement; one resample of cases serves every field of a group). Plot: Pillow (matplotlib
is not a dependency), with a CJK font when the machine has one, so Chinese categories read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from storage.votes import DIMENSIONS

FIELDS = (*DIMENSIONS, "overall")
OUTCOMES = ("win", "tie", "loss")
#: The group of every case; categories follow it.
ALL = "all"
#: Category of cases without one, when others have one.
NO_CATEGORY = "(none)"
#: A case's error text starts with this when the judge, not an answer, failed.
JUDGE_ERROR_PREFIX = "judge"


@dataclass(frozen=True)
class CaseOutcome:
    """One case of a run: `outcomes` (field -> win/tie/loss) when judged, else `error`."""

    position: int
    cate1: str | None
    outcomes: Mapping[str, str] | None
    error: str | None = None


@dataclass(frozen=True)
class Rate:
    value: float
    lower: float | None
    upper: float | None


@dataclass(frozen=True)
class FieldResult:
    field: str
    n: int
    counts: dict[str, int]
    rates: dict[str, Rate]


@dataclass(frozen=True)
class GroupResult:
    """All cases (`group` "all") or one category's."""

    group: str
    cases: int
    judged: int
    judge_errors: int
    model_errors: int
    pending: int
    fields: dict[str, FieldResult]


def _percentiles(codes: np.ndarray, idx: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper 95% bounds of the win/tie/loss shares of `codes` (0/1/2) over the
    resamples `idx` (rows of indices)."""
    if idx is None or len(codes) == 0:
        return np.full(3, np.nan), np.full(3, np.nan)
    shares = (codes[idx][..., None] == np.arange(3)).mean(axis=1)  # (resamples, 3)
    return np.percentile(shares, 2.5, axis=0), np.percentile(shares, 97.5, axis=0)


def _group(name: str, cases: Sequence[CaseOutcome], bootstrap: int,
           rng: np.random.Generator) -> GroupResult:  # fmt: skip
    judged = [c for c in cases if c.outcomes is not None]
    errors = [c for c in cases if c.outcomes is None and c.error]
    judge_errors = sum(1 for c in errors if c.error.startswith(JUDGE_ERROR_PREFIX))
    n = len(judged)
    idx = rng.integers(0, n, (bootstrap, n)) if bootstrap and n else None
    fields = {}
    for f in FIELDS:
        codes = np.array([OUTCOMES.index(c.outcomes[f]) for c in judged], dtype=int)
        counts = {o: int((codes == i).sum()) for i, o in enumerate(OUTCOMES)}
        lower, upper = _percentiles(codes, idx)
        rates = {o: Rate(counts[o] / n if n else float("nan"),
                         None if np.isnan(lower[i]) else float(lower[i]),
                         None if np.isnan(upper[i]) else float(upper[i]))
                 for i, o in enumerate(OUTCOMES)}  # fmt: skip
        fields[f] = FieldResult(f, n, counts, rates)
    return GroupResult(name, len(cases), n, judge_errors, len(errors) - judge_errors,
                       len(cases) - n - len(errors), fields)  # fmt: skip


def summarize(cases: Iterable[CaseOutcome], *, bootstrap: int = 1000,
              seed: int = 0) -> list[GroupResult]:  # fmt: skip
    """All cases, then each category (`cate1`, most cases first) when any case has one."""
    cases = sorted(cases, key=lambda c: c.position)
    rng = np.random.default_rng(seed)
    groups = [_group(ALL, cases, bootstrap, rng)]
    if any(c.cate1 for c in cases):
        sizes = Counter(c.cate1 or NO_CATEGORY for c in cases)
        for name, _ in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])):
            members = [c for c in cases if (c.cate1 or NO_CATEGORY) == name]
            groups.append(_group(name, members, bootstrap, rng))
    return groups


def totals(groups: Sequence[GroupResult]) -> dict:
    """The counts, as stored on the run (`eval_runs.totals`)."""
    return {g.group: {"cases": g.cases, "judged": g.judged, "judge_errors": g.judge_errors,
                      "model_errors": g.model_errors, "pending": g.pending,
                      **{f: r.counts for f, r in g.fields.items()}}
            for g in groups}  # fmt: skip


# --- tables -------------------------------------------------------------------------------------


def _pct(rate: Rate) -> str:
    if rate.value != rate.value:  # NaN: nothing judged
        return "-"
    if rate.lower is None or rate.upper is None:
        return f"{rate.value:.1%}"
    return f"{rate.value:.1%} [{rate.lower:.1%}, {rate.upper:.1%}]"


def format_markdown(groups: Sequence[GroupResult], title: str) -> str:
    """One markdown table per group: rows are the fields, columns win / tie / loss with
    their 95% intervals, then the counts; errors are said under each table."""
    lines = [f"## {title}", "",
             "Win / tie / loss of the model per case (both judge orders must agree for a win); "
             "95% bootstrap intervals.", ""]  # fmt: skip
    for g in groups:
        lines += [f"### {'All cases' if g.group == ALL else g.group} ({g.cases} cases)", "",
                  "| dimension | win | tie | loss | n (W/T/L) |", "|---|---|---|---|---|"]  # fmt: skip
        for f, r in g.fields.items():
            c = r.counts
            lines.append(f"| {f} | {_pct(r.rates['win'])} | {_pct(r.rates['tie'])} | "
                         f"{_pct(r.rates['loss'])} | {r.n} ({c['win']}/{c['tie']}/{c['loss']}) |")  # fmt: skip
        lines += ["", f"Judged {g.judged} of {g.cases}; judge errors {g.judge_errors}, answer "
                      f"errors {g.model_errors}, not done {g.pending} (none counted as losses).", ""]  # fmt: skip
    return "\n".join(lines).rstrip() + "\n"


def csv_rows(groups: Sequence[GroupResult]) -> list[dict]:
    """One row per (group, field): counts, rates and bounds (for a CSV download)."""
    rows = []
    for g in groups:
        for f, r in g.fields.items():
            row = {"group": g.group, "field": f, "n": r.n, **r.counts}
            for o in OUTCOMES:
                row |= {f"{o}_rate": r.rates[o].value, f"{o}_lower": r.rates[o].lower,
                        f"{o}_upper": r.rates[o].upper}  # fmt: skip
            row |= {"judge_errors": g.judge_errors, "model_errors": g.model_errors}
            rows.append(row)
    return rows


# --- plot (Pillow) --------------------------------------------------------------------------------

PLOT_WIDTH = 960
ROW = 26
GAP = 10  # between groups
LABEL = 260
COLOURS = {"win": (44, 160, 44), "tie": (190, 190, 190), "loss": (214, 39, 40)}
#: Fonts that draw Chinese, where a Debian/Ubuntu machine keeps them (fonts-noto-cjk, wqy).
CJK_FONTS = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
)


def font(size: int = 14):
    """A CJK-capable font when installed, else Pillow's own (Chinese then draws as boxes)."""
    from PIL import ImageFont

    for path in CJK_FONTS:
        if Path(path).is_file():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size)


def plot_groups(groups: Sequence[GroupResult], path: str | Path, title: str) -> Path:
    """Stacked win / tie / loss bars per field and group, the win rate's 95% interval as a
    black whisker; returns the PNG's path."""
    from PIL import Image, ImageDraw

    rows = sum(len(g.fields) + 1 for g in groups)
    image = Image.new("RGB", (PLOT_WIDTH, (rows + 3) * ROW + GAP * len(groups)), "white")
    draw = ImageDraw.Draw(image)
    text = font(14)
    span = PLOT_WIDTH - LABEL - 30
    draw.text((10, 6), title, fill="black", font=text)
    draw.text((10, 6 + ROW), "win (green) / tie (grey) / loss (red); whisker: win rate, 95% CI",
              fill="black", font=text)  # fmt: skip
    y = 3 * ROW - GAP
    for g in groups:
        y += GAP
        label = "All cases" if g.group == ALL else g.group
        draw.text((10, y), f"{label} (n={g.judged}, errors {g.judge_errors + g.model_errors})",
                  fill="black", font=text)  # fmt: skip
        y += ROW
        for f, r in g.fields.items():
            draw.text((24, y + 4), f, fill="black", font=text)
            x = LABEL
            for o in OUTCOMES:
                share = r.rates[o].value if r.n else 0.0
                width = share * span
                if width > 0:
                    draw.rectangle([x, y + 4, x + width, y + ROW - 4], fill=COLOURS[o])
                x += width
            win = r.rates["win"]
            if win.lower is not None and win.upper is not None:
                lo, hi = LABEL + win.lower * span, LABEL + win.upper * span
                mid = y + ROW // 2
                draw.line([(lo, mid), (hi, mid)], fill="black", width=2)
                draw.line([(lo, mid - 5), (lo, mid + 5)], fill="black")
                draw.line([(hi, mid - 5), (hi, mid + 5)], fill="black")
            y += ROW
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path
