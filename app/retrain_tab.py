"""Retrain tab (admins): start SFT or CRPO on the logged data, watch it, get a new variant.

The form picks the data (an export, or everything logged since the last run), the base
variant and the method; Start queues the run and starts its own process (`app.retrain`), so
closing the browser or restarting the app does not stop it. The runs table and the picked
run's progress bar and curves (loss, reward per dimension, learning rate) refresh every few
seconds while the tab is open; a failed run says why; an interrupted run (its process went
away) can be resumed from its last checkpoint. A run that succeeds registers its adapter as a
variant whose parent is the base: Compare draws it against its parent from then on.

Handlers are plain methods `(user, *inputs)` wrapped by `Auth.guard(UserRole.ADMIN)`; the
form's own endpoints (`/retrain_start`, `/retrain_runs`, `/retrain_run`, `/retrain_resume`)
serve programs with the same checks. Refusals are shown in place (the status line), with the
form kept as typed.
"""

from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from app.auth import Auth
from app.edge import optional_id, parse_id
from app.i18n import error_text, i18n, t
from app.retrain import Retrain, RetrainSpec
from model.errors import PulseMindError
from storage import Database, UserRecord, UserRole, get_variant, list_active_variants
from storage.runs import RunRecord, get_run, metrics_of

#: Curves drawn in the main plot; the learning rate has its own (another scale).
LEARNING_RATE = "learning_rate"
#: Refresh period of the runs table and the picked run while the tab is open (seconds).
REFRESH_S = 3.0
RUN_COLUMNS = ["id", "kind", "base", "status", "step", "started", "variant", "error"]


def _step(curves: dict) -> int:
    return max((p.step for points in curves.values() for p in points), default=0)


def _total(run: RunRecord) -> int:
    return int(run.config.get("steps") or 0)


def _when(value) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value else ""


class RetrainHandlers:
    """The Retrain tab's use cases as plain methods (tests call them directly)."""

    def __init__(self, db: Database, retrain: Retrain):
        self.db, self.retrain = db, retrain

    def form(self, user: UserRecord):
        """Choices of the form: served active variants, exports (newest first)."""
        bases = [v.name for v in list_active_variants(self.db) if not v.embedded]
        data = [(t("retrain.data.since_last"), ""), *[(name, name) for name in self.retrain.exports()]]
        return (gr.update(choices=bases, value=bases[0] if bases else None),
                gr.update(choices=data, value=""))  # fmt: skip

    def runs(self, user: UserRecord) -> pd.DataFrame:
        """The runs, newest first (step = the last step with metrics)."""
        rows = []
        names = {}
        for run in self.retrain.runs():
            curves = metrics_of(self.db, run.id)
            for vid in (run.base_variant_id, run.variant_id):
                if vid is not None and vid not in names:
                    names[vid] = get_variant(self.db, vid).name
            rows.append([run.id, run.kind.value, names.get(run.base_variant_id, ""),
                         t(f"retrain.status.{run.status.value}"),
                         f"{_step(curves)}/{_total(run)}", _when(run.started_at),
                         names.get(run.variant_id, ""), run.error or ""])  # fmt: skip
        return pd.DataFrame(rows, columns=[t(f"retrain.column.{c}") for c in RUN_COLUMNS])

    def start(self, user: UserRecord, kind: str, base: str | None, data: str | None,
              steps: float | None, judge_url: str | None, judge_model: str | None,
              generations: float | None, counterparts: float | None):  # fmt: skip
        """Start a run; the status line says which (or why not), the table shows it."""
        try:
            spec = RetrainSpec(kind=kind, base=base or "", data=data or None,
                               steps=_whole(steps), judge_url=(judge_url or "").strip() or None,
                               judge_model=(judge_model or "").strip() or None,
                               num_generations=_whole(generations),
                               counterparts=_whole(counterparts))  # fmt: skip
            run = self.retrain.start(user, spec)
        except PulseMindError as exc:
            return f"⚠️ {error_text(exc, exc.user_message)}", gr.skip(), gr.skip()
        return t("retrain.started", id=run.id), self.runs(user), run.id

    def show(self, user: UserRecord, run_id: int | None):
        """The picked run: progress bar, curves, what happened; Resume if it was interrupted."""
        rid = optional_id(run_id, "run")
        if rid is None:
            return "", None, None, "", gr.update(visible=False)
        run = get_run(self.db, rid)
        curves = metrics_of(self.db, rid)
        step, total = _step(curves), _total(run)
        label = html.escape(t("retrain.progress", step=step, total=total,
                              status=t(f"retrain.status.{run.status.value}")))  # fmt: skip
        bar = (f'<label class="retrain-progress">{label}'
               f'<progress value="{step}" max="{max(total, 1)}"></progress></label>')  # fmt: skip
        main = [(p.step, p.value, name) for name, points in curves.items()
                if name != LEARNING_RATE for p in points if p.value is not None]  # fmt: skip
        lr = [(p.step, p.value, LEARNING_RATE) for p in curves.get(LEARNING_RATE, [])
              if p.value is not None]  # fmt: skip
        frame = lambda rows: pd.DataFrame(rows, columns=["step", "value", "metric"])  # noqa: E731
        detail = f"⚠️ {run.error}" if run.error else ""
        if run.variant_id is not None:
            detail = t("retrain.registered", name=get_variant(self.db, run.variant_id).name)
        return (bar, frame(main), frame(lr), detail,
                gr.update(visible=run.status.value == "interrupted"))  # fmt: skip

    def resume(self, user: UserRecord, run_id: int | None):
        try:
            run = self.retrain.resume(user, parse_id(run_id, "run"))
        except PulseMindError as exc:
            return f"⚠️ {error_text(exc, exc.user_message)}", gr.skip()
        return t("retrain.resumed", id=run.id), self.runs(user)

    # --- for programs: plain values ------------------------------------------------------

    def run_status(self, user: UserRecord, run_id: int) -> dict:
        """A run as programs see it: status, step of total, metrics' last values, variant."""
        run = get_run(self.db, parse_id(run_id, "run"))
        curves = metrics_of(self.db, run.id)
        last = {name: points[-1].value for name, points in curves.items() if points}
        variant = get_variant(self.db, run.variant_id).name if run.variant_id else None
        return {"id": run.id, "kind": run.kind.value, "status": run.status.value,
                "step": _step(curves), "steps": _total(run), "metrics": last,
                "variant": variant, "error": run.error}  # fmt: skip


def _picked_row(evt: gr.SelectData):
    """A click on the runs table picks that row's run."""
    row = evt.row_value or []
    return row[0] if row else gr.skip()


def _whole(value: float | None) -> int:
    """A number box's value as an int (the form's bounds are checked by `Retrain`)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return -1
    return int(value) if float(value).is_integer() else -1


def build_retrain_tab(db: Database, auth: Auth, retrain: Retrain, tab: gr.Tab) -> None:
    guard = auth.guard(UserRole.ADMIN)
    h = RetrainHandlers(db, retrain)
    private = {"api_visibility": "private"}

    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            kind = gr.Radio([("SFT", "sft"), ("CRPO", "crpo")], value="sft",
                            label=i18n("retrain.kind"))  # fmt: skip
            base = gr.Dropdown(label=i18n("retrain.base"), choices=[], allow_custom_value=True)
            data = gr.Dropdown(label=i18n("retrain.data"), choices=[], allow_custom_value=True)
            steps = gr.Number(label=i18n("retrain.steps"), value=50, precision=0)
            with gr.Group(visible=False) as crpo_box:
                judge_url = gr.Textbox(label=i18n("retrain.judge_url"), max_lines=1,
                                       placeholder="http://127.0.0.1:8000/v1")  # fmt: skip
                judge_model = gr.Textbox(label=i18n("retrain.judge_model"), max_lines=1)
                generations = gr.Number(label=i18n("retrain.generations"), value=4, precision=0)
                counterparts = gr.Number(label=i18n("retrain.counterparts"), value=2, precision=0)
            start_btn = gr.Button(i18n("retrain.start"), variant="primary")
            status = gr.Markdown(elem_id="retrain-status")
        with gr.Column(scale=2):
            runs = gr.Dataframe(headers=RUN_COLUMNS, label=i18n("retrain.runs"),
                                interactive=False, wrap=True)  # fmt: skip
            picked = gr.Number(label=i18n("retrain.run"), precision=0, value=None)
            progress = gr.HTML(elem_id="retrain-progress")
            detail = gr.Markdown()
            resume_btn = gr.Button(i18n("retrain.resume"), visible=False)
            curves = gr.LinePlot(x="step", y="value", color="metric",
                                 label=i18n("retrain.curves"), height=260)  # fmt: skip
            lr = gr.LinePlot(x="step", y="value", color="metric",
                             label=i18n("retrain.learning_rate"), height=180)  # fmt: skip
    timer = gr.Timer(REFRESH_S, active=False)

    shown = [progress, curves, lr, detail, resume_btn]
    opened = tab.select(guard(h.form), None, [base, data], **private)
    opened.then(guard(h.runs), None, runs, api_name="retrain_runs")
    opened.then(lambda: gr.Timer(active=True), None, timer, **private)
    kind.change(lambda k: gr.update(visible=k == "crpo"), kind, crpo_box, **private)
    started = start_btn.click(guard(h.start), [kind, base, data, steps, judge_url, judge_model,
                                               generations, counterparts], [status, runs, picked],
                              api_name="retrain_start")  # fmt: skip
    started.then(guard(h.show), picked, shown, **private)
    picked.change(guard(h.show), picked, shown, **private)
    runs.select(_picked_row, None, picked, **private)
    resumed = resume_btn.click(guard(h.resume), picked, [status, runs], api_name="retrain_resume")
    resumed.then(guard(h.show), picked, shown, **private)
    tick = timer.tick(guard(h.runs), None, runs, **private)
    tick.then(guard(h.show), picked, shown, **private)
    gr.api(guard(h.run_status), api_name="retrain_run")
