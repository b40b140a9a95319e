"""bo_suppression (opt-outs by address or customer id); customers_id on staged lines and notifications.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

MYSQL_TABLE_OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_unicode_ci",
}
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "bo_suppression",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("email_address", sa.String(255), index=True),
        sa.Column("customers_id", sa.Integer, index=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("source", sa.String(50), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        **MYSQL_TABLE_OPTIONS,
    )
    for table in ("bo_staged_line", "bo_notification"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("customers_id", sa.Integer))


def downgrade() -> None:
    for table in ("bo_staged_line", "bo_notification"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("customers_id")
    op.drop_table("bo_suppression")
