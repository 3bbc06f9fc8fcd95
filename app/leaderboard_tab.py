"""Leaderboard tab: Bradley–Terry ratings of the model variants from the votes, drawn as plots.

For admins and annotators (`Auth.guard`). `training.leaderboard` does the statistics (ratings
per dimension and overall with 95% bootstrap intervals, a style-controlled fit beside the raw
one, win rates, agreement, quality flags); this tab renders them: the raw and the
style-controlled ratings as two interval plots side by side on one scale, a table of both, the
win-rate matrix as a heatmap and a table, and every table as CSV (only the caller can download
them, `app.downloads`). Computed when the tab is opened or Refresh is pressed, not at page load.

Who sees what is decided on the server: votes are read through
`storage.leaderboard_data.leaderboard_rows(user_id=...)` (admins as stored, annotators with the
voters pseudonymous, anyone else refused); an admin gets votes per annotator, agreement and
quality flags; an annotator gets the ratings and win rates only — the per-annotator tables come
back empty (and the page shows them to admins only), and their CSVs are not written.

Plots are Vega-Lite specifications handed to `gr.Plot` as its own data (`PlotData`, type
"altair": Gradio's frontend draws it with the vega-embed it bundles), so no plotting library is
needed on the server; labels are in the request's language.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import gradio as gr
import pandas as pd
from gradio.components.plot import PlotData

from app.auth import Auth
from app.downloads import Downloads
from app.i18n import i18n, t
from storage import Database, InvalidInput, UserRecord, UserRole, list_users
from storage.leaderboard_data import leaderboard_rows
from training.leaderboard import (
    FIELDS,
    Leaderboard,
    LeaderboardConfig,
    LeaderboardError,
    RatingTable,
    build_leaderboard,
)

ROLES = (UserRole.ANNOTATOR, UserRole.ADMIN)
FIELD_CHOICES = [(i18n(f"leaderboard.field.{f}"), f) for f in FIELDS]
VEGA_LITE = "https://vega.github.io/schema/vega-lite/v5.json"
PLOT_HEIGHT = 320
#: Gradio sizes only its own chart kinds to their container; a spec of ours keeps its width.
PLOT_WIDTH = 460
#: Outputs of `show_leaderboard`, in order (the tab's wiring and its tests follow it).
OUTPUTS = ("status", "raw_plot", "style_plot", "ratings", "win_plot", "win_table",
           "annotators", "agreement", "flags", "csv")  # fmt: skip


def _field(name: str) -> str:
    return t(f"leaderboard.field.{name}")


def _fields_with_votes(rows) -> list[str]:
    """The dimensions somebody rated, then overall (a clinician's pick may rate none)."""
    rated = [f for f in FIELDS[:-1] if any(r.choices.get(f) is not None for r in rows)]
    return [*rated, "overall"]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# --- plots (Vega-Lite) -----------------------------------------------------------------------


def ratings_plot(tables: dict[str, RatingTable], title: str, domain: list[float]) -> PlotData:
    """Each field's ratings, one colour per variant, a point and its 95% interval."""
    values = [{"field": _field(name), "variant": r.variant, "rating": _rounded(r.rating),
               "lower": _rounded(r.lower), "upper": _rounded(r.upper), "votes": r.votes}
              for name, table in tables.items() for r in table.ratings]  # fmt: skip
    y = {"type": "quantitative", "scale": {"domain": domain, "zero": False},
         "title": t("leaderboard.col.rating")}  # fmt: skip
    spec = {
        "$schema": VEGA_LITE,
        "title": title,
        "height": PLOT_HEIGHT,
        "width": PLOT_WIDTH,
        "data": {"values": values},
        "encoding": {
            "x": {"field": "field", "type": "nominal", "sort": [_field(f) for f in tables],
                  "title": None, "axis": {"labelAngle": 0}},
            "xOffset": {"field": "variant", "type": "nominal"},
            "color": {"field": "variant", "type": "nominal",
                      "title": t("leaderboard.col.variant")},
        },
        "layer": [
            {"mark": {"type": "rule", "strokeWidth": 2},
             "encoding": {"y": {"field": "lower", **y}, "y2": {"field": "upper"}}},
            {"mark": {"type": "point", "filled": True, "size": 70},
             "encoding": {"y": {"field": "rating", **y},
                          "tooltip": [{"field": f, "title": t(f"leaderboard.col.{c}")}
                                      for f, c in (("variant", "variant"), ("rating", "rating"),
                                                   ("lower", "lower"), ("upper", "upper"),
                                                   ("votes", "votes"))]}},
        ],
    }  # fmt: skip
    return PlotData(type="altair", plot=json.dumps(spec, ensure_ascii=False))


def win_plot(board: Leaderboard, name: str) -> PlotData:
    """The win-rate matrix on `name` as a heatmap: the row's share of wins against the column."""
    rates = board.win_rates[name]
    values = [{"row": a, "column": b, "rate": rate, "games": rates.games[i][j]}
              for i, a in enumerate(rates.variants) for j, b in enumerate(rates.variants)
              if (rate := rates.rates[i][j]) is not None]  # fmt: skip
    nominal = {"type": "nominal", "sort": rates.variants}
    spec = {
        "$schema": VEGA_LITE,
        "title": f"{t('leaderboard.col.win_rate')}: {_field(name)}",
        "height": PLOT_HEIGHT,
        "width": PLOT_WIDTH,
        "data": {"values": values},
        "encoding": {
            "x": {"field": "column", **nominal, "title": t("leaderboard.col.opponent"),
                  "axis": {"labelAngle": 0}},
            "y": {"field": "row", **nominal, "title": t("leaderboard.col.variant")},
        },
        "layer": [
            {"mark": "rect",
             "encoding": {"color": {"field": "rate", "type": "quantitative",
                                    "scale": {"domain": [0, 1], "scheme": "blueorange"},
                                    "title": t("leaderboard.col.win_rate")},
                          "tooltip": [{"field": "rate", "format": ".0%",
                                       "title": t("leaderboard.col.win_rate")},
                                      {"field": "games", "title": t("leaderboard.col.games")}]}},
            {"mark": {"type": "text"},
             "encoding": {"text": {"field": "rate", "type": "quantitative", "format": ".0%"}}},
        ],
    }  # fmt: skip
    return PlotData(type="altair", plot=json.dumps(spec, ensure_ascii=False))


# --- tables ----------------------------------------------------------------------------------


def _columns(*keys: str) -> list[str]:
    return [t(f"leaderboard.col.{k}") for k in keys]


def ratings_table(board: Leaderboard) -> pd.DataFrame:
    """Every field's ratings, raw and style-controlled side by side, best first."""
    rows = []
    for name, raw in board.raw.items():
        style = {r.variant_id: r for r in board.style[name].ratings} if name in board.style else {}
        for rank, r in enumerate(raw.ratings, 1):
            s = style.get(r.variant_id)
            rows.append([_field(name), rank, r.variant, _rounded(r.rating), _rounded(r.lower),
                         _rounded(r.upper), _rounded(s.rating if s else None),
                         _rounded(s.lower if s else None), _rounded(s.upper if s else None),
                         r.votes])  # fmt: skip
    return pd.DataFrame(rows, columns=_columns("field", "rank", "variant", "rating", "lower",
                                               "upper", "style_rating", "style_lower",
                                               "style_upper", "votes"))  # fmt: skip


def win_table(board: Leaderboard, name: str) -> pd.DataFrame:
    rates = board.win_rates[name]
    rows = [[a, *("" if r is None else f"{r:.0%} ({rates.games[i][j]})"
                  for j, r in enumerate(rates.rates[i]))]
            for i, a in enumerate(rates.variants)]  # fmt: skip
    return pd.DataFrame(rows, columns=[t("leaderboard.col.variant"), *rates.variants])


def annotators_table(board: Leaderboard, names: dict[int, str]) -> pd.DataFrame:
    rows = [[names.get(a.voter_id, str(a.voter_id)), a.votes, a.overall_a, a.overall_b,
             a.overall_tie, a.overall_both_bad, a.flagged] for a in board.annotators.rows]  # fmt: skip
    return pd.DataFrame(rows, columns=_columns("annotator", "votes", "overall_a", "overall_b",
                                               "overall_tie", "overall_both_bad", "flagged"))  # fmt: skip


def agreement_table(board: Leaderboard) -> pd.DataFrame:
    rows = [[_field(a.field), a.turns, a.pairs, "" if a.agreement is None else f"{a.agreement:.0%}"]
            for a in board.agreement.rows]  # fmt: skip
    return pd.DataFrame(rows, columns=_columns("field", "turns", "pairs", "agreement"))


def flags_table(board: Leaderboard, names: dict[int, str]) -> pd.DataFrame:
    rows = [[f.vote_id, f.turn_id, names.get(f.voter_id, str(f.voter_id)),
             t(f"leaderboard.reason.{f.reason}"), f.detail] for f in board.flags.rows]  # fmt: skip
    return pd.DataFrame(rows, columns=_columns("vote", "turn", "annotator", "reason", "detail"))


def write_csvs(board: Leaderboard, folder: Path, *, per_annotator: bool) -> list[Path]:
    """The tables as CSV files (machine-readable English headers, as `pulsemind leaderboard
    --csv` writes them); the per-annotator ones only when `per_annotator`."""
    paths = [tbl.to_csv(folder / f"ratings_{name}.csv") for name, tbl in board.raw.items()]
    paths += [tbl.to_csv(folder / f"ratings_{name}_style.csv") for name, tbl in board.style.items()]
    paths += [tbl.to_csv(folder / f"win_rates_{name}.csv") for name, tbl in board.win_rates.items()]
    if per_annotator:
        paths += [board.annotators.to_csv(folder / "annotators.csv"),
                  board.agreement.to_csv(folder / "agreement.csv"),
                  board.flags.to_csv(folder / "quality_flags.csv")]  # fmt: skip
    return paths


class EmptyBoard:
    """The per-annotator tables with no rows (what an annotator, or an empty board, gets)."""

    @property
    def annotators(self) -> pd.DataFrame:
        return pd.DataFrame([], columns=_columns("annotator", "votes", "overall_a", "overall_b",
                                                 "overall_tie", "overall_both_bad", "flagged"))

    @property
    def agreement(self) -> pd.DataFrame:
        return pd.DataFrame([], columns=_columns("field", "turns", "pairs", "agreement"))

    @property
    def flags(self) -> pd.DataFrame:
        return pd.DataFrame([], columns=_columns("vote", "turn", "annotator", "reason", "detail"))


def _domain(tables: Sequence[RatingTable]) -> list[float]:
    """One y scale for both plots, so raw and style-controlled ratings compare by eye."""
    values = [v for table in tables for r in table.ratings
              for v in (r.rating, r.lower, r.upper) if v is not None]  # fmt: skip
    return [round(min(values) - 10), round(max(values) + 10)]


class LeaderboardHandlers:
    """The tab's use case as a plain method `(user, field) -> outputs` (`OUTPUTS`)."""

    def __init__(self, db: Database, downloads: Downloads,
                 config: LeaderboardConfig | None = None):  # fmt: skip
        self.db, self.downloads = db, downloads
        self.config = config or LeaderboardConfig()

    def show_leaderboard(self, user: UserRecord, field: str | None):
        if field is None or field == "":
            field = "overall"
        if field not in FIELDS:
            raise InvalidInput("leaderboard field", user_message=t("leaderboard.bad_field"))
        admin = user.role is UserRole.ADMIN
        # storage decides what each role reads (an annotator: voters pseudonymous); the
        # per-annotator tables below are an admin's only
        rows = leaderboard_rows(self.db, user_id=user.id)
        empty = EmptyBoard()
        private = [empty.annotators, empty.agreement, empty.flags]
        if not rows:
            return (t("leaderboard.empty"), None, None, None, None, None, *private, None)
        fields = _fields_with_votes(rows)
        try:
            board = build_leaderboard(rows, self.config, fields=fields)
        except LeaderboardError as exc:
            return (t("leaderboard.not_rated", reason=str(exc)), None, None, None, None, None,
                    *private, None)  # fmt: skip
        if field not in board.win_rates:
            field = "overall"
        domain = _domain([*board.raw.values(), *board.style.values()])
        raw = ratings_plot(board.raw, t("leaderboard.fit.raw"), domain)
        style = ratings_plot(board.style, t("leaderboard.fit.style"), domain) if board.style else None
        variants = {v for r in rows for v in (r.variant_a_id, r.variant_b_id)}
        if admin:
            names = {u.id: u.username for u in list_users(self.db)}
            status = t("leaderboard.summary", votes=len(rows), variants=len(variants),
                       flags=len(board.flags.rows))  # fmt: skip
            private = [annotators_table(board, names), agreement_table(board),
                       flags_table(board, names)]  # fmt: skip
        else:
            status = t("leaderboard.summary_annotator", votes=len(rows), variants=len(variants))
        csvs = self.downloads.offer(user, write_csvs(board, self.downloads.folder(),
                                                     per_annotator=admin))  # fmt: skip
        return (status, raw, style, ratings_table(board), win_plot(board, field),
                win_table(board, field), *private, csvs)


def build_leaderboard_tab(db: Database, auth: Auth, tab: gr.Tab, downloads: Downloads,
                          concurrency: int = 4) -> gr.Column:  # fmt: skip
    """Lay out the Leaderboard tab (inside `tab`) and wire it: computed when the tab is opened,
    on Refresh, and when the win-rate field changes. Returns the column of per-annotator
    tables, which the page shows to admins (an annotator's are empty whether shown or not)."""
    h = LeaderboardHandlers(db, downloads)
    gr.Markdown(i18n("leaderboard.intro"))
    with gr.Row(equal_height=True):
        field = gr.Dropdown(label=i18n("leaderboard.win_field"), choices=FIELD_CHOICES,
                            value="overall", allow_custom_value=True)  # fmt: skip
        refresh = gr.Button(i18n("leaderboard.refresh"), scale=0)
    status = gr.Markdown(elem_id="leaderboard-status")
    with gr.Row():
        raw_plot = gr.Plot(label=i18n("leaderboard.raw_plot"))
        style_plot = gr.Plot(label=i18n("leaderboard.style_plot"))
    ratings = gr.Dataframe(label=i18n("leaderboard.ratings"), interactive=False, wrap=True)
    with gr.Row():
        heatmap = gr.Plot(label=i18n("leaderboard.win_plot"))
        wins = gr.Dataframe(label=i18n("leaderboard.win_table"), interactive=False, wrap=True)
    with gr.Column(visible=False) as admin_only:
        annotators = gr.Dataframe(label=i18n("leaderboard.annotators"), interactive=False)
        agreement = gr.Dataframe(label=i18n("leaderboard.agreement"), interactive=False)
        flags = gr.Dataframe(label=i18n("leaderboard.flags"), interactive=False, wrap=True)
    csv = gr.File(label=i18n("leaderboard.csv"), file_count="multiple", interactive=False)

    outputs = [status, raw_plot, style_plot, ratings, heatmap, wins, annotators, agreement, flags,
               csv]  # fmt: skip
    show = auth.guard(*ROLES)(h.show_leaderboard)
    refresh.click(show, [field], outputs, api_name="leaderboard", concurrency_limit=concurrency)
    private = {"api_visibility": "private", "concurrency_limit": concurrency}
    tab.select(show, [field], outputs, **private)
    field.input(show, [field], outputs, **private)
    return admin_only
