"""The distributed path: the DAG on CeleryExecutor, Redis as broker, two Celery workers.

The test starts, in one process group, Airflow's api-server, scheduler and dag-processor and two
`airflow celery worker` processes (one task at a time each, on a queue of the test's own on the
machine's Redis), with the metadata and the pipeline's state in fresh PostgreSQL databases. Each
worker reports its own host name (tests/integration/worker_name.py), as two machines would. A run
with 2,000 due `initial` emails and `send_parallelism` 4 maps `send_initial` over 4 batches; the
test checks through the REST API that the batches ran on both workers, and at the SMTP sink and in
the state database that every email went out exactly once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from include.backorder import state as st
from include.backorder.config import DbConnection
from tests.airflow_stack import (
    AIRFLOW,
    RestApi,
    airflow_env,
    cli,
    free_port,
    pipeline_connections,
    postgres_url,
    wait_for,
)
from tests.conftest import _unavailable, airflow_conn_json, server_database
from tools import demo_shop

DAG_ID = "backorder_notifications"
ORDERS = 2000
WORKERS = ("celery-worker-a", "celery-worker-b")
REDIS = ("127.0.0.1", 6379)


def test_mapped_sends_run_on_both_workers_and_every_email_goes_once(shop, tmp_path: Path, mail_sink) -> None:
    try:
        socket.create_connection(REDIS, timeout=2).close()
    except OSError as exc:
        _unavailable(f"Redis on {REDIS[0]}:{REDIS[1]}", exc)
    t = datetime(2026, 3, 2, tzinfo=UTC)
    fill_shop(shop.engine, t)
    with ExitStack() as stack:
        metadata = stack.enter_context(server_database("postgres", "airflow_db"))
        state = stack.enter_context(server_database("postgres", "backorder_state_db"))
        home, port, queue = tmp_path / "airflow", free_port(), f"backorder_test_{uuid.uuid4().hex[:8]}"
        connections = pipeline_connections(shop.path, airflow_conn_json(state), mail_sink.port)
        env = airflow_env(home, port, postgres_url(metadata), connections)
        env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CELERY__BROKER_URL": f"redis://{REDIS[0]}:{REDIS[1]}/0",
                "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
                "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex,
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.integration.worker_name.hostname",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__BACKORDER__SCHEDULE": "none",
            }
        )
        cli(env, "db", "migrate", timeout=300)
        worker = ["celery", "worker", "--concurrency", "1", "--queues", queue, "--skip-serve-logs"]
        commands = {
            "api-server": (["api-server", "--port", str(port)], {}),
            "scheduler": (["scheduler"], {}),
            "dag-processor": (["dag-processor"], {}),
            **{name: (worker, {"BACKORDER_TEST_WORKER": name}) for name in WORKERS},
        }
        logs = stack.enter_context(process_group(env, commands, tmp_path / "logs"))
        for name in WORKERS:
            wait_for(f"{name} to be ready", partial(_says_ready, logs[name]), timeout=120)
        api = wait_for("the api-server", lambda: _login(home, port), timeout=120)
        wait_for("the DAG to be parsed", lambda: _dag_listed(api), timeout=120)

        run = api.post(
            f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": t.isoformat(), "conf": {"send_parallelism": 4}}
        )
        run_path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}"
        final = wait_for("the run to end", lambda: _ended(api, run_path), timeout=600, every=3)
        tis = api.get(f"{run_path}/taskInstances?limit=100")["task_instances"]
        assert final == "success", [(ti["task_id"], ti["map_index"], ti["state"]) for ti in tis]

        batches = sorted((ti["map_index"], ti["hostname"]) for ti in tis if ti["task_id"] == "send_initial")
        assert [i for i, _ in batches] == [0, 1, 2, 3]
        assert {host for _, host in batches} == set(WORKERS), f"the batches ran on {batches}"
        assert {ti["hostname"] for ti in tis if ti["state"] == "success"} <= set(WORKERS)

        # Every email exactly once: at the sink, and as the state database recorded it.
        received = Counter(m.message["X-Backorder-Order-Id"] for m in mail_sink.messages)
        assert len(received) == ORDERS and set(received.values()) == {1}
        assert {m.message["X-Backorder-Notification"] for m in mail_sink.messages} == {"initial"}
        assert recorded(state) == {("initial", "sent"): ORDERS}


def recorded(state: DbConnection) -> dict[tuple[str, str], int]:
    """The state database's notifications by kind and status, counting distinct orders."""
    n = st.notifications
    engine = sa.create_engine(state.url())
    try:
        with engine.connect() as c:
            rows = c.execute(
                sa.select(n.c.kind, n.c.status, sa.func.count(sa.distinct(n.c.orders_id)), sa.func.count()).group_by(
                    n.c.kind, n.c.status
                )
            ).all()
    finally:
        engine.dispose()
    assert all(distinct == total for *_, distinct, total in rows), f"an order recorded twice: {rows}"
    return {(kind, status): distinct for kind, status, distinct, _ in rows}


def fill_shop(engine: sa.Engine, t: datetime) -> None:
    """One product on backorder until after T, and ORDERS orders waiting for it."""
    purchased = demo_shop.fmt(t - timedelta(hours=6))
    orders = [
        {
            "orders_id": i,
            "customers_id": i,
            "customers_name": f"Customer {i}",
            "orders_status": 1,
            "customers_email_address": f"customer{i}@example.com",
            "date_purchased": purchased,
            "language_code": "de" if i % 3 == 0 else "en",
        }
        for i in range(1, ORDERS + 1)
    ]
    lines = [
        {
            "orders_products_id": i,
            "orders_id": i,
            "products_id": 1,
            "products_model": "M-1",
            "products_name": "Trail tent",
            "products_price": 10,
            "products_quantity": 1,
        }
        for i in range(1, ORDERS + 1)
    ]
    with engine.begin() as c:
        c.execute(
            sa.insert(demo_shop.products).values(
                products_id=1,
                products_quantity=0,
                products_model="M-1",
                products_price=10,
                products_status=1,
                products_date_available=demo_shop.fmt(t + timedelta(days=20)),
                products_date_added="2025-01-01 00:00:00",
            )
        )
        c.execute(sa.insert(demo_shop.orders), orders)
        c.execute(sa.insert(demo_shop.orders_products), lines)


@contextmanager
def process_group(
    env: dict[str, str], commands: dict[str, tuple[list[str], dict[str, str]]], logs: Path
) -> Iterator[dict[str, Path]]:
    """Start `airflow <args>` for each command in one new process group; stop the whole group after."""
    logs.mkdir(parents=True)
    files = {name: logs / f"{name}.log" for name in commands}
    leader: subprocess.Popen[bytes] | None = None
    try:
        for name, (args, extra_env) in commands.items():
            with files[name].open("w") as out:
                # the first process leads a new group (in this session: joining needs the same session)
                group = 0 if leader is None else leader.pid
                proc = subprocess.Popen(
                    [AIRFLOW, *args], env=env | extra_env, stdout=out, stderr=subprocess.STDOUT, process_group=group
                )
            leader = leader or proc
        yield files
    finally:
        if leader is not None:
            _stop_group(leader)


def _stop_group(leader: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(leader.pid, signal.SIGINT)
        leader.wait(timeout=30)
        wait_for("the process group to exit", lambda: not _group_alive(leader.pid), timeout=30, every=1)
    except (AssertionError, subprocess.TimeoutExpired):
        os.killpg(leader.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _says_ready(worker_log: Path) -> bool:
    return " ready." in worker_log.read_text()


def _login(home: Path, port: int) -> RestApi | None:
    try:
        return RestApi(home, port)
    except (OSError, ValueError):
        return None


def _dag_listed(api: RestApi) -> bool:
    try:
        return not api.get(f"/api/v2/dags/{DAG_ID}")["is_paused"]
    except OSError:
        return False


def _ended(api: RestApi, run_path: str) -> Any:
    state = api.get(run_path)["state"]
    return state if state in ("success", "failed") else None
