"""Reading shops on a real MariaDB: chunks, read-only sessions, zero dates, charsets, clear errors."""

from __future__ import annotations

from dataclasses import replace

import pytest
import sqlalchemy as sa

from include.backorder import pipeline
from include.backorder import state as st
from include.backorder.config import DbConnection, RunContext, RunParams
from include.backorder.shop import ShopSchemaError, inspect_shop, iter_backorder_lines, shop_engine
from tests.mariadb_shops import T0, VARIANTS, naive, variant_shop_database

BY_NAME = {v.name: v for v in VARIANTS}


def test_lines_stream_in_chunks(tmp_path) -> None:
    with variant_shop_database(BY_NAME["osc23"]) as (shop, conn):
        shop.product(1, naive(10), "Zelt")
        for oid in range(1, 6):
            shop.order(oid, [(1, "Zelt")], status=1, german=False, name=f"Customer {oid}")
        engine = shop_engine(conn)
        tables = inspect_shop(engine, "")
        chunks = list(iter_backorder_lines(engine, tables, RunParams(), naive(0), chunk_size=2))
        engine.dispose()
    assert [len(c) for c in chunks] == [2, 2, 1]
    assert [row["orders_id"] for chunk in chunks for row in chunk] == [1, 2, 3, 4, 5]


def test_shop_sessions_cannot_write_even_to_myisam_tables() -> None:
    with variant_shop_database(BY_NAME["loaded6"]) as (shop, conn):
        shop.product(1, naive(10), "Zelt")
        engine = shop_engine(conn)
        with pytest.raises(sa.exc.OperationalError, match="READ ONLY"), engine.begin() as c:
            c.exec_driver_sql("DELETE FROM products")
        with engine.connect() as c:
            assert c.exec_driver_sql("SELECT COUNT(*) FROM products").scalar_one() == 1
        engine.dispose()


def test_zero_dates_from_pymysql_mean_no_date() -> None:
    with variant_shop_database(BY_NAME["loaded6"]) as (shop, conn):
        shop.product(1, naive(10), "Zelt")
        shop.insert(
            "orders", orders_id=9, customers_name="Ann", customers_email_address="a@example.com", orders_status=1
        )
        shop.insert("orders_products", orders_id=9, products_id=1, products_name="Zelt", products_quantity=1)
        engine = shop_engine(conn)
        with engine.connect() as c:
            raw = c.exec_driver_sql("SELECT date_purchased FROM orders").scalar_one()
        tables = inspect_shop(engine, "")
        rows = [r for chunk in iter_backorder_lines(engine, tables, RunParams(), naive(0)) for r in chunk]
        engine.dispose()
    assert str(raw).startswith("0000-00-00"), "PyMySQL hands zero dates over as text"
    assert [(r["orders_id"], r["date_purchased"]) for r in rows] == [(9, None)]


@pytest.mark.parametrize("charset", ["latin1", "utf8", "utf8mb4"])
@pytest.mark.parametrize("variant", ["osc22", "loaded6", "osc23"])
def test_umlauts_arrive_intact_whatever_the_charsets(variant: str, charset: str) -> None:
    with variant_shop_database(BY_NAME[variant]) as (shop, conn):
        shop.product(1, naive(10), "Größe")
        shop.order(1, [(1, "Schlafsack für Kälte, Größe M")], status=1, german=True, name="Jürgen Weiß")
        engine = shop_engine(replace(conn, extra={"charset": charset}))
        tables = inspect_shop(engine, "")
        (row,) = [r for chunk in iter_backorder_lines(engine, tables, RunParams(), naive(0)) for r in chunk]
        engine.dispose()
    assert (row["products_name"], row["customers_name"]) == ("Schlafsack für Kälte, Größe M", "Jürgen Weiß")


def test_wrong_prefix_names_the_connection_and_the_missing_table() -> None:
    with variant_shop_database(BY_NAME["zencart222"]) as (_shop, conn):
        engine = shop_engine(conn)
        with pytest.raises(ShopSchemaError) as info:
            inspect_shop(engine, "", "shop_db")
        assert str(info.value) == "connection 'shop_db': table 'orders' not found (is a table_prefix needed?)"
        with pytest.raises(ShopSchemaError, match=r"table 'shop_orders' not found \(table_prefix is 'shop_'\)"):
            inspect_shop(engine, "shop_", "shop_db")
        assert inspect_shop(engine, "zen_").language_columns == ("language_code",)
        engine.dispose()


def test_unreachable_shop_is_one_clear_error_and_changes_no_state(tmp_path) -> None:
    down = DbConnection("shop_db", "mysql", host="127.0.0.1", port=1, login="root", schema="shop")
    state = DbConnection("backorder_state_db", "sqlite", host=str(tmp_path / "state.sqlite"))
    with pytest.raises(pipeline.ShopUnavailableError) as info:
        pipeline.extract(down, state, RunContext(T0), RunParams())
    message = str(info.value)
    assert message.startswith("connection 'shop_db': cannot read the shop: (2003,")
    assert info.value.__cause__ is None and info.value.__suppress_context__, "one error, not a chain"
    assert not (tmp_path / "state.sqlite").exists()


def test_missing_column_on_a_real_shop() -> None:
    with variant_shop_database(BY_NAME["osc24"]) as (shop, conn):
        with shop.engine.begin() as c:
            c.exec_driver_sql("ALTER TABLE orders DROP COLUMN date_purchased")
        engine = shop_engine(conn)
        with pytest.raises(ShopSchemaError, match=r"table 'orders' lacks column\(s\) \['date_purchased'\]"):
            inspect_shop(engine, "")
        engine.dispose()


def test_a_shop_run_leaves_its_findings_in_the_run_record(tmp_path) -> None:
    with variant_shop_database(BY_NAME["gambio32"]) as (shop, conn):
        shop.product(1, naive(10), "Zelt")
        shop.order(1, [(1, "Zelt")], status=1, german=True, name="Anna")
        state = DbConnection("backorder_state_db", "sqlite", host=str(tmp_path / "state.sqlite"))
        result = pipeline.extract(conn, state, RunContext(T0), RunParams())
    engine = sa.create_engine(state.url())
    with engine.connect() as c:
        schema = c.exec_driver_sql("SELECT shop_schema FROM bo_run").scalar_one()
    engine.dispose()
    assert result.lines == 1
    assert schema == '{"dialect": "mysql", "language_from": ["language"], "table_prefix": ""}'


def test_state_kept_in_the_shops_own_myisam_latin1_database(mail_sink, smtp) -> None:
    """backorder_state_db pointed at the shop: our tables are InnoDB and utf8mb4 all the same."""
    with variant_shop_database(BY_NAME["loaded6"]) as (shop, conn):
        shop.product(1, naive(10), "Zelt")
        shop.order(1, [(1, "Zelt für zwei")], status=1, german=True, name="Jürgen Müller")  # latin1 tables
        state = replace(conn, conn_id="backorder_state_db")
        run = pipeline.extract(conn, state, RunContext(T0), RunParams(default_language="de"))
        pipeline.load_previous_snapshot(state, run.run_id)
        assert pipeline.classify_run(state, run.run_id)["initial"] == 1
        assert pipeline.send(state, run.run_id, "initial", smtp) == {"sent:de": 1}
        pipeline.finish(state, run.run_id)
        with shop.engine.connect() as c:
            tables = c.exec_driver_sql(
                "SELECT table_name, engine, table_collation FROM information_schema.tables"
                " WHERE table_schema = DATABASE() ORDER BY table_name"
            ).all()
            stored = c.exec_driver_sql("SELECT customers_name FROM bo_notification").scalar_one()
    ours = {name: (engine, collation) for name, engine, collation in tables if name.startswith("bo_")}
    assert set(ours) == {
        "bo_alembic_version",
        "bo_lease",
        "bo_notification",
        "bo_run",
        "bo_snapshot",
        "bo_line_history",
        "bo_staged_change",
        "bo_staged_line",
        "bo_staged_arrival",
        "bo_suppression",
    }
    assert all(
        engine == "InnoDB" and collation.startswith("utf8mb4")
        for name, (engine, collation) in ours.items()
        if name != "bo_alembic_version"
    )
    assert {engine for name, engine, _ in tables if not name.startswith("bo_")} == {"MyISAM"}
    assert stored == "Jürgen Müller"
    assert "Zelt für zwei" in mail_sink.messages[0].message.get_body(("plain",)).get_content()


def test_modified_order_without_folder_name_gets_its_language_through_languages_id() -> None:
    with variant_shop_database(BY_NAME["modified3"]) as (shop, conn):
        shop.insert("languages", languages_id=1, name="English", code="en", directory="english")
        shop.insert("languages", languages_id=2, name="Deutsch", code="de", directory="german")
        shop.product(1, naive(10), "Zelt")
        shop.order(1, [(1, "Zelt")], status=1, german=True, name="Anna")
        shop.order(2, [(1, "Zelt")], status=1, german=True, name="Bernd")
        with shop.engine.begin() as c:
            c.exec_driver_sql("UPDATE orders SET language = '' WHERE orders_id = 2")
        engine = shop_engine(conn)
        rows = [
            r for chunk in iter_backorder_lines(engine, inspect_shop(engine, ""), RunParams(), naive(0)) for r in chunk
        ]
        engine.dispose()
    assert {r["orders_id"]: r["order_language"] for r in rows} == {1: "german", 2: "de"}


def _declared_width(shop, table: str, column: str) -> int | None:
    t = shop.md.tables[shop.variant.prefix + table]
    return getattr(t.c[column].type, "length", None) if column in t.c else None


def test_every_variants_widest_values_reach_the_state_whole() -> None:
    """Finding 4: each shop's widest name, model, address and language, read over its own charset by
    PyMySQL, staged in a MariaDB state (strict: a value too wide fails the insert) character for character."""
    from tests.conftest import server_database

    with server_database("mariadb", "backorder_state_db") as state:
        for variant in VARIANTS:
            with variant_shop_database(variant) as (shop, conn):
                width = {
                    (table, column): _declared_width(shop, table, column)
                    for table, column in (
                        ("orders_products", "products_model"),
                        ("orders_products", "products_name"),
                        ("orders", "customers_name"),
                        ("orders", "customers_email_address"),
                    )
                }
                model = ("ÄÖÜß-" * 60)[: width["orders_products", "products_model"]]
                name = ("Schlafsack für Kälte " * 20)[: width["orders_products", "products_name"]]
                customer = ("Jürgen Weiß " * 30)[: width["orders", "customers_name"]]
                address = "a" * (min(254, width["orders", "customers_email_address"] or 0) - 12) + "@example.com"
                language: dict[str, str] = {}
                if variant.language:
                    column = variant.language[0]
                    language = {column: "g" * (_declared_width(shop, "orders", column) or 0)}
                shop.product(1, naive(10), "Zelt")
                shop.insert(
                    "orders",
                    orders_id=1,
                    customers_id=1,
                    customers_name=customer,
                    customers_email_address=address,
                    orders_status=1,
                    date_purchased=naive(-1),
                    **language,
                )
                shop.insert(
                    "orders_products",
                    orders_id=1,
                    products_id=1,
                    products_model=model,
                    products_name=name,
                    products_quantity=1,
                )
                result = pipeline.extract(
                    conn, state, RunContext(T0, dag_id=f"widths_{variant.name}"), RunParams(table_prefix=variant.prefix)
                )
            engine = sa.create_engine(state.url())
            with engine.connect() as c:
                staged = c.execute(sa.select(st.staged_lines).where(st.staged_lines.c.run_id == result.run_id))
                (row,) = staged.mappings().all()
            engine.dispose()
            got = (row["products_model"], row["products_name"], row["customers_name"], row["customers_email_address"])
            assert got == (model, name, customer, address), variant.name
            assert row["order_language"] == (next(iter(language.values())) if language else None), variant.name
