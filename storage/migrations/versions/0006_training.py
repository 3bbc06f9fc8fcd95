"""Retrain: cached judge verdicts, training runs and their metrics.

Revision ID: 0006
Revises: 0005
Created: 2026-12-01

- `judge_verdicts`: one judge call's verdict (per dimension "a"/"b"/"tie", in the order the
  two answers were shown), found again by `key_sha256`, the content hash of everything that
  decides it (`training.judge.cache_key`: judge model, prompt language and version, both
  answers, context, reference, temperature). The texts themselves are not stored.
- `training_runs`: an SFT or CRPO run (kind, config, base variant, exported data, status
  queued/running/succeeded/failed/interrupted, the process id and host that run it, last
  checkpoint, output adapter, the variant it was registered as, error).
- `training_metrics`: the numbers a run logs per step (loss, learning rate, reward, ...),
  one row per (run, name, step), so curves can be drawn while it runs.
Enum columns are VARCHAR(32), as in 0001.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ENUM = sa.String(length=32)
DIMENSIONS = ("proactiveness", "accuracy", "usefulness", "language_quality")


def _timestamp(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), nullable=False)


def _int(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.Integer(), nullable=nullable)


def _path(name: str) -> sa.Column:
    return sa.Column(name, sa.String(length=1000), nullable=True)


def _fk(table: str, column: str, target: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{table}_{column}_{target}"), ondelete=ondelete
    )


def _pk(table: str) -> sa.PrimaryKeyConstraint:
    return sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}"))


def _unique(table: str, *columns: str) -> sa.UniqueConstraint:
    return sa.UniqueConstraint(*columns, name=op.f(f"uq_{table}_{'_'.join(columns)}"))


def _index(table: str, *columns: str) -> None:
    op.create_index(op.f(f"ix_{table}_{'_'.join(columns)}"), table, list(columns))


def upgrade() -> None:
    op.create_table(
        "judge_verdicts",
        _id(),
        sa.Column("key_sha256", sa.String(length=64), nullable=False),
        sa.Column("judge_model", sa.String(length=1000), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=False),
        *(sa.Column(dimension, ENUM, nullable=False) for dimension in DIMENSIONS),
        sa.Column("raw", sa.Text(), nullable=True),
        _int("latency_ms", nullable=True),
        _timestamp("created_at"),
        _pk("judge_verdicts"),
        _unique("judge_verdicts", "key_sha256"),
    )

    op.create_table(
        "training_runs",
        _id(),
        sa.Column("kind", ENUM, nullable=False),
        sa.Column("status", ENUM, nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        _int("base_variant_id", nullable=True),
        _path("data_path"),
        sa.Column("data_ids", sa.JSON(), nullable=True),
        _int("created_by_id", nullable=True),
        _timestamp("created_at"),
        _int("pid", nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        _timestamp("started_at", nullable=True),
        _timestamp("finished_at", nullable=True),
        _path("last_checkpoint"),
        _path("output_dir"),
        _int("variant_id", nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        _fk("training_runs", "base_variant_id", "model_variants", "RESTRICT"),
        _fk("training_runs", "created_by_id", "users", "SET NULL"),
        _fk("training_runs", "variant_id", "model_variants", "RESTRICT"),
        _pk("training_runs"),
    )
    _index("training_runs", "status")
    _index("training_runs", "created_at")
    _index("training_runs", "base_variant_id")
    _index("training_runs", "variant_id")

    op.create_table(
        "training_metrics",
        _id(),
        _int("run_id"),
        _int("step"),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        _timestamp("at"),
        _fk("training_metrics", "run_id", "training_runs", "CASCADE"),
        _pk("training_metrics"),
        _unique("training_metrics", "run_id", "name", "step"),
    )


def downgrade() -> None:
    # Children before parents; dropping a table drops its indexes.
    for table in ("training_metrics", "training_runs", "judge_verdicts"):
        op.drop_table(table)
