"""The year benchmark (bench/year.py) for a handful of days on a tiny bench shop and SQLite state: the
report's fields, a quiet day that writes no line history row, a busy day that sends, the shop's copy
changing while the shop it was copied from does not, and the same seed giving the same year."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
import sqlalchemy as sa

from bench import shop as bench_shop
from bench import year
from bench.audit import measure
from bench.shop import Sizes
from include.backorder.config import DbConnection
from tests.conftest import server_database

SMALL = Sizes(orders=400, order_lines=1000, open_orders=60, backorder_lines=100, products=100, backordered_products=20)
SERVER = "mysql+pymysql://root@127.0.0.1:3306"


@pytest.fixture(scope="module")
def source() -> Iterator[DbConnection]:
    with server_database("mariadb", "shop_db") as db:
        bench_shop.create_shop(db, SMALL, progress=None)
        yield db


@pytest.fixture
def copy() -> Iterator[DbConnection]:
    with server_database("mariadb", "shop_db") as db:
        yield db


def sql(db: DbConnection, statement: str) -> list[tuple[Any, ...]]:
    conn = pymysql.connect(host=db.host, port=db.port, user=db.login, database=db.schema, charset="utf8mb4")
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            return list(cur.fetchall())
    finally:
        conn.close()


def checksums(db: DbConnection) -> list[tuple[Any, ...]]:
    return sql(db, "CHECKSUM TABLE orders, orders_products, products, products_description")


def run_year(source: DbConnection, copy: DbConnection, out: Path, days: int) -> dict[str, Any]:
    state = out / "state.sqlite"
    code = year.main(
        [
            "--size=existing",
            f"--server-url={SERVER}",
            f"--source-db={source.schema}",
            f"--shop-db={copy.schema}",
            "--backends=sqlite",
            f"--sqlite-url=sqlite:///{state}",
            f"--days={days}",
            "--audit-repeats=1",
            f"--out={out}",
        ]
    )
    assert code == 0
    return dict(json.loads((out / "year.json").read_text()))


def test_a_few_days_on_a_tiny_shop(source: DbConnection, copy: DbConnection, tmp_path: Path) -> None:
    before = checksums(source)

    result = run_year(source, copy, tmp_path, days=5)

    assert checksums(source) == before, "the shop copied from is never changed"
    assert result["seed"] == 1 and result["shop"]["open_orders"] == 60 and result["model"] == year.MODEL
    assert {"cpu", "cores", "python"} <= result["machine"].keys()
    b = result["backends"]["sqlite"]
    assert b["daily_runs"] == 5 and len(b["days"]) == 4  # 4 silent days, then the quiet run and the busy day
    assert b["version"].startswith("SQLite ")
    first, *rest = b["days"]
    assert first["lines"] == 100 and first["orders"] == 60 and first["notifications"] == 60
    assert first["history_added"] == 100 and first["history_closed"] == 0
    assert all(day["lines"] > 0 and day["notifications"] > 0 for day in rest)
    assert sum(day["shop"]["waiting_orders_new"] for day in rest) > 0
    assert sum(day["shop"]["dates_moved"] for day in rest) > 0

    quiet, busy = b["quiet"], b["busy"]
    assert quiet["reference_time"] == "2026-11-05T12:00:00"  # half a day after the last silent day
    assert (quiet["history_added"], quiet["history_closed"], quiet["notifications"], quiet["staged_rows"]) == (
        0,
        0,
        0,
        0,
    )
    assert quiet["rows_written"] == 1 and quiet["changed_lines"] == 0 and quiet["sent"] == 0  # its snapshot's row
    assert busy["reference_time"] == "2026-11-06T00:00:00"
    assert busy["sent"] == sum(busy["due"].values()) > 0 and busy["due"]["periodic"] > 0
    assert busy["rows_written"] > busy["history_added"] > 0
    for day in (quiet, busy):
        assert {"extract", "classify", "render", "send", "commit", "total"} <= day["stages"].keys()
        assert "extract" in day["stage_seconds"] and "finish" in day["stage_seconds"]

    state = sa.create_engine(f"sqlite:///{tmp_path / 'state.sqlite'}")
    with state.connect() as conn:
        at_quiet = conn.exec_driver_sql(
            "SELECT COUNT(*) FROM bo_line_history WHERE valid_from = '2026-11-05 12:00:00.000000'"
            " OR valid_to = '2026-11-05 12:00:00.000000'"
        ).scalar_one()
        history = conn.exec_driver_sql("SELECT COUNT(*) FROM bo_line_history").scalar_one()
        runs = conn.exec_driver_sql("SELECT COUNT(*) FROM bo_run WHERE status = 'finished'").scalar_one()
    audit_queries = measure(state, 1).keys()
    state.dispose()
    assert at_quiet == 0, "the quiet day wrote line history rows"
    assert runs == 6
    tables = b["state"]["tables"]
    assert tables["bo_line_history"]["rows"] == history and tables["bo_run"]["rows"] == 6
    assert b["state"]["bytes"] == (tmp_path / "state.sqlite").stat().st_size
    assert set(b["audit_ms"]) == set(audit_queries) and b["audit_all_within_200ms"] in (True, False)
    assert set(b["targets"]) == {
        "every audit query <= 200 ms",
        "rows written on the quiet day beyond the run record <= 1 % of the backorder lines",
    }
    assert b["targets"]["rows written on the quiet day beyond the run record <= 1 % of the backorder lines"]["met"]
    for key in ("history_added", "history_closed", "notifications", "rows_written"):
        assert {"min", "median", "max", "mean"} == b["per_day"][key].keys()
    assert {"min", "median", "max"} <= b["day_seconds"].keys()

    report = (tmp_path / "year.md").read_text()
    assert "| sqlite | quiet |" in report and "| sqlite | busy |" in report and "bo_line_history" in report

    # The copy is the shop a few days later: the new orders came, the orders that waited no more shipped.
    changes = [day["shop"] for day in b["days"]] + [busy["shop"]]
    [(orders,)] = sql(copy, "SELECT COUNT(*) FROM orders")
    [(delivered,)] = sql(copy, "SELECT COUNT(*) FROM orders WHERE orders_status = 3")
    assert orders == 400 + sum(c["waiting_orders_new"] + c["plain_orders_new"] for c in changes) > 400
    assert delivered == 340 + sum(c["orders_shipped"] for c in changes)


def test_the_same_seed_gives_the_same_year(source: DbConnection, copy: DbConnection, tmp_path: Path) -> None:
    def shop_days(out: Path) -> list[Any]:
        days = run_year(source, copy, out, days=4)["backends"]["sqlite"]["days"]
        return [(d["lines"], d["changed_lines"], {k: v for k, v in d["shop"].items() if k != "seconds"}) for d in days]

    assert shop_days(tmp_path / "a") == shop_days(tmp_path / "b")
