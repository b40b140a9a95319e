"""Retention (`[backorder] keep_days`, include/backorder/state/retention.py) on SQLite, MariaDB and PostgreSQL.

Forty days of the real pipeline (orders placed every day, waiting for products whose dates move, arriving,
shipping, cancelled, ageing out) fill a state; it is copied twice, and one copy is pruned with
keep_days 10. Then:

- what is older than the cutoff and belongs to no order waiting at the boundary snapshot or since is gone
  (line history, notifications, snapshots, run records); the orders still waiting keep everything;
- the snapshot at every T from the boundary on reads back as before, and the audit queries give the same
  answers for recent data;
- the next day's run, and then a backfill of a day inside the window, record and send exactly what they do
  on the copy that was not pruned;
- pruning in batches of 3 deletes exactly what batches of 5,000 do; a second prune deletes nothing;
- keep_days unset prunes nothing; a state without a snapshot prunes nothing; a run under way is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from include.backorder import lease, pipeline
from include.backorder import state as st
from include.backorder.audit import queries
from include.backorder.config import ConfigError, DbConnection, RunContext, RunParams, SmtpSettings
from tests.backorder import timelines
from tests.conftest import CheckedSink, Shop, server_database

T0 = datetime(2026, 11, 2, tzinfo=UTC)
DAYS = 40  # days 0 .. 39; day 29 has no run: the boundary snapshot (day 28) is older than the cutoff
SKIPPED_DAY = 29
KEEP_DAYS = 10
BACKFILL = 31.5  # a T that never ran, inside the window: after the prune, on both copies
PARAMS: dict[str, Any] = {
    "send_available": True,
    "reminder_interval_days": 3,
    "max_reminders": 2,
    "max_order_age_days": 30,
}
SHARED = 1  # a product many orders wait for; postponed every 7 days (`changed`)
LONG_WAIT = 2000  # an order that waits for a far date, told on days 3, 6 and 9 only, and ages out on day 33


def naive(n: float) -> datetime:
    return (T0 + timedelta(days=n)).replace(tzinfo=None)


def wait(n: int) -> int:
    """Days the order placed on day n waits for its own product: 4 to 20."""
    return 4 + (n * 7) % 17


def shared_date(n: int) -> datetime:
    return naive(45 + 2 * (n // 7))


def leaves(m: int, n: int) -> bool:
    """Whether the order placed on day m leaves the statuses on day n: cancelled two days after it came (every
    5th), or shipped the day after its goods arrived (not every 7th); those waiting for SHARED too stay."""
    if m % 6 == 0:
        return False
    return (m % 5 == 2 and n == m + 2) or (m % 7 != 3 and n == m + wait(m) + 1)


def setup_shop(shop: Shop) -> None:
    shop.product(SHARED, shared_date(0))
    shop.product(200, naive(60))
    shop.order(LONG_WAIT, [200], purchased=naive(2.75))


def change_shop(shop: Shop, n: int) -> None:
    """Day n: the shared product is postponed every 7 days; order 1000+n comes in (its own product, and the
    shared one every 6th day); orders cancelled two days after they came (every 5th), or shipped the day
    after their goods arrived (unless they wait for the shared product too, or every 7th, left open)."""
    if n and n % 7 == 0:
        shop.set_date(SHARED, shared_date(n))
    shop.product(100 + n, naive(n + wait(n)))
    shop.order(1000 + n, [100 + n] + ([SHARED] if n % 6 == 0 else []), purchased=naive(n - 0.25))
    with shop.engine.begin() as c:
        for oid in [1000 + m for m in range(n) if leaves(m, n)]:
            c.execute(sa.text("UPDATE orders SET orders_status = 3 WHERE orders_id = :o"), {"o": oid})


def run_day(shop: Shop, state_db: DbConnection, smtp: SmtpSettings, sink: CheckedSink, n: float) -> dict[str, Any]:
    """One run at day n, as the DAG's tasks run it; what it recorded and what the SMTP server received."""
    return timelines.one_run(shop, state_db, smtp, sink, "run", n) | {"t": naive(n).isoformat()}


def fill(shop: Shop, state_db: DbConnection, smtp: SmtpSettings, sink: CheckedSink) -> None:
    setup_shop(shop)
    for n in range(DAYS):
        change_shop(shop, n)
        if n != SKIPPED_DAY:
            timelines.one_run(shop, state_db, smtp, sink, "run", n)


@pytest.fixture(autouse=True)
def params(monkeypatch: pytest.MonkeyPatch) -> None:
    """timelines.one_run runs with this test's params."""
    monkeypatch.setattr(timelines, "PARAMS", PARAMS)


@contextmanager
def twin(state_db: DbConnection, tmp_path: Path, name: str) -> Iterator[DbConnection]:
    """An empty database of the same kind as `state_db`."""
    if state_db.conn_type == "sqlite":
        yield DbConnection("backorder_state_db", "sqlite", host=str(tmp_path / f"{name}.sqlite"))
        return
    with server_database("mariadb" if state_db.conn_type == "mysql" else "postgres", "backorder_state_db") as db:
        yield db


def copy_state(source: DbConnection, target: DbConnection) -> None:
    """Every row of `source`'s state tables into `target` (migrated first: the same tables and foreign keys)."""
    src, dst = sa.create_engine(source.url()), sa.create_engine(target.url())
    st.migrate(dst)
    with src.connect() as read, dst.begin() as write:
        for table in st.metadata.sorted_tables:
            rows = [dict(row) for row in read.execute(sa.select(table)).mappings()]
            if rows:
                write.execute(sa.insert(table), rows)
        if dst.dialect.name == "postgresql":  # the rows came with their ids: move the sequences past them
            for table in st.metadata.sorted_tables:
                if "id" in table.c:
                    write.exec_driver_sql(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'),"
                        f" COALESCE((SELECT max(id) FROM {table.name}), 0) + 1, false)"
                    )
    src.dispose()
    dst.dispose()


def dump(state_db: DbConnection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the pruned tables and the others, sorted: to compare two states."""
    engine = sa.create_engine(state_db.url())
    with engine.connect() as c:
        out = {t.name: sorted(tuple(row) for row in c.execute(sa.select(t))) for t in st.metadata.sorted_tables}
    engine.dispose()
    return out


def select(state_db: DbConnection, query: Any) -> list[Any]:
    engine = sa.create_engine(state_db.url())
    with engine.connect() as c:
        rows = list(c.execute(query).all())
    engine.dispose()
    return rows


def snapshots_from(state_db: DbConnection, since: datetime) -> dict[datetime, list[list[Any]]]:
    """The snapshot at every snapshot's T from `since` on, and 6 hours after each."""
    times = [row[0] for row in select(state_db, sa.select(st.snapshots.c.reference_time))]
    probes = sorted({t for t in times if t >= since} | {t + timedelta(hours=6) for t in times if t >= since})
    return {t: timelines.snapshot_at(state_db, t) for t in probes}


def audit(state_db: DbConnection, since: datetime, order: int) -> dict[str, Any]:
    """What the audit page shows of the data from `since` on: runs, open lines, one order's history, the chart."""
    engine = sa.create_engine(state_db.url())
    with engine.connect() as c:
        runs = [r for r in queries.runs_page(c, queries.Page(limit=500)).runs if r.reference_time >= since]
        out = {
            "runs": runs,
            "open_lines": queries.open_lines(c),
            "order_history": queries.order_history(c, order),
            "daily_series": [p for p in queries.daily_series(c) if p.day >= since.date()],
            "run_detail": queries.run_detail(c, runs[0].id),
        }
    engine.dispose()
    return out


def test_prune_keeps_what_the_rules_need(state_db, shop, smtp, mail_sink, tmp_path) -> None:
    fill(shop, state_db, smtp, mail_sink)
    cutoff, boundary = naive(DAYS - 1 - KEEP_DAYS), naive(SKIPPED_DAY - 1)  # the latest snapshot is day 39
    h, n = st.line_history.c, st.notifications.c
    # A history row holds until valid_to, or until its date is reached (the shop's time zone is UTC here).
    held_after = sa.and_(h.valid_to > boundary, h.date_available > boundary)  # at the boundary or later
    latest = naive(DAYS - 1)
    still_open = {
        row[0]
        for row in select(
            state_db, sa.select(h.orders_id).distinct().where(h.valid_to == st.OPEN, h.date_available > latest)
        )
    }
    recent = {row[0] for row in select(state_db, sa.select(h.orders_id).distinct().where(held_after))}
    everything = {row[0] for row in select(state_db, sa.select(h.orders_id).distinct())}
    gone_orders = everything - recent
    assert len(still_open) > 10 and len(gone_orders) > 10
    oldest_open = min(still_open - {LONG_WAIT})  # waiting since long before the cutoff
    assert select(state_db, sa.select(sa.func.min(n.reference_time)).where(n.orders_id == oldest_open))[0][0] < cutoff
    before = dump(state_db)
    seen_before = snapshots_from(state_db, boundary)
    audit_before = audit(state_db, cutoff, oldest_open)

    with twin(state_db, tmp_path, "kept") as kept, twin(state_db, tmp_path, "small") as small:
        copy_state(state_db, kept)
        copy_state(state_db, small)
        assert dump(kept) == before

        counts = pipeline.prune_state(state_db, KEEP_DAYS)
        assert list(counts) == ["bo_line_history", "bo_notification", "bo_snapshot", "bo_run"]
        assert all(count > 0 for count in counts.values()), counts
        after = dump(state_db)
        for table, count in counts.items():
            assert len(before[table]) - len(after[table]) == count, table
        for table in ("bo_suppression", "bo_lease"):
            assert after[table] == before[table]

        # Gone: everything older of the orders that waited nowhere since the boundary; kept: all of the others.
        old_rows = sa.select(h.orders_id).where(~held_after)
        assert {row[0] for row in select(state_db, old_rows)}.isdisjoint(gone_orders)
        assert {row[0] for row in select(kept, old_rows)} & gone_orders
        old_emails = sa.select(n.orders_id).where(n.reference_time < cutoff)
        assert {row[0] for row in select(state_db, old_emails)}.isdisjoint(gone_orders)
        for of_orders in (st.line_history, st.notifications):
            theirs = sa.select(of_orders).where(of_orders.c.orders_id.in_(recent))
            assert sorted(select(state_db, theirs)) == sorted(select(kept, theirs)), of_orders.name
        s = st.snapshots.c
        assert [row[0] for row in select(state_db, sa.select(s.reference_time).order_by(s.reference_time))] == [
            naive(d) for d in range(SKIPPED_DAY - 1, DAYS) if d != SKIPPED_DAY
        ]
        r = st.runs.c
        old_runs = set(select(state_db, sa.select(r.id).where(r.reference_time < cutoff)))
        referenced = set(select(state_db, sa.select(n.run_id).distinct())) | set(select(state_db, sa.select(s.run_id)))
        assert old_runs and old_runs <= referenced

        # The snapshots from the boundary on, and the audit's answers for recent data, are as before.
        assert snapshots_from(state_db, boundary) == seen_before
        assert audit(state_db, cutoff, oldest_open) == audit_before

        # Batches of 3 delete the same rows; a second prune deletes nothing.
        engine = sa.create_engine(small.url())
        try:
            assert st.prune(engine, KEEP_DAYS, batch=3) == counts
            assert dump(small) == after
            assert st.prune(engine, KEEP_DAYS, batch=3) == dict.fromkeys(st.PRUNED_TABLES, 0)
        finally:
            engine.dispose()

        # The next day, then a backfill inside the window: the same notifications and emails as without the prune.
        change_shop(shop, DAYS)
        assert run_day(shop, state_db, smtp, mail_sink, DAYS) == run_day(shop, kept, smtp, mail_sink, DAYS)
        backfill_pruned = run_day(shop, state_db, smtp, mail_sink, BACKFILL)
        assert backfill_pruned == run_day(shop, kept, smtp, mail_sink, BACKFILL)
        # The backfill saw the order that waited on its day and had not been told since long before the cutoff:
        # its earlier emails (kept: it waited after the boundary) say it has had its reminders.
        assert LONG_WAIT in {row[0] for row in select(kept, sa.select(h.orders_id).where(held_after))}
        assert LONG_WAIT not in still_open
        assert LONG_WAIT not in {row[0] for row in backfill_pruned["notifications"]}

    # keep_days unset: nothing.
    assert pipeline.prune_state(state_db, None) == dict.fromkeys(st.PRUNED_TABLES, 0)


def test_the_cutoff_counts_from_the_latest_snapshot_and_a_run_under_way_is_kept(
    state_db, shop, smtp, mail_sink
) -> None:
    setup_shop(shop)
    for n in range(6):
        change_shop(shop, n)
        timelines.one_run(shop, state_db, smtp, mail_sink, "run", n)
    engine = sa.create_engine(state_db.url())
    try:
        # 5 days of history and keep_days 5: nothing is old enough.
        assert st.prune(engine, 5) == dict.fromkeys(st.PRUNED_TABLES, 0)
        # A backfill of an old T starts and stops after its extract: it runs, holds the lease, has staged rows.
        params = RunParams(**PARAMS)
        # (Order 1002, cancelled on day 4, is gone from the shop's lines at its T: a change to stage.)
        under_way = pipeline.extract(shop.conn, state_db, RunContext(T0 + timedelta(days=2.5)), params).run_id
        with engine.connect() as c:
            assert c.execute(sa.select(sa.func.count()).where(st.staged_changes.c.run_id == under_way)).scalar_one()
        assert st.prune(engine, 1)["bo_run"] > 0
        assert select(state_db, sa.select(st.runs.c.status).where(st.runs.c.id == under_way)) == [("running",)]
        with engine.begin() as c:
            lease.mark_failed(c, under_way)
        st.prune(engine, 1)  # failed, but it holds the lease: its retry may go on
        assert select(state_db, sa.select(st.runs.c.status).where(st.runs.c.id == under_way)) == [("failed",)]
        with engine.begin() as c:
            c.execute(sa.update(st.leases).values(run_id=None))
        st.prune(engine, 1)  # failed, the lease free, but what it staged is there (a foreign key to it)
        assert select(state_db, sa.select(st.runs.c.status).where(st.runs.c.id == under_way)) == [("failed",)]
        with engine.begin() as c:  # a later run took the lease over: it is abandoned, what it staged dropped
            c.execute(sa.update(st.runs).where(st.runs.c.id == under_way).values(status="abandoned"))
            st.drop_staged(c, under_way)
        assert st.prune(engine, 1)["bo_run"] == 1
        assert select(state_db, sa.select(st.runs.c.id).where(st.runs.c.id == under_way)) == []
    finally:
        engine.dispose()


def test_nothing_to_prune_without_a_snapshot_and_bad_keep_days_are_refused(state_db) -> None:
    engine = sa.create_engine(state_db.url())
    try:
        st.migrate(engine)
        assert st.prune(engine, 1) == dict.fromkeys(st.PRUNED_TABLES, 0)
        for bad in (0, -1, 36501, True):
            with pytest.raises(ValueError, match="keep_days must be a whole number of days from 1 to 36500"):
                st.prune(engine, bad)
        with pytest.raises(ValueError, match="batch must be 1 or more"):
            st.prune(engine, 1, batch=0)
    finally:
        engine.dispose()
    with pytest.raises(ConfigError, match=r"\[backorder\] keep_days: 0 is not a whole number of days"):
        pipeline.prune_state(state_db, 0)
