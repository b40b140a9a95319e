"""Time and ordering of runs: tasks cleared or retried after they succeeded, days run late or out of order.

Each row is a sequence of runs and clears, run stage by stage the way the DAG's tasks call the
library (include/backorder/pipeline.py), against a SQLite shop, the state database on SQLite,
MariaDB and PostgreSQL, and a real SMTP server on loopback. What a row asserts is what the customer
received (the SMTP server's mailbox) and what the audit shows (bo_notification, bo_snapshot, bo_run).

Clearing a task in the UI runs it again, alone or with its downstream tasks; a retry of a task
whose work was committed runs it twice in a row. Downstream tasks get the record id of the last
extract (XCom) and the send tasks run for the kinds the last classify found due.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from include.backorder import lease, pipeline
from include.backorder import state as st
from include.backorder.config import DbConnection, RunContext, RunParams, SmtpSettings
from tests.hardening.matrix import Case, params
from tools.smtp_sink import Faults

SURFACE = "Time and ordering of runs"
T0 = datetime(2026, 11, 2, tzinfo=UTC)
STAGES = ("extract", "previous", "classify", "send", "finish")
TASKS = {
    "extract": "extract_backorder_lines",
    "previous": "load_previous_snapshot",
    "classify": "classify",
    "send": "send_initial",
    "finish": "write_snapshot_and_audit",
}


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


class Day:
    """One DAG run at T, stage by stage as its tasks call the pipeline (same dag_run_id throughout)."""

    def __init__(self, shop: Any, state_db: DbConnection, smtp: SmtpSettings, t: datetime, **conf: Any) -> None:
        self.shop, self.state_db, self.smtp = shop, state_db, smtp
        self.context = RunContext(t, dag_run_id=f"scheduled__{t.isoformat()}")
        self.params = RunParams(**conf)
        self.run_id = 0
        self.due: dict[str, int] = {}
        self.summary: dict[str, Any] = {}

    def stage(self, name: str) -> None:
        if name == "extract":
            self.run_id = pipeline.extract(self.shop.conn, self.state_db, self.context, self.params).run_id
        elif name == "previous":
            pipeline.load_previous_snapshot(self.state_db, self.run_id)
        elif name == "classify":
            self.due = pipeline.classify_run(self.state_db, self.run_id)
        elif name == "send":  # the branch runs the send tasks of the kinds the last classify found due
            for kind, count in self.due.items():
                if count:
                    pipeline.send(self.state_db, self.run_id, kind, self.smtp)
        else:
            self.summary = pipeline.finish(self.state_db, self.run_id)

    def run(self, first: str = "extract", twice: str | None = None) -> Day:
        """The stages from `first` on (a clear with downstream); `twice`: that stage runs twice in a row."""
        for name in STAGES[STAGES.index(first) :]:
            self.stage(name)
            if name == twice:
                self.stage(name)
        return self


def select(state_db: DbConnection, query: Any) -> list[sa.RowMapping]:
    engine = sa.create_engine(state_db.url())
    with engine.connect() as c:
        found = list(c.execute(query).mappings().all())
    engine.dispose()
    return found


def notifications(state_db: DbConnection, t: datetime | None = None) -> list[sa.RowMapping]:
    n = st.notifications
    query = sa.select(n).where(n.c.dry_run.is_(False)).order_by(n.c.reference_time, n.c.orders_id)
    return select(state_db, query if t is None else query.where(n.c.reference_time == t.replace(tzinfo=None)))


def snapshot_lines(state_db: DbConnection) -> dict[datetime, tuple[int, int]]:
    """Per snapshot T: (its line count, the lines it really holds)."""
    engine = sa.create_engine(state_db.url())
    with engine.connect() as c:
        found = {
            r.reference_time: (r.line_count, len(c.execute(st.snapshot_lines(c, r.reference_time)).all()))
            for r in c.execute(sa.select(st.snapshots))
        }
    engine.dispose()
    return found


def received(mail_sink: Any) -> list[tuple[int, str]]:
    """(order, kind) of each email the SMTP server took since the last clear(), in order."""
    return [(int(m.message["X-Backorder-Order-Id"]), m.message["X-Backorder-Notification"]) for m in mail_sink.messages]


def age_the_lease(state_db: DbConnection) -> None:
    """Make the lease's holder look dead (no sign of life for longer than any take-over rule waits)."""
    long_ago = datetime.now(UTC).replace(tzinfo=None) - lease.LEASE_EXPIRY - timedelta(hours=1)
    engine = sa.create_engine(state_db.url())
    with engine.begin() as c:
        c.execute(sa.update(st.leases).values(acquired_at=long_ago, heartbeat_at=long_ago))
    engine.dispose()


# --- every task run again: twice in a row, cleared alone, cleared with its downstream; then the next day ---

RERUN = [
    Case(
        f"rerun-{stage}",
        f"day 1: three waiting orders; `{TASKS[stage]}` runs twice in a row, then is cleared alone, then cleared"
        " with its downstream; day 2: nothing changed in the shop",
        "each customer got one `initial` on day 1 and nothing more, on day 2 neither (no false `changed`); the"
        " snapshot of day 1 holds its 3 lines; no staged lines are left; the lease is free; every run record is"
        + (
            " `finished`, but the two attempts a new extract replaced unfinished: `abandoned`"
            if stage == "extract"
            else " `finished`"
        ),
        "14",
        {"stage": stage},
    )
    for stage in STAGES
]

EXTRACT_ALONE = Case(
    "extract-cleared-alone-then-next-day",
    "day 1 runs; then only `extract_backorder_lines` is cleared (its new run record holds the lease, nothing"
    " finishes it); day 2 runs once that attempt is no longer alive",
    "day 2 takes the lease over, marks that record `abandoned` and drops its staged lines; it sends nothing"
    " (no false `changed`), and the snapshot of day 1 keeps its 3 lines",
    "14",
)


def three_waiting_orders(shop: Any) -> None:
    shop.product(1, datetime(2026, 11, 20))
    for oid in (1, 2, 3):
        shop.order(oid, [1], purchased=datetime(2026, 11, 1))


@pytest.mark.parametrize("case", params(RERUN))
def test_every_task_can_run_again(case: Case, shop, state_db, smtp, mail_sink) -> None:
    three_waiting_orders(shop)
    stage = case.data["stage"]
    first = Day(shop, state_db, smtp, T0, reminder_interval_days=7).run(twice=stage)
    assert sorted(received(mail_sink)) == [(1, "initial"), (2, "initial"), (3, "initial")]
    first.stage(stage)  # cleared alone
    first.run(first=stage)  # cleared with its downstream
    assert len(mail_sink.messages) == 3, "nothing was sent again"

    mail_sink.clear()
    Day(shop, state_db, smtp, day(1), reminder_interval_days=7).run()
    assert received(mail_sink) == [], "no false `changed` the next day"
    assert snapshot_lines(state_db) == {T0.replace(tzinfo=None): (3, 3), day(1).replace(tzinfo=None): (3, 3)}
    assert [(r["orders_id"], r["kind"], r["status"]) for r in notifications(state_db)] == [
        (1, "initial", "sent"),
        (2, "initial", "sent"),
        (3, "initial", "sent"),
    ]
    assert select(state_db, sa.select(st.staged_lines)) == []
    statuses = Counter(r["status"] for r in select(state_db, sa.select(st.runs)))
    assert set(statuses) <= {"finished", "abandoned"} and statuses["abandoned"] == (2 if stage == "extract" else 0)
    (held,) = select(state_db, sa.select(st.leases))
    assert held["run_id"] is None, "the lease is free"


@pytest.mark.parametrize("case", params([EXTRACT_ALONE]))
def test_an_extract_cleared_alone_does_not_block_or_corrupt_the_next_day(
    case: Case, shop, state_db, smtp, mail_sink
) -> None:
    three_waiting_orders(shop)
    first = Day(shop, state_db, smtp, T0, reminder_interval_days=7).run()
    first.stage("extract")  # a new run record for the same DAG run; its downstream tasks do not run again
    orphan = first.run_id
    age_the_lease(state_db)
    mail_sink.clear()
    Day(shop, state_db, smtp, day(1), reminder_interval_days=7).run()
    assert received(mail_sink) == []
    (record,) = select(state_db, sa.select(st.runs).where(st.runs.c.id == orphan))
    assert record["status"] == "abandoned"
    assert select(state_db, sa.select(st.staged_lines)) == []
    assert snapshot_lines(state_db) == {T0.replace(tzinfo=None): (3, 3), day(1).replace(tzinfo=None): (3, 3)}


# --- days run out of order: never an older notice after a newer one ---

LATE = Case(
    "late-day-after-a-later-one",
    "T=Nov 2 runs (A, B get `initial`), B's date moves, T=Nov 5 runs (A `periodic`, B `changed`, C, ordered Nov 3,"
    " `initial`), then T=Nov 4 runs late",
    "the Nov 4 run sends nothing and succeeds; its audit shows A `periodic`, B `changed`, C `initial` as"
    " `silenced` with `overtaken: the run at T=2026-11-05T00:00:00+00:00 already told this order ...`; the"
    " reminders carry on from Nov 5 (nothing on Nov 6, `periodic` for all three on Nov 7)",
    "3",
)
BACKFILL = Case(
    "backfill-a-missed-week",
    "T=Nov 2 and T=Nov 9 ran (`initial`, then `periodic`; `reminder_interval_days` 2, `max_reminders` 2); the"
    " days Nov 3 to Nov 8 are backfilled afterwards, one at a time",
    "the backfill sends nothing, with or without `catch_up_silently`; every day from Nov 2 to Nov 9 has its"
    " snapshot and its audit (the reminders it would have sent `silenced`, overtaken); the customer's second"
    " reminder still comes on Nov 11 (an overtaken reminder was never received and does not count), and none"
    " after it",
    "3",
)


@pytest.mark.parametrize("case", params([LATE]))
def test_a_late_day_sends_nothing_older_than_what_a_later_day_told(case: Case, shop, state_db, smtp, mail_sink) -> None:
    shop.product(1, datetime(2026, 11, 20))
    shop.product(2, datetime(2026, 11, 20))
    shop.product(3, datetime(2026, 11, 20))
    shop.order(1, [1], purchased=datetime(2026, 11, 1))  # A
    shop.order(2, [2], purchased=datetime(2026, 11, 1))  # B
    shop.order(3, [3], purchased=datetime(2026, 11, 3))  # C
    seen = {}
    for n in (0, 3, 2, 4, 5):  # Nov 2, Nov 5, Nov 4 (late), Nov 6, Nov 7
        if n == 3:
            shop.set_date(2, datetime(2026, 11, 25))
        mail_sink.clear()
        Day(shop, state_db, smtp, day(n), reminder_interval_days=2).run()
        seen[n] = sorted(received(mail_sink))
    assert seen == {
        0: [(1, "initial"), (2, "initial")],
        3: [(1, "periodic"), (2, "changed"), (3, "initial")],
        2: [],
        4: [],
        5: [(1, "periodic"), (2, "periodic"), (3, "periodic")],
    }
    late = notifications(state_db, day(2))
    assert [(r["orders_id"], r["kind"], r["status"]) for r in late] == [
        (1, "periodic", "silenced"),
        (2, "changed", "silenced"),
        (3, "initial", "silenced"),
    ]
    assert {r["detail"] for r in late} == {
        "overtaken: the run at T=2026-11-05T00:00:00+00:00 already told this order; an older notice is not sent"
    }
    assert day(2).replace(tzinfo=None) in snapshot_lines(state_db)


@pytest.mark.parametrize("silently", [False, True], ids=["live", "catch_up_silently"])
@pytest.mark.parametrize("case", params([BACKFILL]))
def test_a_backfilled_week_fills_the_audit_and_sends_nothing_twice(
    case: Case, silently: bool, shop, state_db, smtp, mail_sink
) -> None:
    shop.product(1, datetime(2026, 11, 30))
    shop.order(1, [1], purchased=datetime(2026, 11, 1))
    conf = {"reminder_interval_days": 2, "max_reminders": 2}
    for n in (0, 7):  # Nov 2, Nov 9
        Day(shop, state_db, smtp, day(n), **conf).run()
    assert received(mail_sink) == [(1, "initial"), (1, "periodic")]
    mail_sink.clear()
    for n in range(1, 7):  # the backfill: Nov 3 to Nov 8 (with or without catch_up_silently: the same)
        Day(shop, state_db, smtp, day(n), **conf, catch_up_silently=silently).run()
    assert received(mail_sink) == []
    assert sorted(snapshot_lines(state_db)) == [day(n).replace(tzinfo=None) for n in range(8)]
    filled = [(r["reference_time"].day, r["kind"], r["status"]) for r in notifications(state_db)]
    assert filled == [
        (2, "initial", "sent"),
        (4, "periodic", "silenced"),
        (6, "periodic", "silenced"),
        (8, "periodic", "silenced"),
        (9, "periodic", "sent"),
    ]
    assert all(
        r["detail"].startswith("overtaken: the run at T=2026-11-09")
        for r in notifications(state_db)
        if r["status"] == "silenced"
    )
    kinds = {}
    for n in (8, 9, 11):  # Nov 10, Nov 11, Nov 13
        mail_sink.clear()
        Day(shop, state_db, smtp, day(n), **conf).run()
        kinds[n] = received(mail_sink)
    assert kinds == {8: [], 9: [(1, "periodic")], 11: []}


# --- a cleared run takes over what its failed attempt left due; max_reminders end to end ---

TAKE_OVER = Case(
    "cleared-run-takes-over-what-is-due",
    "an attempt at T sends 2 of 3 `initial` emails (the third address answers 451 three times) and its send task"
    " fails; the DAG run is cleared",
    "the new attempt takes the lease and the due email over (its `bo_notification` row now names the new run)"
    " and sends it; each customer got exactly one `initial`; the first attempt is `abandoned` and its send task,"
    " retried, stops with `run N ... was abandoned`",
)
MAX_REMINDERS = Case(
    "max-reminders-silenced-counts-failed-does-not",
    "`max_reminders` 2, `reminder_interval_days` 1: day 1 `initial`; day 2 run with `catch_up_silently`; day 3 the"
    " server refuses the address (550); days 4, 5 and 6 normal",
    "the customer gets `initial` on day 1 and one `periodic` on day 4, nothing else: the silenced reminder of"
    " day 2 counts, the failed one of day 3 does not",
)


@pytest.mark.parametrize("case", params([TAKE_OVER]))
def test_a_cleared_run_takes_over_what_its_failed_attempt_left_due(
    case: Case, shop, state_db, smtp, mail_sink, no_waits
) -> None:
    three_waiting_orders(shop)
    mail_sink.faults = Faults(defer={"customer2@example.com": 3})  # the first try and the two in-task tries
    attempt = Day(shop, state_db, smtp, T0, reminder_interval_days=7)
    with pytest.raises(pipeline.TemporarySendError, match="1 message"):
        attempt.run()
    first = attempt.run_id
    assert sorted(received(mail_sink)) == [(1, "initial"), (3, "initial")]

    attempt.run()  # the DAG run cleared: every task again, the same dag_run_id
    assert sorted(received(mail_sink)) == [(1, "initial"), (2, "initial"), (3, "initial")]
    rows = notifications(state_db)
    assert [(r["orders_id"], r["status"]) for r in rows] == [(1, "sent"), (2, "sent"), (3, "sent")]
    assert [r["run_id"] for r in rows] == [first, attempt.run_id, first]
    assert attempt.summary["counts"]["sent"] == {"initial": {"en": 1}}
    assert attempt.summary["counts"]["handled_by_earlier_runs_at_this_T"] == 2
    with pytest.raises(lease.RunAbandonedError, match=f"run {first} .* was abandoned"):
        pipeline.send(state_db, first, "initial", smtp)  # the first attempt's send task, retried
    assert len(mail_sink.messages) == 3


@pytest.mark.parametrize("case", params([MAX_REMINDERS]))
def test_max_reminders_counts_silenced_reminders_not_failed_ones(case: Case, shop, state_db, smtp, mail_sink) -> None:
    shop.product(1, datetime(2026, 11, 30))
    shop.order(1, [1], purchased=datetime(2026, 11, 1))
    conf = {"reminder_interval_days": 1, "max_reminders": 2}
    kinds = {}
    for n in range(6):
        mail_sink.faults = Faults(refuse={"customer1@example.com"}) if n == 2 else Faults()
        mail_sink.clear()
        Day(shop, state_db, smtp, day(n), **conf, catch_up_silently=n == 1).run()
        kinds[n + 1] = received(mail_sink)
    assert kinds == {1: [(1, "initial")], 2: [], 3: [], 4: [(1, "periodic")], 5: [], 6: []}
    audit = [(r["reference_time"].day - 1, r["kind"], r["status"]) for r in notifications(state_db)]
    assert audit == [
        (1, "initial", "sent"),
        (2, "periodic", "silenced"),
        (3, "periodic", "failed"),
        (4, "periodic", "sent"),
    ]


# --- the Asset for downstream DAGs: one event per T ---

ASSET = Case(
    "one-asset-event-per-T",
    "a dry run at T; the live run at T; its `write_snapshot_and_audit` cleared; another DAG run at T; the run at T+1",
    "`backorder_snapshot` gets one event for T (from the live run) and one for T+1: the task adds it only when"
    " finish reports `snapshot: written`, the first snapshot at T (the dry run, the cleared try and the repeat of"
    " T report None, None and `replaced`); tests/dags/test_dag_run.py counts the events in Airflow",
    "15",
)


@pytest.mark.parametrize("case", params([ASSET]))
def test_only_the_first_snapshot_at_T_is_announced(case: Case, shop, state_db, smtp, mail_sink) -> None:
    three_waiting_orders(shop)
    reported = [Day(shop, state_db, smtp, T0, dry_run=True).run().summary["snapshot"]]
    live = Day(shop, state_db, smtp, T0).run()
    reported.append(live.summary["snapshot"])
    live.stage("finish")  # cleared
    reported.append(live.summary["snapshot"])
    assert live.summary["counts"]["sent"] == {"initial": {"en": 3}}, "the cleared try reports the run's counts"
    again = Day(shop, state_db, smtp, T0)
    again.context = RunContext(T0, dag_run_id="manual__again")  # another DAG run at the same T
    reported.append(again.run().summary["snapshot"])
    reported.append(Day(shop, state_db, smtp, day(1)).run().summary["snapshot"])
    assert reported == [None, "written", None, "replaced", "written"]
    assert len(mail_sink.messages) == 3
    assert snapshot_lines(state_db) == {T0.replace(tzinfo=None): (3, 3), day(1).replace(tzinfo=None): (3, 3)}


CASES = [*RERUN, EXTRACT_ALONE, LATE, BACKFILL, TAKE_OVER, MAX_REMINDERS, ASSET]
