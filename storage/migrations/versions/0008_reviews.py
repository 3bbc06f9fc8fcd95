"""Second opinions: voted compare turns assigned to another annotator for an independent vote.

Revision ID: 0008
Revises: 0007
Created: 2026-12-02

- `compare_reviews`: which turn (RESTRICT: a vote must stay traceable to what was shown) was
  assigned to which reviewer, and when (the reviewer's time to vote counts from there). One
  assignment per turn and reviewer (`UNIQUE(turn_id, reviewer_id)`: two racing requests make
  one row); the reviewer's vote is an ordinary row in `votes`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "compare_reviews"


def _fk(column: str, target: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{target}.id"], name=op.f(f"fk_{TABLE}_{column}_{target}"), ondelete="RESTRICT"
    )


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("turn_id", sa.Integer(), nullable=False),
        sa.Column("reviewer_id", sa.Integer(), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
        _fk("turn_id", "comparison_turns"),
        _fk("reviewer_id", "users"),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{TABLE}")),
        sa.UniqueConstraint("turn_id", "reviewer_id", name=op.f(f"uq_{TABLE}_turn_id_reviewer_id")),
    )
    op.create_index(
        op.f(f"ix_{TABLE}_reviewer_id_assigned_at"), TABLE, ["reviewer_id", "assigned_at"]
    )


def downgrade() -> None:
    op.drop_table(TABLE)  # its index goes with it
