"""The real DAG, run with `dag.test()` day after day against a SQLite shop; emails received by aiosmtpd."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from include.backorder import state as st
from tests.conftest import airflow_conn_json

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def naive(days: float) -> datetime:
    return (T0 + timedelta(days=days)).replace(tzinfo=None)


def smtp_env(monkeypatch, mail_sink) -> None:
    smtp = {"disable_ssl": True, "disable_tls": True, "from_email": "Shop <shop@example.com>"}
    conn = {"conn_type": "smtp", "host": "127.0.0.1", "port": mail_sink.port, "extra": smtp}
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps(conn))


@pytest.fixture
def world(shop, state_db, mail_sink, monkeypatch, dag):
    """The shop of the story below, and the three connections as AIRFLOW_CONN_* JSON."""
    shop.product(1, naive(10))
    shop.product(2, naive(20))
    shop.product(3, "0000-00-00 00:00:00")
    shop.product(4, "0001-01-01 00:00:00")
    shop.product(5, None)
    shop.product(6, naive(-1))
    shop.product(7, naive(1))
    shop.product(8, "1000-01-01 00:00:00")
    shop.order(101, [1, 3], purchased=naive(-2), name="Ann Smith")
    shop.order(102, [2, 7], purchased=naive(-1), status=2, language="de", name="Jürgen Müller", quantity=2)
    shop.order(103, [1], purchased=naive(-3), status=3)
    shop.order(104, [1], purchased=naive(-3), email="")
    shop.order(105, [5, 4, 6, 8, 3], purchased=naive(-3))
    shop.order(106, [1], purchased=naive(0.5), language="de", name="Käthe Groß")
    shop.order(107, [2], purchased=naive(-40), language="", name="Bob Jones")
    monkeypatch.setenv("AIRFLOW_CONN_SHOP_DB", json.dumps({"conn_type": "sqlite", "host": str(shop.path)}))
    monkeypatch.setenv("AIRFLOW_CONN_BACKORDER_STATE_DB", airflow_conn_json(state_db))
    smtp_env(monkeypatch, mail_sink)
    for task in dag.tasks:
        task.retries = 0  # a failure should fail the test at once, not wait for a retry delay
    return shop


def run(dag, mail_sink, day: float | None, **conf) -> tuple[Any, list]:
    mail_sink.clear()
    logical = None if day is None else T0 + timedelta(days=day)
    dag_run = dag.test(logical_date=logical, run_conf=dag.default_conf | conf)
    assert dag_run.state == "success"
    return dag_run, list(mail_sink.messages)


def seen(messages) -> set[tuple]:
    """(order, kind, language, listed expected dates) for each email, from its headers and text."""
    out = set()
    for m in messages:
        msg = m.message
        text = msg.get_body(("plain",)).get_content()
        # Each item is "  - <qty> x <name> (<model>)" and, below it, "    expected <date> ...".
        dates = tuple(line.strip() for line in text.splitlines() if line.startswith("    "))
        out.add((int(msg["X-Backorder-Order-Id"]), msg["X-Backorder-Notification"], msg["Content-Language"], dates))
    return out


def task_states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def test_a_week_of_runs(dag, world, mail_sink, state_db) -> None:
    # Day 0: every waiting order is told for the first time; the order without an address is skipped.
    dag_run, messages = run(dag, mail_sink, 0)
    assert seen(messages) == {
        (101, "initial", "en", ("expected Mar 12, 2026",)),
        (102, "initial", "de", ("voraussichtlich 22.03.2026", "voraussichtlich 03.03.2026")),
        (107, "initial", "en", ("expected Mar 22, 2026",)),
    }
    states = task_states(dag_run)
    assert states["send_initial"] == "success"
    assert states["send_changed"] == states["send_periodic"] == "skipped"
    assert states["write_snapshot_and_audit"] == "success"
    by_order = {int(m.message["X-Backorder-Order-Id"]): m.message for m in messages}
    de = by_order[102]
    assert de["To"] == "Jürgen Müller <customer102@example.com>"
    assert de["From"] == "Shop <shop@example.com>"
    assert de["Subject"] == "Ihre Bestellung 102: einige Artikel kommen später"
    assert de["Message-ID"] == "<backorder.102.initial.20260302T000000Z@example.com>"
    assert de["X-Backorder-Reference-Time"] == "2026-03-02T00:00:00+00:00"
    assert "2 × Product 2 (M-2)" in de.get_body(("plain",)).get_content()

    # Day 1: product 7's date is reached (not later than T): it leaves; order 106 is new.
    _, messages = run(dag, mail_sink, 1)
    assert seen(messages) == {(106, "initial", "de", ("voraussichtlich 12.03.2026",))}

    # Day 2: product 2 is postponed: its orders hear of it; order 101 is due for its reminder.
    world.set_date(2, naive(25))
    dag_run, messages = run(dag, mail_sink, 2)
    assert seen(messages) == {
        (101, "periodic", "en", ("expected Mar 12, 2026",)),
        (102, "changed", "de", ("voraussichtlich 27.03.2026 (bisher: 22.03.2026)",)),
        (107, "changed", "en", ("expected Mar 27, 2026 (before: Mar 22, 2026)",)),
    }
    assert task_states(dag_run)["send_initial"] == "skipped"

    # Day 3: order 106's reminder (two days after its first email); a repeat of the run sends nothing.
    _, messages = run(dag, mail_sink, 3)
    assert seen(messages) == {(106, "periodic", "de", ("voraussichtlich 12.03.2026",))}
    dag_run, messages = run(dag, mail_sink, 3)
    assert messages == []
    assert set(task_states(dag_run).values()) == {"success", "skipped"}

    # Day 4: the others' reminders.
    _, messages = run(dag, mail_sink, 4)
    assert {(o, k) for o, k, _, _ in seen(messages)} == {(101, "periodic"), (102, "periodic"), (107, "periodic")}

    engine = sa.create_engine(state_db.url())
    with engine.connect() as c:
        runs = c.execute(sa.select(st.runs).order_by(st.runs.c.id)).mappings().all()
        sent = c.execute(sa.select(sa.func.count()).where(st.notifications.c.status == "sent")).scalar_one()
        skipped = c.execute(sa.select(st.notifications.c.orders_id).where(st.notifications.c.status == "skipped")).all()
    engine.dispose()
    assert [r["reference_time"].day for r in runs] == [2, 3, 4, 5, 5, 6]
    assert all(r["status"] == "finished" and r["dag_id"] == "backorder_notifications" for r in runs)
    assert json.loads(runs[0]["counts"])["sent"] == {"initial": {"de": 1, "en": 2}}
    assert json.loads(runs[4]["counts"])["handled_by_earlier_runs_at_this_T"] == 2  # 106's periodic, 104's skip
    assert sent == 3 + 1 + 3 + 1 + 3
    assert {row.orders_id for row in skipped} == {104}


def test_dry_run_sends_nothing_and_changes_no_state(dag, world, mail_sink, state_db) -> None:
    _, messages = run(dag, mail_sink, 0, dry_run=True)
    assert messages == []
    _, messages = run(dag, mail_sink, 0)
    assert {(o, k) for o, k, _, _ in seen(messages)} == {(101, "initial"), (102, "initial"), (107, "initial")}


def test_params_from_the_run_conf(dag, world, mail_sink) -> None:
    # Order 107 was purchased 40 days before T: too old for max_order_age_days=30.
    _, messages = run(dag, mail_sink, 0, max_order_age_days=30, default_language="de")
    assert {(o, k, lang) for o, k, lang, _ in seen(messages)} == {(101, "initial", "en"), (102, "initial", "de")}
    # Without the age limit 107 counts; it stores no language, so it gets default_language.
    # Order 102 is in status 2, which this run does not select.
    _, messages = run(dag, mail_sink, 1, order_status_ids=[1], default_language="de")
    assert {(o, k, lang) for o, k, lang, _ in seen(messages)} == {(106, "initial", "de"), (107, "initial", "de")}


def test_available_and_branding_from_the_run_conf(dag, world, mail_sink) -> None:
    conf = {
        "send_available": True,
        "shop_name": "Trailhead Outdoor",
        "brand_color": "#2f6b3a",
        "order_url": "https://trailhead.example/account_history_info.php?order_id={order_id}",
    }
    run(dag, mail_sink, 0, **conf)
    world.set_date(1, naive(0.5))  # order 101's only backordered product arrives before day 1
    dag_run, messages = run(dag, mail_sink, 1, **conf)
    assert {(o, k) for o, k, _, _ in seen(messages)} == {(101, "available")}
    assert task_states(dag_run)["send_available"] == "success"
    assert task_states(dag_run)["send_periodic"] == "skipped"
    html = messages[0].message.get_body(("html",)).get_content()
    assert "Trailhead Outdoor</span>" in html and "background-color: #2f6b3a" in html
    assert 'href="https://trailhead.example/account_history_info.php?order_id=101"' in html


def test_send_parallelism_maps_a_kind_over_batches_each_email_once(dag, world, mail_sink, monkeypatch) -> None:
    from include.backorder import config

    monkeypatch.setattr(config, "MIN_BATCH", 1)  # 3 emails make 3 batches here, not 1 per 500
    dag_run, messages = run(dag, mail_sink, 0, send_parallelism=3)
    assert sorted(o for o, _, _, _ in seen(messages)) == [101, 102, 107]
    assert len(messages) == 3
    batches = [ti for ti in dag_run.get_task_instances() if ti.task_id == "send_initial"]
    assert sorted((ti.map_index, str(ti.state)) for ti in batches) == [(0, "success"), (1, "success"), (2, "success")]


def test_a_run_without_logical_date_uses_run_after(dag, world, mail_sink) -> None:
    # A triggered run without a logical date, as the UI's "Trigger" makes one: its T is its run_after,
    # given here (not the wall clock's), so that the outcome does not depend on the day the test runs.
    world.product(9, naive(60))
    world.order(108, [9], purchased=naive(29))
    mail_sink.clear()
    run_after = T0 + timedelta(days=30, hours=9, minutes=30)
    dag_run = dag.test(logical_date=None, run_after=run_after, run_conf=dag.default_conf)
    assert dag_run.state == "success"
    by_order = {int(m.message["X-Backorder-Order-Id"]): m.message for m in mail_sink.messages}
    assert by_order[108]["X-Backorder-Reference-Time"] == "2026-04-01T09:30:00+00:00"
    # At that T the March dates of the other products are past: only 108 waits.
    assert set(by_order) == {108}


def test_without_a_state_connection_the_state_lives_in_the_shop_database(shop, mail_sink, monkeypatch, dag) -> None:
    shop.product(1, naive(10))
    shop.order(1, [1], purchased=naive(-1))
    monkeypatch.setenv("AIRFLOW_CONN_SHOP_DB", json.dumps({"conn_type": "sqlite", "host": str(shop.path)}))
    monkeypatch.delenv("AIRFLOW_CONN_BACKORDER_STATE_DB", raising=False)
    smtp_env(monkeypatch, mail_sink)
    for task in dag.tasks:
        task.retries = 0
    _, messages = run(dag, mail_sink, 0)
    assert [m.message["X-Backorder-Notification"] for m in messages] == ["initial"]
    assert {"bo_run", "bo_notification", "bo_snapshot"} <= set(sa.inspect(shop.engine).get_table_names())


def snapshot_events() -> list[dict[str, Any]]:
    """The extras of every `backorder_snapshot` Asset event in the metadata database, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        query = (
            sa.select(AssetEvent.extra)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.name == "backorder_snapshot")
            .order_by(AssetEvent.id)
        )
        return [dict(extra) for extra in session.scalars(query)]


def clear_and_run(dag, dag_run, task_id: str) -> str:
    """Clear one task instance, as the UI's Clear without Downstream does, and run its next try here."""
    from airflow.models.taskinstance import TaskInstance, clear_task_instances
    from airflow.sdk.definitions.dag import _run_task
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState

    def this_ti(session):
        query = sa.select(TaskInstance).where(
            TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == dag_run.run_id, TaskInstance.task_id == task_id
        )
        return session.scalar(query)

    with create_session() as session:
        clear_task_instances([this_ti(session)], session, dag_run_state=False)
    with create_session() as session:
        ti = this_ti(session)
        ti.try_number += 1  # what the scheduler does when it schedules the cleared task
        ti.state = TaskInstanceState.SCHEDULED
        session.commit()
        session.refresh(ti)
        session.expunge(ti)
    _run_task(ti=ti, task=dag.task_dict[task_id])
    with create_session() as session:
        ti = this_ti(session)
        return f"{ti.state} try {ti.try_number}"


@pytest.mark.parametrize("state_db", ["sqlite"], indirect=True)  # the library tests cover MariaDB and PostgreSQL
def test_clearing_the_snapshot_task_changes_nothing_and_emits_no_asset_event(dag, world, mail_sink) -> None:
    """Findings 14 and 15: a cleared write_snapshot_and_audit emptied the snapshot and emitted the Asset again."""
    before = len(snapshot_events())
    dag_run, messages = run(dag, mail_sink, 0)
    assert {o for o, _, _, _ in seen(messages)} == {101, 102, 107}
    (event,) = snapshot_events()[before:]
    assert (event["reference_time"], event["snapshot"]) == (T0.isoformat(), "written")
    assert event["counts"]["sent"] == {"initial": {"de": 1, "en": 2}}

    assert clear_and_run(dag, dag_run, "write_snapshot_and_audit") == "success try 2"
    assert len(snapshot_events()) == before + 1, "the cleared try emits no second event"

    _, messages = run(dag, mail_sink, 1, dry_run=True)
    assert messages == [] and len(snapshot_events()) == before + 1, "a dry run emits nothing"

    _, messages = run(dag, mail_sink, 1)
    assert seen(messages) == {(106, "initial", "de", ("voraussichtlich 12.03.2026",))}, "no false `changed`"
    assert [e["reference_time"] for e in snapshot_events()[before:]] == [
        T0.isoformat(),
        (T0 + timedelta(days=1)).isoformat(),
    ]


def test_prune_state_deletes_what_is_older_than_keep_days(world, mail_sink, state_db, monkeypatch) -> None:
    """`[backorder] keep_days` 1, read when the DAG file is parsed: every run ends with prune_state, and after the
    fourth day only the snapshots from the cutoff on are left."""
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import ROOT

    monkeypatch.setenv("AIRFLOW__BACKORDER__KEEP_DAYS", "1")
    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    dag = bag.dags["backorder_notifications"]
    dag.default_conf = {**dag.params.dump()}  # type: ignore[attr-defined]
    for task in dag.tasks:
        task.retries = 0
    for day in range(4):
        dag_run, _ = run(dag, mail_sink, day)
        assert task_states(dag_run)["prune_state"] == "success"
    engine = sa.create_engine(state_db.url())
    with engine.connect() as c:
        kept = c.execute(sa.select(st.snapshots.c.reference_time).order_by(st.snapshots.c.reference_time)).scalars()
        assert list(kept) == [naive(2), naive(3)]  # the cutoff is day 2, the latest snapshot's T less a day
        assert c.execute(sa.select(sa.func.count()).select_from(st.runs)).scalar_one() == 4  # each is still referenced
    engine.dispose()
