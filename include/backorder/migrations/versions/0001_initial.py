"""The first state tables: runs, staged lines, snapshots, notifications.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
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
        "bo_run",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("dag_run_id", sa.String(250), nullable=False),
        sa.Column("reference_time", Timestamp, nullable=False, index=True),
        sa.Column("dry_run", sa.Boolean, nullable=False),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("previous_snapshot_id", sa.Integer),
        sa.Column("line_count", sa.Integer),
        sa.Column("order_count", sa.Integer),
        sa.Column("counts", sa.Text),
        sa.Column("skipped", sa.Text),
        sa.Column("stage_seconds", sa.Text, nullable=False),
        sa.Column("started_at", Timestamp, nullable=False),
        sa.Column("finished_at", Timestamp),
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_table(
        "bo_staged_line",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("bo_run.id"), primary_key=True),
        sa.Column("orders_products_id", sa.Integer, primary_key=True),
        sa.Column("orders_id", sa.Integer, nullable=False),
        sa.Column("products_id", sa.Integer, nullable=False),
        sa.Column("products_name", sa.String(255)),
        sa.Column("products_model", sa.String(64)),
        sa.Column("products_quantity", sa.Float),
        sa.Column("date_available", Timestamp, nullable=False),
        sa.Column("customers_name", sa.String(255)),
        sa.Column("customers_email_address", sa.String(255)),
        sa.Column("order_language", sa.String(32)),
        sa.Column("date_purchased", Timestamp),
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_table(
        "bo_snapshot",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("reference_time", Timestamp, nullable=False, unique=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("bo_run.id"), nullable=False),
        sa.Column("line_count", sa.Integer, nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_table(
        "bo_snapshot_line",
        sa.Column("snapshot_id", sa.Integer, sa.ForeignKey("bo_snapshot.id"), primary_key=True),
        sa.Column("orders_products_id", sa.Integer, primary_key=True),
        sa.Column("orders_id", sa.Integer, nullable=False),
        sa.Column("products_id", sa.Integer, nullable=False),
        sa.Column("date_available", Timestamp, nullable=False),
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_table(
        "bo_notification",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("bo_run.id"), nullable=False, index=True),
        sa.Column("orders_id", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("reference_time", Timestamp, nullable=False),
        sa.Column("dry_run", sa.Boolean, nullable=False),
        sa.Column("customers_email_address", sa.String(255)),
        sa.Column("customers_name", sa.String(255)),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("message_id", sa.String(255)),
        sa.Column("listed_lines", sa.Text, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("sent_at", Timestamp),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.UniqueConstraint("orders_id", "kind", "reference_time", "dry_run", name="uq_bo_notification_key"),
        sa.Index("ix_bo_notification_order", "orders_id", "status", "reference_time"),
        **MYSQL_TABLE_OPTIONS,
    )


def downgrade() -> None:
    for table in ("bo_notification", "bo_snapshot_line", "bo_snapshot", "bo_staged_line", "bo_run"):
        op.drop_table(table)
