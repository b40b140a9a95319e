"""The DAG under a real scheduler: scheduled runs, the REST API, alerts to ops, a backfill and a clear.

`airflow standalone` (api-server, scheduler, dag-processor, triggerer; LocalExecutor) runs the DAG
from this repository on a fresh PostgreSQL metadata database, with the pipeline's state in another
PostgreSQL database. The `[backorder]` settings make the schedule catch up the last three days at
once (`catchup`, `start_date`), send ops alerts to a test address, and give runs a deadline short
enough that every run misses it. The schedule is daily at the hour about 12 hours from the test's
start (`reference_days`), so that no new scheduled run can appear while the test runs, whatever the
time of day it starts at (with `@daily` a test started before midnight would see a fourth). The test checks, as a data engineer would in the UI:

1. the schedule created the runs and each succeeded; the REST API lists their task instances, and
   write_snapshot_and_audit's log holds the run's summary; the customers got the right email each day;
   the snapshot task emitted the `backorder_snapshot` Asset with the run's counts, and the README's
   downstream DAG (docs/examples/backorder_report.py) ran on it;
2. a run that fails (a table prefix the shop lacks) emails ops through the failure callback, and
   runs past their deadline email ops through the deadline alert;
3. `airflow backfill create` over the same days (reprocessing completed runs) finishes and sends
   nothing twice, and neither does a cleared run.
Everything it started is stopped by process group, also when it fails.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections import defaultdict
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from include.backorder import state as st
from tests.airflow_stack import (
    RestApi,
    airflow_env,
    cli,
    free_port,
    pipeline_connections,
    postgres_url,
    standalone,
    wait_for,
)
from tests.conftest import ROOT, airflow_conn_json, server_database

DAG_ID = "backorder_notifications"
REPORT_DAG_ID = "backorder_report"  # docs/examples/backorder_report.py
OPS = "ops@shop.example"
RUNS = f"/api/v2/dags/{DAG_ID}/dagRuns"


def test_scheduled_runs_alerts_and_a_backfill(shop, tmp_path: Path, mail_sink) -> None:
    with ExitStack() as stack:
        run_the_stack(stack, shop, tmp_path, mail_sink)


def reference_days(now: datetime) -> tuple[str, list[datetime]]:
    """A daily cron at the hour 12 hours after `now`'s, and its last three ticks up to `now`.

    The next tick is 11 to 12 hours after `now`, far beyond the test's timeouts: the scheduler
    catches up exactly these three days, not a fourth that began while the test ran."""
    hour = (now.hour + 12) % 24
    last = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    if last > now:
        last -= timedelta(days=1)
    return f"0 {hour} * * *", [last - timedelta(days=2), last - timedelta(days=1), last]


def test_the_reference_days_leave_hours_before_the_next_tick() -> None:
    for hour in range(24):
        now = datetime(2026, 11, 30, hour, 59, 59, tzinfo=UTC)
        cron, days = reference_days(now)
        assert cron == f"0 {days[-1].hour} * * *"
        assert (days[1] - days[0], days[2] - days[1]) == (timedelta(days=1), timedelta(days=1))
        assert timedelta(hours=11) <= days[-1] + timedelta(days=1) - now <= timedelta(hours=12)


def run_the_stack(stack: ExitStack, shop, tmp_path: Path, mail_sink) -> None:
    schedule, days = reference_days(datetime.now(UTC))
    shop.product(1, days[-1] + timedelta(days=20))
    shop.order(1, [1], purchased=days[0] - timedelta(hours=14))
    shop.order(2, [1], purchased=days[0] + timedelta(hours=12), language="de")
    # reminder_interval_days is 2: order 1's first email on day 0, its reminder on day 2
    expected = {days[0].date(): {(1, "initial")}, days[1].date(): {(2, "initial")}, days[2].date(): {(1, "periodic")}}

    metadata = stack.enter_context(server_database("postgres", "airflow_db"))
    state = stack.enter_context(server_database("postgres", "backorder_state_db"))
    home, port = tmp_path / "airflow", free_port()
    connections = pipeline_connections(shop.path, airflow_conn_json(state), mail_sink.port)
    env = airflow_env(home, port, postgres_url(metadata), connections)
    # The dags folder: the DAG itself and the README's example of a DAG scheduled on its Asset.
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "backorder_notifications.py").symlink_to(ROOT / "dags" / "backorder_notifications.py")
    (dags / "backorder_report.py").symlink_to(ROOT / "docs" / "examples" / "backorder_report.py")
    env.update(
        {
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__BACKORDER__SCHEDULE": schedule,
            "AIRFLOW__BACKORDER__START_DATE": days[0].date().isoformat(),
            "AIRFLOW__BACKORDER__CATCHUP": "True",
            "AIRFLOW__BACKORDER__OPS_EMAIL": OPS,
            "AIRFLOW__BACKORDER__RUN_DEADLINE_MINUTES": "0.05",  # 3 s: every run misses it
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        }
    )

    def customer_emails() -> dict[Any, set[tuple[int, str]]]:
        got: dict[Any, set[tuple[int, str]]] = defaultdict(set)
        for m in mail_sink.messages:
            if m.message["X-Backorder-Notification"]:
                day = datetime.fromisoformat(m.message["X-Backorder-Reference-Time"]).date()
                got[day].add((int(m.message["X-Backorder-Order-Id"]), m.message["X-Backorder-Notification"]))
        return dict(got)

    def ops_subjects() -> list[str]:
        return [str(m.message["Subject"]) for m in mail_sink.messages if m.rcpt_tos == (OPS,)]

    def finished_runs() -> int:
        """Pipeline runs finished, as the state database records them (a run that failed early has none)."""
        engine = sa.create_engine(state.url())
        try:
            with engine.connect() as c:
                return int(c.execute(sa.select(sa.func.count()).where(st.runs.c.status == "finished")).scalar_one())
        finally:
            engine.dispose()

    stack.enter_context(standalone(env, tmp_path / "standalone.log"))
    api = RestApi(home, port)

    def runs(run_type: str) -> list[dict[str, Any]]:
        return [r for r in api.get(f"{RUNS}?limit=100")["dag_runs"] if r["run_type"] == run_type]

    def all_done(run_type: str, count: int) -> bool:
        found = runs(run_type)
        return len(found) >= count and all(r["state"] in ("success", "failed") for r in found)

    # What the UI shows of the DAG: its documentation, tags and owner.
    details = api.get(f"/api/v2/dags/{DAG_ID}/details")
    assert details["doc_md"].lstrip().startswith("### Backorder notifications")
    assert {t["name"] for t in details["tags"]} == {"backorder", "email", "shop"}
    assert details["owners"] == ["data"]

    # 1. The schedule catches up the three days, one run at a time.
    wait_for("the three scheduled runs to end", lambda: all_done("scheduled", 3), timeout=600, every=3)
    scheduled = sorted(runs("scheduled"), key=lambda r: r["logical_date"])
    assert [r["state"] for r in scheduled] == ["success"] * 3, scheduled
    assert [datetime.fromisoformat(r["logical_date"]) for r in scheduled] == days
    assert customer_emails() == expected

    for run in scheduled:
        check_run_in_the_api(api, run, expected)

    (asset,) = api.get("/api/v2/assets?name_pattern=backorder_snapshot")["assets"]
    events = api.get(f"/api/v2/assets/events?asset_id={asset['id']}&limit=100")["asset_events"]
    assert len(events) == 3
    assert sorted(e["extra"]["reference_time"] for e in events) == [d.isoformat() for d in days]
    assert all(e["extra"]["dry_run"] is False for e in events)

    # The example downstream DAG ran on the snapshots' Asset events and read their extra.
    check_downstream_dag(api)

    # 2. Alerts: every run missed its 3 s deadline; a failing run emails ops.
    wait_for("the deadline alerts", lambda: sum("is late" in s for s in ops_subjects()) >= 3, timeout=120)
    for run in scheduled:
        assert f"[backorder] {DAG_ID}: run {run['dag_run_id']} is late" in ops_subjects()
    failing = api.post(RUNS, {"logical_date": None, "conf": {"table_prefix": "nosuch_"}})
    wait_for(
        "the failing run to end", lambda: api.get(f"{RUNS}/{failing['dag_run_id']}")["state"] == "failed", timeout=180
    )
    failed_alert = f"[backorder] {DAG_ID}: run {failing['dag_run_id']} failed"
    wait_for("the failure alert", lambda: failed_alert in ops_subjects(), timeout=120)
    (alert,) = [m for m in mail_sink.messages if m.message["Subject"] == failed_alert]
    body = alert.message.get_body(("html",)).get_content()
    assert "extract_backorder_lines" in body

    # 3. A backfill over the same days, reprocessing the completed runs, and a cleared run: no email twice.
    cli(
        env,
        "backfill",
        "create",
        "--dag-id",
        DAG_ID,
        "--from-date",
        days[0].isoformat(),
        "--to-date",
        days[-1].isoformat(),
        "--reprocess-behavior",
        "completed",
        "--max-active-runs",
        "1",
    )

    def backfill_closed() -> bool:
        (backfill,) = api.get(f"/api/v2/backfills?dag_id={DAG_ID}")["backfills"]
        return backfill["completed_at"] is not None

    wait_for("the backfill to complete", backfill_closed, timeout=600, every=3)
    assert finished_runs() == 6
    backfilled = runs("backfill")
    assert sorted(datetime.fromisoformat(r["logical_date"]) for r in backfilled) == days
    assert [r["state"] for r in backfilled] == ["success"] * 3, backfilled
    cli(
        env,
        "tasks",
        "clear",
        DAG_ID,
        "--start-date",
        days[1].isoformat(),
        "--end-date",
        (days[1] + timedelta(hours=1)).isoformat(),
        "--yes",
    )
    # The backfill took the scheduled runs over (their run_type is now backfill); the cleared one runs again.
    wait_for("the cleared run to finish", lambda: finished_runs() == 7, timeout=300)
    wait_for("the cleared run to end", lambda: all_done("backfill", 3), timeout=120)
    assert [r["state"] for r in runs("backfill")] == ["success"] * 3
    assert customer_emails() == expected, "the backfill and the cleared run sent nothing again"
    events = api.get(f"/api/v2/assets/events?asset_id={asset['id']}&limit=100")["asset_events"]
    assert len(events) == 3, "one Asset event per T: the backfill and the cleared run wrote no first snapshot"


def check_run_in_the_api(api: RestApi, run: dict[str, Any], expected: dict[Any, set[tuple[int, str]]]) -> None:
    """A run's task instances succeeded (or were skipped); its snapshot task's log holds the run's summary."""
    run_path = f"{RUNS}/{urllib.parse.quote(run['dag_run_id'])}"
    tis = api.get(f"{run_path}/taskInstances?limit=100")["task_instances"]
    states = {(ti["task_id"], ti["map_index"]): ti["state"] for ti in tis}
    assert states[("write_snapshot_and_audit", -1)] == "success"
    assert set(states.values()) <= {"success", "skipped"}, states
    log = api.get(f"{run_path}/taskInstances/write_snapshot_and_audit/logs/1?full_content=true")
    text = json.dumps(log)
    t = datetime.fromisoformat(run["logical_date"])
    assert re.search(rf"finish: run \d+ at T={re.escape(t.isoformat())}", text), text[:2000]
    for _, kind in expected[t.date()]:
        assert f"sent     {kind}" in text, "the summary counts the run's emails"


def check_downstream_dag(api: RestApi) -> None:
    """docs/examples/backorder_report.py ran on the Asset events and logged their T and counts."""

    def report_runs() -> list[dict[str, Any]]:
        found = api.get(f"/api/v2/dags/{REPORT_DAG_ID}/dagRuns?limit=100")["dag_runs"]
        return found if found and all(r["state"] in ("success", "failed") for r in found) else []

    reports = wait_for("the downstream DAG to run", report_runs, timeout=180)
    assert {r["state"] for r in reports} == {"success"} and {r["run_type"] for r in reports} == {"asset_triggered"}
    runs = f"/api/v2/dags/{REPORT_DAG_ID}/dagRuns"
    paths = [
        f"{runs}/{urllib.parse.quote(r['dag_run_id'])}/taskInstances/report/logs/1?full_content=true" for r in reports
    ]
    logs = "".join(json.dumps(api.get(path)) for path in paths)
    assert logs.count("backorder snapshot at T=") >= 3 and "'sent': {" in logs, logs[:3000]
