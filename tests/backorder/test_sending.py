"""The outcome writer, on every state backend: its one-statement group UPDATE (each row gets its own
values, a message tried twice in a group keeps its last outcome, NULLs stay NULL); the bound of
at most 8 messages sent but not recorded, held while the state database is locked; and a state
database failing mid-batch."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from include.backorder import pipeline, sending
from include.backorder import state as st
from include.backorder.config import DbConnection, RunContext, RunParams
from include.backorder.sending import write_outcomes

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def test_a_group_of_outcomes_is_written_row_by_row_in_one_statement(shop, state_db) -> None:
    shop.product(1, datetime(2026, 3, 20))
    for oid in (1, 2, 3):
        shop.order(oid, [1], purchased=datetime(2026, 3, 1))
    run = pipeline.extract(shop.conn, state_db, RunContext(T0), RunParams())
    pipeline.load_previous_snapshot(state_db, run.run_id)
    assert pipeline.classify_run(state_db, run.run_id)["initial"] == 3
    engine = sa.create_engine(state_db.url())
    n = st.notifications
    with engine.connect() as conn:
        ids = dict(conn.execute(sa.select(n.c.orders_id, n.c.id)).all())
        sent_at = datetime(2026, 3, 2, 0, 0, 1, 250000)
        write_outcomes(
            conn,
            [
                (ids[1], {"status": "due", "detail": "temporary: 451 4.3.0 Try again later", "message_id": "<a@x>"}),
                (ids[2], {"status": "failed", "detail": "550 5.1.1 Mailbox unavailable", "sent_at": sent_at}),
                (ids[1], {"status": "sent", "detail": "250 OK", "message_id": "<a@x>", "sent_at": sent_at}),
            ],
        )
        conn.commit()
        write_outcomes(conn, [(ids[3], {"status": "dry_run", "detail": "dry run: not sent"})])  # every sent_at NULL
        conn.commit()
        rows = {r.orders_id: r for r in conn.execute(sa.select(n))}
    engine.dispose()
    assert (rows[1].status, rows[1].detail, rows[1].message_id, rows[1].sent_at) == ("sent", "250 OK", "<a@x>", sent_at)
    assert (rows[2].status, rows[2].detail, rows[2].message_id) == ("failed", "550 5.1.1 Mailbox unavailable", None)
    assert rows[2].sent_at == sent_at
    assert (rows[3].status, rows[3].message_id, rows[3].sent_at) == ("dry_run", None, None)


# --- the "at most 8 sent but unrecorded" barrier, and a state database that fails mid-batch ----

N = 20
LOCK_AT = 10  # the state database is locked while the server holds this message


class StateLock:
    """The outcome rows held locked by another transaction, as a busy or hung writer would hold
    them: SQLite a write transaction (BEGIN IMMEDIATE), MariaDB and PostgreSQL the rows FOR UPDATE."""

    def __init__(self, state: DbConnection) -> None:
        self.state = state
        self.engine = sa.create_engine(state.url(), poolclass=sa.pool.NullPool)
        self.raw: sqlite3.Connection | None = None
        self.conn: sa.Connection | None = None

    def acquire(self) -> None:
        if self.state.conn_type == "sqlite":
            self.raw = sqlite3.connect(self.state.host, isolation_level=None)
            self.raw.execute("BEGIN IMMEDIATE")
        else:
            self.conn = self.engine.connect()
            self.conn.execute(sa.select(st.notifications.c.id).with_for_update()).all()

    def fail_the_waiting_writer(self) -> None:
        """Make the writer that waits for the lock fail, as a database restart or a lock timeout would.
        SQLite's writer gives up by itself after its busy timeout (5 s); a server's is killed once seen waiting."""
        if self.state.conn_type == "sqlite":
            return
        if self.state.conn_type == "postgres":
            waiting = sa.text(
                "SELECT pid FROM pg_stat_activity WHERE datname = :db AND wait_event_type = 'Lock'"
                " AND pid <> pg_backend_pid()"
            )
            kill = "SELECT pg_terminate_backend({})"
        else:
            waiting = sa.text(
                "SELECT t.trx_mysql_thread_id FROM information_schema.INNODB_TRX t JOIN"
                " information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id"
                " WHERE t.trx_state = 'LOCK WAIT' AND p.DB = :db"
            )
            kill = "KILL {}"
        deadline = time.monotonic() + 30
        with self.engine.connect() as c:
            while not (pids := c.execute(waiting, {"db": self.state.schema}).scalars().all()):
                assert time.monotonic() < deadline, "no writer ever waited for the lock"
                time.sleep(0.01)  # polling the server's view of its own lock waits
            for pid in pids:
                c.exec_driver_sql(kill.format(int(pid)))

    def release(self) -> None:
        if self.raw is not None:
            self.raw.rollback()
            self.raw.close()
        if self.conn is not None:
            self.conn.rollback()
            self.conn.close()
        self.engine.dispose()


class Watch:
    """Checks the bound each time the SMTP server keeps a message (on its thread, before it answers):
    the orders it received minus the outcomes committed `sent` is at most UNRECORDED_AT_MOST."""

    def __init__(self, sink, state: DbConnection) -> None:
        self.sink = sink
        self.gaps: list[int] = []  # at each message kept: orders received minus outcomes committed `sent`
        self.engine = sa.create_engine(state.url())  # used on the server's thread only
        self.at: dict[int, tuple[threading.Event, threading.Event]] = {}  # message number -> (reached, go on)

    def pause_at(self, number: int) -> tuple[threading.Event, threading.Event]:
        self.at[number] = (threading.Event(), threading.Event())
        return self.at[number]

    def __call__(self, number: int) -> None:
        n = st.notifications
        with self.engine.connect() as c:
            committed = c.execute(sa.select(sa.func.count()).where(n.c.status == "sent")).scalar_one()
        orders = {m.message["X-Backorder-Order-Id"] for m in self.sink.messages}
        self.gaps.append(len(orders) - committed)
        if number in self.at:
            reached, go_on = self.at[number]
            reached.set()
            assert go_on.wait(60)


def due_orders(shop, state: DbConnection, count: int) -> int:
    shop.product(1, datetime(2026, 3, 20))
    for oid in range(1, count + 1):
        shop.order(oid, [1], purchased=datetime(2026, 3, 1))
    run = pipeline.extract(shop.conn, state, RunContext(T0), RunParams())
    pipeline.load_previous_snapshot(state, run.run_id)
    assert pipeline.classify_run(state, run.run_id)["initial"] == count
    return run.run_id


def statuses(state: DbConnection) -> dict[int, str]:
    engine = sa.create_engine(state.url(), poolclass=sa.pool.NullPool)
    with engine.connect() as c:
        result = dict(c.execute(sa.select(st.notifications.c.orders_id, st.notifications.c.status)).all())
    engine.dispose()
    return result


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "lockstep"])
def test_while_the_state_database_is_locked_at_most_8_go_out_unrecorded(
    shop, state_db, mail_sink, smtp, pipelining
) -> None:
    """20 messages to a fast server; the outcome rows get locked while the server holds the 10th.
    At every message the server keeps, at most 8 of the emails it has are not committed `sent`;
    the session stops at exactly 8, the writer's failure fails the task with one line naming the
    state connection, and what is not recorded stays due: the retry sends it, the 8 again with
    their Message-IDs."""
    mail_sink.pipelining = pipelining
    run_id = due_orders(shop, state_db, N)
    watch, lock = Watch(mail_sink, state_db), StateLock(state_db)
    mail_sink.watch = watch
    reached, go_on = watch.pause_at(LOCK_AT)
    failure: list[BaseException] = []

    def send() -> None:
        try:
            pipeline.send(state_db, run_id, "initial", smtp)
        except BaseException as exc:
            failure.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        assert reached.wait(60)
        lock.acquire()
        committed = list(statuses(state_db).values()).count("sent")  # no commit gets past the lock
        go_on.set()
        mail_sink.wait_for(committed + sending.UNRECORDED_AT_MOST)  # the session goes on to the bound ...
        lock.fail_the_waiting_writer()  # ... and stays there until the writer fails
        sender.join(60)
        assert not sender.is_alive()
        at_failure = statuses(state_db)
    finally:
        go_on.set()
        lock.release()

    (error,) = failure
    assert isinstance(error, sending.OutcomeWriteError), repr(error)
    assert str(error).startswith("state database backorder_state_db: recording the outcome of ")
    assert "stays due" in str(error) and "customer" not in str(error)  # no statement, no parameters
    recorded = {oid for oid, status in at_failure.items() if status == "sent"}
    assert set(at_failure.values()) == {"sent", "due"}
    assert LOCK_AT - sending.UNRECORDED_AT_MOST <= len(recorded) < LOCK_AT
    assert len(mail_sink.messages) == len(recorded) + sending.UNRECORDED_AT_MOST  # stopped at the bound exactly
    assert max(watch.gaps) == sending.UNRECORDED_AT_MOST, watch.gaps

    pipeline.send(state_db, run_id, "initial", smtp)  # the task's retry, the database back
    assert all(gap <= sending.UNRECORDED_AT_MOST for gap in watch.gaps), watch.gaps
    received = Counter(int(m.message["X-Backorder-Order-Id"]) for m in mail_sink.messages)
    unrecorded = sorted(set(range(1, N + 1)) - recorded)[: sending.UNRECORDED_AT_MOST]
    assert received == Counter(range(1, N + 1)) + Counter(unrecorded)
    ids: dict[str, str] = {}
    for m in mail_sink.messages:
        assert ids.setdefault(m.message["X-Backorder-Order-Id"], m.message["Message-ID"]) == m.message["Message-ID"]
    assert set(statuses(state_db).values()) == {"sent"}
    watch.engine.dispose()
