"""
### Backorder notifications

Keeps customers who wait for backordered goods informed by email, in their language.

Each run stands for its **reference time** T (the logical date; a manual run without one uses
its `run_after`). It reads the shop through the `shop_db` connection, finds the orders in
`order_status_ids` that hold products whose `products_date_available` is later than T, compares
them with the previous snapshot (the latest one before T) and sends at most one email per order:

* `initial`: the order was never emailed: which items are on backorder, and that the customer
  will hear from us every `reminder_interval_days` days, or at once when a date changes;
* `changed`: an expected date changed since the previous snapshot (or a line is new);
* `periodic`: `reminder_interval_days` passed since the last email: still waiting, thank you;
* `available` (only with the `send_available` param): every date of a waiting order was reached
  or cleared while the order is still in the statuses: the goods are on their way.

Tasks: `extract_backorder_lines` -> `load_previous_snapshot` -> `classify` -> `choose_sends`
(branch) and `plan_<kind>` -> `send_initial` / `send_changed` / `send_periodic` /
`send_available` (skipped when nothing is due; each mapped over `send_parallelism` batches, one
SMTP connection each, at most 4 running at once) -> `write_snapshot_and_audit` -> `prune_state`.
Everything a run decided and sent is kept in the state database (`backorder_state_db`, else
`shop_db`): the run record, every email with the server's answer, and the snapshot. A repeated run
for the same T sends nothing twice. With `keep_days` set, `prune_state` then deletes what is older than
that before the latest snapshot, except everything of the orders that waited since.

For a kind with nothing due, the branch and the mapping agree (both read `classify`'s counts): the branch
skips its send task, and its `plan_<kind>` gives no batch. The branch is kept because it is where the run's
decision shows: the graph draws which send tasks run, and its log names them; the mapping needs its list
of batches either way, and an empty list is its own answer for nothing due.

**Operations** (the `[backorder]` section of the Airflow config, or `AIRFLOW__BACKORDER__<KEY>`):
`schedule` (cron, preset, or `none` for triggered runs only), `start_date`, `catchup`,
`keep_days` (unset: the state keeps everything); with `ops_email` set, a failed run and a run
still unfinished `run_deadline_minutes` after it was queued are emailed there over
`ops_smtp_conn_id`. The snapshot task emits the Asset
`backorder_snapshot` (extra: the run's id, T and counts) for downstream DAGs once per T, when it
writes the first snapshot at T: a dry run, a repeated run of T and a cleared try emit nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Asset, AssetAlias, dag, get_current_context, task

from include.backorder import KINDS
from include.backorder.airflow import (
    DAG_ID,
    RUNS_ALONE,
    dag_params,
    ops_alerts,
    permanent_errors_fail_at_once,
    read_settings,
    run_of,
    shop_db,
    smtp,
    state_db,
    unsubscribe_secret,
)
from include.backorder.config import MAX_PARALLEL_SENDS, send_batches

SETTINGS = read_settings()  # the [backorder] section of the Airflow config
SNAPSHOT_ASSET = Asset(name="backorder_snapshot", uri=f"backorder://{DAG_ID}/snapshot", group="backorder")
# The snapshot task's outlet. An Asset outlet would get an event on every success of the task (dry
# runs, cleared tries); through the alias, an event is added only when a snapshot was written.
SNAPSHOT_WRITTEN = AssetAlias(name="backorder_snapshot_written", group="backorder")

default_args = {
    "owner": "data",
    "retries": 3,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=20),
}


@dag(
    dag_id=DAG_ID,
    schedule=SETTINGS.schedule,
    start_date=SETTINGS.start_date,
    catchup=SETTINGS.catchup,
    max_active_runs=1,
    default_args=default_args,
    doc_md=__doc__,
    tags=["backorder", "email", "shop"],
    params=dag_params(),  # the library's run params (include/backorder/config.py, RunParams)
    **ops_alerts(SETTINGS),
)
def backorder_notifications() -> None:
    # The library (include/backorder/pipeline.py) is imported inside the tasks: parsing the DAG stays cheap.
    # Errors no retry can fix fail a task at once (permanent_errors_fail_at_once); other errors are retried.
    # A task that runs alone in its run (RUNS_ALONE) frees the run's lease when it fails or is killed; the send
    # batches run side by side, and their heartbeats decide (include/backorder/lease.py).

    @task
    def extract_backorder_lines() -> int:
        """Read the shop's backorder lines at T, compare them with the previous snapshot, and stage what changed
        and the orders to decide under a new run record; return its id."""
        from include.backorder import pipeline

        with permanent_errors_fail_at_once():
            run, params = run_of(get_current_context())
            return pipeline.extract(shop_db(), state_db(), run, params).run_id

    @task(**RUNS_ALONE)
    def load_previous_snapshot(record_id: int) -> dict[str, Any]:
        """The snapshot the run was compared with (the latest before T; extract compared and pinned it)."""
        from include.backorder import pipeline

        with permanent_errors_fail_at_once():
            return pipeline.load_previous_snapshot(state_db(), record_id)

    @task(**RUNS_ALONE)
    def classify(record_id: int, previous_snapshot: dict[str, Any]) -> dict[str, int]:
        """Decide each order's notification against the previous snapshot (pinned to the run record by the task
        before; read from there, so that a cleared classify compares with the same one); put the due ones in the
        outbox. Returns counts per kind."""
        from include.backorder import pipeline

        with permanent_errors_fail_at_once():
            return pipeline.classify_run(state_db(), record_id)

    @task.branch(retries=0)
    def choose_sends(due: dict[str, int]) -> list[str]:
        """Run only the send tasks that have something due; the others show as skipped."""
        return [f"send_{kind}" for kind in KINDS if due.get(kind)]

    @task(retries=0)
    def plan_batches(due: dict[str, int], kind: str) -> list[list[int]]:
        """The batches the kind's send task is mapped over: [index, batches] each, one SMTP connection each."""
        n = send_batches(due.get(kind, 0), int(get_current_context()["params"].get("send_parallelism", 1)))
        return [[i, n] for i in range(n)]

    @task(max_active_tis_per_dag=MAX_PARALLEL_SENDS)
    def send_notifications(record_id: int, kind: str, part: list[int]) -> dict[str, int]:
        """Send one batch of this run's due emails of one kind over one SMTP connection."""
        from include.backorder import pipeline

        with permanent_errors_fail_at_once():
            return pipeline.send(state_db(), record_id, kind, smtp(), unsubscribe_secret(), (part[0], part[1]))

    @task(trigger_rule="none_failed", outlets=[SNAPSHOT_WRITTEN], **RUNS_ALONE)
    def write_snapshot_and_audit(record_id: int) -> dict[str, Any]:
        """Keep the snapshot at T and complete the run's audit record; tell the Asset's consumers, once per T.

        Run again (cleared, retried), it changes nothing and emits nothing: the run is finished.
        """
        from include.backorder import pipeline

        with permanent_errors_fail_at_once():
            summary = pipeline.finish(state_db(), record_id)
        if summary["snapshot"] == "written":  # the first snapshot at T; not a dry run, a repeat or a cleared try
            get_current_context()["outlet_events"][SNAPSHOT_WRITTEN].add(SNAPSHOT_ASSET, extra=summary)
        return summary

    @task
    def prune_state() -> dict[str, int]:
        """Delete what the state database no longer needs, older than [backorder] keep_days before the latest
        snapshot, in batches; nothing when keep_days is unset. Returns the rows deleted per table."""
        from include.backorder import pipeline

        with permanent_errors_fail_at_once():
            return pipeline.prune_state(state_db(), SETTINGS.keep_days)

    record_id = extract_backorder_lines()
    previous_snapshot = load_previous_snapshot(record_id)
    due = classify(record_id, previous_snapshot)
    sends = [
        send_notifications.override(task_id=f"send_{kind}")
        .partial(record_id=record_id, kind=kind)
        .expand(part=plan_batches.override(task_id=f"plan_{kind}")(due, kind))
        for kind in KINDS
    ]
    # No value passes on these edges: the branch skips the send tasks of kinds with nothing due, and the
    # snapshot task reads what was sent from the state database.
    choose_sends(due) >> sends
    finished = write_snapshot_and_audit(record_id)
    sends >> finished
    finished >> prune_state()  # only after the run's snapshot and audit were written (all_success)


backorder_notifications()
