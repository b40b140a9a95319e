"""bo_lease.heartbeat_at: the holder's last sign of life, so a dead run's lease can be taken over in minutes.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("bo_lease") as batch:
        batch.add_column(sa.Column("heartbeat_at", Timestamp))


def downgrade() -> None:
    with op.batch_alter_table("bo_lease") as batch:
        batch.drop_column("heartbeat_at")
