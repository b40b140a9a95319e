"""`make bench SIZE=year`: a year of daily runs on the full bench shop, on each state database.

What the line history (`bo_line_history`) is for: after a year, how big is the state, how many rows
does a day write, how long does a day take, and how fast are the audit page's queries.

The shop is a copy of bench/shop.py's shop (`bench_shop`, built by `python -m bench.shop --size
full`) in a database of its own (`bench_year_shop`), made again at the start of each backend's year;
`bench_shop` itself is only read. Between two runs the shop changes as a shop does, from
`random.Random(seed)` (the same seed, the same year):

- a few percent (`DATE_CHANGES`) of the backordered products get a new date, most later, some earlier;
- dates are reached: those goods arrive, and an order whose every line is in stock again ships (its
  `orders_status` becomes delivered) one or two days after the first run that found it so;
- new products become backordered (an in-stock product gets a date 7 to 60 days ahead), as many
  as keep the number of backordered products near the start's;
- new orders arrive, customers cloned from the shop's orders: as many waiting for backordered
  products as keep the number of waiting orders near the start's, and a quarter as many again
  without a backordered product, which ship a day or two later.

Each day runs the library's stages in this process, as bench/run.py's `run_day` does: extract,
load_previous_snapshot, classify_run, send per kind with something due, finish. The year's days
run with `catch_up_silently` (due notifications are recorded as `silenced`: they count as told, so
reminders and the state's rows grow as with real sending, without 7,000+ emails a day over SMTP).
The last two runs send for real to bench/smtp.py's counting sink and are timed stage by stage:

- `quiet`: half a day after the last silent day, no shop change in between: nothing changed and,
  with reminders every 2 days at a daily cadence, nothing due (any whole day later has reminders due);
- `busy`: the next daily run, after a day of the usual shop changes: reminders, changes, new orders.

`--days N` runs N daily runs: N - 1 silent ones (T0 .. T0 + N - 2 days), the quiet run, and the
busy day (T0 + N - 1 days). Per backend (SQLite file, MariaDB `bench_year_state`, PostgreSQL
`bench_year_state`, each made fresh) it reports the rows written per day (line history rows added
and closed, notifications added, rows staged), the time per day, the quiet and busy days stage by
stage, the state's rows and bytes per table at the end, and the audit page's queries
(bench/audit.py's `measure`). Results: `bench/results/year.json` (a backend run alone replaces its
own entry and keeps the others', when shop and seed are the same) and `bench/results/year.md`.

    python -m bench.year [--days 365] [--days-for sqlite=40] [--backends sqlite,mariadb,postgres]
                         [--size full|quick|existing] [--source-db bench_shop] [--shop-db bench_year_shop]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import closing
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pymysql
import sqlalchemy as sa

from bench import audit as bench_audit
from bench import shop as bench_shop
from bench import smtp as bench_smtp
from bench.run import RESULTS, SENDER, machine, stage_split
from include.backorder import KINDS
from include.backorder.config import DbConnection, RunContext, RunParams, SmtpSettings
from include.backorder.shop import parse_shop_datetime

BACKENDS = ("sqlite", "mariadb", "postgres")
SERVER_URL = bench_shop.DEFAULT_URL  # the MariaDB server of the shops (and of the MariaDB state)
SOURCE_DB = bench_shop.DEFAULT_DATABASE
SHOP_DB = "bench_year_shop"
STATE_DB = "bench_year_state"
STATE_URLS = {
    "sqlite": "sqlite:////tmp/bench_year_state.sqlite",
    "mariadb": f"{SERVER_URL}/{STATE_DB}?charset=utf8mb4",
    "postgres": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{STATE_DB}",
}
T0 = bench_shop.REFERENCE_TIME  # naive shop time (UTC): the first run's T
DAY = timedelta(days=1)
QUIET_AFTER = timedelta(hours=12)

# The shop's year (see the module docstring).
DATE_CHANGES = 0.03  # share of the backordered products whose date moves per day
LATER_SHARE = 0.7  # of those, moved later (1-14 days); the others earlier (1-7 days, never to T or before)
LATER_DAYS, EARLIER_DAYS = (1, 14), (1, 7)
NEW_BACKORDER_DAYS = (7, 60)  # a newly backordered product's date, days after T
SHIP_AFTER_DAYS = (1, 2)  # an order ships this many days after the first run that found it waiting no more
BACKORDER_LINES_PER_ORDER = (1, 1, 1, 2, 2, 3)  # a new waiting order's backordered products
IN_STOCK_LINES_PER_ORDER = (0, 0, 1, 1, 2)  # and its in-stock ones
PLAIN_SHARE = 0.25  # orders without a backordered product, per new waiting order
PLAIN_LINES = (1, 1, 2, 3)
QUANTITIES = bench_shop.QUANTITIES
PROGRESS_EVERY = 10  # days

# Targets (see docs/benchmark.md).
POSTGRES_BYTES_TARGET = 2 * 1024**3
AUDIT_MS_TARGET = 200.0
QUIET_ROWS_TARGET = 0.01  # of the backorder lines


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- connections -----------------------------------------------------------------------------------


def db_connection(url: str, conn_id: str) -> DbConnection:
    """A DbConnection for a SQLAlchemy URL (as the DAG's connections give them)."""
    u = sa.engine.make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        return DbConnection(conn_id, "sqlite", host=u.database or "")
    kind = {"mysql": "mysql", "mariadb": "mysql", "postgresql": "postgres"}[backend]
    return DbConnection(
        conn_id,
        kind,
        host=u.host or "127.0.0.1",
        port=u.port,
        login=u.username or "",
        password=u.password or "",
        schema=u.database or "",
    )


def _mysql(server_url: str, database: str | None = None, autocommit: bool = True) -> Any:
    u = sa.engine.make_url(server_url)
    return pymysql.connect(
        host=u.host or "127.0.0.1",
        port=u.port or 3306,
        user=u.username or "root",
        password=u.password or "",
        database=database,
        charset="utf8mb4",
        autocommit=autocommit,
        # As bench/shop.py: zero dates allowed (osCommerce writes them), data errors are errors.
        init_command="SET SESSION sql_mode = 'STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION'",
    )


def _name(name: str) -> str:
    if not name.replace("_", "").isalnum() or not name.isascii():
        raise ValueError(f"a database name of letters, digits and '_' only, got {name!r}")
    return name


# --- the shop --------------------------------------------------------------------------------------

NEW_ORDERS = "bench_year_new_order"
NEW_LINES = "bench_year_new_line"


def source_sizes(server_url: str, source: str) -> dict[str, str]:
    """The bench_meta of a shop bench/shop.py built (empty if there is none), read only."""
    with closing(_mysql(server_url)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = 'bench_meta'",
            (source,),
        )
        if not cur.fetchone()[0]:
            return {}
        cur.execute(f"SELECT name, value FROM {_name(source)}.bench_meta")
        return {str(k): str(v) for k, v in cur.fetchall()}


def ensure_source(server_url: str, source: str, size: str) -> dict[str, str]:
    """The source shop's bench_meta; with `size` full or quick, build it first if it does not hold that
    shop (bench/shop.py's create_shop). `existing` takes the source as it is."""
    meta = source_sizes(server_url, source)
    if size != "existing":
        wanted = {k: str(v) for k, v in asdict(bench_shop.SIZES[size]).items()}
        if {k: meta.get(k) for k in wanted} != wanted or meta.get("generator") != bench_shop.GENERATOR:
            say(f"{source} does not hold the {size} bench shop: building it")
            bench_shop.create_shop(f"{server_url}/{source}", bench_shop.SIZES[size], database=source)
            meta = source_sizes(server_url, source)
    if not meta:
        raise RuntimeError(f"{source} holds no bench shop (bench_meta): build one with python -m bench.shop")
    return meta


def copy_shop(server_url: str, source: str, target: str) -> float:
    """Make `target` a copy of the shop in `source` (dropped and made again), with the original dates and
    the scratch tables new orders go through; return the seconds it took. `source` is only read."""
    if _name(target) in (_name(source), bench_shop.DEFAULT_DATABASE):
        raise ValueError(f"the year's shop must be a database of its own, not {target!r}")
    started = time.perf_counter()
    with closing(_mysql(server_url)) as conn, conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {target}")
        cur.execute(f"CREATE DATABASE {target} CHARACTER SET utf8 COLLATE utf8_unicode_ci")
        cur.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY table_name", (source,)
        )
        tables = [str(row[0]) for row in cur.fetchall()]
        for table in tables:
            cur.execute(f"CREATE TABLE {target}.{table} LIKE {source}.{table}")
            cur.execute(f"INSERT INTO {target}.{table} SELECT * FROM {source}.{table}")
        cur.execute(
            f"CREATE TABLE {target}.{NEW_ORDERS} (orders_id int NOT NULL PRIMARY KEY, source_id int NOT NULL,"
            " date_purchased datetime NOT NULL, orders_status int NOT NULL, last_modified datetime NULL)"
        )
        cur.execute(
            f"CREATE TABLE {target}.{NEW_LINES} (orders_products_id int NOT NULL PRIMARY KEY, orders_id int NOT NULL,"
            " products_id int NOT NULL, products_quantity int NOT NULL)"
        )
        cur.execute(f"ANALYZE TABLE {', '.join(f'{target}.{t}' for t in tables)}")
        cur.fetchall()
    # The source's dates as built (a bench.run repeat may have moved some while we copied).
    bench_shop.restore_dates(f"{server_url}/{target}", database=target)
    return time.perf_counter() - started


@dataclass
class Order:
    """An open order as the simulation knows it: its products, and since which day it waits no more."""

    products: list[int]
    ready_day: int | None = None
    ship_delay: int = 1


@dataclass
class ShopDay:
    """What changed in the shop before one run."""

    dates_moved: int = 0
    dates_later: int = 0
    products_arrived: int = 0  # dates reached since the previous run
    newly_backordered: int = 0
    orders_shipped: int = 0
    waiting_orders_new: int = 0
    plain_orders_new: int = 0
    lines_new: int = 0
    seconds: float = 0.0

    def brief(self) -> str:
        return (
            f"{self.dates_moved} dates moved, {self.products_arrived} arrived, {self.newly_backordered} newly"
            f" backordered, {self.waiting_orders_new:,} + {self.plain_orders_new:,} new orders,"
            f" {self.orders_shipped:,} shipped"
        )


class YearShop:
    """The year's shop: the copy in MariaDB and what the simulation knows of it (product dates, open orders).

    Only the simulation writes to the copy, so what it knows stays what the shop holds; every change of
    a day is written in one transaction.
    """

    def __init__(self, server_url: str, database: str, seed: int) -> None:
        self.server_url, self.database = server_url, database
        self.rng = random.Random(seed)
        self.dates: dict[int, datetime | None] = {}
        self.open: dict[int, Order] = {}
        with closing(_mysql(server_url, database)) as conn, conn.cursor() as cur:
            cur.execute("SELECT products_id, CAST(products_date_available AS CHAR) FROM products ORDER BY products_id")
            self.dates = {int(pid): parse_shop_datetime(value) for pid, value in cur.fetchall()}
            cur.execute(
                "SELECT o.orders_id, op.products_id FROM orders o JOIN orders_products op ON op.orders_id = o.orders_id"
                f" WHERE o.orders_status IN ({', '.join(map(str, bench_shop.OPEN_STATUSES))})"
                " ORDER BY o.orders_id, op.orders_products_id"
            )
            for oid, pid in cur.fetchall():
                self.open.setdefault(int(oid), Order([])).products.append(int(pid))
            cur.execute("SELECT MAX(orders_id) FROM orders")
            self.source_orders = int(cur.fetchone()[0])  # customers are cloned from these
            self.next_order = self.source_orders + 1
            cur.execute("SELECT MAX(orders_products_id) FROM orders_products")
            self.next_line = int(cur.fetchone()[0]) + 1
        self.backordered_at_start = len(self.backordered(T0))
        self.waiting_at_start = self.waiting(T0)
        self.mark_ready(0, T0)

    def backordered(self, at: datetime) -> list[int]:
        return [pid for pid, date in self.dates.items() if date is not None and date > at]

    def _waits(self, order: Order, at: datetime) -> bool:
        dates = self.dates
        return any((d := dates.get(pid)) is not None and d > at for pid in order.products)

    def waiting(self, at: datetime) -> int:
        return sum(1 for order in self.open.values() if self._waits(order, at))

    def mark_ready(self, day: int, at: datetime) -> None:
        """After the run of `day` at `at`: orders that wait no more ship SHIP_AFTER_DAYS later."""
        for order in self.open.values():
            if self._waits(order, at):
                order.ready_day = None
            elif order.ready_day is None:
                order.ready_day, order.ship_delay = day, self.rng.randint(*SHIP_AFTER_DAYS)

    def _jitter(self, base: int) -> int:
        spread = max(1, base // 500)
        return self.rng.randint(-spread, spread)

    def change(self, day: int, since: datetime, at: datetime) -> ShopDay:
        """The shop's changes between the run at `since` and the run of `day` at `at`, written to the copy."""
        started = time.perf_counter()
        rng, out = self.rng, ShopDay()
        # Orders that waited no more at earlier runs ship.
        shipped = [oid for oid, o in self.open.items() if o.ready_day is not None and day - o.ready_day >= o.ship_delay]
        for oid in shipped:
            del self.open[oid]
        out.orders_shipped = len(shipped)
        out.products_arrived = sum(1 for d in self.dates.values() if d is not None and since < d <= at)
        # Dates move.
        backordered = self.backordered(at)
        moved: dict[int, datetime] = {}
        for pid in rng.sample(backordered, min(len(backordered), round(DATE_CHANGES * len(backordered)))):
            date = self.dates[pid]
            assert date is not None
            if rng.random() < LATER_SHARE:
                new = date + timedelta(days=rng.randint(*LATER_DAYS))
            else:  # earlier, but still after the coming run: else it is the day it arrives, not a change
                new = max(date - timedelta(days=rng.randint(*EARLIER_DAYS)), at + DAY)
                if new == date:  # it cannot come earlier: it is postponed instead
                    new = date + DAY
            moved[pid] = new
            out.dates_later += new > date
        # New products become backordered.
        still = len(backordered)
        wanted = max(0, self.backordered_at_start - still + self._jitter(self.backordered_at_start))
        in_stock = [pid for pid, d in self.dates.items() if d is None or d <= since]
        for pid in rng.sample(in_stock, min(wanted, len(in_stock))):
            moved[pid] = at + timedelta(days=rng.randint(*NEW_BACKORDER_DAYS))
            out.newly_backordered += 1
        out.dates_moved = len(moved) - out.newly_backordered
        self.dates.update(moved)
        # New orders: enough waiting ones to keep the waiting orders near the start's.
        backordered = self.backordered(at)
        in_stock = [pid for pid, d in self.dates.items() if d is None or d <= at]
        waiting_now = self.waiting(at)
        out.waiting_orders_new = (
            max(0, self.waiting_at_start - waiting_now + self._jitter(self.waiting_at_start)) if backordered else 0
        )
        out.plain_orders_new = round(out.waiting_orders_new * PLAIN_SHARE)
        new_orders: list[tuple[Any, ...]] = []
        new_lines: list[tuple[int, int, int, int]] = []
        window = max(2, int((at - since).total_seconds()))
        count = out.waiting_orders_new + out.plain_orders_new
        for i in range(count):
            oid = self.next_order
            self.next_order += 1
            if i < out.waiting_orders_new:
                pids = rng.sample(backordered, min(len(backordered), rng.choice(BACKORDER_LINES_PER_ORDER)))
                extra = rng.choice(IN_STOCK_LINES_PER_ORDER)
            else:
                pids, extra = [], rng.choice(PLAIN_LINES)
            pids += [p for p in rng.sample(in_stock, min(len(in_stock), extra)) if p not in pids]
            rng.shuffle(pids)
            purchased = since + timedelta(seconds=rng.randint(1, window - 1))
            status = bench_shop.OPEN_STATUSES[0] if rng.random() < 0.6 else bench_shop.OPEN_STATUSES[1]
            modified = None if status == bench_shop.OPEN_STATUSES[0] else purchased
            new_orders.append((oid, rng.randint(1, self.source_orders), purchased, status, modified))
            for pid in pids:
                new_lines.append((self.next_line, oid, pid, rng.choice(QUANTITIES)))
                self.next_line += 1
            self.open[oid] = Order(pids)
        out.lines_new = len(new_lines)
        self._write(shipped, moved, new_orders, new_lines, since + (at - since) / 2)
        out.seconds = time.perf_counter() - started
        return out

    def _write(
        self,
        shipped: list[int],
        moved: dict[int, datetime],
        new_orders: list[tuple[Any, ...]],
        new_lines: list[tuple[int, int, int, int]],
        shipped_at: datetime,
    ) -> None:
        order_columns = ", ".join(bench_shop.ORDER_COLUMNS)
        own = {"orders_id", "last_modified", "date_purchased", "orders_status"}
        order_values = ", ".join(f"n.{c}" if c in own else f"o.{c}" for c in bench_shop.ORDER_COLUMNS)
        with closing(_mysql(self.server_url, self.database, autocommit=False)) as conn, conn.cursor() as cur:
            for start in range(0, len(shipped), 1000):
                ids = shipped[start : start + 1000]
                cur.execute(
                    "UPDATE orders SET orders_status = %s, last_modified = %s, orders_date_finished = %s"
                    f" WHERE orders_id IN ({', '.join(['%s'] * len(ids))})",
                    (bench_shop.DELIVERED, shipped_at, shipped_at, *ids),
                )
            cur.executemany(
                "UPDATE products SET products_date_available = %s WHERE products_id = %s",
                [(date, pid) for pid, date in sorted(moved.items())],
            )
            if new_orders:
                cur.executemany(
                    f"INSERT INTO {NEW_ORDERS} (orders_id, source_id, date_purchased, orders_status, last_modified)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    new_orders,
                )
                cur.execute(
                    f"INSERT INTO orders ({order_columns}) SELECT {order_values} FROM {NEW_ORDERS} n"
                    " JOIN orders o ON o.orders_id = n.source_id ORDER BY n.orders_id"
                )
            if new_lines:
                cur.executemany(
                    f"INSERT INTO {NEW_LINES} (orders_products_id, orders_id, products_id, products_quantity)"
                    " VALUES (%s, %s, %s, %s)",
                    new_lines,
                )
                cur.execute(
                    f"INSERT INTO orders_products ({', '.join(bench_shop.LINE_COLUMNS)})"
                    " SELECT l.orders_products_id, l.orders_id, l.products_id, p.products_model, d.products_name,"
                    " p.products_price, p.products_price, '19.0000', l.products_quantity"
                    f" FROM {NEW_LINES} l JOIN orders o ON o.orders_id = l.orders_id"
                    " JOIN products p ON p.products_id = l.products_id"
                    " JOIN products_description d ON d.products_id = l.products_id"
                    " AND d.language_id = IF(o.language_code = 'de', 2, 1) ORDER BY l.orders_products_id"
                )
            cur.execute(f"DELETE FROM {NEW_ORDERS}")
            cur.execute(f"DELETE FROM {NEW_LINES}")
            conn.commit()


# --- the state -------------------------------------------------------------------------------------


def fresh_state(url: str) -> None:
    """An empty state database at `url` (a SQLite file removed, a server database dropped and made again)."""
    u = sa.engine.make_url(url)
    if u.get_backend_name() == "sqlite":
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{u.database}{suffix}").unlink(missing_ok=True)
        Path(u.database or "").parent.mkdir(parents=True, exist_ok=True)
        return
    postgres = u.get_backend_name() == "postgresql"
    server = sa.create_engine(u.set(database="postgres" if postgres else "mysql"), isolation_level="AUTOCOMMIT")
    name = _name(u.database or "")
    with server.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{' WITH (FORCE)' if postgres else ''}")
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    server.dispose()


def state_tables(engine: sa.Engine) -> list[str]:
    return sorted(name for name in sa.inspect(engine).get_table_names() if name.startswith("bo_"))


def table_rows(engine: sa.Engine, tables: Sequence[str]) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: int(conn.exec_driver_sql(f"SELECT COUNT(*) FROM {t}").scalar_one()) for t in tables}


def state_size(engine: sa.Engine) -> dict[str, Any]:
    """Rows and bytes per table, and the database's bytes, as the backend reports them."""
    tables = state_tables(engine)
    rows = table_rows(engine, tables)
    per_table: dict[str, int | None] = dict.fromkeys(tables)
    real_sending: dict[str, Any] | None = None
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            path = Path(engine.url.database or "")
            total = sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())
            masters = "SELECT name, tbl_name FROM sqlite_master WHERE tbl_name LIKE 'bo_%'"
            owner: dict[str, str] = {str(name): str(table) for name, table in conn.exec_driver_sql(masters)}
            try:
                pages = conn.exec_driver_sql("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").all()
            except sa.exc.OperationalError:  # SQLite built without dbstat: the file size only
                pages = []
            for name, size in pages:
                table = owner.get(name)
                if table in per_table:
                    per_table[table] = (per_table[table] or 0) + int(size)
            how = "file size; per table: dbstat pages (table and its indexes)"
        elif engine.dialect.name == "postgresql":
            for t in tables:
                per_table[t] = int(conn.exec_driver_sql(f"SELECT pg_total_relation_size('{t}')").scalar_one())
            total = int(conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one())
            how = "pg_database_size; per table: pg_total_relation_size (table, indexes, TOAST)"
            # A silenced row lacks what a sent one keeps (Message-ID, the server's answer, sent_at): what the
            # year's notifications would weigh had they been sent, from the rows of each kind (pg_column_size).
            found = conn.exec_driver_sql(
                "SELECT status, COUNT(*), AVG(pg_column_size(n.*)) FROM bo_notification n"
                " WHERE status IN ('sent', 'silenced') GROUP BY status"
            ).all()
            by_status = {str(status): (int(count), float(avg)) for status, count, avg in found}
            if {"sent", "silenced"} <= by_status.keys():
                more = by_status["sent"][1] - by_status["silenced"][1]
                real_sending = {
                    "silenced_rows": by_status["silenced"][0],
                    "bytes_more_per_row": more,
                    "bytes": total + round(more * by_status["silenced"][0]),
                }
        else:
            conn.exec_driver_sql(f"ANALYZE TABLE {', '.join(tables)}").all()  # fresh statistics for the sizes
            found = conn.exec_driver_sql(
                "SELECT table_name, data_length + index_length FROM information_schema.tables"
                " WHERE table_schema = DATABASE()"
            ).all()
            for name, size in found:
                if name in per_table:
                    per_table[name] = int(size)
            total = sum(int(size) for _, size in found)
            how = "information_schema data_length + index_length (after ANALYZE TABLE)"
    return {
        "tables": {t: {"rows": rows[t], "bytes": per_table[t]} for t in tables},
        "rows": sum(rows.values()),
        "bytes": total,
        "measured_as": how,
        "with_real_sending": real_sending,
    }


def server_version(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return "SQLite " + str(conn.exec_driver_sql("SELECT sqlite_version()").scalar_one())
        return str(conn.exec_driver_sql("SELECT VERSION()").scalar_one()).split(" on ")[0]


# --- one run ---------------------------------------------------------------------------------------


def _smtp(port: int) -> SmtpSettings:
    return SmtpSettings(host="127.0.0.1", port=port, from_email=SENDER, use_ssl=False, use_starttls=False)


def run_day(
    shop: DbConnection, state: DbConnection, probe: sa.Engine, at: datetime, params: RunParams, port: int | None
) -> dict[str, Any]:
    """One run's stages as bench/run.py's `run_day` runs them, and the rows it wrote (counted between the
    stages and after them, outside the stages' time)."""
    from include.backorder import pipeline
    from include.backorder import state as st

    t = at.replace(tzinfo=None)
    started = time.perf_counter()
    extracted = pipeline.extract(shop, state, RunContext(at, dag_run_id=f"bench_year__{at:%Y%m%dT%H%M}"), params)
    run_id = extracted.run_id
    counting = time.perf_counter()
    with probe.connect() as conn:
        staged = {
            table.name: int(conn.execute(sa.select(sa.func.count()).where(table.c.run_id == run_id)).scalar_one())
            for table in (st.staged_lines, st.staged_changes, st.staged_arrivals)
        }
    counted = time.perf_counter() - counting
    pipeline.load_previous_snapshot(state, run_id)
    due = pipeline.classify_run(state, run_id)
    for kind in KINDS:
        if not due.get(kind):
            continue
        if port is None:
            raise RuntimeError(f"{due[kind]} {kind} notifications due at {at}, and no SMTP server to send them to")
        pipeline.send(state, run_id, kind, _smtp(port))
    summary = pipeline.finish(state, run_id)
    total = time.perf_counter() - started - counted
    h, n = st.line_history, st.notifications
    with probe.connect() as conn:
        run = st.get_run(conn, run_id)
        added = conn.execute(sa.select(sa.func.count()).where(h.c.valid_from == t)).scalar_one()
        closed = conn.execute(sa.select(sa.func.count()).where(h.c.valid_to == t)).scalar_one()
        notified = conn.execute(sa.select(sa.func.count()).where(n.c.run_id == run_id)).scalar_one()
    sent = sum(sum(langs.values()) for langs in summary["counts"].get("sent", {}).values())
    silenced = sum(sum(langs.values()) for langs in summary["counts"].get("silenced", {}).values())
    history_added, history_closed, notifications = int(added), int(closed), int(notified)
    return {
        "reference_time": t.isoformat(),
        "lines": run["line_count"],
        "orders": run["order_count"],
        "changed_lines": extracted.changed_lines,
        "staged_orders": extracted.staged_orders,
        "staged_rows": sum(staged.values()),
        "history_added": history_added,
        "history_closed": history_closed,
        "notifications": notifications,
        "snapshot_rows": 1,
        # Rows inserted or updated beyond the run record and the lease: the line history's new and closed
        # rows, the notifications, the snapshot's row, and what extract staged (deleted again by finish).
        "rows_written": history_added + history_closed + notifications + 1 + sum(staged.values()),
        "due": due,
        "sent": sent,
        "silenced": silenced,
        "stage_seconds": json.loads(run["stage_seconds"]),
        "total": total,
        "load": os.getloadavg()[0],  # the machine's 1-minute load average as the run ended (others share it)
    }


# --- a backend's year ------------------------------------------------------------------------------


@dataclass
class Options:
    days: int
    seed: int
    server_url: str
    source: str
    shop_db: str
    audit_repeats: int


@dataclass
class BackendYear:
    backend: str
    state_url: str
    days: list[dict[str, Any]] = field(default_factory=list)
    quiet: dict[str, Any] = field(default_factory=dict)
    busy: dict[str, Any] = field(default_factory=dict)
    shop_copy_seconds: float = 0.0
    seconds: float = 0.0
    backordered_at_end: int = 0


def _progress(backend: str, day: int, days: int, record: dict[str, Any], started: float, probe: sa.Engine) -> None:
    rows = table_rows(probe, ["bo_line_history", "bo_notification", "bo_run"])
    elapsed = time.perf_counter() - started
    say(
        f"  {backend} day {day + 1}/{days} (T {record['reference_time'][:10]}): {record['lines']:,} lines,"
        f" {record['changed_lines']:,} line changes (shop: {record['shop']['brief']}),"
        f" {elapsed:.0f} s so far (projected {elapsed / (day + 1) * days / 60:.0f} min for {days} days);"
        f" state rows: history {rows['bo_line_history']:,}, notifications {rows['bo_notification']:,},"
        f" runs {rows['bo_run']:,}"
    )


def one_year(backend: str, state_url: str, options: Options, sink: bench_smtp.SinkProcess) -> dict[str, Any]:
    """The year on one state database (see the module docstring); returns its report entry."""
    if options.days < 2:
        raise ValueError("--days must be at least 2: the quiet run follows a silent day, the busy day follows it")
    year = BackendYear(backend, state_url)
    started = time.perf_counter()
    say(f"{backend}: copying {options.source} into {options.shop_db}")
    year.shop_copy_seconds = copy_shop(options.server_url, options.source, options.shop_db)
    fresh_state(state_url)
    shop_conn = db_connection(f"{options.server_url}/{options.shop_db}", "shop_db")
    state = db_connection(state_url, "backorder_state_db")
    model = YearShop(options.server_url, options.shop_db, options.seed)
    say(
        f"{backend}: shop copied in {year.shop_copy_seconds:.0f} s; {model.waiting_at_start:,} waiting orders,"
        f" {model.backordered_at_start:,} backordered products; {options.days} days"
    )
    probe = sa.create_engine(state.url())
    silent = RunParams(catch_up_silently=True)
    year_started = time.perf_counter()
    previous = T0
    try:
        for day in range(options.days - 1):
            at = T0 + day * DAY
            changes = model.change(day, previous, at) if day else ShopDay()
            record = run_day(shop_conn, state, probe, at.replace(tzinfo=UTC), silent, None)
            model.mark_ready(day, at)
            record["shop"] = asdict(changes) | {"brief": changes.brief()}
            year.days.append(record)
            previous = at
            if (day + 1) % PROGRESS_EVERY == 0 or day == 0:
                _progress(backend, day, options.days, record, year_started, probe)
        # The quiet run: no shop change since the last day, nothing due.
        quiet_at = previous + QUIET_AFTER
        sink.reset()
        year.quiet = run_day(shop_conn, state, probe, quiet_at.replace(tzinfo=UTC), RunParams(), sink.port)
        year.quiet["shop"] = asdict(ShopDay()) | {"brief": ShopDay().brief()}
        _check_sink(sink, year.quiet, "quiet")
        say(_day_line(backend, "quiet", year.quiet))
        # The busy day: the next daily run, after a day of the usual changes.
        day = options.days - 1
        at = T0 + day * DAY
        changes = model.change(day, quiet_at, at)
        sink.reset()
        year.busy = run_day(shop_conn, state, probe, at.replace(tzinfo=UTC), RunParams(), sink.port)
        year.busy["shop"] = asdict(changes) | {"brief": changes.brief()}
        _check_sink(sink, year.busy, "busy")
        say(_day_line(backend, "busy", year.busy))
        year.seconds = time.perf_counter() - started
        year.backordered_at_end = len(model.backordered(at))
        say(f"{backend}: timing the audit page's queries ({options.audit_repeats} repeats each)")
        audit_ms = bench_audit.measure(probe, options.audit_repeats)
        size = state_size(probe)
        version = server_version(probe)
    finally:
        probe.dispose()
    return backend_report(year, options, model, audit_ms, size, version)


def _check_sink(sink: bench_smtp.SinkProcess, day: dict[str, Any], name: str) -> None:
    if day["sent"]:
        sink.wait_for(day["sent"], timeout=60)
    if sink.messages != day["sent"]:
        raise RuntimeError(f"{name}: the sink got {sink.messages} messages, the run recorded {day['sent']} sent")


def _day_line(backend: str, name: str, day: dict[str, Any]) -> str:
    return (
        f"  {backend} {name} day (T {day['reference_time']}): {day['lines']:,} lines, {day['changed_lines']:,} line"
        f" changes, {day['sent']:,} sent, {day['rows_written']:,} rows written beyond the run record,"
        f" {day['total']:.2f} s"
    )


# --- the report ------------------------------------------------------------------------------------


def spread(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"min": 0.0, "median": 0.0, "max": 0.0, "mean": 0.0}
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


def _timed(day: dict[str, Any]) -> dict[str, Any]:
    split = stage_split(day)
    return {key: day[key] for key in day if key != "stage_seconds"} | {
        "stages": split,
        "stage_seconds": day["stage_seconds"],
    }


def backend_report(
    year: BackendYear,
    options: Options,
    model: YearShop,
    audit_ms: dict[str, float],
    size: dict[str, Any],
    version: str,
) -> dict[str, Any]:
    days = year.days[1:]  # the first day tells every waiting order: not a day of the year's rhythm
    run_seconds = [d["total"] for d in year.days]
    daily_runs = len(year.days) + 1  # the silent days and the busy day (the quiet run is half a day between)
    per_run_bytes = size["bytes"] / daily_runs
    quiet_rows = year.quiet["rows_written"]
    quiet_limit = QUIET_ROWS_TARGET * year.quiet["lines"]
    targets = {
        "every audit query <= 200 ms": {
            "target": AUDIT_MS_TARGET,
            "value": max(audit_ms.values()),
            "met": max(audit_ms.values()) <= AUDIT_MS_TARGET,
        },
        "rows written on the quiet day beyond the run record <= 1 % of the backorder lines": {
            "target": quiet_limit,
            "value": quiet_rows,
            "met": quiet_rows <= quiet_limit,
        },
    }
    if year.backend == "postgres":
        targets["state database <= 2 GB after the year"] = {
            "target": POSTGRES_BYTES_TARGET,
            "value": size["bytes"],
            "met": size["bytes"] <= POSTGRES_BYTES_TARGET,
            "full_year": daily_runs >= 365,
            "with_real_sending": (size.get("with_real_sending") or {}).get("bytes"),
        }
    return {
        "backend": year.backend,
        "version": version,
        "state_url": year.state_url,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "daily_runs": daily_runs,
        "seconds": year.seconds,
        "shop_copy_seconds": year.shop_copy_seconds,
        "run_seconds_total": sum(run_seconds) + year.quiet["total"] + year.busy["total"],
        "shop_seconds_total": sum(d["shop"]["seconds"] for d in year.days) + year.busy["shop"]["seconds"],
        "projected_year_seconds": year.shop_copy_seconds + (year.seconds - year.shop_copy_seconds) / daily_runs * 365,
        "day_seconds": spread(run_seconds[1:]),
        "load_average": spread([d["load"] for d in year.days]),
        "first_day_seconds": run_seconds[0],
        "per_day": {
            key: spread([d[key] for d in days])
            for key in (
                "lines",
                "orders",
                "changed_lines",
                "staged_rows",
                "history_added",
                "history_closed",
                "notifications",
                "rows_written",
            )
        },
        "waiting_orders": {"start": model.waiting_at_start, "end": year.busy["orders"]},
        "backordered_products": {"start": model.backordered_at_start, "end": year.backordered_at_end},
        "state": size,
        "state_bytes_per_run": per_run_bytes,
        "state_bytes_projected_365": per_run_bytes * 365 if daily_runs < 365 else size["bytes"],
        "quiet": _timed(year.quiet),
        "busy": _timed(year.busy),
        "audit_ms": audit_ms,
        "audit_all_within_200ms": max(audit_ms.values()) <= AUDIT_MS_TARGET,
        "targets": targets,
        "days": [
            {
                "reference_time": d["reference_time"],
                "lines": d["lines"],
                "orders": d["orders"],
                "changed_lines": d["changed_lines"],
                "staged_rows": d["staged_rows"],
                "history_added": d["history_added"],
                "history_closed": d["history_closed"],
                "notifications": d["notifications"],
                "seconds": round(d["total"], 3),
                "load": round(d["load"], 2),
                "stages": {k: round(v, 3) for k, v in stage_split(d).items() if k in ("extract", "classify", "commit")},
                "shop": {k: round(v, 3) if isinstance(v, float) else v for k, v in d["shop"].items() if k != "brief"},
            }
            for d in year.days
        ],
    }


def _mb(value: float | None) -> str:
    return "" if value is None else f"{value / 2**20:,.1f}"


def markdown(result: dict[str, Any]) -> str:
    m, z = result["machine"], result["shop"]
    backends = result["backends"]
    lines = [
        f"Year: daily runs on the bench shop `{result['size']}` ({int(z.get('order_lines', 0)):,} order lines,"
        f" {int(z.get('open_orders', 0)):,} open orders holding {int(z.get('backorder_lines', 0)):,} backorder"
        f" lines at the start), seed {result['seed']}. {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB,"
        f" Python {m['python']}; " + "; ".join(f"{b['backend']}: {b['version']}" for b in backends.values()) + ".",
        "",
        "Each day before its run, "
        + result["model"]
        + " The year's days run with catch_up_silently (notifications recorded as silenced, counted as told);"
        " the quiet run (half a day after the last silent day, no shop change) and the busy day (the next daily"
        " run) send for real to the counting sink. Seconds are wall time on a machine others share: `load avg` is"
        " the median 1-minute load average as the days' runs ended.",
        "",
        "| backend | daily runs | measured at | wall | projected 365 days | run s/day min / median / max | load"
        " avg | history rows added/day median (max) | closed/day | notification rows/day median (max) | state rows"
        " | state MB |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in backends.values():
        p, d = b["per_day"], b["day_seconds"]
        lines.append(
            f"| {b['backend']} | {b['daily_runs']} | {b['measured_at'][:16]} | {b['seconds'] / 60:,.0f} min"
            f" | {b['projected_year_seconds'] / 3600:,.1f} h | {d['min']:.1f} / {d['median']:.1f} / {d['max']:.1f}"
            f" | {b.get('load_average', {}).get('median', 0):.1f}"
            f" | {p['history_added']['median']:,.0f} ({p['history_added']['max']:,.0f})"
            f" | {p['history_closed']['median']:,.0f}"
            f" | {p['notifications']['median']:,.0f} ({p['notifications']['max']:,.0f})"
            f" | {b['state']['rows']:,} | {_mb(b['state']['bytes'])} |"
        )
    lines += [
        "",
        "The quiet and the busy day, seconds per stage (as bench/run.py splits them):",
        "",
        "| backend | day | lines | line changes | emails | rows written | extract | classify | render | send"
        " | commit | total |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for b in backends.values():
        for name in ("quiet", "busy"):
            day = b[name]
            s = day["stages"]
            lines.append(
                f"| {b['backend']} | {name} | {day['lines']:,} | {day['changed_lines']:,} | {day['sent']:,}"
                f" | {day['rows_written']:,} | {s['extract']:.2f} | {s['classify']:.2f} | {s['render']:.2f}"
                f" | {s['send']:.2f} | {s['commit']:.2f} | {s['total']:.2f} |"
            )
    names = sorted({t for b in backends.values() for t in b["state"]["tables"]})
    lines += ["", "State after the year, rows / MB per table:", ""]
    lines.append("| table | " + " | ".join(b["backend"] for b in backends.values()) + " |")
    lines.append("|---|" + "---:|" * len(backends))
    for name in names:
        cells = []
        for b in backends.values():
            t = b["state"]["tables"].get(name)
            cells.append("" if t is None else f"{t['rows']:,} / {_mb(t['bytes'])}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| whole database | " + " | ".join(f"{_mb(b['state']['bytes'])} MB" for b in backends.values()) + " |")
    queries = list(next(iter(backends.values()))["audit_ms"]) if backends else []
    lines += ["", "The audit page's queries at the end (bench/audit.py's measure, median ms):", ""]
    lines.append("| query | " + " | ".join(b["backend"] for b in backends.values()) + " |")
    lines.append("|---|" + "---:|" * len(backends))
    for q in queries:
        lines.append(f"| {q} | " + " | ".join(f"{b['audit_ms'].get(q, 0):,.1f}" for b in backends.values()) + " |")
    lines += ["", "Targets:", ""]
    for b in backends.values():
        for name, t in b["targets"].items():
            value = t["value"]
            shown = f"{value / 2**30:.2f} GB" if "GB" in name else f"{value:,.1f}" if "ms" in name else f"{value:,}"
            scope = "" if t.get("full_year", True) else f" (after {b['daily_runs']} daily runs, not a year)"
            if t.get("with_real_sending"):
                real = t["with_real_sending"] / 2**30
                scope += f" (had the year's notifications been sent, not silenced: about {real:.2f} GB)"
            lines.append(f"- {b['backend']}: {name}: {shown}{scope}: **{'met' if t['met'] else 'NOT met'}**")
    partial = [b for b in backends.values() if b["daily_runs"] < 365]
    if partial:
        lines += [""]
        lines += [
            f"- {b['backend']} ran {b['daily_runs']} daily runs, not 365: its state grows about"
            f" {_mb(b['state_bytes_per_run'])} MB a run, about {_mb(b['state_bytes_projected_365'])} MB for a year"
            f" at that rate; a year would take about {b['projected_year_seconds'] / 3600:.1f} h at its pace so far."
            for b in partial
        ]
    return "\n".join(lines) + "\n"


MODEL = (
    f"{DATE_CHANGES:.0%} of the backordered products get a new date ({LATER_SHARE:.0%} of them later by"
    f" {LATER_DAYS[0]}-{LATER_DAYS[1]} days, the others earlier by {EARLIER_DAYS[0]}-{EARLIER_DAYS[1]}),"
    " dates are reached and orders that wait no more ship 1-2 days after the first run that saw it,"
    f" in-stock products become backordered ({NEW_BACKORDER_DAYS[0]}-{NEW_BACKORDER_DAYS[1]} days ahead) as many"
    " as keep the backordered products near the start's, and new orders arrive (customers cloned from the"
    " shop's), as many waiting for backordered products as keep the waiting orders near the start's, and"
    f" {PLAIN_SHARE:.0%} as many again without a backordered product."
)


def merge(path: Path, fresh: dict[str, Any]) -> dict[str, Any]:
    """`fresh` with the other backends of the report at `path` kept, when that report is of the same shop and seed."""
    if not path.exists():
        return fresh
    try:
        old = json.loads(path.read_text())
    except ValueError:
        return fresh
    if (old.get("shop"), old.get("seed"), old.get("size")) != (fresh["shop"], fresh["seed"], fresh["size"]):
        return fresh
    backends = {k: v for k, v in old.get("backends", {}).items() if k not in fresh["backends"]}
    backends.update(fresh["backends"])
    return fresh | {"backends": {k: backends[k] for k in BACKENDS if k in backends}}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.year", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--days", type=int, default=365, help="daily runs per backend (default 365)")
    parser.add_argument(
        "--days-for", action="append", default=[], metavar="BACKEND=N", help="daily runs for one backend"
    )
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated: sqlite, mariadb, postgres")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--size",
        choices=(*sorted(bench_shop.SIZES), "existing"),
        default="full",
        help="the bench shop in --source-db (built when missing); existing: the shop there, as it is",
    )
    parser.add_argument("--server-url", default=SERVER_URL, help="the MariaDB server of the shops")
    parser.add_argument("--source-db", default=SOURCE_DB, help="the bench shop copied (only read)")
    parser.add_argument("--shop-db", default=SHOP_DB, help="the year's copy (dropped and made again)")
    for backend in BACKENDS:
        parser.add_argument(f"--{backend}-url", default=STATE_URLS[backend], help=f"the {backend} state database")
    parser.add_argument("--audit-repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="year", help="results file name (default year: year.json, year.md)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        say(f"unknown backend(s) {unknown}: choose from {', '.join(BACKENDS)}")
        return 2
    days = dict.fromkeys(backends, args.days)
    for item in args.days_for:
        backend, _, n = item.partition("=")
        if backend not in BACKENDS or not n.isdigit():
            say(f"--days-for takes BACKEND=N, got {item!r}")
            return 2
        days[backend] = int(n)
    meta = ensure_source(args.server_url, args.source_db, args.size)
    figures = ("orders", "order_lines", "open_orders", "backorder_lines", "products", "backordered_products")
    shop: dict[str, Any] = {k: int(meta[k]) for k in figures if k in meta} | {"source": args.source_db}
    started = time.perf_counter()
    say(f"bench.year: {', '.join(f'{b} {days[b]} days' for b in backends)}; shop {args.source_db} -> {args.shop_db}")
    results: dict[str, Any] = {}
    with bench_smtp.SinkProcess() as sink:
        for backend in backends:
            options = Options(
                days[backend], args.seed, args.server_url, args.source_db, args.shop_db, args.audit_repeats
            )
            results[backend] = one_year(backend, getattr(args, f"{backend}_url"), options, sink)
            say(f"{backend}: done in {results[backend]['seconds'] / 60:.1f} min")
    fresh = {
        "size": args.size if args.size != "existing" else args.source_db,
        "seed": args.seed,
        "shop": shop,
        "model": MODEL,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "backends": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{args.name}.json"
    result = merge(json_path, fresh)
    json_path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    table = markdown(result)
    (args.out / f"{args.name}.md").write_text(table)
    print(table)
    say(f"bench.year: done in {(time.perf_counter() - started) / 60:.1f} min; {json_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
