"""Compare: imported case sets, blind side-by-side comparisons, their answers and votes.

Revision ID: 0004
Revises: 0003
Created: 2026-11-30

case_sets > cases > case_turns > case_turn_attachments hold imported consultations (the
reference doctor's answers included). comparisons > comparison_turns (context snapshot, side
assignment, state) > comparison_responses (two per turn) and votes (one per voter and turn,
unique idempotency key). Nothing under a comparison is ever deleted (RESTRICT): votes must
stay traceable to what was shown. Enum columns are VARCHAR(32), as in 0001.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ENUM = sa.String(length=32)


def _timestamp(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), nullable=False)


def _int(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.Integer(), nullable=nullable)


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
        "case_sets",
        _id(),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("format", ENUM, nullable=False),
        sa.Column("file_sha256", sa.String(length=64), nullable=False),
        _int("case_count"),
        _int("created_by_id", nullable=True),
        _timestamp("created_at"),
        _fk("case_sets", "created_by_id", "users", "SET NULL"),
        _pk("case_sets"),
        _unique("case_sets", "name"),
    )
    op.create_table(
        "cases",
        _id(),
        _int("case_set_id"),
        _int("position"),
        sa.Column("source_id", sa.String(length=100), nullable=True),
        sa.Column("cate1", sa.String(length=100), nullable=True),
        sa.Column("cate2", sa.String(length=100), nullable=True),
        _fk("cases", "case_set_id", "case_sets", "CASCADE"),
        _pk("cases"),
        _unique("cases", "case_set_id", "position"),
    )
    op.create_table(
        "case_turns",
        _id(),
        _int("case_id"),
        _int("position"),
        sa.Column("patient_text", sa.Text(), nullable=False),
        sa.Column("reference_answer", sa.Text(), nullable=True),
        _fk("case_turns", "case_id", "cases", "CASCADE"),
        _pk("case_turns"),
        _unique("case_turns", "case_id", "position"),
    )
    op.create_table(
        "case_turn_attachments",
        _id(),
        _int("case_turn_id"),
        _int("attachment_id"),
        _int("position"),
        _fk("case_turn_attachments", "case_turn_id", "case_turns", "CASCADE"),
        _fk("case_turn_attachments", "attachment_id", "attachments", "RESTRICT"),
        _pk("case_turn_attachments"),
        _unique("case_turn_attachments", "case_turn_id", "position"),
    )
    _index("case_turn_attachments", "attachment_id")

    op.create_table(
        "comparisons",
        _id(),
        _int("creator_id"),
        sa.Column("source", ENUM, nullable=False),
        _int("case_id", nullable=True),
        _int("consultation_id", nullable=True),
        _int("up_to_message_id", nullable=True),
        sa.Column("language", sa.String(length=16), nullable=False),
        _timestamp("created_at"),
        _fk("comparisons", "creator_id", "users", "RESTRICT"),
        _fk("comparisons", "case_id", "cases", "RESTRICT"),
        _fk("comparisons", "consultation_id", "consultations", "SET NULL"),
        _fk("comparisons", "up_to_message_id", "messages", "SET NULL"),
        _pk("comparisons"),
    )
    _index("comparisons", "creator_id", "created_at")
    _index("comparisons", "case_id")
    _index("comparisons", "consultation_id")
    _index("comparisons", "up_to_message_id")

    op.create_table(
        "comparison_turns",
        _id(),
        _int("comparison_id"),
        _int("position"),
        sa.Column("state", ENUM, nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("context_sha256", sa.String(length=64), nullable=False),
        sa.Column("prompt_text", sa.Text(), nullable=False),
        _int("prompt_message_id", nullable=True),
        _int("prompt_case_turn_id", nullable=True),
        sa.Column("reference_answer", sa.Text(), nullable=True),
        _int("variant_a_id"),
        _int("variant_b_id"),
        sa.Column("kept_side", ENUM, nullable=True),
        _int("kept_message_id", nullable=True),
        _timestamp("created_at"),
        _fk("comparison_turns", "comparison_id", "comparisons", "RESTRICT"),
        _fk("comparison_turns", "prompt_message_id", "messages", "SET NULL"),
        _fk("comparison_turns", "prompt_case_turn_id", "case_turns", "RESTRICT"),
        _fk("comparison_turns", "variant_a_id", "model_variants", "RESTRICT"),
        _fk("comparison_turns", "variant_b_id", "model_variants", "RESTRICT"),
        _fk("comparison_turns", "kept_message_id", "messages", "SET NULL"),
        _pk("comparison_turns"),
        _unique("comparison_turns", "comparison_id", "position"),
    )
    _index("comparison_turns", "prompt_message_id")
    _index("comparison_turns", "prompt_case_turn_id")
    _index("comparison_turns", "kept_message_id")

    op.create_table(
        "comparison_turn_attachments",
        _id(),
        _int("turn_id"),
        _int("attachment_id"),
        _int("position"),
        _fk("comparison_turn_attachments", "turn_id", "comparison_turns", "RESTRICT"),
        _fk("comparison_turn_attachments", "attachment_id", "attachments", "RESTRICT"),
        _pk("comparison_turn_attachments"),
        _unique("comparison_turn_attachments", "turn_id", "position"),
    )
    _index("comparison_turn_attachments", "attachment_id")

    op.create_table(
        "comparison_responses",
        _id(),
        _int("turn_id"),
        sa.Column("side", ENUM, nullable=False),
        _int("variant_id"),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("sampling_params", sa.JSON(), nullable=True),
        sa.Column("finish_reason", ENUM, nullable=False),
        sa.Column("error", sa.String(length=500), nullable=True),
        _int("latency_ms", nullable=True),
        _int("first_token_ms", nullable=True),
        _int("prompt_tokens", nullable=True),
        _int("completion_tokens", nullable=True),
        _timestamp("finished_at"),
        _fk("comparison_responses", "turn_id", "comparison_turns", "RESTRICT"),
        _fk("comparison_responses", "variant_id", "model_variants", "RESTRICT"),
        _pk("comparison_responses"),
        _unique("comparison_responses", "turn_id", "side"),
    )
    _index("comparison_responses", "variant_id")

    op.create_table(
        "votes",
        _id(),
        _int("turn_id"),
        _int("voter_id"),
        *(sa.Column(dimension, ENUM, nullable=False) for dimension in
          ("proactiveness", "accuracy", "usefulness", "language_quality", "overall")),  # fmt: skip
        sa.Column("safety_flag_a", sa.Boolean(), nullable=False),
        sa.Column("safety_flag_b", sa.Boolean(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=True),
        _int("time_to_vote_ms", nullable=True),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        _timestamp("created_at"),
        _fk("votes", "turn_id", "comparison_turns", "RESTRICT"),
        _fk("votes", "voter_id", "users", "RESTRICT"),
        _pk("votes"),
        _unique("votes", "turn_id", "voter_id"),
        _unique("votes", "idempotency_key"),
    )
    _index("votes", "voter_id", "created_at")


def downgrade() -> None:
    # Children before parents; dropping a table drops its indexes.
    for table in (
        "votes",
        "comparison_responses",
        "comparison_turn_attachments",
        "comparison_turns",
        "comparisons",
        "case_turn_attachments",
        "case_turns",
        "cases",
        "case_sets",
    ):
        op.drop_table(table)
