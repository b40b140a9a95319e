"""What a messy shop database does to a run: the widest values every supported shop allows (and wider),
NULL where a shop allows it, products deleted from the catalogue, negative quantities and absurd dates.

Each row runs the library's stages (extract, previous snapshot, classify, send, finish) against a
SQLite shop whose columns accept anything (no widths, no NOT NULL: what a plugin or an import can
leave behind), a state database on SQLite, MariaDB and PostgreSQL, and a real SMTP server on
loopback. What the user sees is asserted: the email received (text and headers), the notification
row and the run record (the audit), and the log line.

The baseline shop: order 1 (Ann Example, customer1@example.com, English) with line 1 (product 1,
"Product 1", model M-1, expected 2026-03-20) and line 2 (product 2, "Product 2", model M-2,
expected 2026-03-25), one of each; order 2 (Bob Example) with line 3 (product 1), so that frames
hold more than one order (a NULL among values is where pandas makes NaN). A row changes one column
of order 1 (`set`: of its line 1, or of all its lines when `where` says "all"; of product 1).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from include.backorder import state as st
from include.backorder.config import DbConnection
from tests.backorder.test_pipeline import T0, rows, run_day
from tests.conftest import ROOT, Shop, server_database
from tests.hardening.matrix import Case, params
from tools import demo_shop

SURFACE = "Shop data"

T1 = T0 + timedelta(days=1)
FIXTURES = ROOT / "tests" / "fixtures" / "shops"

# The state columns that copy a shop column, and the shop columns (table, column) each copies.
COPIED: dict[str, tuple[tuple[str, str], ...]] = {
    "products_model": (("orders_products", "products_model"),),
    "products_name": (("orders_products", "products_name"),),
    "customers_name": (("orders", "customers_name"),),
    "customers_email_address": (("orders", "customers_email_address"),),
    "order_language": (("orders", "language_code"), ("orders", "language"), ("languages", "code")),
}


def declared_widths() -> dict[str, dict[str, int]]:
    """Per copied state column: the width each supported shop's install SQL declares (shop -> characters)."""
    widths: dict[str, dict[str, int]] = {column: {} for column in COPIED}
    for path in sorted(FIXTURES.glob("*.sql")):
        for table, body in re.findall(r"CREATE TABLE (\w+) \((.*?)\n\)", path.read_text(), re.S):
            for name, width in re.findall(r"^\s*(\w+)\s+(?:varchar|char)\((\d+)\)", body, re.M | re.I):
                for column, sources in COPIED.items():
                    # Zen Cart's fixtures carry a table prefix (zen_orders).
                    if any(name == c and (table == t or table.endswith(f"_{t}")) for t, c in sources):
                        widths[column][path.stem] = max(widths[column].get(path.stem, 0), int(width))
    return widths


def widest(column: str) -> int:
    return max(declared_widths()[column].values())


def email_of_length(n: int) -> str:
    """A valid address of exactly n characters (n <= 254: the longest SMTP carries)."""
    local = "a" * 64
    labels, left = [], n - len(local) - 1 - len(".example")
    while left > 0:
        size = min(63, left - 1 if left > 63 else left)
        labels.append("d" * size)
        left -= size + 1
    address = f"{local}@{'.'.join(labels)}.example"
    assert len(address) == n, (len(address), n)
    return address


def text_of(n: int) -> str:
    """n characters of umlauts and one 4-byte character at the end: widths count characters, not bytes."""
    return ("Größe Äpfel " * n)[: n - 1] + "😀"


WIDTH_CASES = [
    Case(
        id="model-255",
        given="`products_model` of 255 characters (osCommerce 2.4 declares varchar(255); the state held 64)",
        expect="the email lists the whole model; the run finishes on SQLite, MariaDB and PostgreSQL state",
        finding="4",
        data={"column": "products_model", "set": {"orders_products.products_model": "width"}},
    ),
    Case(
        id="product-name-255",
        given="order line `products_name` of 255 characters (osCommerce 2.4, modified, Gambio)",
        expect="the email lists the whole name",
        finding="4",
        data={"column": "products_name", "set": {"orders_products.products_name": "width"}},
    ),
    Case(
        id="customer-name-255",
        given="`customers_name` of 255 characters (osCommerce 2.3 and 2.4)",
        expect="the greeting and the To header carry the whole name",
        finding="4",
        data={"column": "customers_name", "set": {"orders.customers_name": "width"}},
    ),
    Case(
        id="email-254",
        given="`customers_email_address` of 254 characters, the longest an address can be (255 declared)",
        expect="the email is delivered to that address",
        finding="4",
        data={"column": "customers_email_address", "set": {"orders.customers_email_address": "email"}},
    ),
    Case(
        id="language-32",
        given="order language folder name of 32 characters (xt:Commerce, modified, Gambio `orders.language`)",
        expect="the email goes out in the default language",
        finding="4",
        data={"column": "order_language", "set": {"orders.language_code": "width"}},
    ),
]

OVERSIZE_CASES = [
    Case(
        id="model-wider-than-any-shop",
        given="`products_model` of 300 characters (a plugin widened the column)",
        expect="the run finishes; the state and the email keep the first 255 characters; the log names the order, "
        "line and column (not the value)",
        finding="4",
        data={
            "set": {"orders_products.products_model": "M" * 255 + "X" * 45},
            "text": ["M" * 255],
            "not_text": ["MX"],
            "log": "order 1, line 1: products_model has 300 characters; the state keeps the first 255",
        },
    ),
    Case(
        id="email-wider-than-any-shop",
        given="`customers_email_address` of 300 characters",
        expect="no email; skipped 'email address is not valid'; the log names the column",
        finding="4",
        data={
            "set": {"orders.customers_email_address": "a" * 280 + "@example.com" + "x" * 8},
            "skip": "email address is not valid",
            "log": "order 1, line 1: customers_email_address has 300 characters",
        },
    ),
    Case(
        id="nul-byte",
        given="a NUL character in `customers_name` (MySQL keeps it; PostgreSQL refuses it in text)",
        expect="'Dear Ann Example,'; the run finishes on every state database",
        finding="4",
        data={"set": {"orders.customers_name": "Ann Example\x00"}, "text": ["Dear Ann Example,"]},
    ),
]

NULL_CASES = [
    Case(
        id="null-customer-name",
        given="`customers_name` NULL",
        expect="'Dear customer,' and a To header with the bare address; never 'NaN'",
        finding="5",
        data={"set": {"orders.customers_name": None}, "text": ["Dear customer,"], "to": "customer1@example.com"},
    ),
    Case(
        id="null-email",
        given="`customers_email_address` NULL",
        expect="no email; notification skipped 'no email address'",
        finding="5",
        data={"set": {"orders.customers_email_address": None}, "skip": "no email address"},
    ),
    Case(
        id="null-customer-id",
        given="`customers_id` NULL",
        expect="the email is sent; the notification's customers_id is empty (NULL)",
        finding="5",
        data={"set": {"orders.customers_id": None}, "text": ["Dear Ann Example,"], "customers_id": None},
    ),
    Case(
        id="null-product-name",
        given="order line `products_name` NULL",
        expect="the line is listed by its model, without a name",
        finding="5",
        data={"set": {"orders_products.products_name": None}, "text": ["1 x  (M-1)", "1 x Product 2 (M-2)"]},
    ),
    Case(
        id="null-model",
        given="order line `products_model` NULL",
        expect="the line is listed without a model",
        finding="5",
        data={"set": {"orders_products.products_model": None}, "text": ["1 x Product 1\n"]},
    ),
    Case(
        id="null-language",
        given="order language NULL",
        expect="the email goes out in the default language",
        finding="5",
        data={"set": {"orders.language_code": None}, "text": ["Dear Ann Example,"], "language": "en"},
    ),
    Case(
        id="null-date-purchased",
        given="`date_purchased` NULL",
        expect="the order is notified like one with a zero date",
        finding="5",
        data={"set": {"orders.date_purchased": None}, "text": ["Dear Ann Example,"]},
    ),
    Case(
        id="null-quantity",
        given="order line `products_quantity` NULL",
        expect="the line is left out of the email (the other is listed); audited as suspect; the log names it",
        finding="5",
        data={
            "set": {"orders_products.products_quantity": None},
            "text": ["Product 2"],
            "not_text": ["Product 1"],
            "suspect": "no quantity",
        },
    ),
]

SUSPECT_CASES = [
    Case(
        id="negative-quantity",
        given="order line `products_quantity` -1",
        expect="the line is left out of the email (the other is listed); the run record lists it as suspect "
        "('quantity -1 ...'); the log names order, line and product",
        finding="11",
        data={
            "set": {"orders_products.products_quantity": -1},
            "text": ["Product 2"],
            "not_text": ["Product 1", "-1"],
            "suspect": "quantity -1",
        },
    ),
    Case(
        id="only-negative-quantities",
        given="every line of an order with `products_quantity` -1",
        expect="no email for the order; both lines audited as suspect in the run record and named in the log",
        finding="11",
        data={
            "set": {"orders_products.products_quantity": -1},
            "where": "all",
            "no_email": True,
            "suspect": "quantity -1",
        },
    ),
    Case(
        id="date-after-2100",
        given="`products_date_available` 9999-12-31 (a shop's 'never')",
        expect="the line is listed with 'no date yet', never the year 9999; audited as suspect; the log names it",
        finding="11",
        data={
            "set": {"products.products_date_available": "9999-12-31 00:00:00"},
            "text": ["1 x Product 1 (M-1)\n    expected no date yet"],
            "not_text": ["9999"],
            "suspect": "date 9999-12-31",
        },
    ),
]

DELETED_CASES = [
    Case(
        id="deleted-product-waiting",
        given="an order waiting for product 1 whose other product 2 was deleted from `products`",
        expect="the email lists product 1 only; the run record and the log name order 1 and product 2",
        finding="8",
        data={"text": ["Product 1"], "not_text": ["Product 2"], "suspect": "no longer in the shop"},
    ),
    Case(
        id="deleted-product-arrival",
        given="two waiting products; next day product 1 arrives and product 2 is deleted from `products`",
        expect="no `available` email (product 2 did not arrive); the run record and the log name order 1 and product 2",
        finding="8",
        data={"suspect": "no longer in the shop"},
    ),
]

BIG_CASES = [
    Case(
        id="large-order-of-widest-lines",
        given="an order of 150 lines, each with a 255-character name and model (what the email lists: over the "
        "64 KB a MySQL TEXT column holds)",
        expect="the email is sent and the audit keeps its lines, on MariaDB state too",
        finding="4",
        data={"lines": 150},
    ),
]

CASES = WIDTH_CASES + OVERSIZE_CASES + NULL_CASES + SUSPECT_CASES + DELETED_CASES + BIG_CASES


# --- the state database: one per backend for the module, emptied before each test ----------------


@pytest.fixture(scope="module", params=["sqlite", "mariadb", "postgres"])
def migrated_state(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DbConnection]:
    """The state database on each backend, migrated once (migrations take seconds on a server)."""
    if request.param == "sqlite":
        db = DbConnection("backorder_state_db", "sqlite", host=str(tmp_path_factory.mktemp("state") / "state.sqlite"))
        _migrate(db)
        yield db
        return
    with server_database(request.param, "backorder_state_db") as db:
        _migrate(db)
        yield db


def _migrate(db: DbConnection) -> None:
    engine = sa.create_engine(db.url())
    st.migrate(engine)
    engine.dispose()


@pytest.fixture
def state_db(migrated_state: DbConnection) -> DbConnection:
    """The module's state database with every row of the last test deleted."""
    engine = sa.create_engine(migrated_state.url())
    with engine.begin() as c:
        for table in reversed(st.metadata.sorted_tables):
            c.execute(sa.delete(table))
    engine.dispose()
    return migrated_state


# --- the shop ------------------------------------------------------------------------------------


@pytest.fixture
def messy_shop(tmp_path: Path) -> Iterator[Shop]:
    """The demo shop's tables with every column nullable (SQLite keeps any width)."""
    md = sa.MetaData()
    for table in demo_shop.md.sorted_tables:
        copy = table.to_metadata(md)
        for column in copy.columns:
            column.nullable = not column.primary_key
            column.server_default = None
    path = tmp_path / "shop.sqlite"
    engine = sa.create_engine(f"sqlite:///{path}")
    md.create_all(engine)
    shop = Shop(path, engine)
    shop.product(1, datetime(2026, 3, 20))
    shop.product(2, datetime(2026, 3, 25))
    shop.order(1, [1, 2], purchased=datetime(2026, 3, 1), name="Ann Example")
    shop.order(2, [1], purchased=datetime(2026, 3, 1), name="Bob Example")
    yield shop
    engine.dispose()


def change(shop: Shop, case: Case) -> None:
    """Apply the row's `set` to the baseline shop: one column of order 1, its line 1 (or all lines), product 1."""
    for target, value in case.data.get("set", {}).items():
        table_name, column = target.split(".")
        if value == "width":
            value = text_of(widest(case.data["column"]))
        elif value == "email":
            value = email_of_length(min(254, widest("customers_email_address")))
        table = demo_shop.md.tables[table_name]
        key = {"orders": "orders_id", "orders_products": "orders_products_id", "products": "products_id"}[table_name]
        where = [table.c.orders_id == 1] if case.data.get("where") == "all" else [table.c[key] == 1]
        with shop.engine.begin() as c:
            c.execute(sa.update(table).where(*where).values({column: value}))


def shop_value(shop: Shop, target: str) -> Any:
    """The value `change` wrote (of order 1, its line 1, product 1)."""
    table_name, column = target.split(".")
    key = {"orders": "orders_id", "orders_products": "orders_products_id", "products": "products_id"}[table_name]
    with shop.engine.connect() as c:
        return c.exec_driver_sql(f"SELECT {column} FROM {table_name} WHERE {key} = 1").scalar_one()


# --- what the user sees --------------------------------------------------------------------------

NAN = re.compile(r"\bnan\b", re.I)


def body(message) -> str:
    return message.get_body(("plain",)).get_content().replace("\r\n", "\n").replace("×", "x")


def order_1(state_db, mail_sink) -> tuple[list[Any], list[sa.RowMapping]]:
    """The emails received for order 1, and its notification rows."""
    emails = [m for m in mail_sink.messages if m.message["X-Backorder-Order-Id"] == "1"]
    return emails, rows(state_db, st.notifications, st.notifications.c.orders_id == 1)


def no_nan_anywhere(state_db, mail_sink) -> None:
    """No NaN reached a row, a template or a header."""
    for table in (st.notifications, st.runs):
        for row in rows(state_db, table):
            assert not NAN.search(json.dumps(dict(row), default=str)), dict(row)
    for item in mail_sink.messages:
        assert not NAN.search(item.raw.decode("ascii", "replace")), "NaN in an email"
        assert not NAN.search(body(item.message))


def suspects(state_db) -> list[dict[str, Any]]:
    """The suspect lines the last run recorded."""
    last = rows(state_db, st.runs)[-1]
    return json.loads(last.get("suspect_lines") or "[]")


# --- the tests -----------------------------------------------------------------------------------


def width(table: sa.Table, column: str) -> int:
    column_type = table.c[column].type
    assert isinstance(column_type, sa.String) and column_type.length is not None
    return column_type.length


def test_state_columns_hold_the_widest_value_every_supported_shop_declares() -> None:
    widths = declared_widths()
    assert widths["products_model"]["osc24"] == 255, "the fixtures are read"
    assert len({shop for per_shop in widths.values() for shop in per_shop}) == 9
    for table in (st.staged_lines, st.staged_arrivals):
        for column, per_shop in widths.items():
            assert width(table, column) >= max(per_shop.values()), (table.name, column, per_shop)
    for column in ("customers_name", "customers_email_address"):
        assert width(st.notifications, column) >= max(widths[column].values())


@pytest.mark.parametrize("case", params(WIDTH_CASES))
def test_the_widest_values_every_shop_allows(messy_shop, state_db, smtp, mail_sink, case: Case) -> None:
    change(messy_shop, case)
    target = next(iter(case.data["set"]))
    value = shop_value(messy_shop, target)
    assert len(value) == min(widest(case.data["column"]), 254 if "email" in target else 255)

    run_day(messy_shop, state_db, smtp, T0)

    (item,), (note,) = order_1(state_db, mail_sink)
    assert note["status"] == "sent"
    if target == "orders.customers_email_address":
        assert item.rcpt_tos == (value,)
    elif target == "orders.customers_name":
        assert body(item.message).startswith(f"Dear {value},")
        # Python's parser puts a space between adjacent encoded words of a display name (RFC 2047
        # says to drop it, as mail clients do): compare without spaces, so every character counts.
        assert item.message["To"].addresses[0].display_name.replace(" ", "") == value.replace(" ", "")
        assert note["customers_name"] == value
    elif target == "orders.language_code":
        assert note["language"] == "en" and body(item.message).startswith("Dear Ann Example,")
    else:
        assert value in body(item.message)
        listed = json.loads(note["listed_lines"])
        assert listed[0][target.split(".")[1]] == value
    no_nan_anywhere(state_db, mail_sink)


@pytest.mark.parametrize("case", params(OVERSIZE_CASES + NULL_CASES + SUSPECT_CASES[:1] + SUSPECT_CASES[2:]))
def test_messy_values(messy_shop, state_db, smtp, mail_sink, caplog, case: Case) -> None:
    change(messy_shop, case)
    caplog.set_level(logging.INFO, logger="include.backorder")
    summary = run_day(messy_shop, state_db, smtp, T0)

    emails, (note,) = order_1(state_db, mail_sink)
    if "skip" in case.data:
        assert emails == []
        assert (note["status"], note["detail"]) == ("skipped", case.data["skip"])
    else:
        (item,) = emails
        assert note["status"] == "sent"
        text = body(item.message)
        for expected in case.data.get("text", []):
            assert expected in text
        for unexpected in case.data.get("not_text", []):
            assert unexpected not in text
        if "to" in case.data:
            assert str(item.message["To"]) == case.data["to"]
        if "customers_id" in case.data:
            assert note["customers_id"] == case.data["customers_id"]
        if "language" in case.data:
            assert note["language"] == case.data["language"]
    if "log" in case.data:
        assert case.data["log"] in caplog.text
        value = next(iter(case.data["set"].values()))
        assert value[200:] not in caplog.text, "the log names the column, never the value"
    if "suspect" in case.data:
        (suspect,) = [s for s in suspects(state_db) if s["orders_id"] == 1]
        assert (suspect["orders_id"], suspect["orders_products_id"], suspect["products_id"]) == (1, 1, 1)
        assert case.data["suspect"] in suspect["problem"]
        assert f"order 1, line 1, product 1: {suspect['problem']}" in caplog.text
    assert summary["counts"]
    no_nan_anywhere(state_db, mail_sink)


@pytest.mark.parametrize("case", params(SUSPECT_CASES[1:2]))
def test_an_order_of_suspect_lines_only_gets_no_email(messy_shop, state_db, smtp, mail_sink, caplog, case) -> None:
    change(messy_shop, case)
    caplog.set_level(logging.INFO, logger="include.backorder")
    run_day(messy_shop, state_db, smtp, T0)
    assert order_1(state_db, mail_sink) == ([], [])
    assert [m.message["X-Backorder-Order-Id"] for m in mail_sink.messages] == ["2"]
    listed = suspects(state_db)
    assert [(s["orders_id"], s["orders_products_id"], s["products_id"]) for s in listed] == [(1, 1, 1), (1, 2, 2)]
    assert all(case.data["suspect"] in s["problem"] for s in listed)
    for s in listed:
        assert f"order 1, line {s['orders_products_id']}, product {s['products_id']}: {s['problem']}" in caplog.text


def _delete_product(shop: Shop, pid: int) -> None:
    with shop.engine.begin() as c:
        c.execute(sa.delete(demo_shop.products).where(demo_shop.products.c.products_id == pid))


@pytest.mark.parametrize("case", params(DELETED_CASES[:1]))
def test_a_deleted_product_of_a_waiting_order(messy_shop, state_db, smtp, mail_sink, caplog, case) -> None:
    _delete_product(messy_shop, 2)
    caplog.set_level(logging.INFO, logger="include.backorder")
    run_day(messy_shop, state_db, smtp, T0, send_available=True)
    (item,), _ = order_1(state_db, mail_sink)
    assert "Product 1" in body(item.message) and "Product 2" not in body(item.message)
    (suspect,) = suspects(state_db)
    assert (suspect["orders_id"], suspect["orders_products_id"], suspect["products_id"]) == (1, 2, 2)
    assert case.data["suspect"] in suspect["problem"]
    assert f"order 1, line 2, product 2: {suspect['problem']}" in caplog.text


@pytest.mark.parametrize("case", params(DELETED_CASES[1:]))
def test_a_deleted_product_is_not_available(messy_shop, state_db, smtp, mail_sink, caplog, case) -> None:
    run_day(messy_shop, state_db, smtp, T0, send_available=True)
    assert [m.message["X-Backorder-Notification"] for m in mail_sink.messages] == ["initial", "initial"]
    mail_sink.clear()
    messy_shop.set_date(1, datetime(2026, 3, 2, 12))  # reached by T1
    _delete_product(messy_shop, 2)
    caplog.set_level(logging.INFO, logger="include.backorder")

    summary = run_day(messy_shop, state_db, smtp, T1, send_available=True)

    sent = [(m.message["X-Backorder-Order-Id"], m.message["X-Backorder-Notification"]) for m in mail_sink.messages]
    assert sent == [("2", "available")], "order 1 gets no 'your items are on their way' listing product 1 only"
    assert [n["orders_id"] for n in rows(state_db, st.notifications) if n["kind"] == "available"] == [2]
    assert summary["counts"]["sent"] == {"available": {"en": 1}}
    (suspect,) = suspects(state_db)
    assert (suspect["orders_id"], suspect["orders_products_id"], suspect["products_id"]) == (1, 2, 2)
    assert case.data["suspect"] in suspect["problem"]
    assert f"order 1, line 2, product 2: {suspect['problem']}" in caplog.text


@pytest.mark.parametrize("case", params(BIG_CASES))
def test_a_large_order_of_the_widest_lines(messy_shop, state_db, smtp, mail_sink, case: Case) -> None:
    count = case.data["lines"]
    pids = list(range(10, 10 + count))
    for pid in pids:
        messy_shop.product(pid, datetime(2026, 4, 1))
    messy_shop.order(3, pids, purchased=datetime(2026, 3, 1), name="Carl Example")
    with messy_shop.engine.begin() as c:
        c.execute(
            sa.update(demo_shop.orders_products)
            .where(demo_shop.orders_products.c.orders_id == 3)
            .values(products_name=text_of(255), products_model="M" * 255)
        )

    run_day(messy_shop, state_db, smtp, T0)

    (note,) = rows(state_db, st.notifications, st.notifications.c.orders_id == 3)
    assert note["status"] == "sent"
    assert [m.message["X-Backorder-Order-Id"] for m in mail_sink.messages].count("3") == 1
    assert len(note["listed_lines"].encode()) > 65_535
    assert len(json.loads(note["listed_lines"])) == count
