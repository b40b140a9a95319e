"""An example downstream DAG: runs whenever backorder_notifications has written a fresh snapshot.

The Asset gets one event per reference time T, from the run that wrote the first snapshot at T;
dry runs, repeated runs of T and cleared tasks emit none, so each event is a new day's data.
Copy it into your dags folder and replace the logging with your own work (a report, a purchasing
list). tests/integration/test_scheduler.py runs it beside the real DAG.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import Asset, dag, task

# The Asset as backorder_notifications declares it (name and URI).
SNAPSHOT = Asset(name="backorder_snapshot", uri="backorder://backorder_notifications/snapshot")
log = logging.getLogger(__name__)


@dag(schedule=[SNAPSHOT], tags=["backorder"])
def backorder_report() -> None:
    @task
    def report(*, triggering_asset_events: Any = None) -> None:
        events = triggering_asset_events[SNAPSHOT]
        log.info("%d backorder snapshot(s)", len(events))
        for event in events:
            log.info("backorder snapshot at T=%s: %s", event.extra["reference_time"], event.extra["counts"])

    report()


backorder_report()
