"""The one adapter between Airflow and the library: it turns Airflow into the library's plain values.

The DAG file (dags/) and the UI plugin (plugins/) import it; nothing under include/ does, so the rest of
the library imports and tests without Airflow. It holds what both need and nothing of the run itself:

- the names of the DAG's contract: `DAG_ID`, the connection ids (`SHOP_CONN_ID`, `STATE_CONN_ID`,
  `SMTP_CONN_ID`) and the Variable of the unsubscribe secret;
- the `[backorder]` section of the Airflow config (`read_settings()`: schedule, start date, catch-up,
  ops alerts, retention), and the ops alerts it asks for (`ops_alerts()`);
- the DAG's params, made from the library's (`dag_params()`, from config.param_specs());
- connections as the library's values: `DbConnection`, the state database rule (`state_db()`:
  `backorder_state_db`, else `shop_db`), `SmtpSettings`; a run's context as `RunContext` and `RunParams`;
- what the library's errors mean to Airflow (`permanent_errors_fail_at_once()`), and the callback that
  frees a run's lease when a task that runs alone fails (`RUNS_ALONE`).

Airflow's SDK is imported at the top (the DAG file loads it anyway); the library's heavier modules (db, lease,
shop, mailer) only inside the functions that need them, so that parsing the DAG stays cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseHook, Param, Variable, conf
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

from include.backorder.config import (
    MAX_DAYS,
    ConfigError,
    DbConnection,
    RunContext,
    RunParams,
    SmtpSettings,
    check_conf_keys,
    param_specs,
)

log = logging.getLogger(__name__)

DAG_ID = "backorder_notifications"
SHOP_CONN_ID = "shop_db"
STATE_CONN_ID = "backorder_state_db"  # optional: without it, the state lives in the shop database
SMTP_CONN_ID = "smtp_default"
UNSUBSCRIBE_SECRET_VARIABLE = "backorder_unsubscribe_secret"
SECTION = "backorder"  # of the Airflow config: [backorder], or AIRFLOW__BACKORDER__<KEY>


# --- the [backorder] settings --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The `[backorder]` section of the Airflow config: when the DAG runs, whom it tells when a run fails, and
    how long the state database keeps what it no longer needs."""

    schedule: str | None = "@daily"  # cron or preset; None: triggered runs only (`none` in the config)
    start_date: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    catchup: bool = False
    ops_email: str = ""  # empty: no ops alerts
    ops_smtp_conn_id: str = SMTP_CONN_ID
    run_deadline: timedelta = timedelta(minutes=120)  # after a run was queued, it is late
    keep_days: int | None = None  # prune_state deletes what is older (state/retention.py); None: keep everything


def read_settings() -> Settings:
    """The `[backorder]` settings; a start_date that is no ISO date, or a keep_days that is no whole number of
    days from 1 to 36500, is a ValueError that names the setting."""
    schedule = _setting("schedule", "@daily")
    start_text = _setting("start_date", "2026-01-01")
    try:
        start = datetime.fromisoformat(start_text)
    except ValueError:
        raise ValueError(f"[backorder] start_date: {start_text!r} is not an ISO date such as 2026-01-01") from None
    return Settings(
        schedule=None if schedule.lower() == "none" else schedule,
        start_date=start if start.tzinfo else start.replace(tzinfo=UTC),
        catchup=conf.getboolean(SECTION, "catchup", fallback=False),
        ops_email=_setting("ops_email", ""),
        ops_smtp_conn_id=_setting("ops_smtp_conn_id", SMTP_CONN_ID),
        run_deadline=timedelta(minutes=conf.getfloat(SECTION, "run_deadline_minutes", fallback=120.0)),
        keep_days=_keep_days(_setting("keep_days", "")),
    )


def _keep_days(text: str) -> int | None:
    """`[backorder] keep_days`: empty (unset) keeps everything; else whole days, from 1 to MAX_DAYS."""
    if not text:
        return None
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_DAYS:
        raise ValueError(
            f"[backorder] keep_days: {text!r} is not a whole number of days from 1 to {MAX_DAYS}"
            " (leave it unset to keep everything)"
        )
    return int(text)


def _setting(key: str, default: str) -> str:
    return str(conf.get(SECTION, key, fallback=default)).strip()


# The failure callback runs in the dag-processor with the run's context (at least dag, run_id, reason);
# the deadline callback runs in the triggerer with dag_run (the REST API's DAGRun fields) and deadline.
FAILED_SUBJECT = "[backorder] {{ dag.dag_id }}: run {{ run_id }} failed"
FAILED_BODY = """<p>The run <b>{{ run_id }}</b> of <b>{{ dag.dag_id }}</b> failed ({{ reason }})
{%- if ti is defined %}; the last task was <b>{{ ti.task_id }}</b>{% endif %}.</p>
<p>Open the run in the Airflow UI and read the failed task's log. Every email that went out is recorded in
the state database (bo_notification); clearing the failed task sends only what is still due.</p>"""
LATE_SUBJECT = "[backorder] {{ dag_run.dag_id }}: run {{ dag_run.dag_run_id }} is late"
LATE_BODY = """<p>The run <b>{{ dag_run.dag_run_id }}</b> of <b>{{ dag_run.dag_id }}</b>, queued at
{{ dag_run.queued_at }}, had not finished by {{ deadline.deadline_time }} ([backorder] run_deadline_minutes
after it was queued).</p>
<p>Read its running task's log in the Airflow UI: a slow shop database or SMTP server shows there.</p>"""


def ops_alerts(settings: Settings) -> dict[str, Any]:
    """The DAG's arguments for ops alerts: with an ops address configured, an email when a run fails
    and one when a run is late (over the SMTP provider's notifier); without one, none."""
    if not settings.ops_email:
        return {}
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier
    from airflow.sdk.definitions.callback import AsyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    to, conn_id = settings.ops_email, settings.ops_smtp_conn_id
    late = {"to": to, "smtp_conn_id": conn_id, "subject": LATE_SUBJECT, "html_content": LATE_BODY}
    return {
        "on_failure_callback": SmtpNotifier(
            to=to, smtp_conn_id=conn_id, subject=FAILED_SUBJECT, html_content=FAILED_BODY
        ),
        "deadline": DeadlineAlert(
            reference=DeadlineReference.DAGRUN_QUEUED_AT,
            interval=settings.run_deadline,
            callback=AsyncCallback(SmtpNotifier, kwargs=late),
        ),
    }


# --- params --------------------------------------------------------------------------------------------------------


def dag_params() -> dict[str, Param]:
    """The DAG's params, made from the library's (config.RunParams' fields): names, defaults, JSON Schemas,
    descriptions and trigger form sections, in the form's order."""
    return {s.name: Param(s.default, description=s.description, **s.json_schema()) for s in param_specs()}


def run_of(context: Mapping[str, Any]) -> tuple[RunContext, RunParams]:
    """Which run this is and its params, from a task's context. T is the logical date, else (a manual run
    without one) the run's `run_after`. A run conf key that is no param is a ConfigError: Airflow merges any
    key into the params, and a typo (`dryrun`) would otherwise run with the defaults."""
    dag_run = context["dag_run"]
    check_conf_keys(dag_run.conf, context["dag"].params.keys())
    run = RunContext(
        reference_time=context.get("logical_date") or dag_run.run_after,
        dag_id=dag_run.dag_id,
        dag_run_id=dag_run.run_id,
    )
    return run, RunParams.from_mapping(dict(context["params"]))


# --- connections ---------------------------------------------------------------------------------------------------


def task_connection(conn_id: str) -> Any:
    """An Airflow connection as a task sees it (the Task SDK: secrets backends, the API server)."""
    return BaseHook.get_connection(conn_id)


def server_connection(conn_id: str) -> Any:
    """An Airflow connection as the api-server sees it (secrets backends, then the metadata database)."""
    from airflow.models.connection import Connection

    return Connection.get_connection_from_secrets(conn_id)


def db(conn_id: str, get_connection: Callable[[str], Any] = task_connection) -> DbConnection:
    """A database connection as the library's DbConnection."""
    return DbConnection.from_airflow(get_connection(conn_id))


def shop_db() -> DbConnection:
    return db(SHOP_CONN_ID)


def state_db(get_connection: Callable[[str], Any] = task_connection) -> DbConnection:
    """The state database: the `backorder_state_db` connection, else the shop's (`shop_db`).

    Raises AirflowNotFoundException naming both when neither is defined."""
    for conn_id in (STATE_CONN_ID, SHOP_CONN_ID):
        try:
            return db(conn_id, get_connection)
        except AirflowNotFoundException:
            continue
    raise AirflowNotFoundException(f"Neither the {STATE_CONN_ID!r} nor the {SHOP_CONN_ID!r} connection is defined")


def smtp() -> SmtpSettings:
    """The SMTP provider's connection `smtp_default` as SmtpSettings (its extras as SmtpHook reads them:
    see SmtpSettings.from_airflow)."""
    return SmtpSettings.from_airflow(task_connection(SMTP_CONN_ID))


def unsubscribe_secret() -> str | None:
    """The secret that signs one-click opt-out links, or None (no such links)."""
    secret = Variable.get(UNSUBSCRIBE_SECRET_VARIABLE, default=None)
    return None if secret is None else str(secret)


# --- errors and callbacks ------------------------------------------------------------------------------------------


@contextmanager
def permanent_errors_fail_at_once() -> Iterator[None]:
    """Errors no retry can fix (bad params or connection settings, a refused database login, missing tables,
    a run that lost its lease) fail the task without its retries (AirflowFailException); so does a refused
    SMTP login, which retries could turn into a locked account. Any other error fails the try, and the
    task's retries may help (a database or SMTP server down, a lost connection)."""
    from include.backorder.lease import RunAbandonedError
    from include.backorder.mailer import SMTPAuthenticationRefused
    from include.backorder.shop import ShopSchemaError

    try:
        yield
    # ConfigError includes db.LoginRefusedError (a refused database login).
    except (ConfigError, ShopSchemaError, RunAbandonedError, SMTPAuthenticationRefused) as exc:
        raise AirflowFailException(str(exc)) from None


def free_the_lease(context: Mapping[str, Any]) -> None:
    """A task that runs alone failed, was killed or was marked failed: nothing of its run runs now, so a
    later run may take the lease over at once (include/backorder/lease.py). Never raises: a callback must
    not fail, and the lease's heartbeat timeout still applies."""
    from include.backorder import db as database
    from include.backorder import lease

    try:
        engine = database.engine(state_db())
        try:
            with engine.begin() as conn:
                run_id = lease.task_ended(conn, context["dag"].dag_id, context["run_id"], lease.POLICY.clock())
        finally:
            engine.dispose()
        if run_id is not None:
            log.info("lease: run %d marked failed; a later run may take over", run_id)
    except Exception as exc:
        log.warning("lease: could not mark the run failed: %s", exc)


# The task arguments of a task that runs alone in its DAG run (the send batches run side by side: their
# heartbeats decide).
RUNS_ALONE: dict[str, Any] = {"on_failure_callback": free_the_lease, "on_retry_callback": free_the_lease}
