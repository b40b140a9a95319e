"""The benchmark's synthetic shop, built tiny on the machine's MariaDB: exact counts by the real
query, the same rows for the same seed, reuse, date changes undone exactly, sizes refused."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields, replace
from datetime import timedelta
from typing import Any

import pymysql
import pytest

from bench import shop as bench
from bench.shop import REFERENCE_TIME, Sizes
from include.backorder.config import DbConnection, RunParams
from include.backorder.shop import inspect_shop, iter_backorder_lines, shop_engine
from tests.conftest import ROOT, server_database

TINY = Sizes(orders=200, order_lines=500, open_orders=30, backorder_lines=50, products=40, backordered_products=8)
ROWS = ("orders", "orders_products", "products", "products_description")


@pytest.fixture
def db() -> Iterator[DbConnection]:
    with server_database("mariadb", "shop_db") as conn:
        yield conn


def sql(db: DbConnection, statement: str, args: Any = None) -> list[tuple[Any, ...]]:
    conn = pymysql.connect(host=db.host, port=db.port, user=db.login, database=db.schema, charset="utf8mb4")
    try:
        with conn.cursor() as cur:
            cur.execute(statement, args)
            return list(cur.fetchall())
    finally:
        conn.close()


def checksums(db: DbConnection, tables: tuple[str, ...] = ROWS) -> dict[str, int]:
    return {name.rsplit(".", 1)[1]: value for name, value in sql(db, f"CHECKSUM TABLE {', '.join(tables)}")}


def changed_products(db: DbConnection) -> dict[int, tuple[Any, Any]]:
    rows = sql(
        db,
        "SELECT p.products_id, o.products_date_available, p.products_date_available FROM products p"
        " JOIN bench_original_dates o USING (products_id)"
        " WHERE NOT (p.products_date_available <=> o.products_date_available)",
    )
    return {pid: (before, after) for pid, before, after in rows}


def test_counts_are_exact_by_the_real_query(db) -> None:
    figures = bench.create_shop(db, TINY, progress=None)

    assert figures.matches(TINY) and not figures.reused and figures.database == db.schema
    assert (figures.orders, figures.order_lines, figures.open_orders) == (200, 500, 30)
    assert (figures.backorder_lines, figures.backorder_orders) == (50, 30)
    assert bench.shop_figures(db) == replace(figures, build_seconds=0.0)
    # Delivered orders hold backordered products too: only the status filter leaves them out.
    [(closed_backordered,)] = sql(
        db,
        "SELECT COUNT(*) FROM orders_products op JOIN orders o USING (orders_id) JOIN products p USING (products_id)"
        " WHERE o.orders_status = 3 AND p.products_date_available > %s",
        (REFERENCE_TIME,),
    )
    assert closed_backordered > 0
    # Open orders hold in-stock lines besides their backorder lines.
    [(open_lines,)] = sql(
        db, "SELECT COUNT(*) FROM orders_products JOIN orders USING (orders_id) WHERE orders_status IN (1, 2)"
    )
    assert open_lines > 50


def test_the_shop_looks_like_a_shop(db) -> None:
    bench.create_shop(db, TINY, progress=None)

    statuses = dict(sql(db, "SELECT orders_status, COUNT(*) FROM orders GROUP BY orders_status"))
    assert set(statuses) == {1, 2, 3} and statuses[1] + statuses[2] == 30
    [(oldest, newest)] = sql(db, "SELECT MIN(date_purchased), MAX(date_purchased) FROM orders")
    assert REFERENCE_TIME - timedelta(days=3 * 365) <= oldest and newest <= REFERENCE_TIME
    [(oldest_open,)] = sql(db, "SELECT MIN(date_purchased) FROM orders WHERE orders_status IN (1, 2)")
    assert oldest_open >= REFERENCE_TIME - timedelta(days=60)
    [(ids_follow_time,)] = sql(
        db,
        "SELECT COUNT(*) FROM orders a JOIN orders b ON b.orders_id = a.orders_id + 1 WHERE b.date_purchased < a.date_purchased",
    )
    assert ids_follow_time == 0
    languages = dict(sql(db, "SELECT language_code, COUNT(*) FROM orders GROUP BY language_code"))
    assert set(languages) == {"en", "de"} and 0.15 < languages["de"] / 200 < 0.5
    emails = sql(db, "SELECT customers_id, customers_email_address FROM orders")
    assert all(email == f"customer{cid}@example.com" for cid, email in emails)
    [(low, high)] = sql(db, "SELECT MIN(products_quantity), MAX(products_quantity) FROM orders_products")
    assert (low, high) == (1, 3)
    dates = [str(d) for (d,) in sql(db, "SELECT products_date_available FROM products")]
    assert "None" in dates and "0000-00-00 00:00:00" in dates
    assert any(d[:4].isdigit() and d < str(REFERENCE_TIME) and not d.startswith("0000") for d in dates)
    future = sorted(d for d in dates if d[:4].isdigit() and d > str(REFERENCE_TIME))
    assert len(future) == 8 and future[-1] <= str(REFERENCE_TIME + timedelta(days=60))
    german = [
        name
        for (name,) in sql(
            db, "SELECT products_name FROM orders_products JOIN orders USING (orders_id) WHERE language_code = 'de'"
        )
    ]
    assert any(not name.isascii() for name in german)


def test_the_pipeline_reads_it(db) -> None:
    bench.create_shop(db, TINY, progress=None)

    engine = shop_engine(db)
    rows = [
        r
        for chunk in iter_backorder_lines(engine, inspect_shop(engine, ""), RunParams(), REFERENCE_TIME)
        for r in chunk
    ]
    engine.dispose()
    assert len(rows) == 50 and len({r["orders_id"] for r in rows}) == 30
    assert {r["order_language"] for r in rows} == {"en", "de"}
    assert all(r["date_available"] > REFERENCE_TIME for r in rows)


def test_same_seed_same_rows_by_either_load(db) -> None:
    [(local_infile,)] = sql(db, "SELECT @@GLOBAL.local_infile")
    if not local_infile:
        pytest.skip("the server's local_infile is off: LOAD DATA LOCAL cannot be compared with INSERTs")
    bench.create_shop(db, TINY, seed=5, load="infile", progress=None)
    by_infile = checksums(db)
    with server_database("mariadb", "shop_db") as other:
        bench.create_shop(other, TINY, seed=5, load="insert", progress=None)
        assert checksums(other) == by_infile
        bench.create_shop(other, TINY, seed=6, progress=None)
        assert all(checksums(other)[table] != by_infile[table] for table in ROWS)


def test_an_existing_shop_is_reused_unless_forced(db) -> None:
    built = bench.create_shop(db, TINY, progress=None)
    before, [(built_at,)] = checksums(db), sql(db, "SELECT value FROM bench_meta WHERE name = 'built_at'")
    bench.change_dates(db, fraction=0.5)

    again = bench.create_shop(db, TINY, progress=None)

    assert again.reused and again.matches(TINY) and again.build_seconds == pytest.approx(built.build_seconds, abs=0.051)
    assert checksums(db) == before, "reusing puts the dates back"
    assert sql(db, "SELECT value FROM bench_meta WHERE name = 'built_at'") == [(built_at,)]
    assert not bench.create_shop(db, TINY, force=True, progress=None).reused
    other_seed = bench.create_shop(db, TINY, seed=2, progress=None)
    assert not other_seed.reused and checksums(db) != before
    assert sql(db, "SELECT value FROM bench_meta WHERE name = 'seed'") == [("2",)]
    assert not bench.create_shop(db, replace(TINY, order_lines=501), seed=2, progress=None).reused


def test_change_dates_moves_a_fraction_and_restore_dates_undoes_it(db) -> None:
    bench.create_shop(db, TINY, progress=None)
    before = checksums(db)

    changed = bench.change_dates(db, fraction=0.25, seed=3)

    assert len(changed) == 2 and changed == sorted(changed)
    moved = changed_products(db)
    assert sorted(moved) == changed
    for original, now in moved.values():
        assert now > REFERENCE_TIME and 1 <= abs((now - original).days) <= 7
    assert bench.shop_figures(db).backorder_lines == 50, "the lines stay on backorder, with new dates"
    assert bench.change_dates(db, fraction=0.25, seed=3) == changed, "the same seed, the same changes"
    assert len(bench.change_dates(db, fraction=0.01, seed=4)) == 1, "at least one"
    assert len(changed_products(db)) == 1, "each change starts from the original dates"

    assert bench.restore_dates(db) == 1
    assert checksums(db) == before and changed_products(db) == {}
    assert bench.restore_dates(db) == 0
    with pytest.raises(ValueError, match="fraction must be > 0 and <= 1"):
        bench.change_dates(db, fraction=0)


def test_main_prints_the_figures(db, capsys) -> None:
    url = f"mysql+pymysql://{db.login}@{db.host}:{db.port}"
    sizes = [
        "--orders",
        "200",
        "--order-lines",
        "500",
        "--open-orders",
        "30",
        "--backorder-lines",
        "50",
        "--products",
        "40",
        "--backordered-products",
        "8",
    ]
    assert bench.main(["--url", url, "--database", db.schema, *sizes]) == 0
    out = capsys.readouterr().out
    assert "backorder_lines        50\n" in out and "reused                 False\n" in out and "size_on_disk_mb" in out
    assert bench.main(["--url", url, "--database", db.schema, "--open-orders", "30000"]) == 2
    assert "open_orders (30,000) cannot exceed orders (20,000)" in capsys.readouterr().err


def test_the_docs_state_the_sizes_the_benchmark_builds() -> None:
    """`SIZE=full` is the shop docs/benchmark.md describes, and `SIZE=quick` a twentieth of it, as it says."""
    full, quick = bench.SIZES["full"], bench.SIZES["quick"]
    readme = " ".join((ROOT / "docs" / "benchmark.md").read_text(encoding="utf-8").split())
    assert (
        f"`SIZE=full`, {full.order_lines:,} order lines over {full.orders:,} orders, of which {full.open_orders:,}"
        f" open orders hold {full.backorder_lines:,} backorder lines; `SIZE=quick`, the default, a twentieth of that"
    ) in readme
    assert quick == Sizes(*(getattr(full, f.name) // 20 for f in fields(Sizes)))
    assert all(getattr(full, f.name) % 20 == 0 for f in fields(Sizes)), "a twentieth in whole numbers"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"orders": 0}, r"orders must be a whole number >= 1, got 0"),
        ({"products": 2.5}, r"products must be a whole number >= 1, got 2.5"),
        ({"open_orders": True}, r"open_orders must be a whole number >= 1, got True"),
        ({"open_orders": 201}, r"open_orders \(201\) cannot exceed orders \(200\)"),
        ({"order_lines": 199}, r"order_lines \(199\) must be >= orders \(200\): every order holds a line"),
        (
            {"backorder_lines": 29},
            r"backorder_lines \(29\) must be >= open_orders \(30\): every open order holds at least one backorder line",
        ),
        ({"order_lines": 219}, r"order_lines \(219\) must be >= backorder_lines \+ closed orders \(50 \+ 170\)"),
        (
            {"backordered_products": 40},
            r"backordered_products \(40\) must be < products \(40\): open orders hold in-stock products too",
        ),
    ],
)
def test_bad_sizes_are_refused(change, message) -> None:
    with pytest.raises(ValueError, match=message):
        replace(TINY, **change)
