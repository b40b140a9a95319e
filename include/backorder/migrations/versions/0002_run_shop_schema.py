"""bo_run.shop_schema: what a run found in the shop (dialect, table prefix, language column).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bo_run") as batch:
        batch.add_column(sa.Column("shop_schema", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("bo_run") as batch:
        batch.drop_column("shop_schema")
