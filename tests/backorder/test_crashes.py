"""Crashes: a sender killed with SIGKILL mid-batch, a shop that fails mid-read. Nothing half-written; a
message goes out twice only when it was sent but its outcome not yet recorded, at most 8 of them.

The kills land at moments the tests bring about and wait for (the server holding an answer, the
state database locked), not after a sleep: what is sent twice is known exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from include.backorder import pipeline, sending
from include.backorder import state as st
from include.backorder.config import DbConnection, RunContext, RunParams
from tests.backorder.test_sending import StateLock, Watch, due_orders
from tests.conftest import ROOT
from tools.smtp_sink import Faults

T0 = datetime(2026, 3, 2, tzinfo=UTC)
SENDER = """
import json, sys
from include.backorder import pipeline, sending
from include.backorder.config import DbConnection, SmtpSettings
state, run_id, smtp = json.loads(sys.argv[1])
pipeline.send(DbConnection(**state), run_id, "initial", SmtpSettings(**smtp))
"""


def statuses(state: DbConnection) -> dict[int, str]:
    engine = sa.create_engine(state.url())
    with engine.connect() as c:
        result = dict(c.execute(sa.select(st.notifications.c.orders_id, st.notifications.c.status)).all())
    engine.dispose()
    return result


def start_sender(state: DbConnection, run_id: int, smtp) -> subprocess.Popen[bytes]:
    """The send task in a process of its own, to be killed."""
    args = json.dumps([asdict(state), run_id, asdict(smtp)])
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", SENDER, args], cwd=ROOT, env=env)


def kill(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert worker.returncode == -signal.SIGKILL


def wait_until(condition, what: str, timeout: float = 30.0) -> None:
    """Poll a condition another process brings about (a commit); fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def received(mail_sink) -> Counter[int]:
    return Counter(int(m.message["X-Backorder-Order-Id"]) for m in mail_sink.messages)


def one_message_id_per_order(mail_sink) -> bool:
    ids: dict[str, str] = {}
    return all(
        ids.setdefault(m.message["X-Backorder-Order-Id"], m.message["Message-ID"]) == m.message["Message-ID"]
        for m in mail_sink.messages
    )


@pytest.fixture(params=[True, False], ids=["pipelining", "lockstep"])
def sqlite_state(request, tmp_path, mail_sink) -> DbConnection:
    mail_sink.pipelining = request.param
    return DbConnection("backorder_state_db", "sqlite", host=str(tmp_path / "state.sqlite"))


def test_sigkill_while_the_server_holds_a_reply_then_the_retry_resends_only_that_message(
    shop, sqlite_state, smtp, mail_sink
) -> None:
    """The server keeps the 3rd message and holds its answer; the first two are committed `sent`;
    the sender is killed there. The retry sends the 3rd again (same Message-ID) and the rest once."""
    state = sqlite_state
    run_id = due_orders(shop, state, 8)
    answer = threading.Event()
    mail_sink.faults = Faults(hold={3: answer})
    worker = start_sender(state, run_id, smtp)
    try:
        mail_sink.wait_for(3)
        wait_until(lambda: list(statuses(state).values()).count("sent") == 2, "the first two outcomes committed")
        kill(worker)
    finally:
        answer.set()
        if worker.poll() is None:
            kill(worker)
    assert statuses(state) == {1: "sent", 2: "sent"} | dict.fromkeys(range(3, 9), "due")
    assert received(mail_sink) == Counter({1: 1, 2: 1, 3: 1})

    pipeline.send(state, run_id, "initial", smtp)  # the task's retry
    assert received(mail_sink) == Counter(range(1, 9)) + Counter([3])
    assert one_message_id_per_order(mail_sink)
    assert set(statuses(state).values()) == {"sent"}


def test_sigkill_while_the_state_database_is_locked_resends_exactly_the_8_unrecorded(
    shop, sqlite_state, smtp, mail_sink
) -> None:
    """The state database is locked from the first message on: the sender goes on until 8 messages
    lack a committed outcome, and no further; killed there, the retry sends those 8 again (same
    Message-IDs) and the other 12 once. At every message the server keeps, the bound holds."""
    state = sqlite_state
    run_id = due_orders(shop, state, 20)
    watch, lock = Watch(mail_sink, state), StateLock(state)
    mail_sink.watch = watch
    reached, go_on = watch.pause_at(1)
    worker = start_sender(state, run_id, smtp)
    try:
        assert reached.wait(60)
        lock.acquire()
        go_on.set()
        mail_sink.wait_for(sending.UNRECORDED_AT_MOST)  # the bound: no 9th can come while nothing is recorded
        kill(worker)
        assert len(mail_sink.messages) == sending.UNRECORDED_AT_MOST
    finally:
        go_on.set()
        if worker.poll() is None:
            kill(worker)
        lock.release()
    assert set(statuses(state).values()) == {"due"}

    pipeline.send(state, run_id, "initial", smtp)  # the task's retry
    assert received(mail_sink) == Counter(range(1, 21)) + Counter(range(1, sending.UNRECORDED_AT_MOST + 1))
    assert all(gap <= sending.UNRECORDED_AT_MOST for gap in watch.gaps), watch.gaps
    assert one_message_id_per_order(mail_sink)
    assert set(statuses(state).values()) == {"sent"}
    watch.engine.dispose()


def test_a_shop_failing_mid_read_leaves_no_state_behind(shop, state_db) -> None:
    shop.product(1, datetime(2026, 3, 20))
    shop.product(2, "soon")  # a value no date parser understands: reading fails at this line
    for oid in range(1, 6):
        shop.order(oid, [1], purchased=datetime(2026, 3, 1))
    shop.order(6, [2], purchased=datetime(2026, 3, 1))
    with pytest.raises(ValueError, match="soon"):
        pipeline.extract(shop.conn, state_db, RunContext(T0), RunParams(), chunk_size=2)
    engine = sa.create_engine(state_db.url())
    with engine.connect() as c:
        counts = {
            t.name: c.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in (st.runs, st.staged_lines, st.notifications, st.snapshots)
        }
        holder = c.execute(sa.select(st.leases.c.run_id)).scalar_one_or_none()
    engine.dispose()
    assert counts == {"bo_run": 0, "bo_staged_line": 0, "bo_notification": 0, "bo_snapshot": 0}
    assert holder is None, "the lease is not held by a run that does not exist"
