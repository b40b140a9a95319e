"""Repeatable random timelines of a shop and its runs, and what each run decided, sent and kept.

A timeline is planned from a seed: day after day, some products get a new date (later, earlier, passed,
cleared, "never"), some orders ship and new ones come in; the day's run follows, and now and then a
repeated run of the same T, a dry run, a backfill of a T between two earlier days, or a cleared finish.
`play` carries a plan out against a SQLite shop, a state database and a real SMTP server, and returns
what a user could see: per run the notifications it recorded (order, kind, status, the lines listed with
their dates), the emails the server received, the finish counts; then the snapshot at a set of times
(every snapshot's T and between them) and the audit page's open lines.

`tests/fixtures/timelines/golden_0008.json` holds what the code of revision 0008 (commit 3585a91, before
the line history) gave for these plans, and the state database it left after the first days of one plan
(for the migration test). Made by, in a checkout of that commit with this file copied in:

    PYTHONPATH=. python -m tests.backorder.timelines --write golden_0008.json

The snapshot reader below reads either state shape (bo_snapshot_line before 0009, bo_line_history
since), so that the same file gives both sides of the comparison.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from include.backorder import pipeline
from include.backorder import state as st
from include.backorder.config import DbConnection, RunContext, RunParams, SmtpSettings
from tests.conftest import Shop
from tools import demo_shop
from tools.smtp_sink import MailSink

T0 = datetime(2026, 11, 2, tzinfo=UTC)
SEEDS = (1, 2, 3)
DAYS = 16
MIGRATED_AFTER = 10  # the migration test loads the state the old code left after this many days of SEEDS[0]
PARAMS: dict[str, Any] = {"send_available": True, "reminder_interval_days": 3, "max_reminders": 2}
NEVER = "9999-12-31 00:00:00"


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


@dataclass
class Step:
    """One day: what changes in the shop, then the runs (("run"|"dry"|"finish_again", T), ...)."""

    number: int
    dates: list[tuple[int, str | None]] = field(default_factory=list)  # (products_id, new date)
    shipped: list[int] = field(default_factory=list)
    new_orders: list[tuple[int, list[int]]] = field(default_factory=list)
    runs: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class Plan:
    seed: int
    products: dict[int, str | None]
    orders: list[tuple[int, list[int], int, str | None]]  # (orders_id, products, status, email)
    steps: list[Step]


def _date(rng: random.Random, n: int) -> str | None:
    roll = rng.random()
    if roll < 0.1:
        return None  # cleared
    if roll < 0.15:
        return NEVER
    if roll < 0.3:
        return demo_shop.fmt(day(n - 0.5).replace(tzinfo=None))  # passed: the goods are due
    return demo_shop.fmt(day(n + rng.randint(1, 20)).replace(tzinfo=None) + timedelta(hours=rng.choice((0, 9))))


def plan(seed: int) -> Plan:
    rng = random.Random(seed)
    products = {
        pid: _date(rng, 0) if pid % 4 == 0 else demo_shop.fmt(day(rng.randint(2, 25)).replace(tzinfo=None))
        for pid in range(1, 13)
    }
    emails = [None, "", "not an address"] + [None] * 17
    orders = [
        (oid, rng.sample(sorted(products), rng.randint(1, 3)), rng.choice((1, 2)), emails[oid % len(emails)])
        for oid in range(1, 21)
    ]
    steps, next_order = [], 21
    for n in range(DAYS):
        step = Step(n)
        if n:
            step.dates = [(pid, _date(rng, n)) for pid in rng.sample(sorted(products), rng.randint(0, 3))]
            step.shipped = rng.sample(range(1, next_order), rng.randint(0, 1))
            for _ in range(rng.randint(0, 2)):
                step.new_orders.append((next_order, rng.sample(sorted(products), rng.randint(1, 2))))
                next_order += 1
        step.runs.append(("run", n))
        roll = rng.random()
        if roll < 0.15:
            step.runs.append(("run", n))  # the same T again
        elif roll < 0.25:
            step.runs.append(("dry", n))
        elif roll < 0.4 and n >= 2:
            step.runs.append(("run", n - 1.5))  # a backfill of a T that never ran, between two earlier days
        elif roll < 0.5:
            step.runs.append(("finish_again", n))
        steps.append(step)
    return Plan(seed, products, orders, steps)


def build(shop: Shop, p: Plan) -> None:
    for pid, date in p.products.items():
        shop.product(pid, date)
    for oid, products, status, email in p.orders:
        shop.order(oid, products, purchased=day(-3).replace(tzinfo=None), status=status, email=email)


def change(shop: Shop, step: Step) -> None:
    for pid, date in step.dates:
        shop.set_date(pid, date)
    with shop.engine.begin() as c:
        for oid in step.shipped:
            c.execute(sa.update(demo_shop.orders).where(demo_shop.orders.c.orders_id == oid).values(orders_status=3))
    for oid, products in step.new_orders:
        shop.order(oid, products, purchased=day(step.number - 0.25).replace(tzinfo=None))


def _select(state_db: DbConnection, query: Any) -> list[sa.RowMapping]:
    engine = sa.create_engine(state_db.url())
    with engine.connect() as c:
        rows = list(c.execute(query).mappings().all())
    engine.dispose()
    return rows


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def snapshot_at(state_db: DbConnection, t: datetime) -> list[list[Any]]:
    """The snapshot at T (the latest at or before T): [orders_products_id, orders_id, products_id, date], sorted."""
    engine = sa.create_engine(state_db.url())
    with engine.connect() as c:
        if sa.inspect(c).has_table("bo_line_history"):
            rows = c.execute(st.snapshot_lines(c, t)).all()
        else:  # revision 0008 and before: a full copy per snapshot
            rows = c.execute(
                sa.text(
                    "SELECT l.orders_products_id, l.orders_id, l.products_id, l.date_available FROM bo_snapshot_line l"
                    " WHERE l.snapshot_id = (SELECT id FROM bo_snapshot WHERE reference_time <= :t"
                    " ORDER BY reference_time DESC LIMIT 1)"
                )
                .bindparams(sa.bindparam("t", type_=st.runs.c.reference_time.type))
                .columns(date_available=st.runs.c.reference_time.type),
                {"t": t},
            ).all()
    engine.dispose()
    return sorted([int(r[0]), int(r[1]), int(r[2]), _iso(r[3])] for r in rows)


def _notifications(state_db: DbConnection, run_id: int) -> list[list[Any]]:
    n = st.notifications
    out = []
    for row in _select(state_db, sa.select(n).where(n.c.run_id == run_id).order_by(n.c.orders_id, n.c.kind)):
        listed = [
            [item["orders_products_id"], item["date_available"], item["previous_date"]]
            for item in json.loads(row["listed_lines"])
        ]
        why = "" if row["status"] == "sent" else (row["detail"] or "")[:40]  # not the server's queue id
        out.append([row["orders_id"], row["kind"], row["status"], why, sorted(listed)])
    return out


def one_run(
    shop: Shop, state_db: DbConnection, smtp: SmtpSettings, sink: MailSink, what: str, n: float
) -> dict[str, Any]:
    t = day(n)
    sink.messages.clear()
    if what == "finish_again":
        runs = st.runs
        last = _select(state_db, sa.select(runs.c.id).order_by(runs.c.id.desc()).limit(1))
        summary = pipeline.finish(state_db, last[0]["id"])
        return {"what": what, "t": t.isoformat(), "counts": summary["counts"], "snapshot": summary["snapshot"]}
    params = RunParams(**PARAMS, dry_run=what == "dry")
    run_id = pipeline.extract(shop.conn, state_db, RunContext(t, dag_run_id=f"{what}__{t.isoformat()}"), params).run_id
    previous = pipeline.load_previous_snapshot(state_db, run_id)
    due = pipeline.classify_run(state_db, run_id)
    for kind, count in due.items():
        if count:
            pipeline.send(state_db, run_id, kind, smtp)
    summary = pipeline.finish(state_db, run_id)
    received = sorted([m.message["X-Backorder-Notification"], m.message["To"]] for m in sink.messages)
    return {
        "what": what,
        "t": t.isoformat(),
        "previous": previous["reference_time"],
        "due": due,
        "counts": summary["counts"],
        "snapshot": summary["snapshot"],
        "notifications": _notifications(state_db, run_id),
        "received": received,
    }


def play(
    shop: Shop, state_db: DbConnection, smtp: SmtpSettings, sink: MailSink, p: Plan, steps: range | None = None
) -> list[dict[str, Any]]:
    """Carry out the plan's steps (all, or `steps`; the shop must hold what the steps before did)."""
    out = []
    for step in (p.steps[i] for i in (steps or range(len(p.steps)))):
        change(shop, step)
        out += [one_run(shop, state_db, smtp, sink, what, n) for what, n in step.runs]
    return out


def probe_times(p: Plan) -> list[datetime]:
    times = {day(n) for step in p.steps for _, n in step.runs}
    return sorted(times | {t + timedelta(hours=6) for t in times} | {day(-1)})


def seen(state_db: DbConnection, p: Plan) -> dict[str, Any]:
    """The snapshot at each probe time, and the audit's open lines."""
    from include.backorder.audit import queries

    engine = sa.create_engine(state_db.url())
    with engine.connect() as c:
        open_lines = queries.open_lines(c)
    engine.dispose()
    return {
        "snapshots": {t.isoformat(): snapshot_at(state_db, t.replace(tzinfo=None)) for t in probe_times(p)},
        "open_lines": [
            [o.products_id, o.lines, o.orders, _iso(o.date_available), _iso(o.previous_date), o.products_name]
            for o in open_lines.products
        ],
        "open_lines_at": _iso(open_lines.reference_time),
    }


def dump_state(state_db: DbConnection) -> dict[str, list[dict[str, Any]]]:
    """Every row of the state's bo_ tables (not the lease), as JSON values."""
    engine = sa.create_engine(state_db.url())
    out: dict[str, list[dict[str, Any]]] = {}
    with engine.connect() as c:
        for name in sorted(sa.inspect(c).get_table_names()):
            if name.startswith("bo_") and name not in ("bo_lease", st.VERSION_TABLE):
                rows = c.execute(sa.text(f"SELECT * FROM {name}")).mappings().all()
                out[name] = [{k: _iso(v) for k, v in row.items()} for row in rows]
    engine.dispose()
    return out


def write_golden(path: Path) -> None:
    """What this checkout's code gives for every plan (run by the old code: see the module docstring)."""
    golden: dict[str, Any] = {"plans": {}}
    with tempfile.TemporaryDirectory() as folder, MailSink() as sink:
        smtp = SmtpSettings(
            host="127.0.0.1", port=sink.port, from_email="shop@example.com", use_ssl=False, use_starttls=False
        )
        for seed in SEEDS:
            p = plan(seed)
            engine = sa.create_engine(f"sqlite:///{folder}/shop{seed}.sqlite")
            demo_shop.create_schema(engine)
            shop = Shop(Path(folder) / f"shop{seed}.sqlite", engine)
            build(shop, p)
            state_db = DbConnection("backorder_state_db", "sqlite", host=f"{folder}/state{seed}.sqlite")
            if seed == SEEDS[0]:
                first = play(shop, state_db, smtp, sink, p, range(MIGRATED_AFTER))
                golden["state_after_first_days"] = dump_state(state_db)
                golden["seen_after_first_days"] = seen(state_db, p)
                runs = first + play(shop, state_db, smtp, sink, p, range(MIGRATED_AFTER, DAYS))
            else:
                runs = play(shop, state_db, smtp, sink, p)
            golden["plans"][str(seed)] = {"runs": runs, **seen(state_db, p)}
            engine.dispose()
    path.write_text(json.dumps(golden, sort_keys=True, default=str, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", type=Path, required=True)
    write_golden(parser.parse_args().write)
