"""Overlapping runs: one at a time holds the lease; the other waits or stops; nothing is sent twice."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from include.backorder import lease, pipeline
from include.backorder import state as st
from include.backorder.config import DbConnection, RunContext, RunParams
from include.backorder.lease import RunAbandonedError, RunOverlapError

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


def _race(shop_conn: DbConnection, state_db: DbConnection, smtp, day: int, barrier, results) -> None:
    """One run in its own process, as Airflow workers run them."""
    barrier.wait()
    try:
        run_id = pipeline.extract(shop_conn, state_db, RunContext(T0 + timedelta(days=day), dag_run_id=f"run{day}"),
                                  RunParams()).run_id  # fmt: skip
        complete(state_db, run_id, smtp)
        results.put((day, "sent"))
    except RunOverlapError:
        results.put((day, "waits"))
    except sa.exc.OperationalError as exc:  # SQLite: the other writer kept the database locked too long
        results.put((day, f"stopped: {exc.orig}"))
    except Exception as exc:  # anything else fails the test, visibly
        results.put((day, f"error: {exc!r}"))


def test_two_runs_started_at_once_never_both_send(waiting_shop, state_db, smtp, mail_sink) -> None:
    engine = sa.create_engine(state_db.url())
    st.migrate(engine)  # the state database exists, as after any first run
    engine.dispose()
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_race, args=(waiting_shop.conn, state_db, smtp, day, barrier, results)) for day in (0, 1)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    outcomes = dict(results.get(timeout=5) for _ in procs)
    assert sorted(o.split(":")[0] for o in outcomes.values()) in (["sent", "waits"], ["sent", "stopped"]), outcomes
    assert Counter(int(m.message["X-Backorder-Order-Id"]) for m in mail_sink.messages) == {1: 1, 2: 1, 3: 1}
