"""Every shop of the osCommerce family on a real MariaDB, run by the real DAG over several days.

Each variant's tables come from its DDL fixture (tests/fixtures/shops/<variant>.sql: the types,
engines, character sets and placeholder defaults its install SQL declares). The orders exercise its
quirks: table prefix, where the order language is kept, how "no date" is written, fractional
quantities, latin1 tables and connection character sets, umlauts in names.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest

from tests.conftest import airflow_conn_json
from tests.mariadb_shops import T0, VARIANTS, MariaShop, naive, variant_shop_database


@pytest.fixture(params=VARIANTS, ids=[v.name for v in VARIANTS])
def variant_shop(request, tmp_path, monkeypatch, mail_sink, dag):
    with variant_shop_database(request.param) as (shop, shop_conn):
        monkeypatch.setenv("AIRFLOW_CONN_SHOP_DB", airflow_conn_json(shop_conn))
        state = json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "state.sqlite")})
        monkeypatch.setenv("AIRFLOW_CONN_BACKORDER_STATE_DB", state)
        monkeypatch.setenv(
            "AIRFLOW_CONN_SMTP_DEFAULT",
            json.dumps(
                {
                    "conn_type": "smtp",
                    "host": "127.0.0.1",
                    "port": mail_sink.port,
                    "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "shop@example.com"},
                }
            ),
        )
        for task in dag.tasks:
            task.retries = 0
        yield shop


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
