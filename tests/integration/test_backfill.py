"""A backfill over a week of missed days on a real scheduler.

`airflow standalone` runs the DAG from this repository with LocalExecutor; `airflow backfill create`
asks for the week; the emails of each day are checked as the SMTP sink received them.
(tests/integration/test_scheduler.py backfills days that already ran, and clears a run: no email twice.)
"""

from __future__ import annotations

import json
from collections import defaultdict
from contextlib import ExitStack
from datetime import datetime

import sqlalchemy as sa

from include.backorder import state as st
from tests.airflow_stack import airflow_env, cli, free_port, pipeline_connections, postgres_url, standalone, wait_for
from tests.conftest import server_database

DAYS = [f"2026-03-0{d}" for d in range(2, 9)]
EXPECTED = {
    "2026-03-02": {(1, "initial")},
    "2026-03-03": set(),
    "2026-03-04": {(1, "periodic"), (2, "initial")},
    "2026-03-05": set(),
    "2026-03-06": {(1, "periodic"), (2, "periodic")},
    "2026-03-07": set(),
    "2026-03-08": {(1, "periodic"), (2, "periodic")},
}


def test_backfill_a_week_of_missed_days(shop, tmp_path, mail_sink) -> None:
    with ExitStack() as stack:
        run_the_week(stack, shop, tmp_path, mail_sink)


def run_the_week(stack: ExitStack, shop, tmp_path, mail_sink) -> None:
    shop.product(1, datetime(2026, 3, 20))
    shop.order(1, [1], purchased=datetime(2026, 3, 1, 10))
    shop.order(2, [1], purchased=datetime(2026, 3, 3, 12), language="de")
    state_path = tmp_path / "state.sqlite"
    metadata = stack.enter_context(server_database("postgres", "airflow_db"))
    state_json = json.dumps({"conn_type": "sqlite", "host": str(state_path)})
    connections = pipeline_connections(shop.path, state_json, mail_sink.port)
    env = airflow_env(tmp_path / "airflow", free_port(), postgres_url(metadata), connections)
    state = sa.create_engine(f"sqlite:///{state_path}")

    def finished_runs_in_march() -> int:
        if not state_path.exists() or not sa.inspect(state).has_table("bo_run"):
            return 0
        with state.connect() as c:
            return int(
                c.execute(
                    sa.select(sa.func.count()).where(
                        st.runs.c.status == "finished", st.runs.c.reference_time < datetime(2026, 4, 1)
                    )
                ).scalar_one()
            )

    def emails_by_day() -> dict[str, set[tuple[int, str]]]:
        got: dict[str, set[tuple[int, str]]] = defaultdict(set)
        for m in mail_sink.messages:
            day = m.message["X-Backorder-Reference-Time"][:10]
            got[day].add((int(m.message["X-Backorder-Order-Id"]), m.message["X-Backorder-Notification"]))
        return {day: got.get(day, set()) for day in DAYS}

    with standalone(env, tmp_path / "standalone.log"):
        wait_for(
            "the DAG to be parsed",
            lambda: "backorder_notifications" in cli(env, "dags", "list", "-o", "plain"),
            timeout=120,
        )
        cli(env, "dags", "unpause", "backorder_notifications")
        backfill = [
            "backfill",
            "create",
            "--dag-id",
            "backorder_notifications",
            "--from-date",
            DAYS[0],
            "--to-date",
            DAYS[-1],
            "--max-active-runs",
            "1",
        ]
        cli(env, *backfill)
        wait_for("the week's 7 runs to finish", lambda: finished_runs_in_march() >= 7, timeout=600, every=3)
        assert emails_by_day() == EXPECTED
        assert len(mail_sink.messages) == 7

    with state.connect() as c:
        references = [
            r.reference_time.date().isoformat()
            for r in c.execute(
                sa.select(st.runs.c.reference_time)
                .where(st.runs.c.reference_time < datetime(2026, 4, 1))
                .order_by(st.runs.c.id)
            )
        ]
    state.dispose()
    assert references == DAYS, "each day ran in order, against the snapshots before it"
