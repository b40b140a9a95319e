"""bo_staged_arrival: the lines an `available` email lists (orders whose every date was reached).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0005"
down_revision = "0004"
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
        "bo_staged_arrival",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("bo_run.id"), primary_key=True),
        sa.Column("orders_products_id", sa.Integer, primary_key=True),
        sa.Column("orders_id", sa.Integer, nullable=False),
        sa.Column("products_id", sa.Integer, nullable=False),
        sa.Column("products_name", sa.String(255)),
        sa.Column("products_model", sa.String(64)),
        sa.Column("products_quantity", sa.Float),
        sa.Column("date_available", Timestamp),
        sa.Column("customers_name", sa.String(255)),
        sa.Column("customers_email_address", sa.String(255)),
        sa.Column("order_language", sa.String(32)),
        sa.Column("customers_id", sa.Integer),
        sa.Column("date_purchased", Timestamp),
        **MYSQL_TABLE_OPTIONS,
    )


def downgrade() -> None:
    op.drop_table("bo_staged_arrival")
