"""Alembic environment: runs the revisions on the connection `Database` hands over.

`storage.db.Database.upgrade()` puts its open connection (already in a transaction) into
`config.attributes["connection"]`; the revisions run on it, so the whole upgrade commits or
rolls back as one. From the command line (writing a new revision) there is no connection:
an engine is built from $PULSEMIND_DATABASE_URL (or the default SQLite file) instead.
`render_as_batch=True` makes autogenerate write SQLite-safe batch operations (SQLite
cannot ALTER most things; batch mode copies the table).
"""

from __future__ import annotations

from typing import Any, Literal

import sqlalchemy as sa
from alembic import context
from sqlalchemy import Connection

from storage.models import Base, UTCDateTime

target_metadata = Base.metadata


def _render_item(type_: str, obj: Any, autogen_context: Any) -> str | Literal[False]:
    """Autogenerate writes types as revision 0001 does: no import of storage.models."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    if type_ == "type" and isinstance(obj, sa.Enum) and not obj.native_enum:
        return f"sa.String(length={obj.length})"
    return False


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
        render_item=_render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    # Imported here: only the command-line path needs it.
    from storage.db import Database, default_database_url

    database = Database(context.config.get_main_option("sqlalchemy.url") or default_database_url())
    try:
        with database.engine.connect() as connection:
            _run(connection)
            connection.commit()
    finally:
        database.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) mode is not supported: run against a database")
run_migrations_online()
