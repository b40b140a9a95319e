"""The stages together, without Airflow: SQLite shop and state database, a real SMTP server on loopback."""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from include.backorder import KINDS, pipeline
from include.backorder import state as st
from include.backorder.config import ConfigError, DbConnection, RunContext, RunParams, SmtpSettings
from include.backorder.mailer import SMTPUnavailable
from include.backorder.shop import ShopSchemaError
from tools.smtp_sink import Faults

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def run_day(shop, state_db: DbConnection, smtp: SmtpSettings, t: datetime, **params) -> dict:
    """All stages in the DAG's order; the send stages only for kinds with something due."""
    extracted = pipeline.extract(
        shop.conn, state_db, RunContext(t, dag_run_id=f"test__{t:%Y%m%d}"), RunParams(**params)
    )
    pipeline.load_previous_snapshot(state_db, extracted.run_id)
    due = pipeline.classify_run(state_db, extracted.run_id)
    for kind, count in due.items():
        if count:
            pipeline.send(state_db, extracted.run_id, kind, smtp)
    return pipeline.finish(state_db, extracted.run_id)


def rows(state_db: DbConnection, table: sa.Table, *where) -> list[sa.RowMapping]:
    engine = sa.create_engine(state_db.url())
    with engine.connect() as c:
        result = c.execute(sa.select(table).where(*where).order_by(*table.primary_key.columns)).mappings().all()
    engine.dispose()
    return list(result)


@pytest.fixture
def small_shop(shop):
    shop.product(1, datetime(2026, 3, 20))
    shop.product(2, None)
    shop.order(1, [1, 2], purchased=datetime(2026, 3, 1, 9), language="de", name="Jürgen Müller")
    shop.order(2, [1], purchased=datetime(2026, 3, 1, 10), email="")
    shop.order(3, [2], purchased=datetime(2026, 3, 1, 11))
    return shop


def test_first_run_sends_initial_and_audits_everything(small_shop, state_db, smtp, mail_sink) -> None:
    summary = run_day(small_shop, state_db, smtp, T0)

    assert [m.message["To"] for m in mail_sink.messages] == ["Jürgen Müller <customer1@example.com>"]
    assert summary["counts"]["sent"] == {"initial": {"de": 1}}
    assert summary["counts"]["skipped"] == {"initial": {"en": 1}}

    sent, skipped = rows(state_db, st.notifications)
    assert (sent["orders_id"], sent["kind"], sent["status"], sent["language"]) == (1, "initial", "sent", "de")
    assert sent["detail"].startswith("250 ")
    assert sent["message_id"] == "<backorder.1.initial.20260302T000000Z@example.com>"
    assert sent["reference_time"] == datetime(2026, 3, 2)
    assert json.loads(sent["listed_lines"]) == [
        {
            "orders_products_id": 1,
            "products_id": 1,
            "products_name": "Product 1",
            "products_model": "M-1",
            "products_quantity": 1.0,
            "date_available": "2026-03-20T00:00:00",
            "previous_date": None,
        }
    ]
    assert (skipped["orders_id"], skipped["status"], skipped["detail"]) == (2, "skipped", "no email address")

    (run,) = rows(state_db, st.runs)
    assert run["status"] == "finished" and run["line_count"] == 2 and run["order_count"] == 2
    assert json.loads(run["skipped"]) == [{"orders_id": 2, "kind": "initial", "reason": "no email address"}]
    assert json.loads(run["params"])["order_status_ids"] == [1, 2]
    assert set(json.loads(run["stage_seconds"])) == {
        "extract",
        "previous_snapshot",
        "classify",
        "send_initial",
        "finish",
        *(f"send_initial.{part}" for part in ("render", "smtp", "commit", "commit_wait", "render_wait")),
    }
    (snap,) = rows(state_db, st.snapshots)
    assert snap["reference_time"] == datetime(2026, 3, 2) and snap["line_count"] == 2
    assert not rows(state_db, st.staged_lines), "staged lines are cleaned up"


def test_rerun_of_the_same_reference_time_sends_nothing_twice(small_shop, state_db, smtp, mail_sink) -> None:
    run_day(small_shop, state_db, smtp, T0)
    mail_sink.clear()
    summary = run_day(small_shop, state_db, smtp, T0)
    assert mail_sink.messages == []
    assert summary["counts"]["handled_by_earlier_runs_at_this_T"] == 2
    assert len(rows(state_db, st.notifications)) == 2
    assert len(rows(state_db, st.snapshots)) == 1, "the snapshot at T is replaced, not doubled"


def test_dry_run_records_but_sends_nothing_and_keeps_state(small_shop, state_db, smtp, mail_sink) -> None:
    summary = run_day(small_shop, state_db, smtp, T0, dry_run=True)
    assert mail_sink.messages == []
    assert summary["dry_run"] is True and summary["counts"]["dry_run"] == {"initial": {"de": 1}}
    dry = rows(state_db, st.notifications, st.notifications.c.status == "dry_run")
    assert len(dry) == 1 and dry[0]["dry_run"]
    assert dry[0]["message_id"] == "<backorder.1.initial.20260302T000000Z@example.com>"  # as a real send would have
    assert rows(state_db, st.snapshots) == []

    run_day(small_shop, state_db, smtp, T0)  # the real run at the same T still sends
    assert [m.message["X-Backorder-Notification"] for m in mail_sink.messages] == ["initial"]


def test_permanent_refusal_fails_one_email_and_the_others_go_out(shop, state_db, smtp, mail_sink) -> None:
    shop.product(1, datetime(2026, 3, 20))
    for oid in (1, 2, 3):
        shop.order(oid, [1], purchased=datetime(2026, 3, 1))
    mail_sink.faults = Faults(refuse={"customer2@example.com"})
    summary = run_day(shop, state_db, smtp, T0)
    assert sorted(m.rcpt_tos[0] for m in mail_sink.messages) == ["customer1@example.com", "customer3@example.com"]
    failed = rows(state_db, st.notifications, st.notifications.c.status == "failed")
    assert [(r["orders_id"], r["detail"]) for r in failed] == [(2, "550 5.1.1 Mailbox unavailable")]
    assert summary["counts"]["failed"] == {"initial": {"en": 1}}


def test_temporary_refusal_stays_due_and_a_retry_sends_it(shop, state_db, smtp, mail_sink, no_waits) -> None:
    shop.product(1, datetime(2026, 3, 20))
    shop.order(1, [1], purchased=datetime(2026, 3, 1))
    shop.order(2, [1], purchased=datetime(2026, 3, 1))
    mail_sink.faults = Faults(defer={"customer1@example.com": 3})  # the first try and the two in-task tries
    extracted = pipeline.extract(shop.conn, state_db, RunContext(T0), RunParams())
    pipeline.load_previous_snapshot(state_db, extracted.run_id)
    pipeline.classify_run(state_db, extracted.run_id)
    with pytest.raises(pipeline.TemporarySendError, match="1 message"):
        pipeline.send(state_db, extracted.run_id, "initial", smtp)
    assert [m.rcpt_tos for m in mail_sink.messages] == [("customer2@example.com",)]

    assert pipeline.send(state_db, extracted.run_id, "initial", smtp) == {"sent:en": 1}  # the retry
    assert [m.rcpt_tos for m in mail_sink.messages][1:] == [("customer1@example.com",)]


def test_smtp_server_down_fails_the_task_and_keeps_emails_due(small_shop, state_db, no_waits) -> None:
    extracted = pipeline.extract(small_shop.conn, state_db, RunContext(T0), RunParams())
    pipeline.load_previous_snapshot(state_db, extracted.run_id)
    pipeline.classify_run(state_db, extracted.run_id)
    closed = SmtpSettings(host="127.0.0.1", port=1, from_email="s@example.com", use_ssl=False, use_starttls=False)
    with pytest.raises(SMTPUnavailable, match=r"127\.0\.0\.1:1: 4 connection attempts in a row failed"):
        pipeline.send(state_db, extracted.run_id, "initial", closed)
    assert [r["status"] for r in rows(state_db, st.notifications, st.notifications.c.kind == "initial")] == [
        "due",
        "skipped",
    ]


def test_missing_shop_table_is_one_clear_error_and_changes_no_state(tmp_path, state_db) -> None:
    path = tmp_path / "empty.sqlite"
    sa.create_engine(f"sqlite:///{path}").connect().close()
    empty = DbConnection("shop_db", "sqlite", host=str(path))
    with pytest.raises(ShopSchemaError, match=r"connection 'shop_db': table 'orders' not found"):
        pipeline.extract(empty, state_db, RunContext(T0), RunParams())
    engine = sa.create_engine(state_db.url())
    assert not sa.inspect(engine).has_table("bo_run")


def test_unreachable_shop_names_the_connection_and_creates_nothing(tmp_path, state_db) -> None:
    missing = DbConnection("shop_db", "sqlite", host=str(tmp_path / "no-such-shop.sqlite"))
    with pytest.raises(pipeline.ShopUnavailableError, match=r"connection 'shop_db': cannot read the shop"):
        pipeline.extract(missing, state_db, RunContext(T0), RunParams())
    assert not (tmp_path / "no-such-shop.sqlite").exists(), "the shop is opened read-only"


def test_the_shop_is_opened_read_only(small_shop) -> None:
    engine = sa.create_engine(small_shop.conn.url(read_only=True))
    with pytest.raises(sa.exc.OperationalError, match="readonly"), engine.begin() as c:
        c.exec_driver_sql("DELETE FROM orders")
    engine.dispose()


def test_periodic_and_changed_over_days(shop, state_db, smtp, mail_sink) -> None:
    shop.product(1, datetime(2026, 3, 20))
    shop.order(1, [1], purchased=datetime(2026, 3, 1))
    kinds = []
    for day in range(5):
        if day == 3:
            shop.set_date(1, datetime(2026, 3, 27))
        mail_sink.clear()
        run_day(shop, state_db, smtp, T0 + timedelta(days=day), reminder_interval_days=2)
        kinds.append([m.message["X-Backorder-Notification"] for m in mail_sink.messages])
    assert kinds == [["initial"], [], ["periodic"], ["changed"], []]


def test_kinds_and_statuses_are_written_as_their_plain_values(shop, state_db, smtp, mail_sink, caplog) -> None:
    """Kind, Status and RunStatus are StrEnums: rows, run records, return values and log lines hold the plain
    string ("periodic", "sent"), never a member's repr ("Kind.PERIODIC", "<Status.SENT: 'sent'>")."""
    shop.product(1, datetime(2026, 3, 20))
    shop.order(1, [1], purchased=datetime(2026, 3, 1))
    shop.order(2, [1], purchased=datetime(2026, 3, 1), email="")
    caplog.set_level("INFO", logger="include.backorder")
    days = [run_day(shop, state_db, smtp, T0 + timedelta(days=day), reminder_interval_days=2) for day in range(3)]
    due = pipeline.classify_run(state_db, days[-1]["run_id"])  # a finished run: its log line holds the dict whole
    assert due == dict.fromkeys(KINDS, 0) and {type(kind) for kind in due} == {str}

    notes, runs = rows(state_db, st.notifications), rows(state_db, st.runs)
    kinds_and_statuses = {(r["kind"], r["status"]) for r in notes}
    assert kinds_and_statuses == {("initial", "sent"), ("initial", "skipped"), ("periodic", "sent")}
    written = [json.dumps(days), json.dumps(due), *(r.getMessage() for r in caplog.records)]
    written += [json.dumps(dict(r), default=str) for r in (*notes, *runs)]
    leaked = [text for text in written if re.search(r"\b(Kind|Status|RunStatus)\.", text)]
    assert not leaked, leaked


def test_catch_up_silently_brings_the_state_up_to_date_and_sends_nothing(shop, state_db, smtp, mail_sink) -> None:
    shop.product(1, datetime(2026, 3, 20))
    shop.order(1, [1], purchased=datetime(2026, 3, 1))
    summary = run_day(shop, state_db, smtp, T0, catch_up_silently=True)
    assert mail_sink.messages == []
    assert summary["counts"]["silenced"] == {"initial": {"en": 1}}
    (row,) = rows(state_db, st.notifications)
    assert (row["status"], row["detail"]) == ("silenced", "catch_up_silently: not sent")
    assert len(rows(state_db, st.snapshots)) == 1

    kinds = []
    for day in (1, 2):  # live again: the silenced initial counts as told, so the reminder follows it
        mail_sink.clear()
        run_day(shop, state_db, smtp, T0 + timedelta(days=day))
        kinds.append([m.message["X-Backorder-Notification"] for m in mail_sink.messages])
    assert kinds == [[], ["periodic"]]


def test_dry_run_and_catch_up_silently_exclude_each_other() -> None:
    with pytest.raises(ConfigError, match="choose one"):
        RunParams(dry_run=True, catch_up_silently=True)


def test_a_kind_split_in_parts_sends_each_email_once_over_parallel_connections(shop, state_db, smtp, mail_sink) -> None:
    from concurrent.futures import ThreadPoolExecutor

    shop.product(1, datetime(2026, 3, 20))
    for oid in range(1, 11):
        shop.order(oid, [1], purchased=datetime(2026, 3, 1))
    run_id = pipeline.extract(shop.conn, state_db, RunContext(T0), RunParams()).run_id
    pipeline.load_previous_snapshot(state_db, run_id)
    assert pipeline.classify_run(state_db, run_id)["initial"] == 10
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda i: pipeline.send(state_db, run_id, "initial", smtp, part=(i, 3)), range(3)))
    assert sum(r.get("sent:en", 0) for r in results) == 10 and all(results)
    assert sorted(int(m.message["X-Backorder-Order-Id"]) for m in mail_sink.messages) == list(range(1, 11))
    (run,) = rows(state_db, st.runs)
    assert {"send_initial[0/3]", "send_initial[1/3]", "send_initial[2/3]"} <= set(json.loads(run["stage_seconds"]))
    with pytest.raises(ConfigError, match="0 <= index < parts"):
        pipeline.send(state_db, run_id, "initial", smtp, part=(3, 3))


def test_a_big_batch_is_rendered_by_the_worker_process_and_sent_once(
    shop, state_db, smtp, mail_sink, monkeypatch
) -> None:
    from include.backorder import sending

    monkeypatch.setattr(sending, "RENDER_PROCESS_MIN", 2)  # 5 emails count as big here
    workers: list[int] = []

    class CountedWorker(sending.RenderWorker):  # the real worker process, its pid noted
        def __enter__(self) -> sending.RenderWorker:
            workers.append(self.process.pid)
            return super().__enter__()

    monkeypatch.setattr(sending, "RenderWorker", CountedWorker)
    shop.product(1, datetime(2026, 3, 20))
    for oid in range(1, 6):
        shop.order(oid, [1], purchased=datetime(2026, 3, 1), language="de" if oid % 2 else "en")
    summary = run_day(shop, state_db, smtp, T0)
    assert summary["counts"]["sent"] == {"initial": {"de": 3, "en": 2}}
    assert sorted(int(m.message["X-Backorder-Order-Id"]) for m in mail_sink.messages) == [1, 2, 3, 4, 5]
    (run,) = rows(state_db, st.runs)
    assert len(workers) == 1 and workers[0] != os.getpid(), "one worker process rendered the batch"
    assert "send_initial.render" in json.loads(run["stage_seconds"])


def three_waiting_orders(shop) -> None:
    shop.product(1, datetime(2026, 3, 20))
    for oid in (1, 2, 3):
        shop.order(oid, [1], purchased=datetime(2026, 3, 1))


def test_finish_run_again_keeps_the_snapshot_and_the_next_day_sends_no_false_changed(
    shop, state_db, smtp, mail_sink
) -> None:
    """Finding 14: clearing write_snapshot_and_audit ran finish again, which emptied the day's snapshot."""
    three_waiting_orders(shop)
    first = run_day(shop, state_db, smtp, T0, reminder_interval_days=7)
    assert len(mail_sink.messages) == 3
    run_id = first["run_id"]
    again = pipeline.finish(state_db, run_id)  # the cleared task's next try
    assert again["counts"] == first["counts"] and again["snapshot"] is None
    (snap,) = rows(state_db, st.snapshots)
    with sa.create_engine(state_db.url()).connect() as c:
        lines = c.execute(st.snapshot_lines(c, snap["reference_time"])).all()
    assert (snap["line_count"], len(lines)) == (3, 3)

    mail_sink.clear()
    run_day(shop, state_db, smtp, T0 + timedelta(days=1), reminder_interval_days=7)
    assert mail_sink.messages == [], "no false `changed` the next day"


def test_the_finish_log_says_what_this_try_did_and_what_was_not_due(shop, tmp_path, smtp, mail_sink, caplog) -> None:
    """The task log a data engineer reads: kinds with nothing due are named, and a cleared finish says
    that this try sent nothing, beside the run's total, instead of repeating the totals as if re-sent."""
    state = DbConnection("backorder_state_db", "sqlite", host=str(tmp_path / "state.sqlite"))
    three_waiting_orders(shop)
    caplog.set_level("INFO", logger="include.backorder.pipeline")
    first = run_day(shop, state, smtp, T0)
    lines = [r.getMessage() for r in caplog.records]
    assert "  nothing due: changed, periodic, available" in lines
    caplog.clear()
    pipeline.finish(state, first["run_id"])  # the cleared task's next try
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("finish:")]
    sent = first["counts"]["sent"]["initial"]
    assert line.endswith(
        f"this try: sent 0; the run's total: initial 3 ({', '.join(f'{k} {v}' for k, v in sorted(sent.items()))})"
    ), line
