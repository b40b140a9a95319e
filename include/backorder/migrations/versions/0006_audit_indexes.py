"""Indexes for the audit page: a DAG run's run records, and the search of notifications by address.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_bo_run_dag_run", "bo_run", ["dag_id", "dag_run_id"])
    # On PostgreSQL, varchar_pattern_ops lets the index serve `LIKE 'prefix%'` under any collation
    # as well as equality; MariaDB and SQLite ignore the option.
    op.create_index(
        "ix_bo_notification_email",
        "bo_notification",
        ["customers_email_address"],
        postgresql_ops={"customers_email_address": "varchar_pattern_ops"},
    )


def downgrade() -> None:
    op.drop_index("ix_bo_notification_email", table_name="bo_notification")
    op.drop_index("ix_bo_run_dag_run", table_name="bo_run")
