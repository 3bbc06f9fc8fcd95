"""Clinician compare mode: a vote's four dimensions may be left out.

Revision ID: 0005
Revises: 0004
Created: 2026-12-01

A clinician comparing two answers inside a consultation picks the better one (overall); rating
proactiveness, accuracy, usefulness and language quality is optional there, so those columns
become nullable. Annotators' votes still carry all four (`storage.votes.record_vote` requires
them unless the comparison is in a consultation). NULL means "not rated", never a tie.
Downgrading refuses while such votes exist (they cannot be given a value that was not cast).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ENUM = sa.String(length=32)
DIMENSIONS = ("proactiveness", "accuracy", "usefulness", "language_quality")


def upgrade() -> None:
    with op.batch_alter_table("votes") as batch:
        for dimension in DIMENSIONS:
            batch.alter_column(dimension, existing_type=ENUM, nullable=True)


def downgrade() -> None:
    unrated = " OR ".join(f"{d} IS NULL" for d in DIMENSIONS)
    count = op.get_bind().execute(sa.text(f"SELECT COUNT(*) FROM votes WHERE {unrated}")).scalar()
    if count:
        raise RuntimeError(f"{count} votes leave dimensions unrated; downgrade would invent them")
    with op.batch_alter_table("votes") as batch:
        for dimension in DIMENSIONS:
            batch.alter_column(dimension, existing_type=ENUM, nullable=False)
