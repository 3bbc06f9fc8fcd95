"""Retrain, the closed loop, free of UI code: logged data -> SFT or CRPO -> a new variant in Compare.

The Admin tab and the tests drive it through `Retrain`:

    retrain = Retrain(db, database_url, data_dir)
    run = retrain.start(admin, RetrainSpec("sft", base="tiny", steps=20))   # data: since last run
    retrain.resume(admin, run.id)          # an interrupted run, from its last checkpoint
    retrain.recover()                      # at app start: runs whose process is gone

A run is its own process, `python -m app.retrain RUN_ID [--resume]`, started in a new session
so it outlives the browser tab that asked for it and the app itself. The launcher marks it
running with the child's pid at once (a child that dies while importing is then found dead by
`recover`, never left queued); the child:

1. makes its data: an export the admin picked (a folder under `<data dir>/exports`, by name:
   no other server path is accepted), or "everything since the last run": `training.export`
   of the votes, consultations and cases logged since the last successful run started (all,
   before the first), written into the run folder — an empty one fails the run, clearly;
2. trains with `training.sft` / `training.crpo` (TRL), recording metrics and checkpoints on
   the run's row as it goes (`training.common.RunRecorder`);
3. registers the adapter as a new variant `<base>-<kind>-<run id>` whose parent is the base
   (`app.variants.add_variant`: loaded into the running vLLM server first, nothing registered
   if that fails) — Compare then draws it against its parent more often (`app.compare`) — and
   only then marks the run succeeded with the variant. Any failure marks the run failed with a
   sentence an admin can act on; the existing variants keep serving throughout.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass
from datetime import UTC
from pathlib import Path

from loguru import logger

from storage import (
    Database,
    InvalidInput,
    NotFound,
    UserRecord,
    get_variant_by_name,
)
from storage.i18n import bilingual
from storage.models import RunStatus
from storage.runs import (
    RunRecord,
    create_run,
    get_run,
    list_runs,
    mark_failed,
    mark_finished,
    mark_interrupted_if_dead,
    mark_running,
)

REPO = Path(__file__).resolve().parents[1]
KINDS = ("sft", "crpo")
#: Export names the admin may pick: folders under `<data dir>/exports`, one or two levels down
#: (the Admin tab's export button writes `YYYY-MM-DD/KIND-HHMMSS-XXXXXX`); no "..", no other path.
EXPORT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,127})?$")
#: Settings a run takes from the admin, with their bounds (anything else is refused).
LIMITS = {"steps": (1, 100_000), "num_generations": (2, 64), "counterparts": (1, 16)}

MESSAGES = {
    "kind": {"en": "Choose SFT or CRPO.", "zh-CN": "请选择 SFT 或 CRPO。"},
    "base": {
        "en": "Choose an active model variant served by a vLLM server as the base.",
        "zh-CN": "请选择一个由 vLLM 服务器提供、已启用的模型版本作为基础模型。",
    },
    "export": {
        "en": "There is no export named {name!r}; make one with the Export button first.",
        "zh-CN": "不存在名为 {name!r} 的导出数据，请先用“导出”按钮生成。",
    },
    "judge": {
        "en": "CRPO needs a judge: give its server URL (http://host:port/v1) and model name.",
        "zh-CN": "CRPO 需要评判模型：请填写其服务器地址（http://host:port/v1）和模型名称。",
    },
    "setting": {
        "en": "{name} must be a whole number from {low} to {high}.",
        "zh-CN": "{name} 必须是 {low} 到 {high} 之间的整数。",
    },
    "not_interrupted": {
        "en": "Only an interrupted run can be resumed (this one is {status}).",
        "zh-CN": "只有被中断的训练才能继续（此训练状态为 {status}）。",
    },
    "no_data": {
        "en": "There is nothing new to train on since the last run: no votes, consultations or "
        "cases were logged since it started.",
        "zh-CN": "自上次训练以来没有新的训练数据：此后没有记录新的投票、会诊或病例。",
    },
}


def _say(key: str, **fields: object) -> str:
    return bilingual(MESSAGES[key], **fields)


@dataclass(frozen=True)
class RetrainSpec:
    """What an admin asks for (the Admin tab's form)."""

    kind: str
    """sft | crpo"""
    base: str
    """The base variant's name (SFT: trained from; CRPO: the policy)."""
    data: str | None = None
    """An export's folder name under `<data dir>/exports`; None: everything since the last run."""
    steps: int = 50
    judge_url: str | None = None
    judge_model: str | None = None
    num_generations: int = 4
    counterparts: int = 2


class Retrain:
    """Start, resume and recover training runs over one database."""

    def __init__(self, db: Database, database_url: str, data_dir: str | Path):
        self.db, self.database_url = db, database_url
        self.data_dir = Path(data_dir)
        self.exports_dir = self.data_dir / "exports"
        self.runs_dir = self.data_dir / "runs"

    # --- what the admin does ---------------------------------------------------------------

    def exports(self) -> list[str]:
        """Export folders an admin may train on, newest first."""
        found = [info.parent for pattern in ("*/dataset_info.json", "*/*/dataset_info.json")
                 for info in self.exports_dir.glob(pattern)]  # fmt: skip
        names = [(p.stat().st_mtime, p.relative_to(self.exports_dir).as_posix()) for p in found]
        return [name for _, name in sorted(names, reverse=True) if EXPORT_NAME.match(name)]

    def start(self, admin: UserRecord, spec: RetrainSpec) -> RunRecord:
        """Check the request, queue the run and start its process."""
        config = self._checked(spec)
        base = get_variant_by_name(self.db, spec.base)
        data_path = str(self.exports_dir / spec.data) if spec.data else None
        run = create_run(self.db, spec.kind, config, base_variant_id=base.id, data_path=data_path,
                         created_by=admin.id)  # fmt: skip
        return self._launch(run.id, resume=False)

    def resume(self, admin: UserRecord, run_id: int) -> RunRecord:
        """Start an interrupted run's process again, from its last checkpoint."""
        from storage.access import may_train

        with self.db.transaction(write=False) as session:
            may_train(session, admin.id)
        run = get_run(self.db, run_id)
        if run.status is not RunStatus.INTERRUPTED:
            raise InvalidInput(f"run {run_id} is {run.status.value}",
                               user_message=_say("not_interrupted", status=run.status.value))  # fmt: skip
        return self._launch(run.id, resume=True)

    def recover(self) -> list[RunRecord]:
        """Runs on this machine whose process is gone become interrupted (app start)."""
        return mark_interrupted_if_dead(self.db)

    def runs(self, limit: int = 50) -> list[RunRecord]:
        return list_runs(self.db, limit=limit)

    # --- inside --------------------------------------------------------------------------

    def _checked(self, spec: RetrainSpec) -> dict:
        if spec.kind not in KINDS:
            raise InvalidInput(f"kind {spec.kind!r}", user_message=_say("kind"))
        base = get_variant_by_name(self.db, spec.base or "")
        if base is None or not base.active or base.embedded:
            raise InvalidInput(f"base {spec.base!r} not a served active variant", user_message=_say("base"))
        if spec.data is not None and (not EXPORT_NAME.match(spec.data)
                                      or not (self.exports_dir / spec.data).is_dir()):  # fmt: skip
            raise NotFound(f"export {spec.data!r}", user_message=_say("export", name=spec.data))
        for name, (low, high) in LIMITS.items():
            value = getattr(spec, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidInput(f"{name}={value!r}",
                                   user_message=_say("setting", name=name, low=low, high=high))  # fmt: skip
        if spec.kind == "crpo" and not (spec.judge_url and spec.judge_model):
            raise InvalidInput("crpo without a judge", user_message=_say("judge"))
        if spec.judge_url and not re.match(r"^https?://", spec.judge_url):
            raise InvalidInput("judge url", user_message=_say("judge"))
        return asdict(spec)

    def _launch(self, run_id: int, *, resume: bool) -> RunRecord:
        folder = self.runs_dir / str(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "app.retrain", str(run_id),
                   "--database-url", self.database_url, "--data-dir", str(self.data_dir)]  # fmt: skip
        if resume:
            command.append("--resume")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}  # fmt: skip
        with (folder / "train.log").open("ab") as log:
            proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)  # fmt: skip
        # reap it when it ends (else a zombie while the app runs); it outlives the app anyway
        threading.Thread(target=proc.wait, daemon=True, name=f"run-{run_id}").start()
        logger.info("training run id={} started: pid {}{}", run_id, proc.pid,
                    " (resumed)" if resume else "")  # fmt: skip
        return mark_running(self.db, run_id, proc.pid)


# --- the run's own process ----------------------------------------------------------------


def _data_since_last_run(db: Database, run: RunRecord, kind: str, base: str, out: Path) -> Path:
    """Export what was logged since the last successful run started (everything before the
    first) into the run folder; kept for a resumed run."""
    from training.export import ExportConfig, NothingToExport, export_dataset

    folder = out / "data"
    if (folder / "dataset_info.json").exists():
        return folder
    earlier = [r for r in list_runs(db, status="succeeded", limit=1000) if r.id != run.id]
    since = max((r.created_at for r in earlier), default=None)
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    try:
        export_dataset(db, ExportConfig(kind=kind, out=folder, since=since,
                                        policy=base if kind == "crpo" else None))  # fmt: skip
    except NothingToExport:
        raise InvalidInput("no rows since the last run", user_message=_say("no_data")) from None
    return folder


def run_job(db: Database, run_id: int, data_dir: Path, *, resume: bool) -> int:
    """Train run `run_id` as its config says, register the adapter, mark the run succeeded."""
    from app.variants import VariantSpec, add_variant
    from storage import get_variant
    from training.common import RunRecorder, run_recorded

    run = get_run(db, run_id)
    spec = RetrainSpec(**run.config)
    out = data_dir / "runs" / str(run_id)
    recorder = RunRecorder(db, run_id)
    try:
        base = get_variant(db, run.base_variant_id)
        data = Path(run.data_path) if run.data_path else _data_since_last_run(db, run, spec.kind,
                                                                              base.name, out)  # fmt: skip
        if spec.kind == "sft":
            from training.sft import SFTConfig, train_sft

            config = SFTConfig(data=data, base=base.name, out=out / "train", steps=spec.steps,
                               resume=resume, save_steps=max(1, spec.steps // 4), progress=False)  # fmt: skip
            result = run_recorded(train_sft, recorder, config=config, db=db)
        else:
            from training.crpo import CRPOConfig, train_crpo

            config = CRPOConfig(data=data, policy=base.name, out=out / "train",
                                judge_url=spec.judge_url, judge_model=spec.judge_model,
                                num_generations=spec.num_generations,
                                counterparts=spec.counterparts, steps=spec.steps, resume=resume,
                                save_steps=max(1, spec.steps // 4), progress=False)  # fmt: skip
            result = run_recorded(train_crpo, recorder, config=config, db=db)
        name = f"{base.name}-{spec.kind}-{run_id}"
        variant = add_variant(db, VariantSpec(
            name=name, endpoint=base.endpoint, served_model_name=name,
            adapter_path=str(result.adapter_dir), parent=base.name,
            sampling=dict(base.sampling_defaults or {}),
            notes=f"trained by run {run_id} ({spec.kind})"))  # fmt: skip
    except Exception as exc:
        if get_run(db, run_id).status is RunStatus.RUNNING:  # the trainer may have marked it
            mark_failed(db, run_id, getattr(exc, "user_message", None) or "Training failed; "
                        "see the run's log.")  # fmt: skip
        logger.opt(exception=exc).error("training run id={} failed", run_id)
        return 1
    mark_finished(db, run_id, output_dir=str(result.adapter_dir), variant_id=variant.id)
    logger.info("training run id={} succeeded: variant {} (id {})", run_id, variant.name, variant.id)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.retrain", description="one training run")
    p.add_argument("run_id", type=int)
    p.add_argument("--database-url", required=True)
    p.add_argument("--data-dir", required=True, type=Path)
    p.add_argument("--resume", action="store_true")
    args = p.parse_args(argv)
    with Database(args.database_url) as db:
        return run_job(db, args.run_id, args.data_dir, resume=args.resume)


if __name__ == "__main__":
    raise SystemExit(main())
