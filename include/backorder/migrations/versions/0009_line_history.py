"""bo_line_history: each line's state once per change, with the times between which it held; replaces the
full copies in bo_snapshot_line. bo_snapshot.shop_time: a row whose date is not later than it is not in the
snapshot (a line whose date was reached ends without a write). bo_staged_change and previous_date: a run
stages what changed, not every line.

The stored snapshots are converted snapshot by snapshot, in order of their reference time: a line whose
values are the same as at the snapshot before keeps its row; a changed, new or gone line closes its row
at that T and, unless gone, opens a new one. Every snapshot at every T reads back as it was stored (the
test fills a state database with the code of revision 0008). A run under way while the upgrade runs
(status running, lines staged by the older code) gets its staged lines' previous dates and changes
from the snapshot it is compared with, so it finishes as it would have.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

log = logging.getLogger("alembic.runtime.migration")

MYSQL_TABLE_OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_unicode_ci",
}
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
OPEN = datetime(9999, 12, 31)
STAGED = ("bo_staged_line", "bo_staged_arrival")
BATCH = 10_000
HISTORY_COLUMNS = ("orders_products_id", "orders_id", "products_id", "date_available", "valid_from", "valid_to")

DATES = ("date_available", "valid_from", "valid_to", "reference_time", "previous_date", "shop_time")


def _table(name: str, *columns: str) -> sa.TableClause:
    """A lightweight table whose date columns are typed: SQLAlchemy reads them as datetimes and writes them
    in one format (SQLite compares the stored text, so '... 00:00:00' and '... 00:00:00.000000' differ)."""
    return sa.table(name, *(sa.column(c, Timestamp) if c in DATES else sa.column(c, sa.Integer) for c in columns))


LINE = ("orders_products_id", "orders_id", "products_id", "date_available")
history = _table("bo_line_history", *HISTORY_COLUMNS)
snapshot_line = _table("bo_snapshot_line", "snapshot_id", *LINE)
snapshot = _table("bo_snapshot", "id", "reference_time")
run = sa.table(
    "bo_run", sa.column("id", sa.Integer), sa.column("status", sa.String), sa.column("reference_time", Timestamp)
)
staged_line = _table("bo_staged_line", "run_id", *LINE)
staged_change = _table("bo_staged_change", "run_id", *LINE)

Held = tuple[int, int, datetime]  # orders_id, products_id, date_available


def _snapshot_lines(conn: sa.Connection, snapshot_id: int) -> dict[int, Held]:
    sl = snapshot_line.c
    query = sa.select(*(sl[n] for n in LINE)).where(sl.snapshot_id == snapshot_id)
    return {row[0]: (row[1], row[2], row[3]) for row in conn.execute(query)}


class _Writer:
    def __init__(self, conn: sa.Connection) -> None:
        self.conn, self.rows, self.written = conn, list[dict[str, Any]](), 0

    def add(self, key: int, held: Held, valid_from: datetime, valid_to: datetime) -> None:
        self.rows.append(dict(zip(HISTORY_COLUMNS, (key, *held, valid_from, valid_to), strict=True)))
        if len(self.rows) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.conn.execute(sa.insert(history), self.rows)
            self.written += len(self.rows)
            self.rows = []


def _convert(conn: sa.Connection) -> None:
    snaps = conn.execute(sa.select(snapshot.c.id, snapshot.c.reference_time).order_by(snapshot.c.reference_time)).all()
    holding: dict[int, tuple[Held, datetime]] = {}
    out, read = _Writer(conn), 0
    for number, (snap_id, at) in enumerate(snaps, start=1):
        lines = _snapshot_lines(conn, snap_id)
        read += len(lines)
        for key in [k for k in holding if k not in lines]:
            held, since = holding.pop(key)
            out.add(key, held, since, at)
        for key, held in lines.items():
            before = holding.get(key)
            if before is not None and before[0] == held:
                continue
            if before is not None:
                out.add(key, before[0], before[1], at)
            holding[key] = (held, at)
        if number % 25 == 0 or number == len(snaps):
            log.info(
                "0009: %d of %d snapshots converted (%d lines read, %d history rows)",
                number,
                len(snaps),
                read,
                out.written + len(out.rows),
            )
    for key, (held, since) in holding.items():
        out.add(key, held, since, OPEN)
    out.flush()
    log.info("0009: %d snapshot lines became %d history rows", read, out.written)


def _runs_under_way(conn: sa.Connection) -> None:
    """Give a run under way its staged lines' previous dates and its changes, from the snapshot before its T."""
    runs = conn.execute(sa.select(run.c.id, run.c.reference_time).where(run.c.status == "running")).all()
    for run_id, at in runs:
        staged = {
            row[0]: (row[1], row[2], row[3])
            for row in conn.execute(sa.select(*(staged_line.c[n] for n in LINE)).where(staged_line.c.run_id == run_id))
        }
        if not staged:
            continue  # not extracted yet, or nothing waited: nothing to give it
        before = conn.execute(
            sa.select(snapshot.c.id).where(snapshot.c.reference_time < at).order_by(snapshot.c.reference_time.desc())
        ).first()
        previous = _snapshot_lines(conn, before[0]) if before else {}
        changes = [
            {"run_id": run_id, "orders_products_id": k, "orders_id": h[0], "products_id": h[1], "date_available": h[2]}
            for k, h in staged.items()
            if previous.get(k) != h
        ] + [
            {"run_id": run_id, "orders_products_id": k, "orders_id": h[0], "products_id": h[1], "date_available": None}
            for k, h in previous.items()
            if k not in staged
        ]
        if changes:
            conn.execute(sa.insert(staged_change), changes)
        dates = [{"b_run": run_id, "b_key": key, "b_date": held[2]} for key, held in previous.items()]
        for table in STAGED:
            t = _table(table, "run_id", "orders_products_id", "previous_date")
            this_line = t.c.run_id == sa.bindparam("b_run"), t.c.orders_products_id == sa.bindparam("b_key")
            if dates:
                conn.execute(sa.update(t).where(*this_line).values(previous_date=sa.bindparam("b_date")), dates)


def _shop_times(conn: sa.Connection) -> None:
    """Each snapshot's T as its shop wrote dates: in the shop_timezone its run's params name (UTC by default)."""
    snaps = sa.table(
        "bo_snapshot",
        sa.column("id", sa.Integer),
        sa.column("reference_time", Timestamp),
        sa.column("run_id", sa.Integer),
        sa.column("shop_time", Timestamp),
    )
    runs = sa.table("bo_run", sa.column("id", sa.Integer), sa.column("params", sa.Text))
    found = conn.execute(
        sa.select(snaps.c.id, snaps.c.reference_time, runs.c.params).select_from(
            snaps.outerjoin(runs, runs.c.id == snaps.c.run_id)
        )
    ).all()
    for snap_id, at, run_params in found:
        zone = (json.loads(run_params or "{}") or {}).get("shop_timezone") or "UTC"
        shop_time = at.replace(tzinfo=UTC).astimezone(ZoneInfo(zone)).replace(tzinfo=None)
        conn.execute(sa.update(snaps).where(snaps.c.id == snap_id).values(shop_time=shop_time))


def upgrade() -> None:
    op.create_table(
        "bo_line_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("orders_products_id", sa.Integer, nullable=False),
        sa.Column("orders_id", sa.Integer, nullable=False),
        sa.Column("products_id", sa.Integer, nullable=False),
        sa.Column("date_available", Timestamp, nullable=False),
        sa.Column("valid_from", Timestamp, nullable=False),
        sa.Column("valid_to", Timestamp, nullable=False),
        sa.UniqueConstraint("orders_products_id", "valid_from", name="uq_bo_line_history_line"),
        **MYSQL_TABLE_OPTIONS,
    )
    op.create_index("ix_bo_line_history_valid", "bo_line_history", ["valid_to", "valid_from"])
    op.create_index("ix_bo_line_history_from", "bo_line_history", ["valid_from"])
    op.create_index("ix_bo_line_history_date", "bo_line_history", ["date_available"])
    op.create_table(
        "bo_staged_change",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("bo_run.id"), primary_key=True),
        sa.Column("orders_products_id", sa.Integer, primary_key=True),
        sa.Column("orders_id", sa.Integer, nullable=False),
        sa.Column("products_id", sa.Integer, nullable=False),
        sa.Column("date_available", Timestamp),
        **MYSQL_TABLE_OPTIONS,
    )
    for table in STAGED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("previous_date", Timestamp))
    conn = op.get_bind()
    with op.batch_alter_table("bo_snapshot") as batch:
        batch.add_column(sa.Column("shop_time", Timestamp))
    _shop_times(conn)
    with op.batch_alter_table("bo_snapshot") as batch:
        batch.alter_column("shop_time", existing_type=Timestamp, nullable=False)
    _convert(conn)
    _runs_under_way(conn)
    op.drop_table("bo_snapshot_line")


def downgrade() -> None:
    """Back to 0008's full copies: each snapshot's lines, read from the history at its T."""
    op.create_table(
        "bo_snapshot_line",
        sa.Column("snapshot_id", sa.Integer, sa.ForeignKey("bo_snapshot.id"), primary_key=True),
        sa.Column("orders_products_id", sa.Integer, primary_key=True),
        sa.Column("orders_id", sa.Integer, nullable=False),
        sa.Column("products_id", sa.Integer, nullable=False),
        sa.Column("date_available", Timestamp, nullable=False),
        **MYSQL_TABLE_OPTIONS,
    )
    h, snap = history, _table("bo_snapshot", "id", "reference_time", "shop_time")
    valid = sa.and_(
        h.c.valid_from <= snap.c.reference_time,
        h.c.valid_to > snap.c.reference_time,
        h.c.date_available > snap.c.shop_time,
    )
    held = sa.select(snap.c.id, h.c.orders_products_id, h.c.orders_id, h.c.products_id, h.c.date_available).select_from(
        snap.join(h, valid)
    )
    columns = ["snapshot_id", "orders_products_id", "orders_id", "products_id", "date_available"]
    op.get_bind().execute(sa.insert(_table("bo_snapshot_line", *columns)).from_select(columns, held))
    for table in STAGED:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("previous_date")
    with op.batch_alter_table("bo_snapshot") as batch:
        batch.drop_column("shop_time")
    op.drop_table("bo_staged_change")
    op.drop_table("bo_line_history")
