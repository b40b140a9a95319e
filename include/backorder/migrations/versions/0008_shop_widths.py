"""Shop widths: state columns as wide as the widest shop column they copy; long JSON fits on MySQL; suspect lines.

- bo_staged_line / bo_staged_arrival.products_model: VARCHAR(64) -> VARCHAR(255) (osCommerce 2.4
  declares varchar(255); a longer model failed extract on MariaDB and PostgreSQL state).
- bo_notification.listed_lines and bo_run.skipped: TEXT -> MEDIUMTEXT on MySQL/MariaDB only (TEXT
  holds 64 KB there; PostgreSQL and SQLite TEXT have no such limit and are left alone).
- bo_run.suspect_lines: the lines whose shop data the emails could not show as it is.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

LongText = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
STAGED = ("bo_staged_line", "bo_staged_arrival")


def _is_mysql() -> bool:
    return op.get_bind().dialect.name in ("mysql", "mariadb")


def upgrade() -> None:
    for table in STAGED:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                "products_model", type_=sa.String(255), existing_type=sa.String(64), existing_nullable=True
            )
    with op.batch_alter_table("bo_run") as batch:
        batch.add_column(sa.Column("suspect_lines", LongText))
    if _is_mysql():
        op.alter_column("bo_run", "skipped", type_=mysql.MEDIUMTEXT(), existing_type=sa.Text, existing_nullable=True)
        op.alter_column(
            "bo_notification", "listed_lines", type_=mysql.MEDIUMTEXT(), existing_type=sa.Text, existing_nullable=False
        )


def downgrade() -> None:
    """Back to 0007's shape. Staged lines are only kept while a run is under way: a model longer
    than 64 characters there is cut (the older code could not have written it)."""
    if _is_mysql():
        op.alter_column(
            "bo_notification", "listed_lines", type_=sa.Text, existing_type=mysql.MEDIUMTEXT(), existing_nullable=False
        )
        op.alter_column("bo_run", "skipped", type_=sa.Text, existing_type=mysql.MEDIUMTEXT(), existing_nullable=True)
    with op.batch_alter_table("bo_run") as batch:
        batch.drop_column("suspect_lines")
    for table in STAGED:
        staged = sa.table(table, sa.column("products_model", sa.String))
        op.execute(
            staged.update()
            .where(sa.func.length(staged.c.products_model) > 64)
            .values(products_model=sa.func.substr(staged.c.products_model, 1, 64))
        )
        with op.batch_alter_table(table) as batch:
            batch.alter_column(
                "products_model", type_=sa.String(64), existing_type=sa.String(255), existing_nullable=True
            )
