"""Crashes: a sender killed with SIGKILL mid-batch, a shop that fails mid-read. Nothing sent twice, nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from include.backorder import pipeline, sending
from include.backorder import state as st
from include.backorder.config import DbConnection, RunContext, RunParams
from include.backorder.smtp_sink import Faults
from tests.conftest import ROOT

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


def test_sigkill_mid_batch_then_the_retry_sends_only_the_rest(shop, tmp_path, smtp, mail_sink) -> None:
    shop.product(1, datetime(2026, 3, 20))
    for oid in range(1, 9):
        shop.order(oid, [1], purchased=datetime(2026, 3, 1))
    state = DbConnection("backorder_state_db", "sqlite", host=str(tmp_path / "state.sqlite"))
    run_id = pipeline.extract(shop.conn, state, RunContext(T0), RunParams()).run_id
    pipeline.load_previous_snapshot(state, run_id)
    pipeline.classify_run(state, run_id)

    mail_sink.faults = Faults(slow=0.3)  # a slow server, so that the kill lands mid-batch
    args = json.dumps([asdict(state), run_id, asdict(smtp)])
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen([sys.executable, "-c", SENDER, args], cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    while mail_sink.accepted < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert worker.returncode == -signal.SIGKILL

    at_kill = statuses(state)
    sent_at_kill = {oid for oid, status in at_kill.items() if status == "sent"}
    assert 2 <= len(sent_at_kill) < 8, at_kill  # part-way: some recorded as sent, some still due
    before_retry = len(mail_sink.messages)

    mail_sink.faults = Faults()
    pipeline.send(state, run_id, "initial", smtp)  # the task's retry
    resent = Counter(int(m.message["X-Backorder-Order-Id"]) for m in mail_sink.messages[before_retry:])
    assert not set(resent) & sent_at_kill, "nothing recorded as sent goes out again"
    assert set(resent) == set(range(1, 9)) - sent_at_kill
    everything = Counter(int(m.message["X-Backorder-Order-Id"]) for m in mail_sink.messages)
    assert set(everything) == set(range(1, 9))
    # At most the messages sent but not yet recorded at the kill arrive twice, with the same Message-ID.
    assert sum(everything.values()) - 8 <= sending.UNRECORDED_AT_MOST
    ids: dict[str, str] = {}
    for m in mail_sink.messages:
        assert ids.setdefault(m.message["X-Backorder-Order-Id"], m.message["Message-ID"]) == m.message["Message-ID"]
    assert set(statuses(state).values()) == {"sent"}


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
        counts = {t.name: c.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                  for t in (st.runs, st.staged_lines, st.notifications, st.snapshots)}  # fmt: skip
        holder = c.execute(sa.select(st.leases.c.run_id)).scalar_one_or_none()
    engine.dispose()
    assert counts == {"bo_run": 0, "bo_staged_line": 0, "bo_notification": 0, "bo_snapshot": 0}
    assert holder is None, "the lease is not held by a run that does not exist"
