"""Alembic revisions, oldest first by number (Alembic itself orders them by down_revision)."""
