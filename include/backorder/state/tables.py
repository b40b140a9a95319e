"""The state database's tables: run records, staged lines, line history, notifications, the lease, opt-outs.

The state database must be transactional (SQLite, PostgreSQL, MariaDB/InnoDB): every stage
changes it in one transaction, so a failed task leaves nothing half-written. The tables below are
the current shape; Alembic migrations (`migrations/versions/`) create and change them, so an
upgrade of the project never loses a shop's history. `storable` and `dumps` say how a value is
stored in them.
Times are stored as naive UTC (reference times) or naive shop time (availability dates).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Engine

from include.backorder import RunStatus, Status

metadata = sa.MetaData()
MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"
VERSION_TABLE = "bo_alembic_version"
# The newest migration (tests/backorder/test_state.py checks it is Alembic's head): a state database
# already there is recognised with one query, without loading Alembic and its scripts (0.2 s a run).
SCHEMA_REVISION = "0009"

# On MySQL/MariaDB the state must be transactional and hold any text, whatever the database's
# defaults (a state kept in the shop's own MyISAM, latin1 database included).
MYSQL_TABLE_OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_unicode_ci",
}

# MySQL's DATETIME drops fractions of a second unless asked; a manual run's T has microseconds.
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# MySQL's TEXT holds 64 KB: too little for the lines of a large order with 255-character names, or
# for a run's list of skipped orders. MEDIUMTEXT holds 16 MB; elsewhere TEXT has no such limit.
LongText = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")

# The widest text a supported shop declares for a column we copy (tests/fixtures/shops/*.sql and
# shop-schemas.md): products_model varchar(255) (osCommerce 2.4), orders_products.products_name
# varchar(255) (osCommerce 2.4, modified, Gambio), customers_name and customers_email_address
# varchar(255) (osCommerce 2.3/2.4, modified), the order language varchar(32) (xt:Commerce,
# modified, Gambio `orders.language`). A wider value (a column a plugin widened) is cut to fit by
# `storable`, with a log line; it never fails the run.
SHOP_TEXT = 255
SHOP_LANGUAGE = 32

runs = sa.Table(
    "bo_run",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("dag_run_id", sa.String(250), nullable=False),
    sa.Column("reference_time", Timestamp, nullable=False, index=True),
    sa.Column("dry_run", sa.Boolean, nullable=False),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # RunStatus: running, failed, finished, abandoned
    sa.Column("previous_snapshot_id", sa.Integer),
    sa.Column("line_count", sa.Integer),
    sa.Column("order_count", sa.Integer),
    sa.Column("counts", sa.Text),  # {"sent": {"initial": {"en": 3}}, ...}
    sa.Column("skipped", LongText),  # [{"orders_id": 7, "reason": "..."}]
    sa.Column("stage_seconds", sa.Text, nullable=False, default="{}"),
    sa.Column("shop_schema", sa.Text),  # {"dialect": ..., "table_prefix": ..., "language_from": [...]}
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("finished_at", Timestamp),
    # Lines whose shop data cannot be shown as it is (a deleted product, a quantity that is not
    # positive, a date in 2100 or later; see classify.py), and what the emails did with them:
    # [{"orders_id": 7, "orders_products_id": 12, "products_id": 3, "problem": "..."}] (migration 0008).
    sa.Column("suspect_lines", LongText),
    sa.Index("ix_bo_run_dag_run", "dag_id", "dag_run_id"),  # the audit page's link from a DAG run
    **MYSQL_TABLE_OPTIONS,
)


def _order_line_columns(date_nullable: bool) -> list[sa.Column[Any]]:
    """A staged order line as the shop query returns it (shop.LINE_COLUMNS), keyed by run."""
    return [
        sa.Column("run_id", sa.Integer, sa.ForeignKey("bo_run.id"), primary_key=True),
        sa.Column("orders_products_id", sa.Integer, primary_key=True),
        sa.Column("orders_id", sa.Integer, nullable=False),
        sa.Column("products_id", sa.Integer, nullable=False),
        sa.Column("products_name", sa.String(SHOP_TEXT)),
        sa.Column("products_model", sa.String(SHOP_TEXT)),  # 64 before migration 0008
        sa.Column("products_quantity", sa.Float),
        sa.Column("date_available", Timestamp, nullable=date_nullable),
        sa.Column("customers_name", sa.String(SHOP_TEXT)),
        sa.Column("customers_email_address", sa.String(SHOP_TEXT)),
        sa.Column("order_language", sa.String(SHOP_LANGUAGE)),
        sa.Column("customers_id", sa.Integer),
        sa.Column("date_purchased", Timestamp),
        # The line's date at the run's previous snapshot (NULL: not in it), read by extract (migration 0009).
        sa.Column("previous_date", Timestamp),
    ]


# The lines of the orders classify must look at (see pipeline.extract): every line of an order with a
# new or changed line, of an order never told, of an order due for a reminder.
staged_lines = sa.Table("bo_staged_line", metadata, *_order_line_columns(date_nullable=False), **MYSQL_TABLE_OPTIONS)

# The lines of orders that waited at the previous snapshot and wait no more (every date reached or
# cleared: date_available None) while the order is still in the statuses: what an `available`
# email lists. Staged only when the run's params say send_available.
staged_arrivals = sa.Table(
    "bo_staged_arrival", metadata, *_order_line_columns(date_nullable=True), **MYSQL_TABLE_OPTIONS
)

# One row per snapshot: a run (not a dry run) that finished at its T. Its lines are in bo_line_history.
snapshots = sa.Table(
    "bo_snapshot",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("reference_time", Timestamp, nullable=False, unique=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("bo_run.id"), nullable=False),
    sa.Column("line_count", sa.Integer, nullable=False),
    sa.Column("created_at", Timestamp, nullable=False),
    # T as the shop wrote its dates (naive, shop_timezone) at this snapshot: a history row whose date is not
    # later than this is not in it (migration 0009).
    sa.Column("shop_time", Timestamp, nullable=False),
    **MYSQL_TABLE_OPTIONS,
)

# A line's state is stored once per change (a type-2 slowly changing dimension, as dbt snapshots
# keep it): the row holds from the snapshot at `valid_from` until the first snapshot at which it no
# longer held (`valid_to`; OPEN while it still holds), or, sooner, until its date is reached: a line
# whose date passed is no backorder line, so that most common change costs no write. The snapshot
# at any T is the rows with valid_from <= T < valid_to whose date is later than the shop time of the
# latest snapshot at or before T (`lines.lines_at`, one indexed range on date_available). Rows are kept
# merged: two rows of one line never meet with the same values. Migration 0009 made it from the full
# copies in `bo_snapshot_line`.
OPEN = datetime(9999, 12, 31)
line_history = sa.Table(
    "bo_line_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("orders_products_id", sa.Integer, nullable=False),
    sa.Column("orders_id", sa.Integer, nullable=False),
    sa.Column("products_id", sa.Integer, nullable=False),
    sa.Column("date_available", Timestamp, nullable=False),
    sa.Column("valid_from", Timestamp, nullable=False),
    sa.Column("valid_to", Timestamp, nullable=False),
    sa.UniqueConstraint("orders_products_id", "valid_from", name="uq_bo_line_history_line"),
    # Boundaries at or after T (a repeated run, a backfill): valid_to >= T is short but for the open rows.
    sa.Index("ix_bo_line_history_valid", "valid_to", "valid_from"),
    sa.Index("ix_bo_line_history_from", "valid_from"),
    # The snapshot at a recent T: the lines whose date is still ahead (not every row a passed date ended).
    sa.Index("ix_bo_line_history_date", "date_available"),
    **MYSQL_TABLE_OPTIONS,
)

# What a run's snapshot changes against its previous snapshot, staged by extract and applied by finish:
# a line new or changed (its values at T), or gone (date_available NULL).
staged_changes = sa.Table(
    "bo_staged_change",
    metadata,
    sa.Column("run_id", sa.Integer, sa.ForeignKey("bo_run.id"), primary_key=True),
    sa.Column("orders_products_id", sa.Integer, primary_key=True),
    sa.Column("orders_id", sa.Integer, nullable=False),
    sa.Column("products_id", sa.Integer, nullable=False),
    sa.Column("date_available", Timestamp),
    **MYSQL_TABLE_OPTIONS,
)

notifications = sa.Table(
    "bo_notification",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("bo_run.id"), nullable=False, index=True),
    sa.Column("orders_id", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),  # Kind
    sa.Column("reference_time", Timestamp, nullable=False),
    sa.Column("dry_run", sa.Boolean, nullable=False),
    sa.Column("customers_email_address", sa.String(SHOP_TEXT)),
    sa.Column("customers_name", sa.String(SHOP_TEXT)),
    sa.Column("language", sa.String(8), nullable=False),
    sa.Column("customers_id", sa.Integer),
    sa.Column("message_id", sa.String(255)),  # set when rendered
    sa.Column("listed_lines", LongText, nullable=False),  # JSON: the products and dates the email lists
    sa.Column("status", sa.String(20), nullable=False),  # Status: due, sent, failed, skipped, dry_run, silenced
    sa.Column("detail", sa.Text),  # the server's answer, the error, or why it was skipped
    sa.Column("sent_at", Timestamp),
    sa.Column("created_at", Timestamp, nullable=False),
    # The same order, kind and T is sent at most once (dry runs are kept apart).
    sa.UniqueConstraint("orders_id", "kind", "reference_time", "dry_run", name="uq_bo_notification_key"),
    sa.Index("ix_bo_notification_order", "orders_id", "status", "reference_time"),
    # The audit page's search by address, exact or by prefix (LIKE 'ann@%' on PostgreSQL too).
    sa.Index(
        "ix_bo_notification_email",
        "customers_email_address",
        postgresql_ops={"customers_email_address": "varchar_pattern_ops"},
    ),
    **MYSQL_TABLE_OPTIONS,
)

# One row per DAG: the run that may classify and send now. Taken in the extract stage, checked by
# every later stage, released when the run finishes (run_id NULL).
leases = sa.Table(
    "bo_lease",
    metadata,
    sa.Column("name", sa.String(250), primary_key=True),
    sa.Column("run_id", sa.Integer),
    sa.Column("dag_run_id", sa.String(250)),
    sa.Column("acquired_at", Timestamp),
    sa.Column("heartbeat_at", Timestamp),  # the holder's last sign of life (migration 0007)
    **MYSQL_TABLE_OPTIONS,
)

# Customers who do not want these emails: by address (stored lower-case) or by the shop's customer id.
suppressions = sa.Table(
    "bo_suppression",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("email_address", sa.String(255), index=True),
    sa.Column("customers_id", sa.Integer, index=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("source", sa.String(50), nullable=False),  # one-click, mailto, admin, ...
    sa.Column("created_at", Timestamp, nullable=False),
    **MYSQL_TABLE_OPTIONS,
)

# The statuses are include.backorder's Status (bo_notification.status) and RunStatus (bo_run.status).
TOLD = (Status.SENT, Status.SILENCED)  # the customer was told (or counts as told: silenced)
# Old names, kept for audit/queries.py and bench/run.py until they import Status and RunStatus.
STATUS_SENT, STATUS_SKIPPED, STATUS_DRY_RUN = Status.SENT, Status.SKIPPED, Status.DRY_RUN
RUN_FINISHED = RunStatus.FINISHED
# The detail of a notification silenced because a run at a later T had already told its order (a late
# or backfilled day): "overtaken: ...". It counts as told, but not as a periodic reminder the customer got.
OVERTAKEN = "overtaken"


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the state tables to `revision` with Alembic (creates them on first use; idempotent).

    The migrations live in `include/backorder/migrations/`; their version is kept in
    `bo_alembic_version`, apart from any other Alembic user of the same database.
    """
    if revision == "head" and _revision_in(engine) == SCHEMA_REVISION:
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def _revision_in(engine: Engine) -> str | None:
    """The revision the version table names, or None when there is none (a new database) or it cannot be read."""
    try:
        with engine.connect() as conn:
            found = conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    except sa.exc.DBAPIError:
        return None  # no such table yet: Alembic creates it
    return found[0] if len(found) == 1 else None


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


@lru_cache(maxsize=32)
def _text_widths(table: sa.Table) -> dict[str, int]:
    return {c.name: c.type.length for c in table.columns if isinstance(c.type, sa.String) and c.type.length}


def storable(table: sa.Table, row: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """`row` as `table` can hold it on any state database, whatever the shop sent: text without NUL
    characters (PostgreSQL refuses them) and no longer than its column (the first characters are kept;
    MariaDB and PostgreSQL would refuse the row). Returns the row and, per value cut, what was done,
    e.g. 'products_model has 300 characters; the state keeps the first 255' (never the value itself).
    An address cut to 255 characters is still longer than the 254 an address may have: it is skipped
    as not valid, never sent to a different address."""
    widths = _text_widths(table)
    fitted = dict(row)
    cut: list[str] = []
    for name, width in widths.items():
        value = fitted.get(name)
        if not isinstance(value, str):
            continue
        if "\x00" in value:
            value = value.replace("\x00", "")
        if len(value) > width:
            cut.append(f"{name} has {len(value)} characters; the state keeps the first {width}")
            value = value[:width]
        fitted[name] = value
    return fitted, cut


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
