"""The line history: the snapshot at any T as before, rows that grow with change, and the upgrade from full copies.

- Random timelines (tests/backorder/timelines.py: dates moved, orders shipped and placed, repeated runs,
  dry runs, backfills between earlier days, cleared finishes) give the same notifications, emails,
  snapshots at every probed T and audit answers as the code of revision 0008 gave (its results are in
  tests/fixtures/timelines/golden_0008.json).
- A state database the 0008 code filled is upgraded on SQLite, MariaDB and PostgreSQL: every snapshot
  reads back as stored, and the days after it give what the 0008 code gave.
- Writing snapshots in any order (in order, again at the same T, earlier T between two others) keeps the
  snapshot at every T equal to a model that keeps full copies, with merged rows.
- A quiet day stages nothing and adds no row to the history.
"""

from __future__ import annotations

import itertools
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from include.backorder import pipeline
from include.backorder import state as st
from include.backorder.config import DbConnection, RunContext, RunParams
from tests.backorder import timelines
from tests.backorder.timelines import DAYS, MIGRATED_AFTER, SEEDS, T0

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "timelines" / "golden_0008.json"


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(GOLDEN.read_text())
    return data


def _round_trip(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


@pytest.mark.parametrize("seed", SEEDS)
def test_timelines_give_what_revision_0008_gave(seed, golden, shop, tmp_path, smtp, mail_sink) -> None:
    plan = timelines.plan(seed)
    timelines.build(shop, plan)
    state_db = DbConnection("backorder_state_db", "sqlite", host=str(tmp_path / "state.sqlite"))
    runs = timelines.play(shop, state_db, smtp, mail_sink, plan)
    expected = golden["plans"][str(seed)]
    for number, (got, want) in enumerate(zip(_round_trip(runs), expected["runs"], strict=True)):
        assert got == want, f"run {number} ({want['what']} at {want['t']}) differs"
    seen = _round_trip(timelines.seen(state_db, plan))
    assert seen["snapshots"] == expected["snapshots"]
    assert (seen["open_lines"], seen["open_lines_at"]) == (expected["open_lines"], expected["open_lines_at"])
    engine = sa.create_engine(state_db.url())
    with engine.connect() as c:
        _assert_well_formed(c)
    engine.dispose()


def _load_0008(state_db: DbConnection, rows: dict[str, list[dict[str, Any]]]) -> sa.Engine:
    """A state database at revision 0008 holding `rows` (what the 0008 code wrote), in key order."""
    engine = sa.create_engine(state_db.url())
    st.migrate(engine, "0008")
    metadata = sa.MetaData()
    metadata.reflect(engine)
    with engine.begin() as c:
        for name in ("bo_run", "bo_snapshot", "bo_snapshot_line", "bo_notification", "bo_suppression", "bo_lease"):
            table = metadata.tables[name]
            dates = {col.name for col in table.columns if isinstance(col.type, sa.DateTime)}
            values = [
                {k: datetime.fromisoformat(v) if k in dates and v is not None else v for k, v in row.items()}
                for row in rows.get(name, [])
            ]
            if values:
                c.execute(sa.insert(table), values)
    if engine.dialect.name == "postgresql":  # the rows came with their ids: move the sequences past them
        with engine.begin() as c:
            for name in ("bo_run", "bo_snapshot", "bo_notification"):
                c.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), (SELECT max(id) FROM {name}))"
                )
    return engine


def test_upgrade_from_0008_keeps_every_snapshot_and_the_days_after(golden, state_db, shop, smtp, mail_sink) -> None:
    plan = timelines.plan(SEEDS[0])
    timelines.build(shop, plan)
    for step in plan.steps[:MIGRATED_AFTER]:
        timelines.change(shop, step)  # the shop as the old code's runs left it
    old = golden["state_after_first_days"]
    engine = _load_0008(state_db, old)
    st.migrate(engine)
    with engine.connect() as c:
        assert not sa.inspect(c).has_table("bo_snapshot_line")
        history_rows = c.execute(sa.select(sa.func.count()).select_from(st.line_history)).scalar_one()
        latest = c.execute(sa.select(sa.func.max(st.snapshots.c.reference_time))).scalar_one()
        h = st.line_history.c
        still_held = c.execute(
            sa.select(sa.func.count()).where(h.valid_to == st.OPEN, h.date_available > latest)
        ).scalar_one()
        assert still_held == len(st.held_at(c, latest)) > 0, "the rows that still hold are found by valid_to = OPEN"
    engine.dispose()
    assert history_rows < len(old["bo_snapshot_line"]) / 3, "a row per change, not per snapshot and line"
    assert _round_trip(timelines.seen(state_db, plan)) == golden["seen_after_first_days"]
    _downgrade_and_back(state_db, old["bo_snapshot_line"])

    after = timelines.play(shop, state_db, smtp, mail_sink, plan, range(MIGRATED_AFTER, DAYS))
    expected = golden["plans"][str(SEEDS[0])]
    done_before = sum(len(step.runs) for step in plan.steps[:MIGRATED_AFTER])
    assert _round_trip(after) == expected["runs"][done_before:]
    assert _round_trip(timelines.seen(state_db, plan))["snapshots"] == expected["snapshots"]
    engine = sa.create_engine(state_db.url())
    with engine.connect() as c:
        _assert_well_formed(c)
    engine.dispose()


def _downgrade_and_back(state_db: DbConnection, stored: list[dict[str, Any]]) -> None:
    """Down to 0008: bo_snapshot_line holds again exactly the full copies it held; then up again."""
    from alembic import command
    from alembic.config import Config

    engine = sa.create_engine(state_db.url())
    config = Config()
    config.set_main_option("script_location", str(st.MIGRATIONS_DIR))
    with engine.begin() as c:
        config.attributes["connection"] = c
        command.downgrade(config, "0008")
    with engine.connect() as c:
        rows = c.execute(sa.text("SELECT * FROM bo_snapshot_line")).mappings().all()

    def line(row: Any) -> tuple[Any, ...]:
        when = datetime.fromisoformat(str(row["date_available"]))  # the driver's datetime, or SQLite's text
        return (*(int(row[k]) for k in ("snapshot_id", "orders_products_id", "orders_id", "products_id")), when)

    assert sorted(map(line, rows)) == sorted(map(line, stored))
    st.migrate(engine)
    engine.dispose()


def test_upgrade_gives_a_run_under_way_its_previous_dates_and_changes(state_db, shop, smtp, mail_sink) -> None:
    """A run extracted by the 0008 code and finished by this one: no false `changed`, and its snapshot is kept."""
    shop.product(1, datetime(2026, 12, 1))
    shop.product(2, datetime(2026, 12, 5))
    shop.order(1, [1], purchased=datetime(2026, 10, 1))
    shop.order(2, [2], purchased=datetime(2026, 10, 1))
    t1 = T0.replace(tzinfo=None)
    engine = _load_0008(
        state_db,
        {
            "bo_run": [
                _run_0008(1, t1, "finished", None),
                _run_0008(2, t1 + timedelta(days=1), "running", 1),
            ],
            "bo_snapshot": [
                {"id": 1, "reference_time": t1.isoformat(), "run_id": 1, "line_count": 2, "created_at": t1.isoformat()}
            ],
            "bo_snapshot_line": [
                {
                    "snapshot_id": 1,
                    "orders_products_id": 1,
                    "orders_id": 1,
                    "products_id": 1,
                    "date_available": "2026-12-01T00:00:00",
                },
                {
                    "snapshot_id": 1,
                    "orders_products_id": 2,
                    "orders_id": 2,
                    "products_id": 2,
                    "date_available": "2026-12-03T00:00:00",
                },
            ],
            "bo_notification": [_told_0008(i, t1) for i in (1, 2)],
            "bo_lease": [  # run 2 holds the lease between its tasks
                {
                    "name": "backorder_notifications",
                    "run_id": 2,
                    "dag_run_id": "d",
                    "acquired_at": datetime.now(UTC).replace(tzinfo=None).isoformat(),
                }
            ],
        },
    )
    staged = sa.table(
        "bo_staged_line",
        *(
            sa.column(c)
            for c in (
                "run_id",
                "orders_products_id",
                "orders_id",
                "products_id",
                "date_available",
                "customers_email_address",
                "products_quantity",
                "order_language",
            )
        ),
    )
    with engine.begin() as c:  # run 2's extract, by the 0008 code: product 2's date moved from Dec 3 to Dec 5
        for line, date in ((1, datetime(2026, 12, 1)), (2, datetime(2026, 12, 5))):
            c.execute(
                sa.insert(staged).values(
                    run_id=2,
                    orders_products_id=line,
                    orders_id=line,
                    products_id=line,
                    date_available=date,
                    customers_email_address=f"customer{line}@example.com",
                    products_quantity=1,
                    order_language="en",
                )
            )
    st.migrate(engine)
    engine.dispose()
    pipeline.load_previous_snapshot(state_db, 2)
    due = pipeline.classify_run(state_db, 2)
    assert due["changed"] == 1 and due["initial"] == 0, "only the line whose date moved"
    pipeline.send(state_db, 2, "changed", smtp)
    pipeline.finish(state_db, 2)
    assert [m.message["To"] for m in mail_sink.messages] == ["customer2@example.com"]
    t2 = t1 + timedelta(days=1)
    assert timelines.snapshot_at(state_db, t2) == [[1, 1, 1, "2026-12-01T00:00:00"], [2, 2, 2, "2026-12-05T00:00:00"]]
    assert timelines.snapshot_at(state_db, t1)[1] == [2, 2, 2, "2026-12-03T00:00:00"]


def _run_0008(run_id: int, t: datetime, status: str, previous: int | None) -> dict[str, Any]:
    return {
        "id": run_id,
        "dag_id": "backorder_notifications",
        "dag_run_id": f"scheduled__{t.isoformat()}",
        "reference_time": t.isoformat(),
        "dry_run": False,
        "params": RunParams(reminder_interval_days=7).to_json(),
        "status": status,
        "previous_snapshot_id": previous,
        "line_count": 2,
        "order_count": 2,
        "stage_seconds": "{}",
        "started_at": t.isoformat(),
    }


def _told_0008(order: int, t: datetime) -> dict[str, Any]:
    return {
        "run_id": 1,
        "orders_id": order,
        "kind": "initial",
        "reference_time": t.isoformat(),
        "dry_run": False,
        "customers_email_address": f"customer{order}@example.com",
        "language": "en",
        "listed_lines": "[]",
        "status": "sent",
        "created_at": t.isoformat(),
    }


# --- writing snapshots in any order, against a model of full copies --------------------------------------


def _write(
    conn: sa.Connection, t: datetime, shop: dict[int, st.HeldLine], model: dict[datetime, dict[int, st.HeldLine]]
) -> None:
    """Write the snapshot at T as a run does: the shop's lines whose date is after T, their changes against
    the snapshot before T (st.diff_snapshot, as extract), applied by st.write_snapshot (as finish)."""
    lines = {k: v for k, v in shop.items() if v.date_available > t}  # the backorder lines at T (shop time = T)
    run_id = st.create_run_record(
        conn, dag_id="d", dag_run_id=str(t), reference_time=t, dry_run=False, params="{}", shop_schema={}, started_at=t
    )
    before = st.previous_snapshot(conn, t)
    previous = st.held_at(conn, before["reference_time"] if before else None)
    changes, _ = st.diff_snapshot(previous, lines, t, run_id)
    st.stage_changes(conn, changes)
    st.write_snapshot(conn, run_id, t, t, len(lines), t)
    st.drop_staged(conn, run_id)
    model[t] = lines


def _expected(model: dict[datetime, dict[int, st.HeldLine]], t: datetime) -> dict[int, st.HeldLine]:
    earlier = [s for s in model if s <= t]
    return model[max(earlier)] if earlier else {}


def _check(conn: sa.Connection, model: dict[datetime, dict[int, st.HeldLine]]) -> None:
    for t in sorted(model) + [s + timedelta(hours=1) for s in model] + [min(model) - timedelta(days=1)]:
        assert st.held_at(conn, t) == _expected(model, t), f"the snapshot at {t}"
    _assert_well_formed(conn)


def _assert_well_formed(conn: sa.Connection) -> None:
    """Rows of one line never overlap, and two that meet hold different values."""
    h = st.line_history
    rows = conn.execute(sa.select(h).order_by(h.c.orders_products_id, h.c.valid_from)).mappings().all()
    for a, b in itertools.pairwise(rows):
        if a["orders_products_id"] == b["orders_products_id"]:
            assert a["valid_to"] <= b["valid_from"], "rows of one line never overlap"
            same = (a["orders_id"], a["products_id"], a["date_available"]) == (
                b["orders_id"],
                b["products_id"],
                b["date_available"],
            )
            assert not (same and a["valid_to"] == b["valid_from"]), "two rows that meet with the same values are one"


@pytest.mark.parametrize("seed", range(6))
def test_snapshots_written_in_any_order_read_back_as_full_copies(seed, state_db) -> None:
    rng = random.Random(seed)
    engine = sa.create_engine(state_db.url())
    st.migrate(engine)
    model: dict[datetime, dict[int, st.HeldLine]] = {}
    base = datetime(2026, 11, 2)
    times = [base + timedelta(days=n) for n in range(12)]
    current: dict[int, st.HeldLine] = {}
    latest = 0  # the next day in order
    for _ in range(30):
        roll = rng.random()
        if roll < 0.6 or not model:
            t, latest = times[latest], min(latest + 1, len(times) - 1)
        elif roll < 0.8:
            t = rng.choice(sorted(model))  # the same T again
        else:
            t = rng.choice(times[:latest]) + timedelta(hours=rng.choice((0, 12)))  # a backfill
        current = {k: v for k, v in current.items() if rng.random() > 0.15}  # shipped, cancelled
        for key in rng.sample(range(1, 25), rng.randint(0, 6)):  # new lines, new dates; some pass within the days
            days = rng.choice((rng.randint(1, 12), rng.randint(20, 23)))
            current[key] = st.HeldLine(key, rng.randint(1, 3), base + timedelta(days=days, hours=rng.choice((0, 6))))
        with engine.begin() as c:
            _write(c, t, current, model)
        with engine.connect() as c:
            _check(c, model)
    engine.dispose()


def test_a_quiet_day_stages_nothing_and_adds_no_history_row(shop, state_db, smtp, mail_sink) -> None:
    for pid in (1, 2, 3):
        shop.product(pid, datetime(2026, 12, pid))
    for oid in range(1, 6):
        shop.order(oid, [1 + oid % 3, 1 + (oid + 1) % 3], purchased=datetime(2026, 10, 1))
    params = RunParams(reminder_interval_days=7)
    engine = sa.create_engine(state_db.url())

    def count(table: sa.Table) -> int:
        with engine.connect() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())

    staged: dict[int, tuple[int, int]] = {}

    def day(n: int) -> pipeline.ExtractResult:
        t = T0 + timedelta(days=n)
        extracted = pipeline.extract(shop.conn, state_db, RunContext(t, dag_run_id=f"d{n}"), params)
        staged[n] = (count(st.staged_lines), count(st.staged_changes))  # what extract wrote for the next tasks
        pipeline.load_previous_snapshot(state_db, extracted.run_id)
        for kind, due in pipeline.classify_run(state_db, extracted.run_id).items():
            if due:
                pipeline.send(state_db, extracted.run_id, kind, smtp)
        pipeline.finish(state_db, extracted.run_id)
        return extracted

    first = day(0)
    assert (first.lines, first.changed_lines, first.staged_orders, staged[0]) == (10, 10, 5, (10, 10))
    assert count(st.line_history) == 10
    quiet = day(1)
    assert (quiet.lines, quiet.changed_lines, quiet.staged_orders, staged[1]) == (10, 0, 0, (0, 0))
    assert count(st.line_history) == 10, "nothing per line on a quiet day"
    shop.set_date(2, datetime(2026, 12, 20))  # in orders 1, 3 and 4
    moved = day(2)
    assert (moved.changed_lines, moved.staged_orders, staged[2]) == (3, 3, (6, 3))
    assert count(st.line_history) == 13, "a row per changed line"
    assert len(mail_sink.messages) == 5 + 3
    reminder = day(7)  # orders 2 and 5 were last told 7 days ago, the others 5 days ago
    assert (reminder.changed_lines, reminder.staged_orders, staged[7]) == (0, 2, (4, 0))
    assert len(mail_sink.messages) == 5 + 3 + 2
    reached = day(30)  # Dec 2: product 1's date (Dec 1) was reached: its 3 lines leave without a write
    assert (reached.lines, reached.changed_lines, staged[30][1]) == (7, 0, 0)
    assert count(st.line_history) == 13, "a line whose date was reached ends by itself"
    with engine.connect() as c:
        assert (
            sorted(line.products_id for line in st.held_at(c, T0.replace(tzinfo=None) + timedelta(days=30)).values())
            == [2] * 3 + [3] * 4
        )
    engine.dispose()


def test_an_order_not_looked_at_still_makes_a_customer_id_shared(shop, tmp_path, smtp, mail_sink) -> None:
    """Extract stages only the orders classify must decide, and every order of a customer id given with several
    addresses: the opt-out rule ignores an opt-out by such an id (a shared guest account), so Bea, whose line
    changed, is told although an opt-out names the id 7 that Ann's order (not looked at) shares with hers."""
    from include.backorder.unsubscribe import suppress
    from tools import demo_shop

    shop.product(1, datetime(2026, 12, 20))
    shop.product(2, datetime(2026, 12, 24))
    shop.order(1, [1], purchased=datetime(2026, 10, 1), email="ann@guest.example")
    shop.order(2, [2], purchased=datetime(2026, 10, 1), email="bea@guest.example")
    with shop.engine.begin() as c:
        c.execute(sa.update(demo_shop.orders).values(customers_id=7))
    state_db = DbConnection("backorder_state_db", "sqlite", host=str(tmp_path / "state.sqlite"))
    timelines.one_run(shop, state_db, smtp, mail_sink, "run", 0)
    suppress(state_db, customers_id=7, reason="asked by phone", source="admin")
    shop.set_date(2, datetime(2026, 12, 28))
    day = timelines.one_run(shop, state_db, smtp, mail_sink, "run", 1)
    assert day["received"] == [["changed", "Ann Example <bea@guest.example>"]]
