"""The extract query's formulations, timed as raw fetches on MariaDB and PostgreSQL: the honest L_read.

`make bench` measures L_read as the raw fetch of the shop's backorder lines. A raw fetch of a slow
query is a slow limit, so this module times several formulations that return exactly the same rows
(LINE_COLUMNS, compared as sets) and `fastest_raw_fetch` gives the fastest of them: what reading
those rows can cost, whichever way the SQL is written.

Formulations (`FORMULATIONS`), each built from the real query's columns and conditions: the query
before issue 16 (`lines_first`: order lines joined with their orders and products, ordered by
orders_id and orders_products_id) and the same without ORDER BY; products first (a derived table of
the products dated after T, then their lines, then their orders); two round trips (the product ids
first, then their lines with `products_id IN (...)`); orders first, what `backorder_lines_query`
says now (the orders in the statuses, their lines, their products, held to that join order on
MySQL/MariaDB by STRAIGHT_JOIN, ordered by orders_id), the same ordered by orders_products_id too,
without ORDER BY, and without STRAIGHT_JOIN; IN (subquery) and EXISTS for the products dated after T.

PostgreSQL gets the same shop by `copy_to_postgres` (`--pg-copy`): the same tables, columns (the
PostgreSQL types of the generic ones) and indexes, rows copied by COPY; MySQL zero dates become NULL.

`--without-products-index` adds the same shop without idx_orders_products_products_id (which
osCommerce 2.3 has and the test fixtures' shops have not) on both servers, database h16_shop_noidx.

    python -m bench.read --pg-copy [--without-products-index]    # the copies (the shop is only read)
    python -m bench.read [--repeats 3] [--without-products-index]  # the table: bench/results/read.md
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import shop as bench_shop
from include.backorder.config import RunParams
from include.backorder.shop import LANGUAGE_ID_COLUMN, ShopTables, backorder_lines_query, inspect_shop

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MARIADB_URL = f"{bench_shop.DEFAULT_URL}/{bench_shop.DEFAULT_DATABASE}?charset=utf8mb4"
POSTGRES_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/h16_pgshop"
AT = bench_shop.REFERENCE_TIME_UTC + timedelta(days=1)  # the quiet day, where bench/run.py measures L_read
SHOP_TABLES = ("languages", "orders_status", "products", "products_description", "orders", "orders_products")
COPY_ROWS = 50_000  # rows per COPY statement
ITERSIZE = 5000  # rows per round trip of a server-side cursor (the extract's chunk size)
PRODUCTS_INDEX = "idx_orders_products_products_id"  # osCommerce 2.3's; tests/fixtures/shops/ have none such
NO_INDEX_DATABASE = "h16_shop_noidx"  # the shop without PRODUCTS_INDEX, on either server

Row = tuple[Any, ...]
Fetch = Callable[[sa.Executable], Iterator[Row]]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- the shop in PostgreSQL --------------------------------------------------------------------------


def _pg_type(column: Any) -> sa.types.TypeEngine[Any]:
    """The generic type of a reflected MySQL column, without its collation (PostgreSQL has none such)."""
    generic = column["type"].as_generic()
    if isinstance(column["type"], sa.CHAR):
        return sa.CHAR(length=generic.length)
    if isinstance(generic, sa.String):
        return type(generic)(length=generic.length)
    return generic


def _copy_text(value: Any, is_date: bool) -> str:
    """A value as PostgreSQL's COPY text format writes it; a date that is none (a MySQL zero date) is NULL."""
    if value is None or (is_date and not isinstance(value, datetime)):
        return "\\N"
    text = str(value)
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def copy_to_postgres(
    source_url: str = MARIADB_URL, target_url: str = POSTGRES_URL, without_indexes: Sequence[str] = ()
) -> dict[str, int]:
    """Copy the shop's tables (SHOP_TABLES) with their rows and indexes (but `without_indexes`) into a fresh
    PostgreSQL database. The target is dropped and created again; then VACUUM ANALYZE, as a live shop's
    tables are. Returns the rows copied per table.
    """
    import pymysql

    source = sa.create_engine(source_url)
    inspector = sa.inspect(source)
    target = sa.engine.make_url(target_url)
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {target.database} WITH (FORCE)")
        conn.exec_driver_sql(f"CREATE DATABASE {target.database}")
    admin.dispose()
    md = sa.MetaData()
    tables = []
    for name in SHOP_TABLES:
        columns = inspector.get_columns(name)
        key = inspector.get_pk_constraint(name)["constrained_columns"]
        table = sa.Table(
            name,
            md,
            *(
                sa.Column(
                    c["name"], _pg_type(c), primary_key=c["name"] in key, autoincrement=False, nullable=c["nullable"]
                )
                for c in columns
            ),
        )
        for index in inspector.get_indexes(name):
            if index["name"] in without_indexes:
                continue
            sa.Index(index["name"], *(table.c[c] for c in index["column_names"] if c), unique=bool(index["unique"]))
        tables.append(table)
    pg = sa.create_engine(target)
    md.create_all(pg, tables=tables)
    u = sa.engine.make_url(source_url)
    counts = {}
    my = pymysql.connect(
        host=u.host,
        port=u.port or 3306,
        user=u.username,
        password=u.password or "",
        database=u.database,
        charset="utf8mb4",
    )
    raw: Any = pg.raw_connection()
    try:
        for table in tables:
            names = [c.name for c in table.columns]
            dates = [isinstance(c.type, sa.DateTime) for c in table.columns]
            counts[table.name] = 0
            with my.cursor(pymysql.cursors.SSCursor) as src, raw.cursor() as dst:
                src.execute(f"SELECT {', '.join(names)} FROM {table.name}")
                while batch := src.fetchmany(COPY_ROWS):
                    text = "".join(
                        "\t".join(_copy_text(v, d) for v, d in zip(row, dates, strict=True)) + "\n" for row in batch
                    )
                    dst.copy_expert(f"COPY {table.name} ({', '.join(names)}) FROM STDIN", io.StringIO(text))
                    counts[table.name] += len(batch)
            raw.commit()
            say(f"{target.database}: {table.name}: {counts[table.name]:,} rows")
    finally:
        my.close()
        raw.close()
    with pg.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")
    pg.dispose()
    source.dispose()
    return counts


def copy_on_mariadb(source_url: str, database: str, without_indexes: Sequence[str] = ()) -> None:
    """Copy the shop's tables (SHOP_TABLES) into a fresh `database` on the same MariaDB server, leaving out
    `without_indexes` (the shop itself is never changed); then ANALYZE TABLE, as after a build."""
    if not database.replace("_", "").isalnum():
        raise ValueError(f"database name may only hold letters, digits and '_', got {database!r}")
    source = sa.engine.make_url(source_url)
    engine = sa.create_engine(source, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql("SET SESSION sql_mode = 'NO_ENGINE_SUBSTITUTION'")  # the zero dates come along
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {database}")
        conn.exec_driver_sql(f"CREATE DATABASE {database}")
        for table in SHOP_TABLES:
            conn.exec_driver_sql(f"CREATE TABLE {database}.{table} LIKE {source.database}.{table}")
            conn.exec_driver_sql(f"INSERT INTO {database}.{table} SELECT * FROM {source.database}.{table}")
            for index in sa.inspect(conn).get_indexes(table, schema=database):
                if index["name"] in without_indexes:
                    conn.exec_driver_sql(f"ALTER TABLE {database}.{table} DROP INDEX {index['name']}")
        conn.exec_driver_sql(f"ANALYZE TABLE {', '.join(f'{database}.{t}' for t in SHOP_TABLES)}").all()
    engine.dispose()


# --- the formulations ---------------------------------------------------------------------------------


def _joined(tables: ShopTables, first: str, at: datetime | None = None) -> sa.FromClause:
    """The shop's tables joined starting from `first`: 'orders', 'lines', or 'dated' (a derived table of
    the products dated after `at`, then their lines, their orders, the products by key); with the
    languages when the shop has them."""
    o, op, p = tables.orders, tables.orders_products, tables.products
    joined: sa.FromClause
    if first == "dated":
        assert at is not None
        dated = _backordered_products(tables, at).subquery("dated")
        joined = (
            dated.join(op, op.c.products_id == dated.c.products_id)
            .join(o, o.c.orders_id == op.c.orders_id)
            .join(p, p.c.products_id == op.c.products_id)
        )
    elif first == "orders":
        joined = o.join(op, op.c.orders_id == o.c.orders_id).join(p, p.c.products_id == op.c.products_id)
    else:
        joined = op.join(o, o.c.orders_id == op.c.orders_id).join(p, p.c.products_id == op.c.products_id)
    if tables.languages is not None:
        lang = tables.languages
        joined = joined.outerjoin(lang, lang.c.languages_id == o.c[LANGUAGE_ID_COLUMN])
    return joined


def _backordered_products(tables: ShopTables, at: datetime) -> sa.Select[Any]:
    p = tables.products
    return sa.select(p.c.products_id).where(p.c.products_date_available > at)


@dataclass(frozen=True)
class Formulation:
    """A way to read the backorder lines: `run(fetch)` yields LINE_COLUMNS rows, using `fetch` to run
    each statement it needs (one, or two for round trips)."""

    name: str
    description: str
    statements: Callable[[ShopTables, RunParams, datetime, Fetch], Iterator[Row]]
    round_trips: int = 1  # statements run one after the other, each on the answer of the one before


def _one(build: Callable[[sa.Select[Any], ShopTables, datetime], sa.Select[Any]]) -> Callable[..., Iterator[Row]]:
    """A formulation of one statement, built from the real query (its columns and conditions)."""

    def statements(tables: ShopTables, params: RunParams, at: datetime, fetch: Fetch) -> Iterator[Row]:
        yield from fetch(build(backorder_lines_query(tables, params, at), tables, at))

    return statements


def _rebuilt(real: sa.Select[Any], joined: sa.FromClause, *extra: Any, order_by: Sequence[Any] = ()) -> sa.Select[Any]:
    """The real query's columns and conditions over another FROM (and extra conditions), without its
    STRAIGHT_JOIN, ordered by `order_by`."""
    assert real.whereclause is not None
    return sa.select(*real.selected_columns).select_from(joined).where(real.whereclause, *extra).order_by(*order_by)


def _sorted(t: ShopTables) -> tuple[Any, ...]:
    return (t.orders.c.orders_id, t.orders_products.c.orders_products_id)


def _two_trips(tables: ShopTables, params: RunParams, at: datetime, fetch: Fetch) -> Iterator[Row]:
    ids = [row[0] for row in fetch(_backordered_products(tables, at))]
    real = backorder_lines_query(tables, params, at)
    op = tables.orders_products
    for start in range(0, len(ids), 1000):
        yield from fetch(_rebuilt(real, _joined(tables, "lines"), op.c.products_id.in_(ids[start : start + 1000])))


def _exists(real: sa.Select[Any], tables: ShopTables, at: datetime) -> sa.Select[Any]:
    p2 = tables.products.alias("backordered")
    found = sa.exists().where(
        p2.c.products_id == tables.orders_products.c.products_id, p2.c.products_date_available > at
    )
    return _rebuilt(real, _joined(tables, "orders"), found)


def _in_subquery(real: sa.Select[Any], tables: ShopTables, at: datetime) -> sa.Select[Any]:
    p2 = tables.products.alias("backordered")
    ids = sa.select(p2.c.products_id).where(p2.c.products_date_available > at)
    return _rebuilt(real, _joined(tables, "orders"), tables.orders_products.c.products_id.in_(ids))


FORMULATIONS: dict[str, Formulation] = {
    f.name: f
    for f in (
        Formulation(
            "lines_first",
            "before issue 16: lines JOIN orders JOIN products, ORDER BY orders_id, orders_products_id",
            _one(lambda real, t, at: _rebuilt(real, _joined(t, "lines"), order_by=_sorted(t))),
        ),
        Formulation(
            "lines_first_unordered",
            "the same without ORDER BY",
            _one(lambda real, t, at: _rebuilt(real, _joined(t, "lines"))),
        ),
        Formulation(
            "products_first",
            "a derived table of the products dated after T, then their lines, orders (and products by key)",
            _one(lambda real, t, at: _rebuilt(real, _joined(t, "dated", at))),
        ),
        Formulation(
            "two_trips",
            "the products dated after T first, then their lines (products_id IN ids) JOIN orders JOIN products",
            _two_trips,
            round_trips=2,
        ),
        Formulation(
            "orders_first",
            "backorder_lines_query now: orders JOIN lines JOIN products (STRAIGHT_JOIN on MySQL/MariaDB),"
            " ORDER BY orders_id",
            _one(lambda real, t, at: real),
        ),
        Formulation(
            "orders_first_sorted",
            "the same, ORDER BY orders_id, orders_products_id",
            _one(lambda real, t, at: real.order_by(t.orders_products.c.orders_products_id)),
        ),
        Formulation(
            "orders_first_unordered",
            "the same without ORDER BY",
            _one(lambda real, t, at: real.order_by(None)),
        ),
        Formulation(
            "orders_first_free",
            "orders JOIN lines JOIN products, ORDER BY orders_id, without STRAIGHT_JOIN: the optimizer picks the order",
            _one(lambda real, t, at: _rebuilt(real, _joined(t, "orders"), order_by=[t.orders.c.orders_id])),
        ),
        Formulation(
            "in_subquery",
            "orders JOIN lines JOIN products AND products_id IN (products dated after T), unordered",
            _one(_in_subquery),
        ),
        Formulation(
            "exists",
            "orders JOIN lines JOIN products AND EXISTS (the product dated after T), unordered",
            _one(_exists),
        ),
    )
}
CHOSEN = "orders_first"  # what backorder_lines_query says


def _short(line: str, width: int = 160) -> str:
    """A plan's line cut to `width` (an IN list of 1,000 ids is no help to the reader)."""
    return line if len(line) <= width else line[: width - 1] + "…"


# --- raw fetches ---------------------------------------------------------------------------------------


class RawShop:
    """A shop read with its plain driver: PyMySQL (an unbuffered SSCursor) or psycopg2 (`mode` 'cursor': a
    server-side cursor, as the extract streams; 'fetchall': one client-side fetch). Statements are
    compiled by SQLAlchemy for the server's dialect with their values inline."""

    def __init__(self, url: str, mode: str = "", params: RunParams | None = None) -> None:
        self.url = sa.engine.make_url(url)
        self.engine = sa.create_engine(self.url)
        self.kind = "postgres" if self.url.get_backend_name() == "postgresql" else "mysql"
        self.mode = mode or ("cursor" if self.kind == "postgres" else "sscursor")
        self.params = params or RunParams()
        self.tables = inspect_shop(self.engine, self.params.table_prefix)
        self.conn: Any = None

    def __enter__(self) -> RawShop:
        u = self.url
        if self.kind == "mysql":
            import pymysql

            self.conn = pymysql.connect(
                host=u.host,
                port=u.port or 3306,
                user=u.username,
                password=u.password or "",
                database=u.database,
                charset="utf8mb4",
            )
        else:
            import psycopg2

            self.conn = psycopg2.connect(
                host=u.host, port=u.port or 5432, user=u.username, password=u.password or "", dbname=u.database
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()
        self.engine.dispose()

    def sql(self, statement: Any) -> str:
        return str(statement.compile(dialect=self.engine.dialect, compile_kwargs={"literal_binds": True}))

    def fetch(self, statement: sa.Executable) -> Iterator[Row]:
        text = self.sql(statement)
        if self.kind == "mysql":
            import pymysql

            with self.conn.cursor(pymysql.cursors.SSCursor) as cur:
                cur.execute(text)
                yield from cur
            return
        if self.mode == "cursor":
            with self.conn.cursor(name="bench_read") as cur:
                cur.itersize = ITERSIZE
                cur.execute(text)
                yield from cur
        else:
            with self.conn.cursor() as cur:
                cur.execute(text)
                yield from cur.fetchall()
        self.conn.rollback()

    def run(
        self, formulation: Formulation, at: datetime, params: RunParams | None = None, fetch: Fetch | None = None
    ) -> Iterator[Row]:
        """The formulation's rows at reference time `at` (UTC) for `params` (default: the shop's)."""
        params = params or self.params
        return formulation.statements(self.tables, params, params.shop_time(at), fetch or self.fetch)

    def explain(self, formulation: Formulation, at: datetime) -> str:
        """The plan of the formulation's (last) statement, as the server's EXPLAIN says it; the statements
        before it are run, as their answers make it."""
        shown: list[sa.Executable] = []

        def keep(statement: sa.Executable) -> Iterator[Row]:
            shown.append(statement)
            if len(shown) < formulation.round_trips:
                yield from self.fetch(statement)

        for _ in self.run(formulation, at, fetch=keep):
            pass
        if not shown:
            return ""
        # On PostgreSQL, a server-side cursor is planned for its first rows and without parallel workers:
        # EXPLAIN DECLARE shows that plan.
        declare = "DECLARE bench_read NO SCROLL CURSOR FOR " if self.mode == "cursor" else ""
        with self.conn.cursor() as cur:
            cur.execute("EXPLAIN " + declare + self.sql(shown[-1]))
            rows = cur.fetchall()
            names = [d[0] for d in cur.description]
        if self.kind == "postgres":
            self.conn.rollback()
            return "\n".join(_short(str(r[0])) for r in rows)
        wanted = ("table", "type", "key", "ref", "rows", "Extra")
        return "\n".join(
            _short(" | ".join(f"{n}={r[names.index(n)]}" for n in wanted if r[names.index(n)] is not None))
            for r in rows
        )

    def version(self) -> str:
        with self.conn.cursor() as cur:
            cur.execute("SELECT VERSION()")
            text = str(cur.fetchone()[0])
        if self.kind == "postgres":
            self.conn.rollback()
        return text.split(" on ")[0].removeprefix("PostgreSQL ")

    def timed(self, formulation: Formulation, at: datetime) -> tuple[int, float]:
        """(rows, seconds) of one raw fetch of the formulation: every row read, counted, nothing kept."""
        started = time.perf_counter()
        rows = sum(1 for _ in self.run(formulation, at))
        return rows, time.perf_counter() - started


# --- measuring -------------------------------------------------------------------------------------------


@dataclass
class Measured:
    """One formulation on one server: its rows, the seconds of each repeat, its plan."""

    name: str
    rows: int = 0
    seconds: list[float] = field(default_factory=list)
    plan: str = ""

    @property
    def best(self) -> float:
        return min(self.seconds, default=float("inf"))


def row_set(shop: RawShop, formulation: Formulation, at: datetime, params: RunParams | None = None) -> dict[Row, int]:
    """The formulation's rows as a multiset (row -> how often), to compare formulations whatever their order."""
    found: dict[Row, int] = {}
    for row in shop.run(formulation, at, params):
        found[tuple(row)] = found.get(tuple(row), 0) + 1
    return found


def check_same_rows(shop: RawShop, at: datetime, params: RunParams | None = None) -> int:
    """Every formulation returns the chosen one's rows (as a multiset); returns how many rows that is."""
    wanted = row_set(shop, FORMULATIONS[CHOSEN], at, params)
    for name, formulation in FORMULATIONS.items():
        if name != CHOSEN and (found := row_set(shop, formulation, at, params)) != wanted:
            raise AssertionError(
                f"{name} on {shop.kind}: {sum(found.values())} rows, not the {sum(wanted.values())} of {CHOSEN}"
            )
    return sum(wanted.values())


def measure(url: str, at: datetime = AT, repeats: int = 3, mode: str = "") -> dict[str, Measured]:
    """Every formulation on the shop at `url`: rows checked equal, then `repeats` timed raw fetches each,
    the formulations taking turns in each repeat (so that each finds the server's caches alike)."""
    with RawShop(url, mode) as shop:
        rows = check_same_rows(shop, at)
        say(f"{shop.kind} {shop.mode}: every formulation returns the same {rows:,} rows")
        out = {name: Measured(name, plan=shop.explain(f, at)) for name, f in FORMULATIONS.items()}
        for number in range(1, repeats + 1):
            for name, formulation in FORMULATIONS.items():
                out[name].rows, seconds = shop.timed(formulation, at)
                out[name].seconds.append(seconds)
                say(f"  {shop.kind} {shop.mode} repeat {number}: {name}: {out[name].rows:,} rows in {seconds:.2f} s")
    return out


def fastest_raw_fetch(shop_url: str, at: datetime, names: Sequence[str] | None = None) -> dict[str, Any]:
    """L_read's shop part: a raw fetch by each formulation (all, or `names`), once; the fastest wins.

    Returns {"name": the winner, "rows": its rows, "seconds": its seconds, "all": {name: seconds}}.
    Every formulation must return as many rows as the winner (their rows are compared in the tests).
    """
    timings: dict[str, tuple[int, float]] = {}
    with RawShop(shop_url) as shop:
        for name in names or FORMULATIONS:
            timings[name] = shop.timed(FORMULATIONS[name], at)
    name = min(timings, key=lambda n: timings[n][1])
    rows, seconds = timings[name]
    if any(count != rows for count, _ in timings.values()):
        raise RuntimeError(f"the formulations disagree on the rows: {timings}")
    return {"name": name, "rows": rows, "seconds": seconds, "all": {n: s for n, (_, s) in timings.items()}}


# --- the report --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shop:
    """A shop the report measures: a column of its table."""

    label: str
    url: str
    mode: str = ""
    plans: bool = True  # show its plans in the report


def shops(without_products_index: bool = False) -> list[Shop]:
    found = [
        Shop("MariaDB", MARIADB_URL),
        Shop("PostgreSQL, server-side cursor", POSTGRES_URL, "cursor"),
        Shop("PostgreSQL, fetchall", POSTGRES_URL, "fetchall"),
    ]
    if without_products_index:
        found += [
            Shop(f"MariaDB without {PRODUCTS_INDEX}", _in(MARIADB_URL, NO_INDEX_DATABASE), plans=False),
            Shop(f"PostgreSQL without {PRODUCTS_INDEX}, cursor", _in(POSTGRES_URL, NO_INDEX_DATABASE), "cursor", False),
        ]
    return found


def _in(url: str, database: str) -> str:
    return sa.engine.make_url(url).set(database=database).render_as_string(hide_password=False)


@dataclass(frozen=True)
class Setting:
    """Where the table was measured: the shop's sizes, the servers, the machine's load."""

    sizes: bench_shop.Sizes
    versions: dict[str, str]  # server -> version
    load: tuple[float, float] = (0.0, 0.0)  # the 1-minute load average before and after


def shop_sizes(url: str = MARIADB_URL) -> bench_shop.Sizes:
    """The sizes the bench shop at `url` was built with (its bench_meta)."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        meta: dict[str, str] = {str(k): str(v) for k, v in conn.execute(sa.text("SELECT name, value FROM bench_meta"))}
    engine.dispose()
    return bench_shop.Sizes(**{f: int(meta[f]) for f in bench_shop.Sizes.__dataclass_fields__})


def markdown(results: dict[str, dict[str, Measured]], setting: Setting, repeats: int, at: datetime) -> str:
    from bench.run import machine

    m, z = machine(), setting.sizes
    labels = list(results)
    rows = {next(iter(measured.values())).rows for measured in results.values()}
    lines = [
        "# bench/read.py: the extract query's formulations, timed as raw fetches",
        "",
        f"`python -m bench.read --repeats {repeats}`, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. The bench shop"
        f" (bench/shop.py: {z.order_lines:,} order lines over {z.orders:,} orders, {z.open_orders:,} of them open;"
        f" osCommerce 2.3.4.1's tables and indexes, among them {PRODUCTS_INDEX}, none on orders.orders_status nor"
        f" on products.products_date_available) at the quiet day's T ({at:%Y-%m-%d %H:%M} UTC, where `make bench`"
        f" measures L_read): {', '.join(f'{r:,}' for r in sorted(rows))} rows, the same for every formulation"
        " (compared as sets before timing). PostgreSQL holds a copy (`python -m bench.read --pg-copy`: the same"
        " tables, columns and indexes, zero dates as NULL).",
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}; "
        + "; ".join(f"{k} {v}" for k, v in setting.versions.items())
        + "; both as installed (MariaDB: a 128 MiB InnoDB buffer pool and O_DIRECT, so what the pool misses is"
        " read from the disk; PostgreSQL: 128 MB of shared buffers over the OS page cache). Load average"
        f" {setting.load[0]:.1f} before, {setting.load[1]:.1f} after (the machine is shared).",
        "",
        f"Seconds of a raw fetch (PyMySQL SSCursor; psycopg2), every row read and counted: best of {repeats}"
        " (median), the formulations taking turns in each repeat. The fastest in each column in bold.",
        "",
        "| formulation | " + " | ".join(labels) + " |",
        "|---|" + "---:|" * len(labels),
    ]
    fastest = {label: min(results[label].values(), key=lambda x: x.best).name for label in labels}
    for name in FORMULATIONS:
        cells = []
        for label in labels:
            measured = results[label][name]
            cell = f"{measured.best:.2f} ({statistics.median(measured.seconds):.2f})"
            cells.append(f"**{cell}**" if fastest[label] == name else cell)
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines += ["", *(f"- `{f.name}`: {f.description}" for f in FORMULATIONS.values())]
    lines += [
        "",
        "## Plans",
        "",
        "EXPLAIN of each formulation's statement (two_trips: its last one); PostgreSQL's"
        " server-side cursor as EXPLAIN DECLARE shows it (planned for its first rows, no parallel workers).",
    ]
    for label in labels:
        if not any(m.plan for m in results[label].values()):
            continue
        lines += ["", f"### {label}"]
        for name, measured in results[label].items():
            lines += ["", f"`{name}`", "", "```", measured.plan, "```"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--pg-copy", action="store_true", help=f"copy the MariaDB shop into PostgreSQL ({POSTGRES_URL})"
    )
    parser.add_argument(
        "--without-products-index",
        action="store_true",
        help=f"also the shop without {PRODUCTS_INDEX} (database {NO_INDEX_DATABASE} on both servers; copied by"
        " --pg-copy)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "read.md")
    args = parser.parse_args(argv)
    if args.pg_copy:
        copy_to_postgres()
        if args.without_products_index:
            copy_on_mariadb(MARIADB_URL, NO_INDEX_DATABASE, [PRODUCTS_INDEX])
            copy_to_postgres(MARIADB_URL, _in(POSTGRES_URL, NO_INDEX_DATABASE), [PRODUCTS_INDEX])
        return 0
    results, versions, load = {}, {}, os.getloadavg()[0]
    for shop in shops(args.without_products_index):
        results[shop.label] = measure(shop.url, AT, args.repeats, shop.mode)
        if not shop.plans:
            for measured in results[shop.label].values():
                measured.plan = ""
        with RawShop(shop.url, shop.mode) as raw:
            versions[raw.kind] = raw.version()
    setting = Setting(
        shop_sizes(), {"MariaDB": versions["mysql"], "PostgreSQL": versions["postgres"]}, (load, os.getloadavg()[0])
    )
    text = markdown(results, setting, args.repeats, AT)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text.split("## Plans")[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
