"""Consult UX: soft-deleted consultations, answer feedback, answer versions.

Revision ID: 0003
Revises: 0002
Created: 2026-12-01

- `consultations.deleted_at`: set when the owner deletes a consultation. The row and its
  messages stay (audit, training); the owner no longer sees or changes it, admins still read
  it (`storage.access`). Downgrading drops the column: deleted consultations show again.
- `answer_feedback`: a user's thumbs up/down on an answer with an optional comment (at most
  2000 characters), one row per (message, user), changed in place.
- Answer versions (`storage.models` docstring): `messages.parent_id` names the message a
  message follows, so the answers to one question (a regenerate keeps the same parent) are
  siblings — the versions ‹1/n› of that answer, in `seq` order; `messages.chosen` marks the
  one child of each message the conversation continues with. `superseded` stays the stored
  "not on the current path" flag that every reader filters on.

Backfill of existing messages, per consultation in `seq` order, replaying how they were
written: a message follows the last message of the current path; a regenerated answer
(`replaces_id`) first cuts the path back to before the answer it replaced. The newest child
of each message is the chosen one, as a regenerate always made the newest answer current.
"""

from collections import defaultdict
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ENUM = sa.String(length=32)

_messages = sa.table(
    "messages",
    sa.column("id", sa.Integer),
    sa.column("consultation_id", sa.Integer),
    sa.column("seq", sa.Integer),
    sa.column("replaces_id", sa.Integer),
    sa.column("parent_id", sa.Integer),
    sa.column("chosen", sa.Boolean),
)


def upgrade() -> None:
    with op.batch_alter_table("consultations") as batch:
        batch.add_column(sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        # Existing rows start chosen; the backfill below corrects forks. Dropped afterwards:
        # the model has no server default.
        batch.add_column(
            sa.Column("chosen", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch.create_foreign_key(
            op.f("fk_messages_parent_id_messages"),
            "messages",
            ["parent_id"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.create_index(op.f("ix_messages_parent_id"), ["parent_id"])
    _backfill_tree()
    with op.batch_alter_table("messages") as batch:
        batch.alter_column("chosen", existing_type=sa.Boolean(), server_default=None)

    op.create_table(
        "answer_feedback",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("thumbs", ENUM, nullable=False),
        sa.Column("comment", sa.String(length=2000), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_answer_feedback_message_id_messages"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_answer_feedback_user_id_users"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_answer_feedback")),
        sa.UniqueConstraint(
            "message_id", "user_id", name=op.f("uq_answer_feedback_message_id_user_id")
        ),
    )
    op.create_index(op.f("ix_answer_feedback_user_id"), "answer_feedback", ["user_id"])


def _backfill_tree() -> None:
    """parent_id and chosen for messages written before this revision (module docstring)."""
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(
            _messages.c.id, _messages.c.consultation_id, _messages.c.seq, _messages.c.replaces_id
        ).order_by(_messages.c.consultation_id, _messages.c.seq)
    ).all()
    parents: dict[int, int | None] = {}
    newest_child: dict[tuple[int, int | None], int] = {}
    paths: defaultdict[int, list[int]] = defaultdict(list)
    for mid, cid, _seq, replaces_id in rows:
        path = paths[cid]
        if replaces_id is not None and replaces_id in path:
            del path[path.index(replaces_id) :]
        parent = path[-1] if path else None
        parents[mid] = parent
        newest_child[(cid, parent)] = mid  # rows come in seq order: the last one wins
        path.append(mid)
    chosen = set(newest_child.values())
    updates = [{"mid": mid, "pid": pid, "ch": mid in chosen} for mid, pid in parents.items()]
    if updates:
        bind.execute(
            _messages.update()
            .where(_messages.c.id == sa.bindparam("mid"))
            .values(parent_id=sa.bindparam("pid"), chosen=sa.bindparam("ch")),
            updates,
        )


def downgrade() -> None:
    op.drop_index(op.f("ix_answer_feedback_user_id"), table_name="answer_feedback")
    op.drop_table("answer_feedback")
    with op.batch_alter_table("messages") as batch:
        batch.drop_index(op.f("ix_messages_parent_id"))
        batch.drop_constraint(op.f("fk_messages_parent_id_messages"), type_="foreignkey")
        batch.drop_column("chosen")
        batch.drop_column("parent_id")
    with op.batch_alter_table("consultations") as batch:
        batch.drop_column("deleted_at")
