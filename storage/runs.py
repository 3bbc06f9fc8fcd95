"""Training runs as rows: what an SFT or CRPO run trains from, its process, its live metrics.

Why rows: a run is a background process that outlives the browser tab that started it; the
Admin tab (and `pulsemind` commands) read its status and curves from here, and when the app
restarts, `mark_interrupted_if_dead` finds runs whose process is gone so they can be resumed
from their last checkpoint.

    run = create_run(db, "sft", {"steps": 500}, base_variant_id=base.id, data_path="exports/sft",
                     created_by=admin.id)                    # queued
    mark_running(db, run.id, os.getpid())                   # in the training process
    add_metrics(db, run.id, step=10, metrics={"loss": 1.9, "learning_rate": 2e-4})
    set_checkpoint(db, run.id, "runs/1/checkpoint-10")
    mark_finished(db, run.id, output_dir="runs/1/adapter", variant_id=new_variant.id)
    mark_failed(db, run.id, "the judge endpoint is down")   # or this
    metrics_of(db, run.id)["loss"]                           # [MetricPoint(step, value, at), ...]

Status: queued -> running -> succeeded | failed; running -> interrupted (its process went
away) -> running again (resumed) or failed. Other moves are a `Conflict`. Only admins start
runs (`storage.access.may_train`); the training process itself acts without a user.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from loguru import logger
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.access import may_train
from storage.checks import as_enum, bounded_text, json_object
from storage.db import Database
from storage.errors import Conflict, InvalidInput, NotFound
from storage.models import (
    ERROR_LENGTH,
    HOST_LENGTH,
    METRIC_NAME_LENGTH,
    PATH_LENGTH,
    ModelVariant,
    RunKind,
    RunStatus,
    TrainingMetric,
    TrainingRun,
    utcnow,
)
from storage.records import from_row

#: A run's settings are a few dozen values.
MAX_CONFIG_CHARS = 100_000
#: The ids an export was made from (votes, messages, ...): many, but not unbounded.
MAX_DATA_IDS_CHARS = 5_000_000
#: A process that started this long after the run says it started is another process that
#: got the same pid (pids are reused); the slack covers clock granularity.
PID_REUSE_SLACK_S = 2.0

#: Where a run may go from each status (see the module docstring).
TRANSITIONS: dict[RunStatus, tuple[RunStatus, ...]] = {
    RunStatus.QUEUED: (RunStatus.RUNNING, RunStatus.FAILED),
    RunStatus.RUNNING: (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.INTERRUPTED),
    RunStatus.INTERRUPTED: (RunStatus.RUNNING, RunStatus.FAILED),
    RunStatus.SUCCEEDED: (),
    RunStatus.FAILED: (),
}


@dataclass(frozen=True)
class RunRecord:
    id: int
    kind: RunKind
    status: RunStatus
    config: dict[str, Any]
    base_variant_id: int | None
    data_path: str | None
    data_ids: dict[str, Any] | None
    created_by_id: int | None
    created_at: datetime
    pid: int | None
    host: str | None
    started_at: datetime | None
    """The latest (re)start: a resumed run's process started then."""
    finished_at: datetime | None
    last_checkpoint: str | None
    output_dir: str | None
    variant_id: int | None
    error: str | None


@dataclass(frozen=True)
class MetricPoint:
    step: int
    value: float | None
    """None: the value logged was not finite (a NaN loss)."""
    at: datetime


def _record(run: TrainingRun) -> RunRecord:
    return from_row(RunRecord, run)


def _run(session: Session, run_id: int) -> TrainingRun:
    run = session.scalar(select(TrainingRun).where(TrainingRun.id == run_id).with_for_update())
    if run is None:
        raise NotFound(f"training run {run_id} does not exist")
    return run


def _move(run: TrainingRun, to: RunStatus) -> None:
    if to not in TRANSITIONS[run.status]:
        raise Conflict(
            f"training run {run.id} is {run.status.value}; it cannot become {to.value}",
            user_message=f"This training run is {run.status.value}; it cannot be {to.value} now.",
        )
    logger.info("training run id={} {} -> {}", run.id, run.status.value, to.value)
    run.status = to


def _path(value: str | None, field: str) -> str | None:
    return None if value is None else bounded_text(str(value), field, PATH_LENGTH)


def _variant(session: Session, variant_id: int | None) -> int | None:
    if variant_id is not None and session.get(ModelVariant, variant_id) is None:
        raise NotFound(f"model variant {variant_id} does not exist")
    return variant_id


def create_run(
    db: Database,
    kind: RunKind | str,
    config: Mapping[str, Any],
    *,
    base_variant_id: int | None = None,
    data_path: str | None = None,
    data_ids: Mapping[str, Any] | None = None,
    output_dir: str | None = None,
    created_by: int | None = None,
) -> RunRecord:
    """A new queued run. `created_by` (the admin who started it; None from the command line)
    must be an active admin; `config` is the trainer's settings as plain JSON values."""
    kind = as_enum(RunKind, kind, "kind")
    config = json_object(dict(config), "config", MAX_CONFIG_CHARS) or {}
    ids = json_object(dict(data_ids), "data_ids", MAX_DATA_IDS_CHARS) if data_ids else None
    with db.transaction() as session:
        if created_by is not None:
            may_train(session, created_by)
        run = TrainingRun(
            kind=kind,
            status=RunStatus.QUEUED,
            config=config,
            base_variant_id=_variant(session, base_variant_id),
            data_path=_path(data_path, "data path"),
            data_ids=ids,
            output_dir=_path(output_dir, "output folder"),
            created_by_id=created_by,
        )
        session.add(run)
        session.flush()
        logger.info("training run id={} ({}) queued by user id={}", run.id, kind.value, created_by)
        return _record(run)


def mark_running(db: Database, run_id: int, pid: int, *, host: str | None = None) -> RunRecord:
    """The run's process `pid` on `host` (default: this machine) started or resumed it."""
    host = bounded_text(host or socket.gethostname(), "host", HOST_LENGTH)
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise InvalidInput(f"pid must be a positive integer, got {pid!r}")
    with db.transaction() as session:
        run = _run(session, run_id)
        _move(run, RunStatus.RUNNING)
        run.pid, run.host, run.started_at, run.error = pid, host, utcnow(), None
        return _record(run)


def set_checkpoint(db: Database, run_id: int, checkpoint: str) -> RunRecord:
    """The newest checkpoint folder a resume would start from."""
    checkpoint = _path(checkpoint, "checkpoint folder")
    with db.transaction() as session:
        run = _run(session, run_id)
        run.last_checkpoint = checkpoint
        return _record(run)


def add_metrics(db: Database, run_id: int, step: int, metrics: Mapping[str, float]) -> int:
    """Record `metrics` at `step` (one row each; a step logged again replaces its value).
    A non-finite number is stored as NULL. Returns the number of values written."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InvalidInput(f"step must be a non-negative integer, got {step!r}")
    rows = []
    for name, value in metrics.items():
        name = bounded_text(str(name), "metric name", METRIC_NAME_LENGTH)
        number = float(value)
        rows.append({"run_id": run_id, "step": step, "name": name, "at": utcnow(),
                     "value": number if math.isfinite(number) else None})  # fmt: skip
    if not rows:
        return 0
    insert = sqlite.insert if db.is_sqlite else postgresql.insert
    with db.transaction() as session:
        if session.get(TrainingRun, run_id) is None:
            raise NotFound(f"training run {run_id} does not exist")
        for row in rows:
            statement = insert(TrainingMetric).values(**row)
            session.execute(statement.on_conflict_do_update(
                index_elements=["run_id", "name", "step"],
                set_={"value": statement.excluded.value, "at": statement.excluded.at},
            ))  # fmt: skip
    return len(rows)


def mark_finished(
    db: Database, run_id: int, *, output_dir: str, variant_id: int | None = None
) -> RunRecord:
    """The run succeeded: its adapter is in `output_dir`, registered as `variant_id`."""
    output_dir = _path(output_dir, "output folder")
    with db.transaction() as session:
        run = _run(session, run_id)
        _move(run, RunStatus.SUCCEEDED)
        run.output_dir, run.variant_id = output_dir, _variant(session, variant_id)
        run.finished_at, run.error = utcnow(), None
        return _record(run)


def mark_failed(db: Database, run_id: int, error: str) -> RunRecord:
    """The run failed; `error` says why in words an admin can act on (cut to fit)."""
    text = (str(error).strip() or "failed")[:ERROR_LENGTH]
    with db.transaction() as session:
        run = _run(session, run_id)
        _move(run, RunStatus.FAILED)
        run.finished_at, run.error = utcnow(), text
        return _record(run)


def process_alive(pid: int, started_at: datetime | None) -> bool:
    """True if process `pid` on this machine is the one that started at `started_at`: it
    exists, is not a zombie (ended, not yet reaped) and is not a newer process reusing the pid."""
    import psutil  # a dependency of accelerate and deepspeed; only needed here

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        if started_at is not None:
            return process.create_time() <= started_at.timestamp() + PID_REUSE_SLACK_S
        return True
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # it exists, under another user


def mark_interrupted_if_dead(
    db: Database,
    *,
    host: str | None = None,
    alive: Callable[[int, datetime | None], bool] = process_alive,
) -> list[RunRecord]:
    """Mark running runs on `host` (default: this machine) whose process is gone as
    interrupted, and return them; runs on other machines are left alone (their processes
    cannot be seen from here). The app calls this when it starts."""
    host = host or socket.gethostname()
    marked = []
    with db.transaction() as session:
        query = (
            select(TrainingRun)
            .where(TrainingRun.status == RunStatus.RUNNING, TrainingRun.host == host)
            .order_by(TrainingRun.id)
            .with_for_update()
        )
        for run in session.scalars(query):
            if run.pid is not None and alive(run.pid, run.started_at):
                continue
            _move(run, RunStatus.INTERRUPTED)
            run.finished_at = utcnow()
            logger.warning("training run id={}: process {} on {} is gone", run.id, run.pid, host)
            marked.append(_record(run))
    return marked


def get_run(db: Database, run_id: int) -> RunRecord:
    with db.transaction(write=False) as session:
        run = session.get(TrainingRun, run_id)
        if run is None:
            raise NotFound(f"training run {run_id} does not exist")
        return _record(run)


def list_runs(
    db: Database,
    *,
    kind: RunKind | str | None = None,
    status: RunStatus | str | None = None,
    limit: int = 100,
) -> list[RunRecord]:
    """Runs, newest first, optionally of one kind and/or status."""
    query = select(TrainingRun).order_by(TrainingRun.created_at.desc(), TrainingRun.id.desc())
    if kind is not None:
        query = query.where(TrainingRun.kind == as_enum(RunKind, kind, "kind"))
    if status is not None:
        query = query.where(TrainingRun.status == as_enum(RunStatus, status, "status"))
    with db.transaction(write=False) as session:
        return [_record(run) for run in session.scalars(query.limit(max(1, limit)))]


def metrics_of(
    db: Database, run_id: int, names: list[str] | None = None
) -> dict[str, list[MetricPoint]]:
    """The run's curves: metric name -> points in step order (all names, or `names`)."""
    query = (
        select(TrainingMetric)
        .where(TrainingMetric.run_id == run_id)
        .order_by(TrainingMetric.name, TrainingMetric.step)
    )
    if names is not None:
        query = query.where(TrainingMetric.name.in_(names))
    curves: dict[str, list[MetricPoint]] = {}
    with db.transaction(write=False) as session:
        if session.get(TrainingRun, run_id) is None:
            raise NotFound(f"training run {run_id} does not exist")
        for row in session.scalars(query):
            curves.setdefault(row.name, []).append(MetricPoint(row.step, row.value, row.at))
    return curves
