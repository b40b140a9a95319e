"""The state database and the one-run-at-a-time lease: what a dead, a slow or a live run does to the next one,
and what an unreachable or refusing database says.

The lease rows move an injected clock (`lease.Policy.clock`) instead of waiting; the holder's stage
beats on its real thread every 50 ms of real time. Every row runs on SQLite, MariaDB and PostgreSQL
state where it involves the state database.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import subprocess
import tempfile
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import pytest
import sqlalchemy as sa

from include.backorder import lease, pipeline
from include.backorder import state as st
from include.backorder.config import DbConnection, RunContext, RunParams
from include.backorder.db import LoginRefusedError
from tests.backorder.test_lease import Clock
from tests.conftest import MARIADB, POSTGRES, ROOT, _unavailable
from tests.hardening.matrix import Case, params

SURFACE = "State database"
T0 = datetime(2026, 3, 2, tzinfo=UTC)
WAITS_RUNNING = r"RunOverlapError: run \d+ \(dag run 'scheduled__0'.*\) holds the lease .* and a stage of it is running"
WAITS_BETWEEN = r"RunOverlapError: run \d+ \(dag run 'scheduled__0'.*\) holds the lease .* and it is between two tasks"

LEASE = [
    Case(
        id="stage-failed",
        given="a run's stage raises (a crash in classify, a bad row, the SIGTERM of 'mark failed')",
        expect="the run is marked `failed` in the lease; the next run takes it over at once and marks it `abandoned`"
        " (its retry stops: 'run N ... was abandoned'); every email is sent once",
        finding="9",
        data={"holder": "failed", "after": timedelta(0), "taken": True},
    ),
    Case(
        id="stage-killed-1m59",
        given="the process of a running stage is killed (SIGKILL, out of memory, a lost worker); 1 min 59 s later"
        " a second run starts",
        expect="the second run waits and retries: 'run N (dag run ...) holds the lease ... and a stage of it is"
        " running (last heartbeat ...): this run waits for it to finish'",
        finding="9",
        data={"holder": "silent", "after": timedelta(minutes=2) - timedelta(seconds=1), "waits": WAITS_RUNNING},
    ),
    Case(
        id="stage-killed-2m",
        given="the same, 2 minutes after its last heartbeat",
        expect="the second run takes the lease over and marks the dead run `abandoned`; at the same T it sends the"
        " emails the dead run left due, once",
        finding="9",
        data={"holder": "silent", "after": timedelta(minutes=2), "taken": True},
    ),
    Case(
        id="stage-live-6m",
        given="a run's stage works for 6 minutes (a big shop, a slow SMTP server), beating every 20 s",
        expect="a second run waits: '... holds the lease ... and a stage of it is running (last heartbeat ...)'",
        finding="9",
        data={"holder": "beating", "after": timedelta(minutes=6), "waits": WAITS_RUNNING},
    ),
    Case(
        id="between-tasks-3m",
        given="a healthy run waits 3 minutes for the scheduler to start its next task (nobody beats)",
        expect="it keeps the lease: a second run waits ('... and it is between two tasks since ...')",
        finding="9",
        data={"holder": "between", "after": timedelta(minutes=3), "waits": WAITS_BETWEEN},
    ),
    Case(
        id="between-tasks-30m",
        given="a run's next task has not started 30 minutes after its last stage ended (its DAG run was stopped"
        " from outside)",
        expect="a second run takes the lease over",
        finding="9",
        data={"holder": "between", "after": timedelta(minutes=30), "taken": True},
    ),
    Case(
        id="hung-stage-12h",
        given="a stage beats but never ends for 12 hours",
        expect="last resort: a second run takes the lease over",
        finding="9",
        data={"holder": "beating", "after": timedelta(hours=12), "taken": True},
    ),
    Case(
        id="cleared-dag-run",
        given="a DAG run is cleared while its earlier attempt still holds the lease",
        expect="the new attempt takes it over at once; the earlier attempt's tasks stop without sending",
        data={"holder": "between", "after": timedelta(0), "taken": True, "same_dag_run": True},
    ),
]

ERRORS = [
    Case(
        id="state-unreachable",
        given="the state database is down or unreachable (SQLite file in a missing folder, MariaDB or PostgreSQL"
        " not listening)",
        expect="the task fails with one line and retries: \"connection 'backorder_state_db': cannot read the state"
        " database: <the driver's first line>\"",
        finding="11",
    ),
    Case(
        id="state-login-refused",
        given="the state database refuses the connection's password (MariaDB error 1045, PostgreSQL 'password"
        " authentication failed')",
        expect="the task fails at once, without retries: \"connection 'backorder_state_db': the state database"
        " refused the login of '<user>' (...): check the connection's login and password\"",
        finding="11",
        data={"conn_id": "backorder_state_db", "what": "state database"},
    ),
    Case(
        id="shop-login-refused",
        given="the shop database refuses the connection's password (MariaDB error 1045)",
        expect="the task fails at once, without retries: \"connection 'shop_db': the shop refused the login of"
        " '<user>' (...)\"",
        finding="11",
        data={"conn_id": "shop_db", "what": "shop"},
    ),
    Case(
        id="insert-refused",
        given="the state database refuses an INSERT of rows that hold a customer's name and address",
        expect="the error and the task log name the statement, not the values: '[SQL parameters hidden due to"
        " hide_parameters=True]'",
        finding="11",
    ),
]

CASES = [*LEASE, *ERRORS]


# --- the lease -------------------------------------------------------------------------------


@pytest.fixture
def one_order(shop):
    shop.product(1, datetime(2026, 3, 20))
    shop.order(1, [1], purchased=datetime(2026, 3, 1))
    return shop


def _statuses(engine: sa.Engine) -> dict[int, str]:
    with engine.connect() as c:
        return dict(c.execute(sa.select(st.runs.c.id, st.runs.c.status)).all())


def _heartbeat(engine: sa.Engine) -> datetime | None:
    with engine.connect() as c:
        return c.execute(sa.select(st.leases.c.heartbeat_at)).scalar_one()


@contextlib.contextmanager
def _holder_in(kind: str, engine: sa.Engine, run_id: int, clock: Clock, after: timedelta) -> Iterator[None]:
    """The holding run in the state the row names, `after` later on the clock."""
    if kind == "failed":
        with contextlib.suppress(ZeroDivisionError), lease.hold(engine, run_id, "classify"):
            _ = 1 / 0
        clock.advance(after)
        yield
    elif kind == "silent":  # a stage started and beat once; its process died
        holding = lease.Holding(engine, run_id, "classify", lease.POLICY)
        holding.start()
        holding.stop()
        clock.advance(after)
        yield
    elif kind == "beating":
        try:
            with lease.hold(engine, run_id, "classify") as holding:
                later = clock.advance(after)
                deadline = time.monotonic() + 30
                while _heartbeat(engine) != later:  # the stage's thread beats on its own
                    assert time.monotonic() < deadline, "no heartbeat from the running stage"
                    time.sleep(0.02)
                yield
        except lease.RunAbandonedError:  # taken over while it ran: the stage says so when it ends
            assert holding.lost
    else:  # between tasks: extract ended, the next task is not running yet
        clock.advance(after)
        yield


@pytest.mark.parametrize("case", params(LEASE))
def test_who_may_take_the_lease(case: Case, one_order, state_db: DbConnection, monkeypatch) -> None:
    clock = Clock()
    monkeypatch.setattr(lease, "POLICY", lease.Policy(clock=clock, beat_every=0.05))
    holder = pipeline.extract(one_order.conn, state_db, RunContext(T0, dag_run_id="scheduled__0"), RunParams()).run_id
    second = RunContext(T0 + timedelta(days=1), dag_run_id="scheduled__0" if case.data.get("same_dag_run") else "m1")
    engine = sa.create_engine(state_db.url())
    try:
        with _holder_in(case.data["holder"], engine, holder, clock, case.data["after"]):
            if case.data.get("taken"):
                taker = pipeline.extract(one_order.conn, state_db, second, RunParams()).run_id
                assert _statuses(engine) == {holder: "abandoned", taker: "running"}
            else:
                with pytest.raises(lease.RunOverlapError) as caught:
                    pipeline.extract(one_order.conn, state_db, second, RunParams())
                assert caught.match(case.data["waits"].removeprefix("RunOverlapError: "))
                assert _statuses(engine) == {holder: "running"}
    finally:
        engine.dispose()


# --- connecting ------------------------------------------------------------------------------


def _dag_module() -> ModuleType:
    """The DAG file, for its `permanent_errors_fail_at_once` (which errors skip the retries)."""
    spec = importlib.util.spec_from_file_location(
        "backorder_dag_for_tests", ROOT / "dags" / "backorder_notifications.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # free now, and nobody listens on it


@pytest.mark.parametrize("case", params(c for c in ERRORS if c.id == "state-unreachable"))
def test_an_unreachable_state_database_is_one_line_naming_it(case: Case, tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    dag = _dag_module()
    port = _closed_port()
    for unreachable in (
        DbConnection("backorder_state_db", "sqlite", host=str(tmp_path / "no-such-folder" / "state.sqlite")),
        replace(MARIADB, conn_id="backorder_state_db", port=port, schema="backorder"),
        replace(POSTGRES, conn_id="backorder_state_db", port=port, schema="backorder"),
    ):
        with pytest.raises(pipeline.StateUnavailableError) as caught, dag.permanent_errors_fail_at_once():
            pipeline.classify_run(unreachable, 1)
        line = str(caught.value)
        assert line.startswith("connection 'backorder_state_db': cannot read the state database: "), line
        assert "\n" not in line and not isinstance(caught.value, AirflowFailException)  # retried: it may come back
        assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no driver traceback


@pytest.fixture(scope="module")
def password_postgres() -> Iterator[DbConnection]:
    """A private PostgreSQL cluster that checks passwords (the machine's server trusts every local login)."""
    if not shutil.which("initdb") or not shutil.which("pg_ctl"):
        pytest.skip("PostgreSQL's initdb and pg_ctl are not installed")
    folder = Path(tempfile.mkdtemp(prefix="bo-pg-password-"))  # not under pytest's 0700 folder: postgres reads it
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    (folder / "pw").write_text("the-right-one\n")
    if as_owner:
        shutil.chown(folder, "postgres")
        shutil.chown(folder / "pw", "postgres")
    port = _closed_port()
    subprocess.run(
        [
            *as_owner,
            "initdb",
            "-D",
            str(folder / "data"),
            "-U",
            "postgres",
            f"--pwfile={folder / 'pw'}",
            "--auth=scram-sha-256",
            "-N",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *as_owner,
            "pg_ctl",
            "-D",
            str(folder / "data"),
            "-l",
            str(folder / "log"),
            "-w",
            "start",
            "-o",
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield DbConnection(
            "server", "postgres", host="127.0.0.1", port=port, login="postgres", password="wrong", schema="postgres"
        )
    finally:
        subprocess.run(
            [*as_owner, "pg_ctl", "-D", str(folder / "data"), "-m", "immediate", "stop"], capture_output=True
        )


@pytest.fixture
def mariadb_user() -> Iterator[DbConnection]:
    """A MariaDB user with a password; the connection given has the wrong one."""
    name = f"bo_h14_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(MARIADB.url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.exec_driver_sql(f"CREATE USER '{name}'@'%%' IDENTIFIED BY 'the-right-one'")
            c.exec_driver_sql(f"CREATE USER '{name}'@'localhost' IDENTIFIED BY 'the-right-one'")
    except sa.exc.OperationalError as exc:
        admin.dispose()
        _unavailable(f"mariadb on {MARIADB.host}:{MARIADB.port}", exc)  # a failure under BACKORDER_REQUIRE_SERVERS=1
    try:
        yield replace(MARIADB, login=name, password="wrong", schema="")
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f"DROP USER IF EXISTS '{name}'@'%%'")
            c.exec_driver_sql(f"DROP USER IF EXISTS '{name}'@'localhost'")
        admin.dispose()


@pytest.mark.parametrize("case", params(c for c in ERRORS if c.id.endswith("login-refused")))
def test_a_refused_password_fails_at_once(case: Case, request, mariadb_user, shop, tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    dag = _dag_module()
    conn_id, what = case.data["conn_id"], case.data["what"]
    refusing = [replace(mariadb_user, conn_id=conn_id)]
    if conn_id == "backorder_state_db":
        refusing.append(replace(request.getfixturevalue("password_postgres"), conn_id=conn_id))
    state = DbConnection("backorder_state_db", "sqlite", host=str(tmp_path / "state.sqlite"))
    for db in refusing:
        shop_db, state_db = (db, state) if conn_id == "shop_db" else (shop.conn, db)
        with pytest.raises(LoginRefusedError) as refused:
            pipeline.extract(shop_db, state_db, RunContext(T0), RunParams())
        assert str(refused.value).startswith(f"connection {conn_id!r}: the {what} refused the login of {db.login!r}")
        assert "1045" in str(refused.value) or "password authentication failed" in str(refused.value)
        refused_at_once = pytest.raises(AirflowFailException, match=f"connection {conn_id!r}: the {what} refused")
        with refused_at_once, dag.permanent_errors_fail_at_once():  # no retries: a wrong password does not heal
            pipeline.extract(shop_db, state_db, RunContext(T0), RunParams())


REFUSE_INSERTS = {
    "sqlite": [
        "CREATE TRIGGER bo_refuse BEFORE INSERT ON bo_staged_line"
        " BEGIN SELECT RAISE(ABORT, 'the state database refuses the row'); END"
    ],
    "mysql": [
        "CREATE TRIGGER bo_refuse BEFORE INSERT ON bo_staged_line FOR EACH ROW"
        " SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'the state database refuses the row'"
    ],
    "postgres": [
        "CREATE FUNCTION bo_refuse() RETURNS trigger AS $$ BEGIN"
        " RAISE EXCEPTION 'the state database refuses the row'; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER bo_refuse BEFORE INSERT ON bo_staged_line FOR EACH ROW EXECUTE FUNCTION bo_refuse()",
    ],
}


@pytest.mark.parametrize("case", params(c for c in ERRORS if c.id == "insert-refused"))
def test_a_refused_insert_shows_no_customer_data(case: Case, shop, state_db: DbConnection, caplog) -> None:
    shop.product(1, datetime(2026, 3, 20))
    shop.order(1, [1], purchased=datetime(2026, 3, 1), name="Erika Mustermann", email="erika.mustermann@example.org")
    engine = sa.create_engine(state_db.url())
    st.migrate(engine)
    with engine.begin() as c:
        for statement in REFUSE_INSERTS[state_db.conn_type]:
            c.exec_driver_sql(statement)
    engine.dispose()
    caplog.set_level(logging.DEBUG)
    with pytest.raises(sa.exc.DBAPIError) as caught:
        pipeline.extract(shop.conn, state_db, RunContext(T0), RunParams())
    shown = "".join(traceback.format_exception(caught.value)) + caplog.text  # the task log: traceback and lines
    for personal in ("Erika", "Mustermann", "erika.mustermann"):
        assert personal not in shown
    assert "the state database refuses the row" in shown
    assert "[SQL parameters hidden due to hide_parameters=True]" in shown
