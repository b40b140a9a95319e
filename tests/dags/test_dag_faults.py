"""The real DAG with its retries against a misbehaving SMTP server: every email exactly once."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from tools.smtp_sink import Faults

T0 = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.fixture
def six_orders(shop, tmp_path, mail_sink, monkeypatch, dag, no_waits):
    shop.product(1, datetime(2026, 3, 20))
    for oid in range(1, 7):
        shop.order(oid, [1], purchased=datetime(2026, 3, 1))
    smtp = {"disable_ssl": True, "disable_tls": True, "from_email": "shop@example.com", "timeout": 2}
    monkeypatch.setenv("AIRFLOW_CONN_SHOP_DB", json.dumps({"conn_type": "sqlite", "host": str(shop.path)}))
    monkeypatch.setenv(
        "AIRFLOW_CONN_BACKORDER_STATE_DB", json.dumps({"conn_type": "sqlite", "host": str(tmp_path / "state.sqlite")})
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_SMTP_DEFAULT",
        json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": mail_sink.port, "extra": smtp}),
    )
    saved = {t.task_id: (t.retries, t.retry_delay, t.retry_exponential_backoff) for t in dag.tasks}
    for task in dag.tasks:  # the DAG's retries, with the waits of a test
        task.retries = 3
        task.retry_delay = timedelta(seconds=1)
        task.retry_exponential_backoff = False
    yield
    for task in dag.tasks:
        task.retries, task.retry_delay, task.retry_exponential_backoff = saved[task.task_id]


@pytest.mark.parametrize(
    ("faults", "send_tries"),
    [
        pytest.param(Faults(drop_after={1, 3, 5}), 1, id="connection dropped three times"),
        pytest.param(Faults(defer={"customer2@example.com": 4}), 2, id="451 across a task retry"),
        pytest.param(Faults(busy=4), 2, id="421 until the task retries"),
        pytest.param(
            Faults(refuse={"customer4@example.com"}, stall={"customer5@example.com": 3}),
            1,
            id="550 for one, a stall for another",
        ),
    ],
)
def test_the_dag_delivers_every_email_once(dag, six_orders, mail_sink, faults: Faults, send_tries: int) -> None:
    mail_sink.faults = faults
    dag_run = dag.test(logical_date=T0, run_conf=dag.default_conf)
    assert dag_run.state == "success"
    tries = {ti.task_id: ti.try_number for ti in dag_run.get_task_instances()}
    assert tries["send_initial"] == send_tries
    got = Counter(int(m.message["X-Backorder-Order-Id"]) for m in mail_sink.messages)
    refused = {int(a[8:9]) for a in faults.refuse}
    assert got == Counter(set(range(1, 7)) - refused)
    # Every fault was served as named (the sink counts them down): the run withstood it, not missed it.
    assert (faults.drop_after, faults.busy, faults.stall) == (set(), 0, {})
    assert all(left == 0 for left in faults.defer.values())
