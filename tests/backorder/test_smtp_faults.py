"""SMTP servers misbehaving on purpose: every due email is delivered exactly once, refusals are recorded.

A scripted aiosmtpd server drops the connection after some messages, cuts one off before answering,
answers 421 or 451 for a while, refuses recipients or a message's data for good, or stalls; each
with a server that offers PIPELINING and one that does not. The send stage runs like its
task does: when it fails, it is run again (the task's retry), until it succeeds or three tries fail.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from include.backorder import pipeline
from include.backorder import state as st
from include.backorder.config import DbConnection, RunContext, RunParams
from include.backorder.smtp_sink import Faults

T0 = datetime(2026, 3, 2, tzinfo=UTC)
ORDERS = range(1, 7)


def address(oid: int) -> str:
    return f"customer{oid}@example.com"


@pytest.fixture
def due_run(shop, tmp_path) -> tuple[DbConnection, int]:
    """Six orders, each due for its initial email; state on SQLite (the backends are covered elsewhere)."""
    shop.product(1, datetime(2026, 3, 20))
    for oid in ORDERS:
        shop.order(oid, [1], purchased=datetime(2026, 3, 1))
    state = DbConnection("backorder_state_db", "sqlite", host=str(tmp_path / "state.sqlite"))
    run = pipeline.extract(shop.conn, state, RunContext(T0), RunParams())
    pipeline.load_previous_snapshot(state, run.run_id)
    assert pipeline.classify_run(state, run.run_id)["initial"] == len(ORDERS)
    return state, run.run_id


@pytest.fixture(autouse=True, params=[True, False], ids=["pipelining", "lockstep"])
def server_pipelining(request, mail_sink) -> bool:
    """Every fault with a server that offers PIPELINING (one write for MAIL, RCPT and DATA) and one that does not."""
    mail_sink.pipelining = request.param
    return bool(request.param)


def send_with_retries(state: DbConnection, run_id: int, smtp, tries: int = 3) -> list[str]:
    """The send task and its retries; returns the errors of the failed tries."""
    errors: list[str] = []
    for _ in range(tries):
        try:
            pipeline.send(state, run_id, "initial", smtp)
            return errors
        except Exception as exc:  # what fails the task, for Airflow to retry
            errors.append(f"{type(exc).__name__}: {exc}")
    return errors


def statuses(state: DbConnection) -> dict[int, tuple[str, str | None]]:
    engine = sa.create_engine(state.url())
    with engine.connect() as c:
        rows = c.execute(sa.select(st.notifications.c.orders_id, st.notifications.c.status, st.notifications.c.detail))
        result = {r.orders_id: (r.status, r.detail) for r in rows}
    engine.dispose()
    return result


def received(mail_sink) -> Counter[int]:
    return Counter(int(m.message["X-Backorder-Order-Id"]) for m in mail_sink.messages)


@pytest.mark.parametrize(
    ("faults", "failed_tries"),
    [
        pytest.param(Faults(drop_after={2, 4}), 0, id="connection closed after the 2nd and 4th message"),
        pytest.param(Faults(busy=2), 0, id="421 service not available, twice"),
        pytest.param(Faults(defer={address(3): 2}), 0, id="451 twice for one recipient"),
        pytest.param(Faults(defer={address(3): 4}), 1, id="451 four times: the task retry delivers"),
        pytest.param(Faults(stall={address(4): 2.5}), 0, id="server stalls past the client timeout"),
    ],
)
def test_every_due_email_is_delivered_exactly_once(due_run, mail_sink, smtp, no_waits, faults, failed_tries) -> None:
    state, run_id = due_run
    mail_sink.faults = copy.deepcopy(faults)  # its counters go down; each parametrisation gets its own
    errors = send_with_retries(state, run_id, replace(smtp, timeout=1.0))
    assert len(errors) == failed_tries, errors
    assert received(mail_sink) == Counter(ORDERS)
    assert {oid: status for oid, (status, _) in statuses(state).items()} == dict.fromkeys(ORDERS, "sent")
    ids = [m.message["Message-ID"] for m in mail_sink.messages]
    assert len(set(ids)) == len(ORDERS)


def test_permanent_refusals_are_recorded_and_never_retried(due_run, mail_sink, smtp, no_waits) -> None:
    state, run_id = due_run
    mail_sink.faults = Faults(refuse={address(2), address(5)})
    assert send_with_retries(state, run_id, smtp) == []
    assert received(mail_sink) == Counter({1: 1, 3: 1, 4: 1, 6: 1})
    got = statuses(state)
    assert got[2] == got[5] == ("failed", "550 5.1.1 Mailbox unavailable")
    assert pipeline.send(state, run_id, "initial", smtp) == {}  # a re-run does not try them again
    assert received(mail_sink) == Counter({1: 1, 3: 1, 4: 1, 6: 1})


def test_a_message_refused_at_the_end_of_its_data_is_failed_not_sent(due_run, mail_sink, smtp, no_waits) -> None:
    state, run_id = due_run
    mail_sink.faults = Faults(reject_data={address(4)})
    assert send_with_retries(state, run_id, smtp) == []
    assert received(mail_sink) == Counter({1: 1, 2: 1, 3: 1, 5: 1, 6: 1})
    got = statuses(state)
    assert got[4] == ("failed", "554 5.6.0 Message content rejected")
    assert {status for oid, (status, _) in got.items() if oid != 4} == {"sent"}


def test_a_message_cut_off_before_the_answer_is_sent_again_with_the_same_message_id(
    due_run, mail_sink, smtp, no_waits
) -> None:
    """The one case SMTP cannot settle: the server took message 3 but the answer never arrived."""
    state, run_id = due_run
    mail_sink.faults = Faults(cut_after={3})
    assert send_with_retries(state, run_id, smtp) == []
    counts = received(mail_sink)
    assert counts == Counter({1: 1, 2: 1, 3: 2, 4: 1, 5: 1, 6: 1})
    third = [m.message["Message-ID"] for m in mail_sink.messages if m.message["X-Backorder-Order-Id"] == "3"]
    assert third[0] == third[1] == "<backorder.3.initial.20260302T000000Z@example.com>"
    assert statuses(state)[3][0] == "sent"


def test_server_gone_for_good_fails_every_try_and_loses_nothing(due_run, mail_sink, smtp, no_waits) -> None:
    state, run_id = due_run
    mail_sink.faults = Faults(busy=1000)
    errors = send_with_retries(state, run_id, smtp)
    assert len(errors) == 3 and all(e.startswith("SMTPUnavailable") for e in errors)
    assert set(statuses(state).values()) == {("due", None)}
    mail_sink.faults = Faults()  # the server is back: the next retry sends everything once
    assert send_with_retries(state, run_id, smtp) == []
    assert received(mail_sink) == Counter(ORDERS)
