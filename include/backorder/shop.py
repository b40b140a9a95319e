"""Reading the shop: the osCommerce tables we use and the query that finds backorder lines.

The shop is only ever read. Filters (order statuses, availability date after T, order age) are
pushed into SQL so that only backorder lines travel, and rows are streamed in chunks.
Shop differences are data: the table prefix, and which column of `orders` holds the order's
language (`LANGUAGE_COLUMNS`, found in the live schema).

Messy data is read as it is and never drops a line silently: an order line whose product was
deleted from `products` is found by an outer join (`missing_product_lines`, and in
`arrived_lines`, where such an order is not counted as arrived); an order without a purchase date
(NULL) is read like one with a zero date. What the emails do with such lines is decided in
classify.py.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from include.backorder import db as database
from include.backorder.config import DbConnection, RunParams

log = logging.getLogger(__name__)

# MySQL zero dates and the NOT NULL defaults of Zen Cart and Gambio: they mean "no date".
PLACEHOLDER_DATES: frozenset[str] = frozenset(
    {"0000-00-00 00:00:00", "0000-00-00", "0001-01-01 00:00:00", "1000-01-01 00:00:00"}
)
_PLACEHOLDER_YEARS = (0, 1, 1000)

# Where an order's language may be kept. Every one the live schema has is read and the first
# non-empty value wins: Zen Cart 1.5.7+ `orders.language_code` ('en'; '' on orders from before the
# upgrade), xt:Commerce / modified / Gambio `orders.language` (a folder name such as 'german'),
# then modified's `orders.languages_id`, read as the `code` of that row of the shop's `languages`.
LANGUAGE_COLUMNS: tuple[str, ...] = ("language_code", "language")
LANGUAGE_ID_COLUMN = "languages_id"

# The products_id of `products` beside each line, where lines of deleted products are kept (NULL there).
PRODUCT_FOUND = "product_found"

# What a backorder line says about the product, then about its order.
PRODUCT_COLUMNS: tuple[str, ...] = (
    "orders_id",
    "orders_products_id",
    "products_id",
    "products_name",
    "products_model",
    "products_quantity",
    "date_available",
)
LINE_COLUMNS: tuple[str, ...] = (
    *PRODUCT_COLUMNS,
    "customers_id",
    "customers_name",
    "customers_email_address",
    "order_language",
    "date_purchased",
)


class ShopSchemaError(RuntimeError):
    """The shop database lacks a table or column the pipeline needs."""


def parse_shop_datetime(value: Any) -> datetime | None:
    """A shop date as the driver returns it (datetime, string or None) -> datetime, or None for no date."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return None if value.year in _PLACEHOLDER_YEARS else value
    text = str(value).strip()
    if not text or text in PLACEHOLDER_DATES or text.startswith("0000-00-00"):
        return None
    parsed = datetime.fromisoformat(text)
    return None if parsed.year in _PLACEHOLDER_YEARS else parsed


class ShopDateTime(sa.types.TypeDecorator[datetime]):
    """A shop DATETIME read raw and normalised by `parse_shop_datetime`; bound as 'YYYY-MM-DD HH:MM:SS'.

    Reading raw avoids the SQLite and PyMySQL converters choking on (or passing through) zero dates.
    """

    impl = sa.String
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if isinstance(value, datetime):
            return value.strftime("%Y-%m-%d %H:%M:%S")
        return value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        return parse_shop_datetime(value)


@dataclass(frozen=True)
class ShopTables:
    orders: sa.Table
    orders_products: sa.Table
    products: sa.Table
    language_columns: tuple[str, ...] = ()
    languages: sa.Table | None = None  # joined through orders.languages_id when the shop has both

    def describe(self) -> dict[str, Any]:
        """What was found, for the run record and the log."""
        via_id = [f"{LANGUAGE_ID_COLUMN} -> {self.languages.name}.code"] if self.languages is not None else []
        return {"table_prefix": self.orders.name[: -len("orders")], "language_from": [*self.language_columns, *via_id]}


def _tables(prefix: str, language_columns: tuple[str, ...] = (), with_languages: bool = False) -> ShopTables:
    md = sa.MetaData()
    order_cols: list[sa.Column[Any]] = [
        sa.Column("orders_id", sa.Integer, primary_key=True),
        sa.Column("customers_id", sa.Integer),
        sa.Column("customers_name", sa.String),
        sa.Column("customers_email_address", sa.String),
        sa.Column("date_purchased", ShopDateTime),
        sa.Column("orders_status", sa.Integer),
    ]
    order_cols += [sa.Column(name, sa.String) for name in language_columns]
    languages = None
    if with_languages:
        order_cols.append(sa.Column(LANGUAGE_ID_COLUMN, sa.Integer))
        languages = sa.Table(
            f"{prefix}languages",
            md,
            sa.Column("languages_id", sa.Integer, primary_key=True),
            sa.Column("code", sa.String),
        )
    orders = sa.Table(f"{prefix}orders", md, *order_cols)
    orders_products = sa.Table(
        f"{prefix}orders_products",
        md,
        sa.Column("orders_products_id", sa.Integer, primary_key=True),
        sa.Column("orders_id", sa.Integer),
        sa.Column("products_id", sa.Integer),
        sa.Column("products_model", sa.String),
        sa.Column("products_name", sa.String),
        sa.Column("products_quantity", sa.Float),
    )
    products = sa.Table(
        f"{prefix}products",
        md,
        sa.Column("products_id", sa.Integer, primary_key=True),
        sa.Column("products_date_available", ShopDateTime),
    )
    return ShopTables(orders, orders_products, products, language_columns, languages)


def shop_engine(db: DbConnection) -> Engine:
    """An engine that can only read: SQLite opened read-only, MySQL sessions set READ ONLY.

    The pipeline never writes to the shop; this makes that a property of the connection rather
    than a promise of the code (MariaDB refuses writes even to MyISAM tables in such a session).
    """
    engine = database.engine(db, read_only=True)
    if engine.dialect.name in ("mysql", "mariadb"):

        @sa.event.listens_for(engine, "connect")
        def _read_only(dbapi_connection: Any, connection_record: Any) -> None:
            with dbapi_connection.cursor() as cursor:
                cursor.execute("SET SESSION TRANSACTION READ ONLY")

    return engine


def inspect_shop(engine: Engine, prefix: str, conn_id: str = "shop_db") -> ShopTables:
    """Check the live schema has what we read, and find where it keeps the order language."""
    inspector = sa.inspect(engine)
    wanted = _tables(prefix)
    found_cols: dict[str, set[str]] = {}
    for table in (wanted.orders, wanted.orders_products, wanted.products):
        if not inspector.has_table(table.name):
            raise ShopSchemaError(
                f"connection {conn_id!r}: table {table.name!r} not found"
                + (f" (table_prefix is {prefix!r})" if prefix else " (is a table_prefix needed?)")
            )
        found_cols[table.name] = {c["name"].lower() for c in inspector.get_columns(table.name)}
        missing = [c.name for c in table.columns if c.name not in found_cols[table.name]]
        if missing:
            raise ShopSchemaError(f"connection {conn_id!r}: table {table.name!r} lacks column(s) {missing}")
    order_cols = found_cols[wanted.orders.name]
    languages_table = f"{prefix}languages"
    with_languages = (
        LANGUAGE_ID_COLUMN in order_cols
        and inspector.has_table(languages_table)
        and {"languages_id", "code"} <= {c["name"].lower() for c in inspector.get_columns(languages_table)}
    )
    return _tables(prefix, tuple(c for c in LANGUAGE_COLUMNS if c in order_cols), with_languages)


def _lines_select(
    tables: ShopTables, params: RunParams, deleted_products: bool = False, orders_first: bool = False
) -> sa.Select[Any]:
    """Order lines with their order's details (LINE_COLUMNS), of orders in the selected statuses.

    With `deleted_products`, lines whose product is no longer in `products` are kept too (outer
    join; date_available NULL), and PRODUCT_FOUND tells them apart (NULL for those). Rows come
    ordered by orders_id and orders_products_id; with `orders_first`, the tables are joined orders,
    lines, products (MySQL and MariaDB held to that order) and rows come ordered by orders_id only
    (see `backorder_lines_query`)."""
    o, op, p = tables.orders, tables.orders_products, tables.products
    sources: list[Any] = [sa.func.nullif(o.c[name], "") for name in tables.language_columns]
    first, then = (o, op) if orders_first else (op, o)
    joined = first.join(then, o.c.orders_id == op.c.orders_id).join(
        p, p.c.products_id == op.c.products_id, isouter=deleted_products
    )
    if tables.languages is not None:
        lang = tables.languages
        joined = joined.outerjoin(lang, lang.c.languages_id == o.c[LANGUAGE_ID_COLUMN])
        sources.append(lang.c.code)
    language = sources[0] if len(sources) == 1 else sa.func.coalesce(*sources) if sources else sa.null()
    query = (
        sa.select(
            o.c.orders_id,
            op.c.orders_products_id,
            op.c.products_id,
            op.c.products_name,
            op.c.products_model,
            op.c.products_quantity,
            p.c.products_date_available.label("date_available"),
            o.c.customers_id,
            o.c.customers_name,
            o.c.customers_email_address,
            language.label("order_language"),
            o.c.date_purchased,
        )
        .select_from(joined)
        .where(o.c.orders_status.in_(params.order_status_ids))
    )
    if orders_first:
        query = (
            query.order_by(o.c.orders_id)
            .prefix_with("STRAIGHT_JOIN", dialect="mysql")
            .prefix_with("STRAIGHT_JOIN", dialect="mariadb")
        )
    else:
        query = query.order_by(o.c.orders_id, op.c.orders_products_id)
    return query.add_columns(p.c.products_id.label(PRODUCT_FOUND)) if deleted_products else query


def backorder_lines_query(
    tables: ShopTables, params: RunParams, shop_time: datetime, deleted_products: bool = False
) -> sa.Select[Any]:
    """The backorder lines at shop time T: one row per order line, with its order's details,
    ordered by orders_id (`iter_backorder_lines` puts each order's lines in order).

    The orders are read first: those in the statuses (a scan of `orders`: osCommerce has no index on
    orders_status), their lines by idx_orders_products_orders_id, their products by primary key.
    Open orders are a shop's latest, so both reads run along the tables. MariaDB left to itself
    starts from `products` (it cannot tell how few have a date after T) and, through
    idx_orders_products_products_id, visits every line ever ordered of a backordered product and
    its order, at random: on the benchmark's full shop 164,000 lines and orders for 78,000 rows
    (bench/read.py; bench/results/read.md has the figures and plans). STRAIGHT_JOIN holds MySQL and
    MariaDB to the written order; other dialects never see it (PostgreSQL and SQLite plan their own
    joins). MariaDB drops it when the query is used as a subquery (the derived table is merged into
    the outer query): count with `with_only_columns`, as bench/shop.py does. Ordering by orders_id
    alone costs nothing (the scan of `orders` is in its order); ordering by orders_products_id too
    made MariaDB sort every row in a temporary table before sending the first."""
    o, p = tables.orders, tables.products
    backordered = p.c.products_date_available > shop_time
    query = (
        _lines_select(tables, params, deleted_products=deleted_products, orders_first=True)
        # With `deleted_products`, the lines of those orders whose product was deleted come too (PRODUCT_FOUND
        # NULL): what missing_product_lines finds, read in the same pass.
        .where(sa.or_(backordered, p.c.products_id.is_(None)) if deleted_products else backordered)
        # Orders placed after T did not exist on the day a run stands for (backfills, re-runs). An order
        # without a purchase date is kept, like one with a zero date (which compares as earlier than T).
        .where(sa.or_(o.c.date_purchased <= shop_time, o.c.date_purchased.is_(None)))
    )
    if params.max_order_age_days is not None:
        query = query.where(o.c.date_purchased >= shop_time - timedelta(days=params.max_order_age_days))
    return query


@dataclass(frozen=True)
class Arrivals:
    """What `arrived_lines` found: the lines of orders that wait no more, and the lines of deleted
    products that keep their orders out of `lines` (keys: LINE_COLUMNS)."""

    lines: list[dict[str, Any]]
    deleted_products: list[dict[str, Any]]


def _chunked_lines(engine: Engine, query: sa.Select[Any], column: Any, ids: list[int]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with engine.connect() as conn:
        for start in range(0, len(ids), 1000):
            rows += [dict(row) for row in conn.execute(query.where(column.in_(ids[start : start + 1000]))).mappings()]
    return rows


def missing_product_lines(
    engine: Engine, tables: ShopTables, params: RunParams, orders_ids: list[int]
) -> list[dict[str, Any]]:
    """The lines of the given orders whose product is no longer in `products` (keys: LINE_COLUMNS)."""
    query = _lines_select(tables, params, deleted_products=True).where(tables.products.c.products_id.is_(None))
    rows = _chunked_lines(engine, query, tables.orders.c.orders_id, sorted(orders_ids))
    return [{k: v for k, v in row.items() if k != PRODUCT_FOUND} for row in rows]


def arrived_lines(
    engine: Engine, tables: ShopTables, params: RunParams, shop_time: datetime, orders_products_ids: list[int]
) -> Arrivals:
    """Of the given order lines (once on backorder, no longer), those whose order is still in the
    statuses, when no line of that order is on backorder any more: the date of every one was
    reached or cleared. `date_available` is None for a cleared date.

    An order with a line whose product was deleted from `products` (one of these lines or any other
    of the order) has not arrived: the goods of that line cannot be known to be on their way."""
    query = _lines_select(tables, params, deleted_products=True)
    rows = _chunked_lines(engine, query, tables.orders_products.c.orders_products_id, orders_products_ids)
    still_waiting = {
        r["orders_id"] for r in rows if r["date_available"] is not None and r["date_available"] > shop_time
    }
    rows = [r for r in rows if r["orders_id"] not in still_waiting]
    deleted = {r["orders_products_id"]: r for r in rows if r.pop(PRODUCT_FOUND) is None}
    for row in missing_product_lines(engine, tables, params, list({r["orders_id"] for r in rows})):
        deleted.setdefault(row["orders_products_id"], row)
    blocked = {r["orders_id"] for r in deleted.values()}
    return Arrivals(
        lines=[r for r in rows if r["orders_id"] not in blocked],
        deleted_products=sorted(deleted.values(), key=lambda r: (r["orders_id"], r["orders_products_id"])),
    )


@dataclass(frozen=True)
class ShopLines:
    """What `read_backorder_lines` found: the backorder lines at T as rows of LINE_COLUMNS (their values as
    iter_backorder_lines gives them once `plain_line` made them so), and the lines of the same orders whose
    product was deleted (dicts)."""

    lines: list[Sequence[Any]]  # rows as the driver gave them (date_available a datetime): see `plain_line`
    deleted_products: list[dict[str, Any]]


_DATE_AVAILABLE = LINE_COLUMNS.index("date_available")
_DATE_PURCHASED = LINE_COLUMNS.index("date_purchased")
_QUANTITY = LINE_COLUMNS.index("products_quantity")


def plain_line(row: Sequence[Any]) -> tuple[Any, ...]:
    """A raw driver row as the typed query gives it: shop dates parsed (zero dates None), a DECIMAL quantity
    (Gambio) a float."""
    values = list(row[: len(LINE_COLUMNS)])
    available = values[_DATE_AVAILABLE]
    if available is not None and available.__class__ is not datetime:
        values[_DATE_AVAILABLE] = parse_shop_datetime(available)
    values[_DATE_PURCHASED] = parse_shop_datetime(values[_DATE_PURCHASED])
    quantity = values[_QUANTITY]
    if quantity is not None and quantity.__class__ is not int and quantity.__class__ is not float:
        values[_QUANTITY] = float(quantity)
    return tuple(values)


def read_backorder_lines(
    engine: Engine,
    tables: ShopTables,
    params: RunParams,
    shop_time: datetime,
    progress: Callable[[int], None] | None = None,
    every: int = 50_000,
) -> ShopLines:
    """The backorder lines at T and the deleted-product lines of their orders, in one pass of one query.

    The extract's fast read: the query (`backorder_lines_query` with `deleted_products`) is compiled once
    and its rows are taken from the driver as they come (a server-side cursor where the driver has one),
    without SQLAlchemy's per-value type processing; `plain_line` does what those types did. `progress`
    is called with the count every `every` lines."""
    query = backorder_lines_query(tables, params, shop_time, deleted_products=True)
    sql = str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    found = len(LINE_COLUMNS)
    lines: list[Sequence[Any]] = []
    deleted: list[tuple[Any, ...]] = []
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=5000).exec_driver_sql(sql)
        for row in result:
            if row[found] is None:
                deleted.append(plain_line(row))
                continue
            # The usual row (the driver gave a datetime) is kept as it came; `plain_line` does the rest where
            # a line is staged. SQLite gives dates as text: those rows are made plain here.
            lines.append(row if row[_DATE_AVAILABLE].__class__ is datetime else plain_line(row))
            if progress is not None and len(lines) % every == 0:
                progress(len(lines))
    waiting = {line[0] for line in lines}
    return ShopLines(lines, [dict(zip(LINE_COLUMNS, line, strict=True)) for line in deleted if line[0] in waiting])


def iter_backorder_lines(
    engine: Engine, tables: ShopTables, params: RunParams, shop_time: datetime, chunk_size: int = 5000
) -> Iterator[list[dict[str, Any]]]:
    """Stream the backorder lines in chunks of plain dicts (keys: LINE_COLUMNS), ordered by orders_id
    and orders_products_id (the query orders by orders_id: each order's lines are put in order here)."""
    query = backorder_lines_query(tables, params, shop_time)
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=chunk_size).execute(query)
        rows = (
            line
            for _, lines in itertools.groupby(result.mappings(), key=lambda row: row["orders_id"])
            for line in sorted((dict(row) for row in lines), key=lambda row: row["orders_products_id"])
        )
        while chunk := list(itertools.islice(rows, chunk_size)):
            yield chunk
