"""Overlapping runs: one at a time holds the lease; the other waits or stops; nothing is sent twice."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from include.backorder import lease, pipeline
from include.backorder import state as st
from include.backorder.config import DbConnection, RunContext, RunParams
from include.backorder.lease import RunAbandonedError, RunOverlapError
from tests.conftest import ROOT
from tools.smtp_sink import Faults

T0 = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.fixture
def waiting_shop(shop):
    shop.product(1, datetime(2026, 3, 20))
    for oid in (1, 2, 3):
        shop.order(oid, [1], purchased=datetime(2026, 3, 1))
    return shop


def start(shop, state_db: DbConnection, day: int, dag_run: str) -> int:
    return pipeline.extract(
        shop.conn, state_db, RunContext(T0 + timedelta(days=day), dag_run_id=dag_run), RunParams()
    ).run_id


def complete(state_db: DbConnection, run_id: int, smtp) -> None:
    pipeline.load_previous_snapshot(state_db, run_id)
    for kind, count in pipeline.classify_run(state_db, run_id).items():
        if count:
            pipeline.send(state_db, run_id, kind, smtp)
    pipeline.finish(state_db, run_id)


def test_a_second_run_waits_while_the_first_holds_the_lease(waiting_shop, state_db, smtp, mail_sink) -> None:
    first = start(waiting_shop, state_db, 0, "scheduled__0")
    with pytest.raises(RunOverlapError, match=r"run \d+ \(dag run 'scheduled__0'.*holds the lease.*waits"):
        start(waiting_shop, state_db, 1, "backfill__1")
    complete(state_db, first, smtp)
    second = start(waiting_shop, state_db, 1, "backfill__1")  # the retry, after the first finished
    complete(state_db, second, smtp)
    assert Counter(m.message["X-Backorder-Notification"] for m in mail_sink.messages) == {"initial": 3}


def test_a_cleared_dag_run_takes_over_from_its_own_earlier_attempt(waiting_shop, state_db, smtp, mail_sink) -> None:
    old = start(waiting_shop, state_db, 0, "manual__0")
    new = start(waiting_shop, state_db, 0, "manual__0")
    with pytest.raises(RunAbandonedError, match=f"run {old} .* was abandoned"):
        pipeline.classify_run(state_db, old)
    complete(state_db, new, smtp)
    assert len(mail_sink.messages) == 3


def test_an_expired_lease_is_taken_over(waiting_shop, state_db, smtp, mail_sink) -> None:
    dead = start(waiting_shop, state_db, 0, "scheduled__0")  # its worker died and never came back
    engine = sa.create_engine(state_db.url())
    with engine.begin() as c:
        c.execute(sa.update(st.leases).values(acquired_at=datetime(2026, 3, 1) - lease.LEASE_EXPIRY))
    engine.dispose()
    later = start(waiting_shop, state_db, 1, "scheduled__1")
    with pytest.raises(RunAbandonedError):
        pipeline.send(state_db, dead, "initial", smtp)
    complete(state_db, later, smtp)
    assert len(mail_sink.messages) == 3


def _pause_before_writing_the_lease(gate) -> None:
    """Hold this process's first write to bo_lease until the other run is there too.

    Started at once, the two runs still met at the lease only by luck: on a busy machine one ran
    its whole course before the other read the lease, and the test then saw two finished runs
    (about 1 in 20). The gate makes every run of the test the race itself: both have read the
    lease as free and neither has written it yet. On SQLite the other run cannot get there (the
    first one's transaction locks the database): it stops on the lock and opens the gate.
    """
    paused = False

    @sa.event.listens_for(sa.Engine, "before_cursor_execute")
    def _gate(conn, cursor, statement, parameters, context, executemany) -> None:
        nonlocal paused
        if not paused and re.match(r"\s*(INSERT INTO|UPDATE) bo_lease\b", statement):
            paused = True
            with contextlib.suppress(threading.BrokenBarrierError):  # the other run stopped before the lease
                gate.wait(timeout=120)


def _race(shop_conn: DbConnection, state_db: DbConnection, smtp, day: int, gate, results) -> None:
    """One run in its own process, as Airflow workers run them."""
    _pause_before_writing_the_lease(gate)
    try:
        run_id = pipeline.extract(
            shop_conn, state_db, RunContext(T0 + timedelta(days=day), dag_run_id=f"run{day}"), RunParams()
        ).run_id
        complete(state_db, run_id, smtp)
        results.put((day, "sent"))
    except RunOverlapError as exc:
        gate.abort()
        results.put((day, f"waits: {exc}"))
    except sa.exc.OperationalError as exc:  # SQLite: the other writer kept the database locked too long
        gate.abort()
        results.put((day, f"stopped: {exc.orig}"))
    except Exception as exc:  # anything else fails the test, visibly
        gate.abort()
        results.put((day, f"error: {exc!r}"))


def test_two_runs_started_at_once_never_both_send(waiting_shop, state_db, smtp, mail_sink) -> None:
    engine = sa.create_engine(state_db.url())
    st.migrate(engine)  # the state database exists, as after any first run
    engine.dispose()
    ctx = multiprocessing.get_context("spawn")
    gate, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(waiting_shop.conn, state_db, smtp, day, gate, results)) for day in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    outcomes = sorted(results.get(timeout=5)[1] for _ in procs)
    if state_db.conn_type == "sqlite":  # the loser waited for the database lock and gave up
        assert outcomes[0] == "sent" and re.fullmatch(r"stopped: database is locked", outcomes[1]), outcomes
    else:  # the loser's compare-and-set found the winner's lease
        assert outcomes[0] == "sent" and re.fullmatch(r"waits: .* took the lease at the same moment.*", outcomes[1])
    assert Counter(int(m.message["X-Backorder-Order-Id"]) for m in mail_sink.messages) == {1: 1, 2: 1, 3: 1}


# --- a dead holder gives the lease up; a live one keeps it (finding 9) ----------------------


class Clock:
    """A clock the test moves on, shared by the holder's heartbeat thread and the taker."""

    def __init__(self) -> None:
        self.now = lease.utcnow()
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self.now += delta
            return self.now


def lease_row(state_db: DbConnection) -> dict[str, object]:
    engine = sa.create_engine(state_db.url())
    with engine.connect() as c:
        row = dict(c.execute(sa.select(st.leases)).mappings().one())
        row["statuses"] = dict(c.execute(sa.select(st.runs.c.id, st.runs.c.status)).all())
    engine.dispose()
    return row


def wait_for(condition, what: str, seconds: float = 60) -> None:
    """Wait for a state another thread or process brings about (polled: it is in a database or a server)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.02)


def test_a_crash_in_classify_lets_the_next_run_take_over_at_once(
    waiting_shop, state_db, smtp, mail_sink, monkeypatch
) -> None:
    crashed = start(waiting_shop, state_db, 0, "scheduled__0")
    pipeline.load_previous_snapshot(state_db, crashed)
    with monkeypatch.context() as m:
        m.setattr(pipeline, "classify", lambda *a, **k: 1 / 0)  # a bug in the classification
        with pytest.raises(ZeroDivisionError):
            pipeline.classify_run(state_db, crashed)
    later = start(waiting_shop, state_db, 1, "manual__1")  # no waiting: the failed run runs nothing
    assert lease_row(state_db)["statuses"] == {crashed: "abandoned", later: "running"}
    with pytest.raises(RunAbandonedError, match=f"run {crashed} .* was abandoned"):
        pipeline.classify_run(state_db, crashed)  # the crashed task's retry stops
    complete(state_db, later, smtp)
    assert Counter(int(m.message["X-Backorder-Order-Id"]) for m in mail_sink.messages) == {1: 1, 2: 1, 3: 1}


def test_a_failed_stage_retried_before_anyone_took_over_goes_on(
    waiting_shop, state_db, smtp, mail_sink, monkeypatch
) -> None:
    run = start(waiting_shop, state_db, 0, "scheduled__0")
    with monkeypatch.context() as m:
        m.setattr(pipeline, "classify", lambda *a, **k: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            complete(state_db, run, smtp)
    complete(state_db, run, smtp)  # the retry
    assert lease_row(state_db)["statuses"] == {run: "finished"}
    assert len(mail_sink.messages) == 3


SEND_STAGE = """
import json, sys
from include.backorder import pipeline
from include.backorder.config import DbConnection, SmtpSettings
state, run_id, smtp = json.loads(sys.argv[1])
pipeline.send(DbConnection(**state), run_id, "initial", SmtpSettings(**smtp))
"""


def test_a_killed_stage_is_taken_over_after_the_heartbeat_timeout(
    waiting_shop, state_db, smtp, mail_sink, monkeypatch
) -> None:
    dead = start(waiting_shop, state_db, 0, "scheduled__0")
    pipeline.load_previous_snapshot(state_db, dead)
    pipeline.classify_run(state_db, dead)
    # The server holds the first message at RCPT: the kill lands mid-stage with nothing delivered.
    mail_sink.faults = Faults(stall={"customer1@example.com": 120})
    args = json.dumps([asdict(state_db), dead, asdict(smtp)])
    worker = subprocess.Popen(
        [sys.executable, "-c", SEND_STAGE, args], cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)}
    )
    try:
        wait_for(lambda: not mail_sink.faults.stall, "the send stage to reach the server")
        beat = lease_row(state_db)["heartbeat_at"]
        assert isinstance(beat, datetime), "the running stage says so in the lease"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()

    timeout = lease.POLICY.heartbeat_timeout
    clock = Clock()
    monkeypatch.setattr(lease, "POLICY", lease.Policy(clock=clock))
    clock.now = beat + timeout - timedelta(seconds=1)
    with pytest.raises(RunOverlapError, match=r"holds the lease .* and a stage of it is running"):
        start(waiting_shop, state_db, 0, "manual__0")
    clock.now = beat + timeout
    later = start(waiting_shop, state_db, 0, "manual__0")  # another DAG run at the same T takes the rows still due
    assert lease_row(state_db)["statuses"] == {dead: "abandoned", later: "running"}
    complete(state_db, later, smtp)
    assert Counter(int(m.message["X-Backorder-Order-Id"]) for m in mail_sink.messages) == {1: 1, 2: 1, 3: 1}


def test_a_live_stage_and_a_run_between_tasks_keep_the_lease(waiting_shop, state_db, monkeypatch) -> None:
    clock = Clock()
    monkeypatch.setattr(lease, "POLICY", lease.Policy(clock=clock, beat_every=0.05))
    holder = start(waiting_shop, state_db, 0, "scheduled__0")
    engine = sa.create_engine(state_db.url())
    try:
        with lease.hold(engine, holder, "classify"):
            long_after = clock.advance(lease.POLICY.heartbeat_timeout * 3)  # the stage works for 6 minutes
            wait_for(lambda: lease_row(state_db)["heartbeat_at"] == long_after, "the stage's next heartbeat")
            with pytest.raises(RunOverlapError, match=r"holds the lease .* and a stage of it is running"):
                start(waiting_shop, state_db, 1, "manual__1")
        assert lease_row(state_db)["heartbeat_at"] is None, "between tasks nobody beats"
        clock.advance(timedelta(minutes=3))  # the scheduler is slow to start the next task
        with pytest.raises(RunOverlapError, match=r"holds the lease .* and it is between two tasks since"):
            start(waiting_shop, state_db, 1, "manual__1")
        clock.advance(lease.POLICY.between_tasks - timedelta(minutes=3))  # its DAG run was stopped from outside
        later = start(waiting_shop, state_db, 1, "manual__1")
        assert lease_row(state_db)["statuses"] == {holder: "abandoned", later: "running"}
    finally:
        engine.dispose()


def test_a_heartbeat_after_finish_gave_the_lease_back_is_no_loss(waiting_shop, state_db) -> None:
    """The stage's thread may beat between finish's commit and the stage's end; finish still succeeds."""
    run = start(waiting_shop, state_db, 0, "scheduled__0")
    engine = sa.create_engine(state_db.url())
    try:
        with lease.hold(engine, run, "finish") as holding:
            with engine.begin() as c:
                lease.release(c, "backorder_notifications", run)
                c.execute(sa.update(st.runs).where(st.runs.c.id == run).values(status="finished"))
            with engine.begin() as c:
                holding._beat(c)  # what the thread does, at the worst moment
            assert holding.released and not holding.lost
    finally:
        engine.dispose()
    assert lease_row(state_db)["run_id"] is None
