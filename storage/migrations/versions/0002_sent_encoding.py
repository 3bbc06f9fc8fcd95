"""Attachment images keep the encoding the model is sent (the upload's own stripped bytes).

Revision ID: 0002
Revises: 0001
Created: 2026-11-30

An upload already within the model's pixel budget is sent as it came (metadata stripped),
never re-encoded bigger: `sent_mime` names that encoding, `sent` holds its bytes (None for a
PNG whose stored `png` already is the stripped upload). Existing rows keep both NULL and are
encoded for the model as before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("attachment_images") as batch:
        batch.add_column(sa.Column("sent_mime", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("sent", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attachment_images") as batch:
        batch.drop_column("sent")
        batch.drop_column("sent_mime")
