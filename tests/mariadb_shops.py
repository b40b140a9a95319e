"""Shop variants on the machine's MariaDB: their DDL fixtures, their quirks, and rows to fill them.

Each variant's tables come from tests/fixtures/shops/<variant>.sql: the types, engines, character
sets and placeholder defaults its install SQL declares.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from include.backorder.config import DbConnection
from tests.conftest import ROOT, server_database

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
    Variant(
        "zencart158", prefix="zen_", language=("language_code", "de", "en"), no_date="0001-01-01 00:00:00", quantity=1.5
    ),
    Variant("zencart222", prefix="zen_", language=("language_code", "de", "en"), no_date="0001-01-01 00:00:00"),
    Variant(
        "xtc304", database_charset="latin1", connection_charset="latin1", language=("language", "german", "english")
    ),
    Variant("modified3", language=("language", "german", "english")),
    Variant("gambio32", language=("language", "german", "english"), no_date="1000-01-01 00:00:00", quantity=2),
]


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
            "orders_id": oid,
            "customers_id": oid,
            "customers_name": name,
            "orders_status": status,
            "customers_email_address": f"customer{oid}@example.com",
            "date_purchased": naive(-1),
        }
        if self.variant.language:
            column, de, en = self.variant.language
            values[column] = de if german else en
            if self.variant.name == "modified3":
                values["languages_id"] = 2 if german else 1
        self.insert("orders", **values)
        for pid, product_name in products:
            self.insert(
                "orders_products",
                orders_id=oid,
                products_id=pid,
                products_name=product_name,
                products_quantity=self.variant.quantity,
            )

    def set_date(self, pid: int, date: datetime) -> None:
        t = self.md.tables[self.variant.prefix + "products"]
        with self.engine.begin() as conn:
            conn.execute(t.update().where(t.c.products_id == pid).values(products_date_available=date))


@contextmanager
def variant_shop_database(variant: Variant) -> Iterator[tuple[MariaShop, DbConnection]]:
    """A fresh MariaDB database with the variant's tables, and the shop_db connection to read it."""
    with server_database("mariadb", "shop_db") as db:
        admin = sa.create_engine(db.url())
        with admin.begin() as c:
            c.exec_driver_sql(f"ALTER DATABASE {db.schema} CHARACTER SET {variant.database_charset}")
        admin.dispose()
        shop = MariaShop(db, variant)
        try:
            yield (
                shop,
                DbConnection(
                    "shop_db",
                    "mysql",
                    host=db.host,
                    port=db.port,
                    login=db.login,
                    schema=db.schema,
                    extra={"charset": variant.connection_charset},
                ),
            )
        finally:
            shop.engine.dispose()
