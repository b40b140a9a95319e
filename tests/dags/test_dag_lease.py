"""The DAG's part of the lease: a task that runs alone and fails, is killed or is marked failed frees it (finding 9)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from include.backorder import lease, pipeline
from include.backorder import state as st
from include.backorder.config import RunContext, RunParams
from tests.conftest import airflow_conn_json

T0 = datetime(2026, 3, 2, tzinfo=UTC)
ALONE = ("load_previous_snapshot", "classify", "write_snapshot_and_audit")


def test_the_tasks_that_run_alone_free_the_lease_when_they_fail(dag) -> None:
    for task_id in ALONE:
        task = dag.get_task(task_id)
        assert task.on_failure_callback and task.on_retry_callback, task_id
    for kind in ("initial", "changed", "periodic", "available"):  # side by side: their heartbeats decide
        assert not dag.get_task(f"send_{kind}").on_failure_callback


@pytest.fixture
def one_order(shop):
    shop.product(1, datetime(2026, 3, 20))
    shop.order(1, [1], purchased=datetime(2026, 3, 1))
    return shop


def statuses(state_db) -> dict[int, str]:
    engine = sa.create_engine(state_db.url())
    with engine.connect() as c:
        result = dict(c.execute(sa.select(st.runs.c.id, st.runs.c.status)).all())
    engine.dispose()
    return result


def test_the_failure_callback_lets_a_later_run_take_over(dag, one_order, state_db, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_BACKORDER_STATE_DB", airflow_conn_json(state_db))
    held = pipeline.extract(one_order.conn, state_db, RunContext(T0, dag_run_id="scheduled__0"), RunParams()).run_id
    # classify was killed before its stage began (or failed outside it): the run is between tasks
    callback = dag.get_task("classify").on_failure_callback
    (callback[0] if isinstance(callback, list) else callback)({"dag": dag, "run_id": "scheduled__0"})
    assert statuses(state_db) == {held: "failed"}
    later = pipeline.extract(one_order.conn, state_db, RunContext(T0, dag_run_id="manual__1"), RunParams()).run_id
    assert statuses(state_db) == {held: "abandoned", later: "running"}


def test_a_late_callback_leaves_a_running_retry_alone(dag, one_order, state_db, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_BACKORDER_STATE_DB", airflow_conn_json(state_db))
    held = pipeline.extract(one_order.conn, state_db, RunContext(T0, dag_run_id="scheduled__0"), RunParams()).run_id
    engine = sa.create_engine(state_db.url())
    try:
        with lease.hold(engine, held, "classify"):  # the retry's stage runs and beats
            callback = dag.get_task("classify").on_retry_callback
            (callback[0] if isinstance(callback, list) else callback)({"dag": dag, "run_id": "scheduled__0"})
            assert statuses(state_db) == {held: "running"}
            with pytest.raises(lease.RunOverlapError):
                pipeline.extract(one_order.conn, state_db, RunContext(T0, dag_run_id="manual__1"), RunParams())
    finally:
        engine.dispose()
