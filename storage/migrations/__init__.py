"""Alembic migrations of the PulseMind schema; run through `storage.db.Database.upgrade()`."""
