"""Alembic's entry point: runs the migrations on the connection database.migrate hands over."""

from __future__ import annotations

from alembic import context

from worker.archive.schema import VERSION_TABLE, metadata

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,  # SQLite alters a table by copying it
)
with context.begin_transaction():
    context.run_migrations()
