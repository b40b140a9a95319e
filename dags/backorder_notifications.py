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
SMTP connection each, at most 4 running at once) -> `write_snapshot_and_audit`. Everything a
run decided and sent is kept in the state database (`backorder_state_db`, else `shop_db`): the
run record, every email with the server's answer, and the snapshot. A repeated run for the same T sends nothing twice.

**Operations** (the `[backorder]` section of the Airflow config, or `AIRFLOW__BACKORDER__<KEY>`):
`schedule` (cron, preset, or `none` for triggered runs only), `start_date`, `catchup`; with
`ops_email` set, a failed run and a run still unfinished `run_deadline_minutes` after it was
queued are emailed there over `ops_smtp_conn_id`. The snapshot task emits the Asset
`backorder_snapshot` (extra: the run's id, T and counts) for downstream DAGs once per T, when it
writes the first snapshot at T: a dry run, a repeated run of T and a cleared try emit nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import available_timezones

from airflow.sdk import Asset, AssetAlias, BaseHook, Param, Variable, conf, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowNotFoundException

SHOP_CONN_ID = "shop_db"
STATE_CONN_ID = "backorder_state_db"
SMTP_CONN_ID = "smtp_default"
UNSUBSCRIBE_SECRET_VARIABLE = "backorder_unsubscribe_secret"
KINDS = ("initial", "changed", "periodic", "available")
# Optional text params also take null: the UI's trigger form sends an empty text field as null, and a
# plain "string" type would keep its Trigger button disabled until every such field is filled.
TEXT = ["null", "string"]
# The params' patterns: the same strings as include/backorder/config.py's PATTERNS, which validates them again
# in the library (tests/dags/test_dag_integrity.py checks that they agree). Anchored with `$(?!\n)`: the end of
# the text in Python and ECMA 262 alike (a bare `$` lets a final newline through). Addresses and URLs reach
# the List-Unsubscribe header and links, so they are printable ASCII without spaces or line breaks.
_END = r"$(?!\n)"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_ADDRESS = rf"^(?:[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]+@{_LABEL}(?:\.{_LABEL})+)?{_END}"
_URL = rf"^(?:https://[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+)?{_END}"
_ORDER_URL = rf"^(?:https://[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%{{}}]*\{{order_id\}}[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%{{}}]*)?{_END}"
_PREFIX = rf"^[A-Za-z0-9_]*{_END}"
_COLOR = rf"^#(?:[0-9A-Fa-f]{{3}}){{1,2}}{_END}"
MAX_ID = 2**31 - 1  # the shops' ids are 32-bit integers (a larger one fails the query on SQLite)
MAX_DAYS = 36500  # day counts become timedeltas from T: beyond a hundred years they leave the calendar
# The form offers the IANA zones to choose from (a typo is flagged before the run starts); without a zone
# database on the machine (no tzdata), the library's check at the first task is the only one.
ZONES = sorted(available_timezones())
MAX_PARALLEL_SENDS = 4  # send tasks running at once in one DAG, at most (each holds an SMTP connection)
MIN_BATCH = 500  # emails per batch at least: a smaller kind is sent by one task
# The languages are the template folders (include/backorder/__init__.py reads them the same way).
TEMPLATES = Path(__file__).resolve().parents[1] / "include" / "templates"
LANGUAGES = sorted(p.name for p in TEMPLATES.glob("*") if p.is_dir())


def _setting(key: str, default: str) -> str:
    return str(conf.get("backorder", key, fallback=default)).strip()


def _start_date(value: str) -> datetime:
    try:
        start = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"[backorder] start_date: {value!r} is not an ISO date such as 2026-01-01") from None
    return start if start.tzinfo else start.replace(tzinfo=UTC)


_SCHEDULE = _setting("schedule", "@daily")
SCHEDULE = None if _SCHEDULE.lower() == "none" else _SCHEDULE  # none: only triggered runs
START_DATE = _start_date(_setting("start_date", "2026-01-01"))
CATCHUP = conf.getboolean("backorder", "catchup", fallback=False)
OPS_EMAIL = _setting("ops_email", "")
OPS_SMTP_CONN_ID = _setting("ops_smtp_conn_id", SMTP_CONN_ID)
RUN_DEADLINE = timedelta(minutes=conf.getfloat("backorder", "run_deadline_minutes", fallback=120.0))
SNAPSHOT_ASSET = Asset(name="backorder_snapshot", uri="backorder://backorder_notifications/snapshot", group="backorder")
# The snapshot task's outlet. An Asset outlet would get an event on every success of the task (dry
# runs, cleared tries); through the alias, an event is added only when a snapshot was written.
SNAPSHOT_WRITTEN = AssetAlias(name="backorder_snapshot_written", group="backorder")

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


def _ops_alerts() -> dict[str, Any]:
    """With an ops address configured: an email when a run fails, and one when a run is late."""
    if not OPS_EMAIL:
        return {}
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier
    from airflow.sdk.definitions.callback import AsyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    late = {"to": OPS_EMAIL, "smtp_conn_id": OPS_SMTP_CONN_ID, "subject": LATE_SUBJECT, "html_content": LATE_BODY}
    return {
        "on_failure_callback": SmtpNotifier(
            to=OPS_EMAIL, smtp_conn_id=OPS_SMTP_CONN_ID, subject=FAILED_SUBJECT, html_content=FAILED_BODY
        ),
        "deadline": DeadlineAlert(
            reference=DeadlineReference.DAGRUN_QUEUED_AT,
            interval=RUN_DEADLINE,
            callback=AsyncCallback(SmtpNotifier, kwargs=late),
        ),
    }


default_args = {
    "owner": "data",
    "retries": 3,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=20),
}


def _db(conn_id: str) -> Any:
    """An Airflow connection as the library's DbConnection."""
    from include.backorder.config import DbConnection

    return DbConnection.from_airflow(conn_id, BaseHook.get_connection(conn_id))


def _state_db() -> Any:
    try:
        return _db(STATE_CONN_ID)
    except AirflowNotFoundException:
        return _db(SHOP_CONN_ID)


def _smtp() -> Any:
    """The SMTP provider's connection (same extras and defaults) as the library's SmtpSettings."""
    from include.backorder.config import SmtpSettings

    c = BaseHook.get_connection(SMTP_CONN_ID)
    extra = c.extra_dejson

    def flag(name: str) -> bool:
        value = extra.get(name, False)
        return value.strip().lower() in ("1", "true", "yes") if isinstance(value, str) else bool(value)

    return SmtpSettings(
        host=c.host or "localhost",
        port=c.port or (25 if flag("disable_ssl") else 465),
        from_email=str(extra.get("from_email") or ""),
        login=c.login or "",
        password=c.password or "",
        use_ssl=not flag("disable_ssl"),
        use_starttls=not flag("disable_tls"),
        timeout=float(extra.get("timeout", 30)),
        conn_id=SMTP_CONN_ID,
    )


def _lease_after_failure(context: Any) -> None:
    """A task that runs alone failed, was killed or was marked failed: nothing of its run runs now,
    so a later run may take the lease over at once (include/backorder/lease.py)."""
    import logging

    from include.backorder import db, lease

    try:
        engine = db.engine(_state_db())
        try:
            with engine.begin() as conn:
                run_id = lease.task_ended(conn, context["dag"].dag_id, context["run_id"], lease.POLICY.clock())
        finally:
            engine.dispose()
        if run_id is not None:
            logging.getLogger(__name__).info("lease: run %d marked failed; a later run may take over", run_id)
    except Exception as exc:  # a callback must not fail; the lease's heartbeat timeout still applies
        logging.getLogger(__name__).warning("lease: could not mark the run failed: %s", exc)


# The tasks that run alone in their DAG run (the send batches run side by side: their heartbeats decide).
LEASE_CALLBACKS: dict[str, Any] = {
    "on_failure_callback": _lease_after_failure,
    "on_retry_callback": _lease_after_failure,
}


@contextmanager
def _permanent_errors_fail_at_once() -> Iterator[None]:
    """Errors no retry can fix (bad params, a refused database login, missing tables, a run that lost its lease)
    skip the retries; so does a refused SMTP login, which retries could turn into a locked account."""
    from include.backorder.config import ConfigError
    from include.backorder.db import LoginRefusedError
    from include.backorder.lease import RunAbandonedError
    from include.backorder.mailer import SMTPAuthenticationRefused
    from include.backorder.shop import ShopSchemaError

    try:
        yield
    except (ConfigError, LoginRefusedError, ShopSchemaError, RunAbandonedError, SMTPAuthenticationRefused) as exc:
        raise AirflowFailException(str(exc)) from None


@dag(
    dag_id="backorder_notifications",
    schedule=SCHEDULE,
    start_date=START_DATE,
    catchup=CATCHUP,
    max_active_runs=1,
    default_args=default_args,
    doc_md=__doc__,
    tags=["backorder", "email", "shop"],
    **_ops_alerts(),
    params={
        "order_status_ids": Param([1, 2], type="array", items={"type": "integer", "minimum": 0, "maximum": MAX_ID},
                                  minItems=1,
                                  description="Only orders in these statuses (orders_status ids) are processed."),
        "reminder_interval_days": Param(2, type="integer", minimum=1, maximum=MAX_DAYS,
                                        description="Days between periodic reminders (and since any email)."),
        "max_reminders": Param(None, type=["null", "integer"], minimum=0,
                               description="Periodic reminders per order at most; null for unlimited."),
        "max_order_age_days": Param(None, type=["null", "integer"], minimum=1, maximum=MAX_DAYS,
                                    description="Ignore orders purchased longer ago than this at T; null: no limit."),
        "table_prefix": Param("", type=TEXT, maxLength=64, pattern=_PREFIX,
                              description="Prefix of the shop's tables (Zen Cart DB_PREFIX), e.g. zen_."),
        "default_language": Param("en", type="string", enum=LANGUAGES,
                                  description="Language for orders whose language the shop does not store."),
        "dry_run": Param(False, type="boolean",
                         description="Classify and render, record what would be sent; send nothing, keep state."),
        "catch_up_silently": Param(False, type="boolean",
                                   description="Bring the state up to date without emailing (e.g. a backfill): due"
                                               " emails are recorded as silenced and count as told."),
        "shop_timezone": Param("UTC", type="string", **({"enum": ZONES} if ZONES else {}),
                               description="IANA time zone the shop writes its dates in, e.g. Europe/Berlin."),
        "shop_name": Param("", type=TEXT, maxLength=200,
                           description="Signature of the emails; empty: 'Your shop team'."),
        "unsubscribe_mailto": Param("", type=TEXT, maxLength=254, pattern=_ADDRESS,
                                    description="Address for List-Unsubscribe mailto opt-outs; empty: the sender."),
        "unsubscribe_url": Param("", type=TEXT, maxLength=500, pattern=_URL,
                                 description="https URL taking one-click opt-outs (?token=...); needs the Variable"
                                             " backorder_unsubscribe_secret."),
        "send_parallelism": Param(1, type="integer", minimum=1, maximum=16,
                                  description="Batches per kind, each sent by its own task over its own SMTP"
                                              " connection (mapped tasks; at most 4 run at once, 500 emails"
                                              " per batch at least)."),
        "send_available": Param(False, type="boolean",
                                description="Also send `available`: an order's every date was reached or cleared"
                                            " while it is still in the statuses."),
        "logo_url": Param("", type=TEXT, maxLength=2000, pattern=_URL, section="Branding",
                          description="https URL of the shop's logo (shown at most 200 x 48 px); empty: the name."),
        "brand_color": Param("#1f4e79", type="string", pattern=_COLOR, section="Branding",
                             description="Colour of the header band, links and button, e.g. #1f4e79."),
        "support_email": Param("", type=TEXT, maxLength=254, pattern=_ADDRESS, section="Branding",
                               description="Address the footer offers for questions; empty: none."),
        "postal_address": Param("", type=TEXT, maxLength=1000, format="multiline", section="Branding",
                                description="The shop's postal address for the footer, lines separated by newlines."),
        "order_url": Param("", type=TEXT, maxLength=2000, pattern=_ORDER_URL, section="Branding",
                           description="The customer's order page with {order_id}, e.g."
                                       " https://shop.example/account_history_info.php?order_id={order_id}."),
    },
)  # fmt: skip
def backorder_notifications() -> None:
    @task
    def extract_backorder_lines() -> int:
        """Stage the shop's backorder lines at T under a new run record; return its id."""
        from include.backorder import pipeline
        from include.backorder.config import RunContext, RunParams, check_conf_keys

        context = get_current_context()
        dag_run = context["dag_run"]
        reference_time = context.get("logical_date") or dag_run.run_after
        with _permanent_errors_fail_at_once():
            # Airflow merges any conf key into the params; a typo (`dryrun`) would run with the defaults.
            check_conf_keys(dag_run.conf, context["dag"].params.keys())
            params = RunParams.from_mapping(dict(context["params"]))
            run = RunContext(reference_time=reference_time, dag_id=dag_run.dag_id, dag_run_id=dag_run.run_id)
            return pipeline.extract(_db(SHOP_CONN_ID), _state_db(), run, params).run_id

    @task(**LEASE_CALLBACKS)
    def load_previous_snapshot(record_id: int) -> dict[str, Any]:
        """Pin the latest snapshot before T to the run."""
        from include.backorder import pipeline

        with _permanent_errors_fail_at_once():
            return pipeline.load_previous_snapshot(_state_db(), record_id)

    @task(**LEASE_CALLBACKS)
    def classify(record_id: int) -> dict[str, int]:
        """Decide each order's notification; put the due ones in the outbox. Returns counts per kind."""
        from include.backorder import pipeline

        with _permanent_errors_fail_at_once():
            return pipeline.classify_run(_state_db(), record_id)

    @task.branch(retries=0)
    def choose_sends(due: dict[str, int]) -> list[str]:
        """Run only the send tasks that have something due; the others show as skipped."""
        return [f"send_{kind}" for kind in KINDS if due.get(kind)]

    @task(retries=0)
    def plan_batches(due: dict[str, int], kind: str) -> list[list[int]]:
        """The batches the kind's send task is mapped over: [index, batches] each, one SMTP connection each."""
        if not due.get(kind):
            return []
        wanted = int(get_current_context()["params"].get("send_parallelism", 1))
        n = max(1, min(wanted, -(-due[kind] // MIN_BATCH)))
        return [[i, n] for i in range(n)]

    @task(max_active_tis_per_dag=MAX_PARALLEL_SENDS)
    def send_notifications(record_id: int, kind: str, part: list[int]) -> dict[str, int]:
        """Send one batch of this run's due emails of one kind over one SMTP connection."""
        from include.backorder import pipeline

        with _permanent_errors_fail_at_once():
            secret = Variable.get(UNSUBSCRIBE_SECRET_VARIABLE, default=None)
            return pipeline.send(_state_db(), record_id, kind, _smtp(), secret, (part[0], part[1]))

    @task(trigger_rule="none_failed", outlets=[SNAPSHOT_WRITTEN], **LEASE_CALLBACKS)
    def write_snapshot_and_audit(record_id: int) -> dict[str, Any]:
        """Keep the snapshot at T and complete the run's audit record; tell the Asset's consumers, once per T.

        Run again (cleared, retried), it changes nothing and emits nothing: the run is finished.
        """
        from include.backorder import pipeline

        with _permanent_errors_fail_at_once():
            summary = pipeline.finish(_state_db(), record_id)
        if summary["snapshot"] == "written":  # the first snapshot at T; not a dry run, a repeat or a cleared try
            get_current_context()["outlet_events"][SNAPSHOT_WRITTEN].add(SNAPSHOT_ASSET, extra=summary)
        return summary

    record_id = extract_backorder_lines()
    due = classify(record_id)
    load_previous_snapshot(record_id) >> due
    sends = [
        send_notifications.override(task_id=f"send_{kind}")
        .partial(record_id=record_id, kind=kind)
        .expand(part=plan_batches.override(task_id=f"plan_{kind}")(due, kind))
        for kind in KINDS
    ]
    choose_sends(due) >> sends
    sends >> write_snapshot_and_audit(record_id)


backorder_notifications()
