"""Alembic environment: runs on the connection that `state.migrate` hands over, never on a URL."""

from __future__ import annotations

from alembic import context

from include.backorder.state import VERSION_TABLE, metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,  # SQLite can only change tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
