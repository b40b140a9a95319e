"""Reading the shop (SQLite, osCommerce 2.3 tables): which lines are backorder lines at T."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from include.backorder.config import RunParams
from include.backorder.shop import (
    LINE_COLUMNS,
    ShopSchemaError,
    arrived_lines,
    inspect_shop,
    iter_backorder_lines,
    missing_product_lines,
    parse_shop_datetime,
)
from tests.conftest import Shop, server_database
from tools import demo_shop

T = datetime(2026, 3, 10)


def extract(shop, **params) -> list[dict]:
    p = RunParams(**params)
    tables = inspect_shop(shop.engine, p.table_prefix)
    return [row for chunk in iter_backorder_lines(shop.engine, tables, p, T, chunk_size=2) for row in chunk]


@pytest.mark.parametrize(
    ("date_available", "backordered"),
    [
        pytest.param(T + timedelta(days=5), True, id="future"),
        pytest.param(T + timedelta(seconds=1), True, id="one second after T"),
        pytest.param(T, False, id="exactly T"),
        pytest.param(T - timedelta(days=1), False, id="past"),
        pytest.param(None, False, id="NULL"),
        pytest.param("0000-00-00 00:00:00", False, id="MySQL zero date"),
        pytest.param("0001-01-01 00:00:00", False, id="Zen Cart placeholder"),
        pytest.param("1000-01-01 00:00:00", False, id="Gambio placeholder"),
    ],
)
def test_only_future_dates_are_backordered(shop, date_available, backordered: bool) -> None:
    shop.product(1, date_available)
    shop.order(10, [1], purchased=T - timedelta(days=3))
    rows = extract(shop)
    assert len(rows) == (1 if backordered else 0)
    if backordered:
        assert rows[0]["date_available"] == date_available


@pytest.mark.parametrize(
    ("status", "statuses", "selected"),
    [(1, (1, 2), True), (2, (1, 2), True), (3, (1, 2), False), (3, (3,), True), (4, (1, 2, 3), False)],
)
def test_orders_are_selected_by_status(shop, status: int, statuses: tuple[int, ...], selected: bool) -> None:
    shop.product(1, T + timedelta(days=5))
    shop.order(10, [1], purchased=T - timedelta(days=3), status=status)
    assert len(extract(shop, order_status_ids=statuses)) == (1 if selected else 0)


@pytest.mark.parametrize(
    ("age_days", "max_age", "selected"),
    [
        pytest.param(3, None, True, id="no limit"),
        pytest.param(400, None, True, id="no limit, old order"),
        pytest.param(3, 7, True, id="younger than the limit"),
        pytest.param(7, 7, True, id="exactly the limit"),
        pytest.param(8, 7, False, id="older than the limit"),
        pytest.param(-1, None, False, id="purchased after T"),
    ],
)
def test_max_order_age_days(shop, age_days: int, max_age: int | None, selected: bool) -> None:
    shop.product(1, T + timedelta(days=5))
    shop.order(10, [1], purchased=T - timedelta(days=age_days))
    assert len(extract(shop, max_order_age_days=max_age)) == (1 if selected else 0)


def test_rows_carry_what_the_email_needs(shop) -> None:
    shop.product(1, T + timedelta(days=5))
    shop.product(2, None)
    shop.product(3, T + timedelta(days=9))
    shop.order(10, [1, 2, 3], purchased=T - timedelta(days=1), name="Jürgen Müller", language="de", quantity=2)
    rows = extract(shop)
    assert [r["products_id"] for r in rows] == [1, 3]
    first = rows[0]
    assert first["orders_id"] == 10
    assert first["customers_name"] == "Jürgen Müller"
    assert first["customers_email_address"] == "customer10@example.com"
    assert first["order_language"] == "de"
    assert first["products_name"] == "Product 1"
    assert first["products_quantity"] == 2
    assert first["date_purchased"] == T - timedelta(days=1)


def minimal_shop(path, prefix: str = "", order_columns: str = "") -> sa.Engine:
    """The three tables the pipeline reads, with only the columns it reads (plus `order_columns`)."""
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as c:
        c.exec_driver_sql(
            f"CREATE TABLE {prefix}orders (orders_id INTEGER PRIMARY KEY, customers_name TEXT,"
            f" customers_email_address TEXT, date_purchased TEXT, orders_status INTEGER, customers_id INTEGER"
            f"{order_columns})"
        )
        c.exec_driver_sql(
            f"CREATE TABLE {prefix}orders_products (orders_products_id INTEGER PRIMARY KEY, orders_id INTEGER,"
            " products_id INTEGER, products_model TEXT, products_name TEXT, products_quantity FLOAT)"
        )
        c.exec_driver_sql(
            f"CREATE TABLE {prefix}products (products_id INTEGER PRIMARY KEY, products_date_available TEXT)"
        )
    return engine


@pytest.fixture(params=["sqlite", "postgres"])
def any_shop(request: pytest.FixtureRequest, shop: Shop) -> Iterator[Shop]:
    """The SQLite shop, and the same tables in PostgreSQL (which returns an order's lines as it finds them)."""
    if request.param == "sqlite":
        yield shop
        return
    with server_database("postgres", "shop_db") as db:
        engine = sa.create_engine(db.url())
        demo_shop.create_schema(engine)
        yield Shop(shop.path, engine)
        engine.dispose()


def test_lines_come_by_order_and_line_across_chunks(any_shop: Shop) -> None:
    """The query orders by orders_id only; iter_backorder_lines puts each order's lines in order, an
    order split over two chunks too (chunks of 2 here)."""
    shop = any_shop
    for pid in (1, 2, 3):
        shop.product(pid, T + timedelta(days=pid))
    shop._next_line = 60
    shop.order(30, [1, 2], purchased=T - timedelta(days=1))
    shop._next_line = 50
    shop.order(20, [], purchased=T - timedelta(days=2))
    shop._next_line = 10
    shop.order(10, [], purchased=T - timedelta(days=3))
    with shop.engine.begin() as c:  # lines written in no order: 53, 51, 52 of order 20, 12, 11 of order 10
        for opid, oid, pid in [(53, 20, 3), (51, 20, 1), (12, 10, 2), (52, 20, 2), (11, 10, 1)]:
            c.execute(
                sa.insert(demo_shop.orders_products).values(
                    orders_products_id=opid,
                    orders_id=oid,
                    products_id=pid,
                    products_name=f"Product {pid}",
                    products_price=10,
                    products_quantity=1,
                )
            )

    rows = extract(shop)

    assert [(r["orders_id"], r["orders_products_id"]) for r in rows] == [
        (10, 11),
        (10, 12),
        (20, 51),
        (20, 52),
        (20, 53),
        (30, 60),
        (30, 61),
    ]


def test_shop_without_language_column_gives_none(tmp_path) -> None:
    engine = minimal_shop(tmp_path / "osc.sqlite")
    with engine.begin() as c:
        c.exec_driver_sql("INSERT INTO products VALUES (1, '2026-04-01 00:00:00')")
        c.exec_driver_sql("INSERT INTO orders VALUES (5, 'Ann', 'ann@example.com', '2026-03-01 10:00:00', 1, 7)")
        c.exec_driver_sql("INSERT INTO orders_products VALUES (1, 5, 1, 'M', 'Tent', 1)")
    tables = inspect_shop(engine, "")
    assert tables.language_columns == () and tables.languages is None
    rows = [r for chunk in iter_backorder_lines(engine, tables, RunParams(), T) for r in chunk]
    assert [(r["orders_id"], r["order_language"]) for r in rows] == [(5, None)]


def test_language_from_every_place_the_shop_keeps_it(tmp_path) -> None:
    """modified keeps a folder name and a languages_id: the first non-empty one wins."""
    engine = minimal_shop(tmp_path / "modified.sqlite", order_columns=", language TEXT, languages_id INTEGER")
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE languages (languages_id INTEGER PRIMARY KEY, name TEXT, code TEXT)")
        c.exec_driver_sql("INSERT INTO languages VALUES (1, 'English', 'en'), (2, 'Deutsch', 'de')")
        c.exec_driver_sql("INSERT INTO products VALUES (1, '2026-04-01 00:00:00')")
        for oid, folder, lid in ((1, "german", 1), (2, "", 2), (3, "", 99), (4, None, 1)):
            c.execute(
                sa.text("INSERT INTO orders VALUES (:o, 'Ann', 'a@example.com', '2026-03-01 10:00:00', 1, :o, :f, :l)"),
                {"o": oid, "f": folder, "l": lid},
            )
            c.execute(sa.text("INSERT INTO orders_products VALUES (:o, :o, 1, 'M', 'Tent', 1)"), {"o": oid})
    tables = inspect_shop(engine, "")
    assert tables.describe() == {"table_prefix": "", "language_from": ["language", "languages_id -> languages.code"]}
    rows = [r for chunk in iter_backorder_lines(engine, tables, RunParams(), T) for r in chunk]
    assert {r["orders_id"]: r["order_language"] for r in rows} == {1: "german", 2: "de", 3: None, 4: "en"}


def test_prefixed_tables(tmp_path) -> None:
    engine = minimal_shop(tmp_path / "zen.sqlite", prefix="zen_", order_columns=", language_code CHAR(2)")
    with pytest.raises(ShopSchemaError, match=r"'orders' not found .*table_prefix"):
        inspect_shop(engine, "")
    assert inspect_shop(engine, "zen_").language_columns == ("language_code",)


def test_missing_column_is_named(shop) -> None:
    with shop.engine.begin() as c:
        c.exec_driver_sql("ALTER TABLE products DROP COLUMN products_date_available")
    with pytest.raises(
        ShopSchemaError, match=r"connection 'shop_db': table 'products' lacks column\(s\) \['products_date_available'\]"
    ):
        inspect_shop(shop.engine, "")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ("", None),
        ("0000-00-00 00:00:00", None),
        ("0000-00-00", None),
        ("0001-01-01 00:00:00", None),
        ("1000-01-01 00:00:00", None),
        (datetime(1000, 1, 1), None),
        (datetime(1, 1, 1), None),
        ("2026-04-01 00:00:00", datetime(2026, 4, 1)),
        (datetime(2026, 4, 1, 12), datetime(2026, 4, 1, 12)),
    ],
)
def test_parse_shop_datetime(raw, expected) -> None:
    assert parse_shop_datetime(raw) == expected


def test_shop_time_follows_the_shop_timezone() -> None:
    t = datetime(2026, 3, 10, tzinfo=UTC)
    assert RunParams().shop_time(t) == datetime(2026, 3, 10)
    assert RunParams(shop_timezone="Europe/Berlin").shop_time(t) == datetime(2026, 3, 10, 1)


def _delete_product(shop, pid: int) -> None:
    with shop.engine.begin() as c:
        c.exec_driver_sql(f"DELETE FROM products WHERE products_id = {pid}")


def test_lines_of_deleted_products_are_found_not_dropped(shop) -> None:
    """Finding 8: the lines of a waiting order whose product left `products` are found by an outer join."""
    shop.product(1, T + timedelta(days=5))
    shop.product(2, T + timedelta(days=5))
    shop.order(10, [1, 2], purchased=T - timedelta(days=1))
    shop.order(11, [1], purchased=T - timedelta(days=1))
    _delete_product(shop, 2)
    p = RunParams()
    tables = inspect_shop(shop.engine, "")
    assert [r["products_id"] for r in extract(shop)] == [1, 1], "a deleted product is not on backorder"
    (missing,) = missing_product_lines(shop.engine, tables, p, [10, 11])
    assert (missing["orders_id"], missing["orders_products_id"], missing["products_id"]) == (10, 2, 2)
    assert missing["products_name"] == "Product 2" and missing["date_available"] is None
    assert set(missing) == set(LINE_COLUMNS)


def test_an_order_with_a_deleted_product_has_not_arrived(shop) -> None:
    """Finding 8: order 10's product 1 arrived and product 2 was deleted: not arrived, the line named."""
    shop.product(1, T - timedelta(days=1))
    shop.product(2, T + timedelta(days=5))
    shop.product(3, None)
    shop.order(10, [1, 2], purchased=T - timedelta(days=9))  # lines 1, 2
    shop.order(11, [1, 3], purchased=T - timedelta(days=9))  # lines 3, 4
    _delete_product(shop, 2)
    tables = inspect_shop(shop.engine, "")
    arrivals = arrived_lines(shop.engine, tables, RunParams(), T, [1, 2, 3, 4])
    assert [(r["orders_id"], r["products_id"]) for r in arrivals.lines] == [(11, 1), (11, 3)]
    assert [(r["orders_id"], r["orders_products_id"], r["products_id"]) for r in arrivals.deleted_products] == [
        (10, 2, 2)
    ]
    # The deleted line need not be one the snapshot knew: any line of the order counts.
    arrivals = arrived_lines(shop.engine, tables, RunParams(), T, [1])
    assert arrivals.lines == [] and [r["orders_products_id"] for r in arrivals.deleted_products] == [2]
    assert all(set(r) == set(LINE_COLUMNS) for r in arrivals.lines + arrivals.deleted_products)


def test_an_order_without_a_purchase_date_is_read_like_a_zero_date(tmp_path) -> None:
    """Finding 5: date_purchased NULL does not drop the order (a zero date never did); with
    max_order_age_days its age is unknown, so it is outside the window, as a zero date is."""
    engine = minimal_shop(tmp_path / "shop.sqlite")
    with engine.begin() as c:
        c.exec_driver_sql("INSERT INTO products VALUES (1, '2026-04-01 00:00:00')")
        c.exec_driver_sql("INSERT INTO orders VALUES (5, 'Ann', 'a@example.com', NULL, 1, 7)")
        c.exec_driver_sql("INSERT INTO orders VALUES (6, 'Bob', 'b@example.com', '0000-00-00 00:00:00', 1, 8)")
        c.exec_driver_sql("INSERT INTO orders_products VALUES (1, 5, 1, 'M', 'Tent', 1), (2, 6, 1, 'M', 'Tent', 1)")
    tables = inspect_shop(engine, "")
    for max_age, expected in ((None, [(5, None), (6, None)]), (30, [])):
        p = RunParams(max_order_age_days=max_age)
        rows = [r for chunk in iter_backorder_lines(engine, tables, p, T) for r in chunk]
        assert [(r["orders_id"], r["date_purchased"]) for r in rows] == expected
