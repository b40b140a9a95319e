"""Alembic migrations of the state database (script location for `state.migrate`)."""
