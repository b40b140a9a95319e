"""The audit page's queries over a year of a big shop's history: how long each page's queries take.

Fills a fresh state database (migrated by Alembic, so with exactly the production indexes) with
`days` daily run records, `per_day` notifications each (kinds, statuses, languages and addresses
spread like a real shop's: orders come back every few days, skipped and failed ones among them)
and the last two snapshots with `lines` backorder lines each (in the line history), then times each query of
include/backorder/audit/queries.py (median of `repeats` calls) on the newest and on the oldest data.

    python -m bench.audit [--url SQLALCHEMY_URL] [--days 365] [--per-day 5000] [--lines 80000]

Without --url it makes (and drops afterwards) a database on the machine's PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from include.backorder import state as st
from include.backorder.audit import queries as q

T_LAST = datetime(2026, 11, 29)
KINDS = ("initial", "periodic", "periodic", "periodic", "changed")
STATUSES = ("sent",) * 18 + ("skipped", "failed")


@contextmanager
def postgres_database() -> Iterator[str]:
    name = f"bo_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()


def fill(engine: sa.Engine, days: int, per_day: int, lines: int, seed: int = 1) -> None:
    """The year of history (see the module's docstring)."""
    rng = random.Random(seed)
    open_orders = max(per_day * 4, 10)
    for day in range(days):
        t = T_LAST - timedelta(days=days - 1 - day)
        counts: dict[str, dict[str, dict[str, int]]] = {}
        rows = []
        first = day * per_day // 2  # the window of waiting orders moves on as orders come and go
        for orders_id in rng.sample(range(first, first + open_orders), per_day):
            kind, status, lang = rng.choice(KINDS), rng.choice(STATUSES), rng.choice(("en", "en", "de"))
            counts.setdefault(status, {}).setdefault(kind, {}).setdefault(lang, 0)
            counts[status][kind][lang] += 1
            rows.append(
                {
                    "orders_id": orders_id,
                    "kind": kind,
                    "reference_time": t,
                    "dry_run": False,
                    "language": lang,
                    "customers_email_address": f"customer{orders_id}@example.com",
                    "customers_name": f"Customer {orders_id}",
                    "customers_id": orders_id,
                    "listed_lines": "[]",
                    "status": status,
                    "created_at": t,
                    "detail": "250 2.0.0 Ok" if status == "sent" else "550 5.1.1 Mailbox unavailable",
                    "message_id": f"<backorder.{orders_id}.{kind}@example.com>",
                    "sent_at": t,
                }
            )
        with engine.begin() as conn:
            run_id = conn.execute(
                sa.insert(st.runs).values(
                    dag_id="backorder_notifications",
                    dag_run_id=f"scheduled__{t:%Y-%m-%dT%H:%M:%S+00:00}",
                    reference_time=t,
                    dry_run=False,
                    params="{}",
                    status="finished",
                    stage_seconds="{}",
                    line_count=lines,
                    order_count=open_orders,
                    counts=json.dumps(counts),
                    skipped="[]",
                    started_at=t,
                    finished_at=t,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
            conn.execute(sa.insert(st.notifications), [{**row, "run_id": run_id} for row in rows])
            if day >= days - 2:
                conn.execute(
                    sa.insert(st.snapshots).values(
                        reference_time=t, run_id=run_id, line_count=lines, created_at=t, shop_time=t
                    )
                )
        if day == days - 1:
            _fill_history(engine, T_LAST - timedelta(days=1), lines)


def _fill_history(engine: sa.Engine, before: datetime, lines: int) -> None:
    """The line history of the last two snapshots (at `before` and T_LAST): one line in seven has a new
    date at the last one, so it has two rows; the others one."""
    rows = []
    for i in range(lines):
        held = {"orders_products_id": i, "orders_id": i // 2, "products_id": i % 2000}
        first, last = (T_LAST + timedelta(days=1 + i % 60 + n * (i % 7 == 0)) for n in (0, 1))
        if first == last:
            rows.append({**held, "date_available": first, "valid_from": before, "valid_to": st.OPEN})
        else:
            rows.append({**held, "date_available": first, "valid_from": before, "valid_to": T_LAST})
            rows.append({**held, "date_available": last, "valid_from": T_LAST, "valid_to": st.OPEN})
    with engine.begin() as conn:
        for start in range(0, len(rows), 10_000):
            conn.execute(sa.insert(st.line_history), rows[start : start + 10_000])


def timed(call: Callable[[], Any], repeats: int) -> float:
    """Median milliseconds of `repeats` calls."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(engine: sa.Engine, repeats: int) -> dict[str, float]:
    with engine.connect() as c:
        newest, oldest = q.runs_page(c, q.Page(limit=1)).runs[0].id, 1
        some_order = c.execute(sa.select(sa.func.max(st.notifications.c.orders_id))).scalar_one() // 2
        cases: dict[str, Callable[[], Any]] = {
            "runs page (first)": lambda: q.runs_page(c),
            "runs page (last)": lambda: q.runs_page(c, q.Page(offset=max(q.runs_page(c).total - 50, 0))),
            "daily series (60 days)": lambda: q.daily_series(c),
            "open lines by product": lambda: q.open_lines(c),
            "run detail, newest run": lambda: q.run_detail(c, newest),
            "run detail, newest run, page 40": lambda: q.run_detail(c, newest, q.Page(offset=2000)),
            "run detail, oldest run": lambda: q.run_detail(c, oldest),
            "order history": lambda: q.order_history(c, some_order),
            "search by order id": lambda: q.search(c, str(some_order)),
            "search by address": lambda: q.search(c, f"customer{some_order}@example.com"),
            "search by address prefix": lambda: q.search(c, f"customer{some_order}*"),
            "CSV of the newest run": lambda: sum(1 for _ in q.csv_rows(c, newest)),
        }
        return {name: timed(call, repeats) for name, call in cases.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="SQLAlchemy URL of an empty state database (default: a new PostgreSQL one)")
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--per-day", type=int, default=5000)
    parser.add_argument("--lines", type=int, default=80_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    with contextmanager(lambda: iter([args.url]))() if args.url else postgres_database() as url:
        engine = sa.create_engine(url)
        st.migrate(engine)
        started = time.perf_counter()
        fill(engine, args.days, args.per_day, args.lines)
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                c.exec_driver_sql("ANALYZE")
        print(
            f"{engine.dialect.name}: {args.days} runs, {args.days * args.per_day:,} notifications, "
            f"2 snapshots of {args.lines:,} lines, filled in {time.perf_counter() - started:.0f} s"
        )
        for name, ms in measure(engine, args.repeats).items():
            print(f"  {name:<36} {ms:8.1f} ms")
        engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
