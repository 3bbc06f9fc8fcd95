"""The PulseMind Benchmark: evaluation runs, their cases, answers and verdicts.

Revision ID: 0007
Revises: 0006
Created: 2026-12-01

- `eval_runs`: a benchmark run (kind "benchmark": a variant vs an opponent variant, or the
  reference doctor when `opponent_variant_id` is NULL, on a case set, judged by `judge_model`)
  or a judge-clinician agreement measurement (kind "agreement"); settings, status, the process
  that runs it, totals once finished.
- `eval_cases`: the cases a run selected, in order, with their status (pending, answered,
  judged, failed) and, once judged, the model's outcome per dimension and overall.
- `eval_responses`: every answer of either side to every turn (text, finish reason, error,
  sampling, latency, tokens).
- `eval_verdicts`: the judge's verdict on a case in each order (`model_side`: where the model's
  answers were shown), or its error.
The new case format "meddiagnose" is an enum value: no schema change (VARCHAR(32), as in 0001).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
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


def _error() -> sa.Column:
    return sa.Column("error", sa.String(length=500), nullable=True)


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
        "eval_runs",
        _id(),
        sa.Column("kind", ENUM, nullable=False),
        sa.Column("status", ENUM, nullable=False),
        _int("case_set_id", nullable=True),
        _int("model_variant_id", nullable=True),
        _int("opponent_variant_id", nullable=True),
        sa.Column("judge_model", sa.String(length=1000), nullable=False),
        sa.Column("judge_url", sa.String(length=500), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("totals", sa.JSON(), nullable=True),
        _int("created_by_id", nullable=True),
        _timestamp("created_at"),
        _int("pid", nullable=True),
        sa.Column("host", sa.String(length=255), nullable=True),
        _timestamp("started_at", nullable=True),
        _timestamp("finished_at", nullable=True),
        _error(),
        _fk("eval_runs", "case_set_id", "case_sets", "RESTRICT"),
        _fk("eval_runs", "created_by_id", "users", "SET NULL"),
        _fk("eval_runs", "model_variant_id", "model_variants", "RESTRICT"),
        _fk("eval_runs", "opponent_variant_id", "model_variants", "RESTRICT"),
        _pk("eval_runs"),
    )
    _index("eval_runs", "created_at")
    _index("eval_runs", "case_set_id")
    _index("eval_runs", "model_variant_id")
    _index("eval_runs", "opponent_variant_id")

    op.create_table(
        "eval_cases",
        _id(),
        _int("run_id"),
        _int("position"),
        _int("case_id"),
        sa.Column("status", ENUM, nullable=False),
        *(sa.Column(name, ENUM, nullable=True) for name in (*DIMENSIONS, "overall")),
        _error(),
        _int("judge_calls"),
        _timestamp("finished_at", nullable=True),
        _fk("eval_cases", "case_id", "cases", "RESTRICT"),
        _fk("eval_cases", "run_id", "eval_runs", "CASCADE"),
        _pk("eval_cases"),
        _unique("eval_cases", "run_id", "position"),
        _unique("eval_cases", "run_id", "case_id"),
    )
    _index("eval_cases", "case_id")

    op.create_table(
        "eval_responses",
        _id(),
        _int("eval_case_id"),
        sa.Column("side", ENUM, nullable=False),
        _int("turn"),
        _int("variant_id", nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("finish_reason", ENUM, nullable=False),
        _error(),
        sa.Column("sampling_params", sa.JSON(), nullable=True),
        _int("latency_ms", nullable=True),
        _int("prompt_tokens", nullable=True),
        _int("completion_tokens", nullable=True),
        _timestamp("created_at"),
        _fk("eval_responses", "eval_case_id", "eval_cases", "CASCADE"),
        _fk("eval_responses", "variant_id", "model_variants", "RESTRICT"),
        _pk("eval_responses"),
        _unique("eval_responses", "eval_case_id", "side", "turn"),
    )
    _index("eval_responses", "variant_id")

    op.create_table(
        "eval_verdicts",
        _id(),
        _int("eval_case_id"),
        sa.Column("model_side", ENUM, nullable=False),
        *(sa.Column(dimension, ENUM, nullable=True) for dimension in DIMENSIONS),
        _error(),
        _int("calls"),
        sa.Column("cached", sa.Boolean(), nullable=False),
        _timestamp("created_at"),
        _fk("eval_verdicts", "eval_case_id", "eval_cases", "CASCADE"),
        _pk("eval_verdicts"),
        _unique("eval_verdicts", "eval_case_id", "model_side"),
    )


def downgrade() -> None:
    # Children before parents; dropping a table drops its indexes.
    for table in ("eval_verdicts", "eval_responses", "eval_cases", "eval_runs"):
        op.drop_table(table)
