"""Training runs, their metrics and the judge's verdict cache on real SQLite files (and on a
throwaway PostgreSQL server where one can be started: `-m postgres`).

Run: OMP_NUM_THREADS=1 python -m pytest tests/test_runs_storage.py -q   (a few seconds)
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from storage import (
    Conflict,
    Database,
    InvalidInput,
    NewVerdict,
    NotFound,
    PermissionDenied,
    RunKind,
    RunStatus,
    add_metrics,
    cached_verdicts,
    create_run,
    create_user,
    ensure_model_variant,
    get_run,
    list_runs,
    mark_failed,
    mark_finished,
    mark_interrupted_if_dead,
    mark_running,
    metrics_of,
    set_checkpoint,
    store_verdicts,
)
from storage.models import JudgeVerdict, TrainingMetric
from storage.runs import process_alive

PASSWORD = "correct horse battery"
WINNERS = {"proactiveness": "a", "accuracy": "tie", "usefulness": "b", "language_quality": "a"}


def _base(db: Database):
    return ensure_model_variant(db, "base", "http://127.0.0.1:8000/v1", "tiny")


def _lifecycle(db: Database) -> None:
    """A run from queued to succeeded, with metrics and a checkpoint (both backends)."""
    admin = create_user(db, "ada", PASSWORD, "admin")
    base = _base(db)
    run = create_run(db, "sft", {"steps": 5, "lr": 2e-4}, base_variant_id=base.id,
                     data_path="/data/exports/sft", data_ids={"vote_ids": [1, 2]},
                     created_by=admin.id)  # fmt: skip
    assert (run.kind, run.status, run.pid, run.created_by_id) == (
        RunKind.SFT, RunStatus.QUEUED, None, admin.id)  # fmt: skip
    assert run.config == {"steps": 5, "lr": 2e-4} and run.data_ids == {"vote_ids": [1, 2]}

    running = mark_running(db, run.id, os.getpid(), host="node-1")
    assert (running.status, running.pid, running.host) == (RunStatus.RUNNING, os.getpid(), "node-1")
    assert running.started_at is not None and running.started_at.tzinfo is not None

    assert add_metrics(db, run.id, 1, {"loss": 2.5, "learning_rate": 1e-4}) == 2
    add_metrics(db, run.id, 2, {"loss": 2.0, "grad_norm": float("nan")})
    add_metrics(db, run.id, 2, {"loss": 1.5})  # the step logged again (resumed): replaced
    set_checkpoint(db, run.id, "/runs/1/checkpoint-2")
    curves = metrics_of(db, run.id)
    assert [(p.step, p.value) for p in curves["loss"]] == [(1, 2.5), (2, 1.5)]
    assert [(p.step, p.value) for p in curves["grad_norm"]] == [(2, None)]  # NaN kept as NULL
    assert list(metrics_of(db, run.id, ["learning_rate"])) == ["learning_rate"]

    new = ensure_model_variant(db, "base-sft-1", "http://127.0.0.1:8000/v1", "sft-1",
                               adapter_path="/runs/1/adapter", parent="base")  # fmt: skip
    done = mark_finished(db, run.id, output_dir="/runs/1/adapter", variant_id=new.id)
    assert (done.status, done.variant_id, done.output_dir) == (
        RunStatus.SUCCEEDED, new.id, "/runs/1/adapter")  # fmt: skip
    assert done.finished_at is not None and done.last_checkpoint == "/runs/1/checkpoint-2"
    with pytest.raises(Conflict):
        mark_running(db, run.id, os.getpid())  # a finished run does not start again
    with pytest.raises(Conflict):
        mark_failed(db, run.id, "late")


def _cache_round_trip(db: Database) -> None:
    keys = ["1" * 64, "2" * 64]
    assert cached_verdicts(db, keys) == {}
    entry = NewVerdict(keys[0], "judge", "zh-CN", WINNERS, '{"proactiveness":"A"}', 120)
    assert store_verdicts(db, [entry]) == 1
    # the same key again (two processes judged the same pair): the first verdict stays
    other = NewVerdict(keys[0], "judge", "zh-CN", dict.fromkeys(WINNERS, "b"))
    assert store_verdicts(db, [other, NewVerdict(keys[1], "judge", "en", WINNERS)]) == 1
    found = cached_verdicts(db, [*keys, "3" * 64])
    assert set(found) == set(keys)
    assert found[keys[0]].winners == WINNERS and found[keys[0]].latency_ms == 120
    assert found[keys[0]].language == "zh-CN"
    with db.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(JudgeVerdict)) == 2


def test_run_lifecycle_and_metrics(db):
    _lifecycle(db)


def test_judge_cache_round_trip(db):
    _cache_round_trip(db)


def test_judge_cache_refuses_bad_entries(db):
    with pytest.raises(InvalidInput):
        store_verdicts(db, [NewVerdict("short", "judge", "en", WINNERS)])
    with pytest.raises(InvalidInput):
        store_verdicts(db, [NewVerdict("4" * 64, "judge", "en", {**WINNERS, "accuracy": "x"})])
    assert store_verdicts(db, []) == 0


def test_only_admins_start_runs_and_inputs_are_checked(db):
    clinician = create_user(db, "cleo", PASSWORD, "clinician")
    with pytest.raises(PermissionDenied):
        create_run(db, "sft", {}, created_by=clinician.id)
    with pytest.raises(InvalidInput):
        create_run(db, "dpo", {})
    with pytest.raises(NotFound):
        create_run(db, "crpo", {}, base_variant_id=999)
    with pytest.raises(InvalidInput):
        create_run(db, "crpo", {"lr": float("nan")})  # not JSON
    run = create_run(db, "crpo", {"judge": "http://judge/v1"})  # the command line: no user
    with pytest.raises(InvalidInput):
        mark_running(db, run.id, 0)
    with pytest.raises(InvalidInput):
        add_metrics(db, run.id, -1, {"loss": 1.0})
    with pytest.raises(NotFound):
        add_metrics(db, 999, 1, {"loss": 1.0})
    with pytest.raises(NotFound):
        get_run(db, 999)
    with pytest.raises(NotFound):
        metrics_of(db, 999)
    assert add_metrics(db, run.id, 1, {}) == 0


def test_failed_and_listing(db):
    sft = create_run(db, RunKind.SFT, {})
    crpo = create_run(db, "crpo", {})
    failed = mark_failed(db, crpo.id, "The judge endpoint is down. " * 50)
    assert failed.status is RunStatus.FAILED and len(failed.error) == 500
    assert [r.id for r in list_runs(db)] == [crpo.id, sft.id]  # newest first
    assert [r.id for r in list_runs(db, kind="sft")] == [sft.id]
    assert [r.id for r in list_runs(db, status="failed")] == [crpo.id]
    assert get_run(db, sft.id).status is RunStatus.QUEUED


def _finished_process() -> subprocess.Popen:
    """A child process that has exited but is not reaped yet (a zombie)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = datetime.now(UTC).timestamp() + 30
    while datetime.now(UTC).timestamp() < deadline:
        try:
            with open(f"/proc/{proc.pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return proc
        except FileNotFoundError:
            break
    return proc


def test_runs_whose_process_is_gone_become_interrupted_and_resume(db):
    alive = create_run(db, "sft", {})
    mark_running(db, alive.id, os.getpid())  # this test's own process: alive
    zombie_proc = _finished_process()
    zombie = create_run(db, "sft", {})
    mark_running(db, zombie.id, zombie_proc.pid)
    gone_proc = subprocess.Popen([sys.executable, "-c", "pass"])
    gone_proc.wait()  # reaped: the pid no longer exists
    gone = create_run(db, "crpo", {})
    mark_running(db, gone.id, gone_proc.pid)
    elsewhere = create_run(db, "crpo", {})
    mark_running(db, elsewhere.id, gone_proc.pid, host="another-machine")
    try:
        marked = mark_interrupted_if_dead(db)
    finally:
        zombie_proc.wait()
    assert sorted(r.id for r in marked) == sorted([zombie.id, gone.id])
    assert get_run(db, alive.id).status is RunStatus.RUNNING
    assert get_run(db, elsewhere.id).status is RunStatus.RUNNING  # cannot be seen from here
    assert get_run(db, gone.id).status is RunStatus.INTERRUPTED
    assert mark_interrupted_if_dead(db) == []  # nothing more to do
    # an interrupted run resumes (a new process) or is given up
    resumed = mark_running(db, gone.id, os.getpid())
    assert resumed.status is RunStatus.RUNNING and resumed.pid == os.getpid()
    assert mark_failed(db, zombie.id, "gave up").status is RunStatus.FAILED


def test_a_reused_pid_is_not_the_run_s_process():
    assert process_alive(os.getpid(), datetime.now(UTC))
    # this process started long after 2001: it cannot be the one a run started then
    assert not process_alive(os.getpid(), datetime(2001, 1, 1, tzinfo=UTC))


def test_metrics_go_with_their_run(db):
    """Metrics are CASCADE-deleted with a run's row (runs are not deleted by the app, but a
    database cleanup must not be blocked by them)."""
    run = create_run(db, "sft", {})
    add_metrics(db, run.id, 1, {"loss": 1.0})
    from storage.models import TrainingRun

    with db.transaction() as session:
        session.delete(session.get(TrainingRun, run.id))
    with db.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(TrainingMetric)) == 0


def test_migration_0006_downgrades_and_upgrades(db):
    _lifecycle(db)
    db.downgrade("0005")
    with db.engine.connect() as conn:
        tables = set(conn.dialect.get_table_names(conn))
    assert not {"judge_verdicts", "training_runs", "training_metrics"} & tables
    db.upgrade()
    assert list_runs(db) == []


# --- PostgreSQL ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_server():
    from app.bench.postgres import PostgresUnavailable, postgres_server

    try:
        with postgres_server() as url:
            yield url
    except PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL server here: {exc}")


@pytest.mark.postgres
def test_runs_and_cache_on_postgresql(pg_server):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from app.bench.postgres import fresh_database
    from storage.models import Base

    db = Database(fresh_database(pg_server, "runs"))
    try:
        db.upgrade()
        with db.engine.connect() as conn:  # migration 0006 matches the models here too
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        _lifecycle(db)
        _cache_round_trip(db)
        run = create_run(db, "crpo", {})
        mark_running(db, run.id, os.getpid())
        assert [r.id for r in mark_interrupted_if_dead(db)] == []
    finally:
        db.dispose()
