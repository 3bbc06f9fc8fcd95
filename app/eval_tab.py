"""Benchmark tab (admins): the PulseMind Benchmark's runs and the judge's agreement with clinicians.

Runs are made by `pulsemind eval run` / `pulsemind eval agreement` (training/eval.py,
training/eval_agreement.py) and stored in SQL; this tab lists them (newest first) and shows
the picked one as `training.eval.eval_report` renders it: the markdown table of win / tie /
loss rates with 95% intervals per dimension, overall and per category (or agreement per
dimension, relative vs absolute), its plot, and the rows as a CSV only the admin who asked can
download (`app.downloads`). A run that is still going or failed says so, with its error.
"""

from __future__ import annotations

import csv

import gradio as gr

from app.auth import Auth
from app.downloads import Downloads
from app.edge import optional_id
from app.i18n import i18n, t
from storage import Database, UserRecord, UserRole, list_eval_runs
from storage.evals import EvalRunRecord


def _label(run: EvalRunRecord) -> str:
    when = f"{run.created_at:%Y-%m-%d %H:%M}"
    return (f"#{run.id} · {t(f'eval.kind.{run.kind.value}')} · "
            f"{t(f'retrain.status.{run.status.value}')} · {when}")


class EvalHandlers:
    """The tab's use cases as plain methods (tests call them directly)."""

    def __init__(self, db: Database, downloads: Downloads):
        self.db, self.downloads = db, downloads

    def runs(self, user: UserRecord):
        runs = list_eval_runs(self.db, user_id=user.id)
        choices = [(_label(r), r.id) for r in runs]
        return gr.update(choices=choices, value=choices[0][1] if choices else None), (
            "" if runs else t("eval.none"))  # fmt: skip

    def show(self, user: UserRecord, run_id: int | None):
        """The run's report: markdown, plot, CSV (admins only: storage checks)."""
        from training.eval import eval_report

        rid = optional_id(run_id, "run")
        if rid is None:
            return "", None, None
        folder = self.downloads.folder()
        markdown, png, rows = eval_report(self.db, rid, user_id=user.id,
                                          plot_path=folder / f"eval-{rid}.png")  # fmt: skip
        files = [png] if png and png.exists() else []
        csv_path = None
        if rows:
            csv_path = folder / f"eval-{rid}.csv"
            with csv_path.open("w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)
            files.append(csv_path)
        offered = self.downloads.offer(user, files)
        plot = offered[0] if png and png.exists() else None
        return markdown, plot, (offered[-1] if csv_path else None)


def build_eval_tab(db: Database, auth: Auth, tab: gr.Tab, downloads: Downloads) -> None:
    guard = auth.guard(UserRole.ADMIN)
    h = EvalHandlers(db, downloads)
    with gr.Row():
        run = gr.Dropdown(label=i18n("eval.run"), choices=[], allow_custom_value=True, scale=3)
        refresh = gr.Button(i18n("eval.refresh"), scale=0, min_width=120)
    empty = gr.Markdown()
    report = gr.Markdown(elem_id="eval-report")
    plot = gr.Image(label=i18n("eval.plot"), type="filepath", interactive=False)
    table = gr.File(label=i18n("eval.csv"), interactive=False)
    private = {"api_visibility": "private"}
    opened = tab.select(guard(h.runs), None, [run, empty], **private)
    refreshed = refresh.click(guard(h.runs), None, [run, empty], api_name="eval_runs")
    for ev in (opened, refreshed):
        ev.then(guard(h.show), run, [report, plot, table], **private)
    run.input(guard(h.show), run, [report, plot, table], api_name="eval_report")
