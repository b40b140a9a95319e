"""bench/read.py on a tiny bench shop in MariaDB and its copy in PostgreSQL: every formulation of the
extract query returns the chosen query's rows (compared as sets), the copy is the shop, and the honest
L_read's shop part names a formulation and its rows (no timings asserted)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, timedelta

import pytest
import sqlalchemy as sa

from bench import read
from bench import shop as bench
from bench.shop import REFERENCE_TIME, REFERENCE_TIME_UTC, Sizes
from include.backorder.config import DbConnection, RunParams
from include.backorder.shop import inspect_shop, iter_backorder_lines, shop_engine
from tests.conftest import server_database
from tests.mariadb_shops import VARIANTS, naive, variant_shop_database

TINY = Sizes(orders=200, order_lines=500, open_orders=30, backorder_lines=50, products=40, backordered_products=8)
# At T, a day later (some products have arrived), with an age limit, with one status only.
CASES = [
    (REFERENCE_TIME_UTC, RunParams()),
    (REFERENCE_TIME_UTC + timedelta(days=20), RunParams()),
    (REFERENCE_TIME_UTC, RunParams(max_order_age_days=20)),
    (REFERENCE_TIME_UTC, RunParams(order_status_ids=(2,))),
]


def url(db: DbConnection) -> str:
    return db.url().render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def shops() -> Iterator[dict[str, str]]:
    """The tiny shop in MariaDB and copied into PostgreSQL: their URLs by kind."""
    with server_database("mariadb", "shop_db") as maria, server_database("postgres", "shop_db") as pg:
        bench.create_shop(maria, TINY, progress=None)
        read.copy_to_postgres(url(maria), url(pg))
        yield {"mysql": url(maria), "postgres": url(pg)}


@pytest.mark.parametrize("kind", ["mysql", "postgres"])
@pytest.mark.parametrize(("at", "params"), CASES)
def test_every_formulation_returns_the_chosen_rows(shops, kind: str, at, params: RunParams) -> None:
    with read.RawShop(shops[kind]) as shop:
        rows = read.check_same_rows(shop, at, params)
        chosen = read.row_set(shop, read.FORMULATIONS[read.CHOSEN], at, params)
    assert 0 < rows == sum(chosen.values()) and max(chosen.values()) == 1
    if (at, params) == CASES[0]:
        assert rows == TINY.backorder_lines


@pytest.mark.parametrize("kind", ["mysql", "postgres"])
def test_the_chosen_formulation_is_what_the_extract_reads(shops, kind: str) -> None:
    """Its rows are iter_backorder_lines's, the same columns and values; the extract puts each order's
    lines in order, the query orders the orders."""
    engine = shop_engine(read_connection(shops[kind]))
    read_by_pipeline = [
        tuple(row.values())
        for chunk in iter_backorder_lines(engine, inspect_shop(engine, ""), RunParams(), REFERENCE_TIME, chunk_size=7)
        for row in chunk
    ]
    engine.dispose()
    with read.RawShop(shops[kind]) as shop:
        raw = list(shop.run(read.FORMULATIONS[read.CHOSEN], REFERENCE_TIME_UTC))
    assert len(raw) == TINY.backorder_lines and [r[0] for r in raw] == sorted(r[0] for r in raw)
    assert read_by_pipeline == sorted(read_by_pipeline, key=lambda r: (r[0], r[1]))
    assert sorted(raw, key=lambda r: (r[0], r[1])) == read_by_pipeline


def read_connection(shop_url: str) -> DbConnection:
    u = sa.engine.make_url(shop_url)
    kind = "postgres" if u.get_backend_name() == "postgresql" else "mysql"
    return DbConnection(
        "shop_db", kind, host=u.host or "", port=u.port, login=u.username or "", schema=u.database or ""
    )


def test_both_servers_return_the_same_rows(shops) -> None:
    found = {}
    for kind, shop_url in shops.items():
        with read.RawShop(shop_url) as shop:
            found[kind] = read.row_set(shop, read.FORMULATIONS[read.CHOSEN], REFERENCE_TIME_UTC)
    assert found["mysql"] == found["postgres"]


def test_the_copy_has_the_tables_rows_and_indexes_of_the_shop(shops) -> None:
    maria, pg = sa.create_engine(shops["mysql"]), sa.create_engine(shops["postgres"])
    try:
        for table in read.SHOP_TABLES:
            counts = []
            for engine in (maria, pg):
                with engine.connect() as conn:
                    counts.append(conn.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar_one())
            assert counts[0] == counts[1] > 0, table
            indexes = [
                {(i["name"], tuple(i["column_names"])) for i in sa.inspect(engine).get_indexes(table)}
                for engine in (maria, pg)
            ]
            assert indexes[0] == indexes[1], table
            columns = [[c["name"] for c in sa.inspect(engine).get_columns(table)] for engine in (maria, pg)]
            assert columns[0] == columns[1], table
        with pg.connect() as conn:
            dates = conn.exec_driver_sql("SELECT products_date_available FROM products").scalars().all()
        assert None in dates and all(d is None or d.year > 1000 for d in dates), "zero dates are NULL"
    finally:
        maria.dispose()
        pg.dispose()


def test_a_copy_without_the_products_index(shops) -> None:
    source = sa.engine.make_url(shops["mysql"])
    with server_database("mariadb", "shop_db") as maria, server_database("postgres", "shop_db") as pg:
        read.copy_on_mariadb(shops["mysql"], maria.schema, [read.PRODUCTS_INDEX])
        read.copy_to_postgres(shops["mysql"], url(pg), [read.PRODUCTS_INDEX])
        for copy in (source.set(database=maria.schema).render_as_string(hide_password=False), url(pg)):
            engine = sa.create_engine(copy)
            names = {i["name"] for i in sa.inspect(engine).get_indexes("orders_products")}
            engine.dispose()
            assert names == {"idx_orders_products_orders_id"}
            with read.RawShop(copy) as shop:
                assert read.check_same_rows(shop, REFERENCE_TIME_UTC) == TINY.backorder_lines


@pytest.mark.parametrize("kind", ["mysql", "postgres"])
def test_fastest_raw_fetch_names_a_formulation_and_its_rows(shops, kind: str) -> None:
    fastest = read.fastest_raw_fetch(shops[kind], REFERENCE_TIME_UTC)

    assert fastest["name"] in read.FORMULATIONS and fastest["rows"] == TINY.backorder_lines
    assert set(fastest["all"]) == set(read.FORMULATIONS)
    assert fastest["seconds"] == min(fastest["all"].values())
    assert read.fastest_raw_fetch(shops[kind], REFERENCE_TIME_UTC, ["orders_first"])["name"] == "orders_first"


def test_the_report_has_a_row_per_formulation_and_the_plans(shops) -> None:
    results = {
        "MariaDB": read.measure(shops["mysql"], REFERENCE_TIME_UTC, repeats=1),
        "PostgreSQL": read.measure(shops["postgres"], REFERENCE_TIME_UTC, repeats=1, mode="fetchall"),
    }
    assert read.shop_sizes(shops["mysql"]) == TINY
    setting = read.Setting(TINY, {"MariaDB": "10.x", "PostgreSQL": "15.x"}, (1.0, 2.0))
    text = read.markdown(results, setting, 1, REFERENCE_TIME_UTC)

    assert "| formulation | MariaDB | PostgreSQL |" in text and "500 order lines over 200 orders" in text
    assert all(f"| `{name}` |" in text for name in read.FORMULATIONS)
    assert text.count("**") == 4, "the fastest of each column in bold"
    assert "### MariaDB" in text and "table=orders" in text
    assert "### PostgreSQL" in text and "Seq Scan on orders" in text


def test_the_languages_table_is_joined_in_every_formulation() -> None:
    """modified keeps a folder name and a languages_id (read as languages.code): every formulation reads both."""
    variant = next(v for v in VARIANTS if v.name == "modified3")
    with variant_shop_database(variant) as (shop, conn):
        shop.insert("languages", languages_id=1, name="English", code="en", directory="english")
        shop.insert("languages", languages_id=2, name="Deutsch", code="de", directory="german")
        shop.product(1, naive(10), "Zelt")
        shop.product(2, naive(-10), "Kocher")
        shop.order(1, [(1, "Zelt"), (2, "Kocher")], status=1, german=True, name="Anna")
        shop.order(2, [(1, "Tent")], status=1, german=False, name="Bob")
        with shop.engine.begin() as c:  # an order from before the folder name was kept: languages_id only
            c.exec_driver_sql("UPDATE orders SET language = '' WHERE orders_id = 2")
        with read.RawShop(url(conn)) as raw:
            assert raw.tables.languages is not None
            at = naive(0).replace(tzinfo=UTC)
            assert read.check_same_rows(raw, at) == 2
            rows = read.row_set(raw, read.FORMULATIONS[read.CHOSEN], at)
    assert sorted((row[0], row[10]) for row in rows) == [(1, "german"), (2, "en")]
