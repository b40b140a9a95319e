"""Every shop of the osCommerce family on a real MariaDB, run by the real DAG over several days.

Each variant's tables come from its DDL fixture (tests/fixtures/shops/<variant>.sql: the types,
engines, character sets and placeholder defaults its install SQL declares). The orders exercise its
quirks: table prefix, where the order language is kept, how "no date" is written, fractional
quantities, latin1 tables and connection character sets, umlauts in names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from include.backorder.config import DbConnection
from tests.conftest import ROOT, airflow_conn_json, server_database

FIXTURES = ROOT / "tests" / "fixtures" / "shops"
T0 = datetime(2026, 3, 2, tzinfo=UTC)


def naive(days: float) -> datetime:
    return (T0 + timedelta(days=days)).replace(tzinfo=None)


@dataclass(frozen=True)
class Variant:
    """A shop variant as the tests know it: its fixture and its quirks."""

    name: str
    prefix: str = ""
    database_charset: str = "utf8mb4"  # the server default the shop was installed under
    connection_charset: str = "utf8mb4"  # extra.charset of the shop_db connection
    language: tuple[str, str, str] | None = None  # (orders column, value for German, value for English)
    no_date: str | None = None  # how this shop writes "no date" (None: leave the column's default)
    quantity: float = 1


VARIANTS = [
    Variant("osc22", database_charset="latin1", connection_charset="latin1", no_date="0000-00-00 00:00:00"),
    Variant("osc23", connection_charset="utf8", no_date="0000-00-00 00:00:00"),
    Variant("osc24", connection_charset="utf8"),
    Variant("loaded6"),  # latin1 tables read over utf8mb4; NOT NULL DEFAULT '0000-00-00 00:00:00'
    Variant("zencart158", prefix="zen_", language=("language_code", "de", "en"), no_date="0001-01-01 00:00:00", quantity=1.5),
    Variant("zencart222", prefix="zen_", language=("language_code", "de", "en"), no_date="0001-01-01 00:00:00"),
    Variant("xtc304", database_charset="latin1", connection_charset="latin1", language=("language", "german", "english")),
    Variant("modified3", language=("language", "german", "english")),
    Variant("gambio32", language=("language", "german", "english"), no_date="1000-01-01 00:00:00", quantity=2),
]  # fmt: skip


def _filler(column: sa.Column[Any]) -> Any:
    """A value for a NOT NULL column without default that the scenario does not care about."""
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        python_type = str
    if python_type is datetime:
        return datetime(2025, 1, 1)
    if python_type in (int, float) or column.type.__class__.__name__ in ("DECIMAL", "NUMERIC", "FLOAT"):
        return 0
    return ""


class MariaShop:
    """A variant's tables in a fresh MariaDB database, filled through reflection."""

    def __init__(self, db: DbConnection, variant: Variant) -> None:
        self.variant = variant
        self.engine = sa.create_engine(db.url())  # utf8mb4: the server converts into latin1 tables
        with self.engine.begin() as c:
            for statement in (FIXTURES / f"{variant.name}.sql").read_text().split(";\n"):
                if "CREATE TABLE" in statement:
                    c.exec_driver_sql(statement)
        self.md = sa.MetaData()
        self.md.reflect(self.engine)

    def insert(self, table: str, **values: Any) -> None:
        t = self.md.tables[self.variant.prefix + table]
        row = {
            c.name: _filler(c)
            for c in t.columns
            if not c.nullable and c.server_default is None and c.autoincrement is not True
        }
        with self.engine.begin() as conn:
            conn.execute(t.insert().values(**(row | values)))

    def product(self, pid: int, date: datetime | str | None, name: str) -> None:
        values: dict[str, Any] = {"products_id": pid, "products_quantity": 0, "products_status": 1}
        if date is not None:
            values["products_date_available"] = date
        self.insert("products", **values)
        self.insert("products_description", products_id=pid, language_id=1, products_name=name)

    def order(self, oid: int, products: list[tuple[int, str]], *, status: int, german: bool, name: str) -> None:
        values: dict[str, Any] = {
            "orders_id": oid, "customers_id": oid, "customers_name": name, "orders_status": status,
            "customers_email_address": f"customer{oid}@example.com", "date_purchased": naive(-1),
        }  # fmt: skip
        if self.variant.language:
            column, de, en = self.variant.language
            values[column] = de if german else en
            if self.variant.name == "modified3":
                values["languages_id"] = 2 if german else 1
        self.insert("orders", **values)
        for pid, product_name in products:
            self.insert(
                "orders_products", orders_id=oid, products_id=pid, products_name=product_name,
                products_quantity=self.variant.quantity,
            )  # fmt: skip

    def set_date(self, pid: int, date: datetime) -> None:
        t = self.md.tables[self.variant.prefix + "products"]
        with self.engine.begin() as conn:
            conn.execute(t.update().where(t.c.products_id == pid).values(products_date_available=date))


@pytest.fixture(params=VARIANTS, ids=[v.name for v in VARIANTS])
def variant_shop(request, tmp_path, monkeypatch, mail_sink, dag):
    variant: Variant = request.param
    with server_database("mariadb", "shop_db") as db:
        admin = sa.create_engine(db.url())
        with admin.begin() as c:
            c.exec_driver_sql(f"ALTER DATABASE {db.schema} CHARACTER SET {variant.database_charset}")
        admin.dispose()
        shop = MariaShop(db, variant)
        shop_conn = DbConnection("shop_db", "mysql", host=db.host, port=db.port, login=db.login, schema=db.schema,
                                 extra={"charset": variant.connection_charset})  # fmt: skip
        monkeypatch.setenv("AIRFLOW_CONN_SHOP_DB", airflow_conn_json(shop_conn))
        state = json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "state.sqlite")})
        monkeypatch.setenv("AIRFLOW_CONN_BACKORDER_STATE_DB", state)
        monkeypatch.setenv(
            "AIRFLOW_CONN_SMTP_DEFAULT",
            json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": mail_sink.port,
                        "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "shop@example.com"}}),
        )  # fmt: skip
        for task in dag.tasks:
            task.retries = 0
        yield shop
        shop.engine.dispose()


def run_day(dag, mail_sink, day: int, prefix: str) -> dict[int, Any]:
    mail_sink.clear()
    dag_run = dag.test(logical_date=T0 + timedelta(days=day), run_conf=dag.default_conf | {"table_prefix": prefix})
    assert dag_run.state == "success"
    return {int(m.message["X-Backorder-Order-Id"]): m.message for m in mail_sink.messages}


def text(msg) -> str:
    return msg.get_body(("plain",)).get_content()


def test_variant_over_three_days(variant_shop: MariaShop, dag, mail_sink) -> None:
    shop, v = variant_shop, variant_shop.variant
    shop.product(1, naive(10), "Zelt für zwei")
    shop.product(2, naive(20), "Regenjacke Größe M")
    shop.product(3, v.no_date, "Kompass")  # the shop's own way of saying "no date"
    shop.product(4, naive(-3), "Karte")
    shop.order(501, [(1, "Zelt für zwei")], status=1, german=True, name="Jürgen Müller")
    shop.order(502, [(2, "Rain jacket size M"), (3, "Compass")], status=2, german=False, name="Ann O'Neill")
    shop.order(503, [(1, "Zelt für zwei")], status=3, german=True, name="Käthe Groß")
    shop.order(504, [(3, "Kompass"), (4, "Karte")], status=1, german=True, name="Björn Köhler")
    german = "de" if v.language else "en"  # osCommerce and Loaded keep no order language
    qty = {1: "1", 1.5: "1.5", 2: "2"}[v.quantity]

    got = run_day(dag, mail_sink, 0, v.prefix)
    assert set(got) == {501, 502}
    assert (got[501]["X-Backorder-Notification"], got[501]["Content-Language"]) == ("initial", german)
    assert (got[502]["X-Backorder-Notification"], got[502]["Content-Language"]) == ("initial", "en")
    assert got[501]["To"] == "Jürgen Müller <customer501@example.com>"
    assert got[502]["To"] == "Ann O'Neill <customer502@example.com>"
    date_501 = "12.03.2026" if german == "de" else "Mar 12, 2026"
    assert "Zelt für zwei" in text(got[501]) and date_501 in text(got[501])
    qty_501 = qty.replace(".", ",") if german == "de" else qty
    assert f"  - {qty_501} {'×' if german == 'de' else 'x'} Zelt für zwei" in text(got[501])
    assert "Rain jacket size M" in text(got[502]) and "Compass" not in text(got[502])

    shop.set_date(2, naive(25))
    got = run_day(dag, mail_sink, 1, v.prefix)
    assert {o: m["X-Backorder-Notification"] for o, m in got.items()} == {502: "changed"}
    assert "expected Mar 27, 2026 (before: Mar 22, 2026)" in text(got[502])

    got = run_day(dag, mail_sink, 2, v.prefix)
    assert {o: m["X-Backorder-Notification"] for o, m in got.items()} == {501: "periodic"}

    got = run_day(dag, mail_sink, 2, v.prefix)  # a repeated run sends nothing twice
    assert got == {}
