"""The stages of one run, as the DAG's tasks call them: extract, previous snapshot, classify, send, finish, prune.

Each stage takes plain values (connections, the run id) and keeps its results in the state
database, in one transaction, so that only ids and counts travel between tasks. Each returns a
small dict for XCom and logs a one-line summary. What a stage reads and writes there is said by
the named functions of `state` (`st.create_run_record`, `st.add_notifications`, ...): this module
decides what happens and in which transaction, not how it is spelled in SQL.
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from include.backorder import KINDS, RunStatus, Status, lease
from include.backorder import db as database
from include.backorder import state as st
from include.backorder.classify import (
    LAST_PLAUSIBLE_DATE,
    PROBLEM_DELETED_PRODUCT,
    Rules,
    classify,
    due_by_time,
    line_problem,
    plain,
    plain_records,
    shown_date,
)
from include.backorder.config import MAX_DAYS, ConfigError, DbConnection, RunContext, RunParams, SmtpSettings
from include.backorder.mailer import Mailer
from include.backorder.sending import SEND_PARTS, Sender, load_batch
from include.backorder.shop import (
    LINE_COLUMNS,
    ShopTables,
    arrived_lines,
    inspect_shop,
    plain_line,
    read_backorder_lines,
    shop_engine,
)

log = logging.getLogger(__name__)


class ShopUnavailableError(database.DatabaseUnavailableError):
    """The shop database cannot be reached (a retry may help)."""


class StateUnavailableError(database.DatabaseUnavailableError):
    """The state database cannot be reached (a retry may help)."""


class TemporarySendError(RuntimeError):
    """Some messages got a temporary (4xx) answer and are still due; a retry sends them."""


@contextmanager
def _engine(db: DbConnection, read_only: bool = False) -> Iterator[Engine]:
    """The shop's engine (`read_only`) or the state database's, connected: a failure is one line naming `db`."""
    engine = shop_engine(db) if read_only else database.engine(db)
    try:
        if read_only:
            database.connect_or_explain(engine, db, "shop", ShopUnavailableError)
        else:
            database.connect_or_explain(engine, db, "state database", StateUnavailableError)
        yield engine
    finally:
        engine.dispose()


@contextmanager
def _stage(conn: sa.Connection, run_id: int, stage: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    st.record_stage_time(conn, run_id, stage, time.perf_counter() - started)


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


# --- extract ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractResult:
    run_id: int
    lines: int
    orders: int
    arrived_orders: int = 0
    suspect_lines: int = 0
    changed_lines: int = 0  # new, changed or gone against the previous snapshot
    staged_orders: int = 0  # the orders classify looks at


SUSPECT_LINES_KEPT = 1000  # in the run record; the log names the first LOGGED_AT_MOST
LOGGED_AT_MOST = 20


class _ShopData:
    """What extract found odd in the shop's rows: values cut to fit the state, and suspect lines."""

    def __init__(self) -> None:
        self.cut = 0
        self.suspects: dict[int, dict[str, Any]] = {}  # by orders_products_id: a line is listed once

    def fitted(self, table: sa.Table, rows: list[dict[str, Any]], check: bool = True) -> list[dict[str, Any]]:
        """The rows as `table` stores them (see state.storable), each suspect line noted (unless `check`
        is False: `check_lines` saw them)."""
        out = []
        for row in rows:
            fitted, cut = st.storable(table, row)
            for what in cut:
                self.cut += 1
                if self.cut <= LOGGED_AT_MOST:
                    log.warning("extract: order %s, line %s: %s", row["orders_id"], row["orders_products_id"], what)
            if check and (problem := line_problem(row)) is not None:
                self.suspect(row, problem)
            out.append(fitted)
        return out

    def check_lines(self, lines: list[Sequence[Any]]) -> None:
        """Note the suspect lines among the shop's lines (rows of LINE_COLUMNS): the usual line (a positive
        quantity, a date before 2100) is passed over with two comparisons."""
        for line in lines:
            quantity, date = line[_QUANTITY], line[_DATE]
            if quantity is not None and quantity > 0 and date < LAST_PLAUSIBLE_DATE:
                continue
            row = dict(zip(LINE_COLUMNS, plain_line(line), strict=True))
            if (problem := line_problem(row)) is not None:
                self.suspect(row, problem)

    def suspect(self, row: dict[str, Any], problem: str) -> None:
        self.suspects.setdefault(
            int(row["orders_products_id"]),
            {
                "orders_id": int(row["orders_id"]),
                "orders_products_id": int(row["orders_products_id"]),
                "products_id": plain(row["products_id"]),
                "problem": problem,
            },
        )

    def record(self) -> list[dict[str, Any]] | None:
        """The run record's suspect_lines (the first SUSPECT_LINES_KEPT), after naming them in the log."""
        if self.cut > LOGGED_AT_MOST:
            log.warning("extract: %d values in all were cut to fit the state database", self.cut)
        if not self.suspects:
            return None
        items = [self.suspects[key] for key in sorted(self.suspects, key=lambda k: (self.suspects[k]["orders_id"], k))]
        log.warning(
            "extract: %d suspect line(s), kept in the run record%s:",
            len(items),
            f" (the first {SUSPECT_LINES_KEPT})" if len(items) > SUSPECT_LINES_KEPT else "",
        )
        for item in items[:LOGGED_AT_MOST]:
            log.warning(
                "  suspect line: order %d, line %d, product %s: %s",
                item["orders_id"],
                item["orders_products_id"],
                item["products_id"],
                item["problem"],
            )
        if len(items) > LOGGED_AT_MOST:
            log.warning("  ... and %d more (see the run record)", len(items) - LOGGED_AT_MOST)
        return items[:SUSPECT_LINES_KEPT]


_ORDER, _LINE, _PRODUCT = (LINE_COLUMNS.index(name) for name in ("orders_id", "orders_products_id", "products_id"))
_QUANTITY, _DATE = LINE_COLUMNS.index("products_quantity"), LINE_COLUMNS.index("date_available")
_CUSTOMER, _ADDRESS = LINE_COLUMNS.index("customers_id"), LINE_COLUMNS.index("customers_email_address")


def _shared_customers(lines: list[Sequence[Any]], arrivals: list[dict[str, Any]]) -> set[int]:
    """Orders whose customer id is given with more than one address (a shop's common guest account): the
    opt-out rule needs all of them beside each other (state.suppressions_query)."""
    pairs = [(row["customers_id"], row["customers_email_address"], row["orders_id"]) for row in arrivals]
    first: dict[Any, Any] = {}
    shared = set()
    seen = itertools.chain(((line[_CUSTOMER], line[_ADDRESS]) for line in lines), ((c, a) for c, a, _ in pairs))
    for customer, address in seen:
        if first.setdefault(customer, address) != address:
            shared.add(customer)
    if not shared:
        return set()
    orders = {int(line[_ORDER]) for line in lines if line[_CUSTOMER] in shared}
    return orders | {int(order) for customer, _, order in pairs if customer in shared}


def _arrivals(
    shop: Engine,
    tables: ShopTables,
    params: RunParams,
    shop_time: datetime,
    previous: dict[int, st.HeldLine],
    waiting: set[int],
    found: _ShopData,
) -> list[dict[str, Any]]:
    """The lines of orders that waited at the previous snapshot and wait no more (storable, with their
    previous dates). Lines of deleted products keep their orders out (noted as suspect)."""
    gone = [key for key, held in previous.items() if held.orders_id not in waiting]
    if not gone:
        return []
    arrivals = arrived_lines(shop, tables, params, shop_time, gone)
    for row in arrivals.deleted_products:
        found.suspect(row, PROBLEM_DELETED_PRODUCT)
    return found.fitted(st.staged_arrivals, arrivals.lines)


def _previous_date(previous: dict[int, st.HeldLine], key: int) -> datetime | None:
    held = previous.get(key)
    return None if held is None else held[2]


def extract(
    shop_db: DbConnection, state_db: DbConnection, run: RunContext, params: RunParams, chunk_size: int = 5000
) -> ExtractResult:
    """Read the backorder lines at T from the shop, compare them with the previous snapshot, and stage
    what the next tasks need under a new run record; pin the previous snapshot to it.

    Staged: what the snapshot at T changes (new, changed and gone lines: finish applies them to the
    line history), and every line of the orders classify must look at, with its previous date: orders
    with a new or changed line, orders never told or due for a reminder (classify.due_by_time), and
    the orders that wait no more. On a quiet day that is nothing but the run record.

    One transaction: if the shop fails part-way, nothing of this run is left in the state database.
    No shop value fails it: each row is made storable first (state.storable: a value wider than its
    column is cut, with a log line), and the suspect lines (classify.line_problem, and the lines of
    deleted products of the orders read) go to the run record's `suspect_lines` and the log.
    """
    shop_time = params.shop_time(run.reference_time)
    t = run.reference_utc
    with _engine(shop_db, read_only=True) as shop, _engine(state_db) as state:
        try:
            tables = inspect_shop(shop, params.table_prefix, shop_db.conn_id)
        except sa.exc.OperationalError as exc:
            # One line that names the connection; the driver's traceback adds nothing for the reader.
            raise ShopUnavailableError(f"connection {shop_db.conn_id!r}: cannot read the shop: {exc.orig}") from None
        started = time.perf_counter()
        # The shop's lines are read in a thread while the state's side is read here: each query's time on
        # its server, and the waits on the network, overlap (the parsing of rows in Python does not).
        reading = ThreadPoolExecutor(max_workers=1, thread_name_prefix="extract-shop")
        progress = partial(log.info, "extract: %d backorder lines read so far")
        from_shop = reading.submit(read_backorder_lines, shop, tables, params, shop_time, progress)
        reading.shutdown(wait=False)
        st.migrate(state)
        with state.begin() as conn:
            run_id = st.create_run_record(
                conn,
                dag_id=run.dag_id,
                dag_run_id=run.dag_run_id,
                reference_time=t,
                dry_run=params.dry_run,
                params=params.to_json(),
                shop_schema={"dialect": shop.dialect.name, **tables.describe()},
                started_at=_utcnow(),
            )
            abandoned = lease.acquire(conn, run.dag_id, run_id, run.dag_run_id, lease.POLICY.clock())
            if abandoned is not None:
                st.drop_staged(conn, abandoned)  # it never finishes; what it left due is taken over at its T
                log.warning("extract: took the lease over from run %d, which is now marked abandoned", abandoned)
            snap = st.previous_snapshot(conn, t)
            st.pin_previous_snapshot(conn, run_id, snap["id"] if snap else None)
            previous = st.held_at(conn, snap["reference_time"] if snap else None)
            history = st.read_history_at(conn, t, snap) if snap is not None else None
            found = _ShopData()
            shop_lines = from_shop.result()
            lines = shop_lines.lines
            found.check_lines(lines)
            for row in shop_lines.deleted_products:
                found.suspect(row, PROBLEM_DELETED_PRODUCT)
            orders = {line[_ORDER] for line in lines}
            now = {line[_LINE]: st.HeldLine(line[_ORDER], line[_PRODUCT], line[_DATE]) for line in lines}
            changes, reached = st.diff_snapshot(previous, now, shop_time, run_id)
            st.stage_changes(conn, changes)
            arrivals = (
                _arrivals(shop, tables, params, shop_time, previous, orders, found) if params.send_available else []
            )
            st.stage_arrivals(
                conn,
                [
                    {**row, "run_id": run_id, "previous_date": _previous_date(previous, row["orders_products_id"])}
                    for row in arrivals
                ],
            )
            look_at = {int(c["orders_id"]) for c in changes if c["date_available"] is not None}  # new or changed
            look_at |= _shared_customers(lines, arrivals)
            if history is not None:
                rules = Rules(t, params.reminder_interval_days, params.max_reminders, params.default_language)
                look_at |= due_by_time(orders - look_at, history, rules)
            else:
                look_at = orders  # the first run: every order is new
            picked = [
                dict(zip(LINE_COLUMNS, plain_line(line), strict=True)) for line in lines if line[_ORDER] in look_at
            ]
            staged = [
                {**row, "run_id": run_id, "previous_date": _previous_date(previous, row["orders_products_id"])}
                for row in found.fitted(st.staged_lines, picked, check=False)
            ]
            for start in range(0, len(staged), chunk_size):
                st.stage_lines(conn, staged[start : start + chunk_size])
            st.record_extract(
                conn, run_id, line_count=len(lines), order_count=len(orders), suspect_lines=found.record()
            )
            st.record_stage_time(conn, run_id, "extract", time.perf_counter() - started)
            lease.between_tasks(conn, run_id, lease.POLICY.clock())  # extract ends: the run waits for its next task
    arrived = len({row["orders_id"] for row in arrivals})
    staged_orders = len(look_at & orders)
    log.info(
        "extract: run %d, T=%s (shop time %s), %d backorder lines in %d orders; statuses %s; language from %s%s",
        run_id,
        run.reference_time.isoformat(),
        shop_time,
        len(lines),
        len(orders),
        list(params.order_status_ids),
        " > ".join(tables.describe()["language_from"]) or "none (default_language)",
        f"; {arrived} orders wait no more" if params.send_available else "",
    )
    log.info(
        "extract: against the previous snapshot (%s): %d line(s) new, changed or gone (not counting those whose"
        " date was reached: %d); staged the %d line(s) of the %d order(s) classify looks at",
        snap["reference_time"].isoformat() if snap else "none, the first run",
        len(changes),
        reached,
        len(staged),
        staged_orders,
    )
    return ExtractResult(run_id, len(lines), len(orders), arrived, len(found.suspects), len(changes), staged_orders)


# --- previous snapshot -----------------------------------------------------------------------


def load_previous_snapshot(state_db: DbConnection, run_id: int) -> dict[str, Any]:
    """The snapshot the run is compared with: the latest one strictly before its T, which extract compared
    the shop's lines with and pinned to the run record.

    Run again (its task cleared, the run finished or not), it returns the same snapshot: a snapshot
    written since (a backfill of an earlier day) does not change what the run was compared with.
    """
    with _engine(state_db) as state, lease.hold(state, run_id, "previous_snapshot"), state.begin() as conn:
        lease.check(conn, run_id)
        run = st.get_run(conn, run_id)
        started = time.perf_counter()
        pinned = run["previous_snapshot_id"]
        snap = st.get_snapshot(conn, pinned) if pinned else None
        if run["status"] == RunStatus.FINISHED:  # its record is final
            log.info("previous snapshot: run %d is finished; it keeps the snapshot it was compared with", run_id)
        else:
            st.record_stage_time(conn, run_id, "previous_snapshot", time.perf_counter() - started)
    if snap is None:
        log.info("previous snapshot: none before %s (first run): every line counts as new", run["reference_time"])
        return {"snapshot_id": None, "reference_time": None, "lines": 0}
    log.info("previous snapshot: %d from %s with %d lines", snap["id"], snap["reference_time"], snap["line_count"])
    return {
        "snapshot_id": snap["id"],
        "reference_time": snap["reference_time"].isoformat(),
        "lines": snap["line_count"],
    }


# --- classify --------------------------------------------------------------------------------


def _iso(value: Any) -> str | None:
    """A date as the email shows it (classify.shown_date: None for none or a date in 2100 or later), ISO."""
    date = shown_date(value)
    return None if date is None else date.isoformat()


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _lines_json(records: list[dict[str, Any]]) -> str:
    """The products and dates one notification lists, as its email shows them and the audit keeps them.
    `records` are plain values (classify.plain_records: None, never NaN)."""
    items = [
        {
            "orders_products_id": int(r["orders_products_id"]),
            "products_id": int(r["products_id"]),
            "products_name": _text(r["products_name"]),
            "products_model": _text(r["products_model"]),
            "products_quantity": float(r["products_quantity"]),
            "date_available": _iso(r["date_available"]),
            "previous_date": _iso(r["previous_date"]),
        }
        for r in records
    ]
    return st.dumps(items)


def silence_overtaken(
    conn: sa.Connection,
    run_id: int,
    kind: str | None = None,
    part: tuple[int, int] = (0, 1),
    also_silenced: bool = False,
) -> int:
    """Record as `silenced` the run's due notifications for orders a run at a later T already told; return how many.

    A customer must never get a notification older than one already sent (or silenced): a run whose
    T is earlier than such a run's (a late or backfilled day) sends nothing for that order, and the
    audit says why ("overtaken: ..."). Applied when the run classifies (`also_silenced`: its rows a
    catch_up_silently run silenced get that reason too, so that an overtaken reminder never counts
    towards max_reminders) and again just before it sends (`kind`, `part`).
    """
    t = st.get_run(conn, run_id)["reference_time"]
    statuses = (Status.DUE, Status.SILENCED) if also_silenced else (Status.DUE,)
    found = st.overtaken_notifications(conn, run_id, t, statuses, kind, part)
    by_later: dict[datetime, list[int]] = {}
    for nid, later_t in found:
        by_later.setdefault(later_t, []).append(nid)
    for later_t, ids in by_later.items():
        told_at = later_t.replace(tzinfo=UTC).isoformat()
        detail = f"{st.OVERTAKEN}: the run at T={told_at} already told this order; an older notice is not sent"
        st.silence_notifications(conn, ids, statuses, detail)
    return len(found)


def classify_run(state_db: DbConnection, run_id: int) -> dict[str, int]:
    """Decide each order's notification and put it in the outbox; return how many are due per kind.

    Run again before the run finished, it adds nothing twice (the outbox is unique per order, kind
    and T) and returns what is still due; run again after it finished (its staged lines are gone),
    it changes nothing.
    """
    with _engine(state_db) as state, state.begin() as conn:
        lease.check(conn, run_id)
        if st.get_run(conn, run_id)["status"] == RunStatus.FINISHED:
            due = st.due_per_kind(conn, run_id)
            log.info("classify: run %d is finished: nothing classified again; due: %s", run_id, due)
            return due
    with (
        _engine(state_db) as state,
        lease.hold(state, run_id, "classify"),
        state.begin() as conn,
        _stage(conn, run_id, "classify"),
    ):
        lease.check(conn, run_id)
        run = st.get_run(conn, run_id)
        params = RunParams.from_json(run["params"])
        t = run["reference_time"]
        lines = st.read_staged_lines(conn, run_id)
        previous = st.read_previous_dates(conn, run_id)
        arrived = st.read_staged_arrivals(conn, run_id)
        history = st.read_history(conn, run_id, t)
        result = classify(
            lines,
            previous,
            history,
            Rules(t, params.reminder_interval_days, params.max_reminders, params.default_language),
            st.read_suppressions(conn, run_id),
            arrived if params.send_available else None,
        )

        existing = st.notifications_at(conn, t, params.dry_run)
        listed: dict[int, list[dict[Any, Any]]] = {}
        for rec in plain_records(result.listed):
            listed.setdefault(int(rec["orders_id"]), []).append(rec)
        now = _utcnow()
        silent = params.catch_up_silently
        new_rows: list[dict[str, Any]] = []
        take_over: list[int] = []
        done_before = 0
        for r in plain_records(result.notifications):
            key = (int(r["orders_id"]), str(r["kind"]))
            skip_reason = r["skip_reason"] if isinstance(r["skip_reason"], str) else None  # pandas: None -> NaN
            if key in existing:
                row_id, status = existing[key]
                if status == Status.DUE:
                    take_over.append(row_id)
                else:
                    done_before += 1
                continue
            new_rows.append(
                {
                    "run_id": run_id,
                    "orders_id": key[0],
                    "kind": key[1],
                    "reference_time": t,
                    "dry_run": params.dry_run,
                    "customers_email_address": r["customers_email_address"],
                    "customers_name": r["customers_name"],
                    "customers_id": None if pd.isna(r["customers_id"]) else int(r["customers_id"]),
                    "language": r["language"],
                    "listed_lines": _lines_json(listed[key[0]]),
                    "status": Status.SKIPPED if skip_reason else Status.SILENCED if silent else Status.DUE,
                    "detail": skip_reason or ("catch_up_silently: not sent" if silent else None),
                    "created_at": now,
                }
            )
        if new_rows:
            st.add_notifications(conn, new_rows)
        if take_over:
            st.take_over_notifications(conn, take_over, run_id)
        overtaken = silence_overtaken(conn, run_id, also_silenced=True)
        due = st.due_per_kind(conn, run_id)
    skipped = sum(1 for row in new_rows if row["status"] == Status.SKIPPED)
    log.info(
        "classify: %d waiting orders, %d of them looked at; due now: %s; skipped: %d; already handled at this T: %d;"
        " silenced, told by a run at a later T: %d%s",
        run["order_count"] or 0,
        result.waiting_orders,
        ", ".join(f"{k} {v}" for k, v in due.items()),
        skipped,
        done_before,
        overtaken,
        " (dry run)"
        if params.dry_run
        else f" (catch_up_silently: {len(new_rows) - skipped} recorded as silenced, none sent)"
        if silent
        else "",
    )
    return due


# --- send (the work is in sending.py) ------------------------------------------------------


def send(
    state_db: DbConnection,
    run_id: int,
    kind: str,
    smtp: SmtpSettings,
    unsubscribe_secret: str | None = None,
    part: tuple[int, int] = (0, 1),
) -> dict[str, int]:
    """Render and send this run's due notifications of one kind over one SMTP connection.

    `part` (index, parts) takes the notifications whose id modulo `parts` is `index`, so that
    `parts` senders can share a kind, each with its own connection. Each message's outcome is
    committed right after its SMTP transaction, so a retry sends only what is still due. In a dry
    run, messages are rendered and recorded, not sent.
    """
    if kind not in KINDS:
        raise ConfigError(f"unknown notification kind {kind!r}")
    index, parts = part
    if not 0 <= index < parts:
        raise ConfigError(f"part must be (index, parts) with 0 <= index < parts, got {part!r}")
    stage = f"send_{kind}" if parts == 1 else f"send_{kind}[{index}/{parts}]"
    with _engine(state_db) as state, lease.hold(state, run_id, stage, beside_others=True):
        with state.begin() as conn:  # nothing older than what a later run told, whatever left it due
            lease.check(conn, run_id)
            if overtaken := silence_overtaken(conn, run_id, kind, part):
                log.info(
                    "%s: %d due notification(s) silenced: a run at a later T already told those orders",
                    stage,
                    overtaken,
                )
        started = time.perf_counter()
        batch = load_batch(state, run_id, kind, smtp, unsubscribe_secret, part)
        with Sender(batch, state, state_db.conn_id) as sender:
            if batch.params.dry_run:
                sender.record_dry_run()
            elif batch.rows:
                with Mailer(smtp) as mailer:
                    try:
                        sender.send_all(mailer)
                    finally:
                        if mailer.reconnects:
                            log.warning(
                                "send_%s: the SMTP connection was re-established %d time(s)", kind, mailer.reconnects
                            )
        seconds = time.perf_counter() - started
        with state.begin() as conn:
            parts_seconds = {f"{stage}.{what}": sender.seconds[what] for what in SEND_PARTS}
            st.record_stage_times(conn, run_id, {stage: seconds, **parts_seconds})
    result = dict(sorted(sender.counts.items()))
    spent = ", ".join(f"{what} {sender.seconds[what]:.2f} s" for what in SEND_PARTS)
    sent = ", ".join(f"{k} {v}" for k, v in result.items()) or "nothing sent"
    commits = sender.writer.commits
    log.info("%s: %d due; %s; in %.2f s (%s; %d commits)", stage, len(batch.rows), sent, seconds, spent, commits)
    if sender.temporary:
        raise TemporarySendError(
            f"{len(sender.temporary)} message(s) got a temporary answer and stay due for the retry: "
            f"{sender.temporary[:5]}"
        )
    return result


# --- finish ----------------------------------------------------------------------------------


def finish(state_db: DbConnection, run_id: int) -> dict[str, Any]:
    """Write the new snapshot (unless a dry run) and complete the run record; return its counts.

    The summary's `snapshot` says what this call did: "written" (the first snapshot at T), "replaced"
    (a repeated run of T re-wrote it from its own lines) or None (a dry run, or the run was finished
    before: run again, e.g. its task cleared, finish changes nothing and returns the same counts).
    """
    started = time.perf_counter()
    with _engine(state_db) as state, lease.hold(state, run_id, "finish"), state.begin() as conn:
        lease.check(conn, run_id)
        run = st.get_run(conn, run_id)
        t = run["reference_time"]
        again = run["status"] == RunStatus.FINISHED  # its staged lines are gone: writing a snapshot now would empty it
        snapshot = None
        if not run["dry_run"] and not again:
            shop_time = RunParams.from_json(run["params"]).shop_time(t.replace(tzinfo=UTC))
            first = st.write_snapshot(conn, run_id, t, shop_time, run["line_count"] or 0, _utcnow())
            snapshot = "written" if first else "replaced"
        counts = st.notification_counts(conn, run_id)
        earlier = st.count_handled_by_earlier_runs(conn, run_id, t, bool(run["dry_run"]))
        skipped = st.skipped_notifications(conn, run_id)
        summary_counts: dict[str, Any] = {**counts, "handled_by_earlier_runs_at_this_T": earlier}
        if again:
            summary_counts = json.loads(run["counts"] or "{}") or summary_counts  # as the run recorded them
        else:
            st.drop_staged(conn, run_id)
            lease.release(conn, run["dag_id"], run_id)
            st.record_stage_time(conn, run_id, "finish", time.perf_counter() - started)
            st.complete_run_record(conn, run_id, counts=summary_counts, skipped=skipped, finished_at=_utcnow())
        stage_seconds = st.stage_seconds(conn, run_id)
    t_utc = t.replace(tzinfo=UTC).isoformat()  # the state database keeps UTC without an offset
    summary = {
        "run_id": run_id,
        "reference_time": t_utc,
        "dry_run": bool(run["dry_run"]),
        "counts": summary_counts,
        "skipped": len(skipped),
        "snapshot": snapshot,
    }
    if again:
        log.info(
            "finish: run %d at T=%s was finished at %s: nothing written again (the snapshot at T is kept);"
            " this try: sent 0; the run's total: %s",
            run_id,
            t_utc,
            run["finished_at"],
            _totals(summary_counts.get(Status.SENT) or {}) or "nothing sent",
        )
        return summary
    log.info("finish: run %d at T=%s%s", run_id, t_utc, " (dry run: no snapshot written)" if run["dry_run"] else "")
    for status, kinds in sorted(counts.items()):
        for kind, langs in sorted(kinds.items()):
            log.info("  %-8s %-9s %s", status, kind, ", ".join(f"{lang} {c}" for lang, c in sorted(langs.items())))
    quiet = [kind for kind in KINDS if not any(kind in kinds for kinds in counts.values())]
    if quiet:
        log.info("  nothing due: %s", ", ".join(quiet))
    for item in skipped[:20]:
        log.info("  skipped order %d (%s): %s", item["orders_id"], item["kind"], item["reason"])
    if earlier:
        log.info("  %d notification(s) at this T were handled by an earlier run and were not sent again", earlier)
    log.info("  stage seconds: %s", stage_seconds)
    return summary


def _totals(by_kind: dict[str, dict[str, int]]) -> str:
    """'initial 114 (de 76, en 38), periodic 3 (en 3)': counts per kind and language, for a log line."""
    return ", ".join(
        f"{kind} {sum(langs.values())} ({', '.join(f'{lang} {c}' for lang, c in sorted(langs.items()))})"
        for kind, langs in sorted(by_kind.items())
    )


# --- prune -----------------------------------------------------------------------------------


def prune_state(state_db: DbConnection, keep_days: int | None) -> dict[str, int]:
    """Delete what the state no longer needs, older than `keep_days` days before its latest snapshot
    (`[backorder] keep_days`; None: keep everything), in batches (state.retention). Returns the rows
    deleted per table."""
    if keep_days is None:
        log.info("prune: keep_days not set: nothing pruned")
        return dict.fromkeys(st.PRUNED_TABLES, 0)
    if isinstance(keep_days, bool) or not isinstance(keep_days, int) or not 1 <= keep_days <= MAX_DAYS:
        raise ConfigError(f"[backorder] keep_days: {keep_days!r} is not a whole number of days from 1 to {MAX_DAYS}")
    with _engine(state_db) as state:
        return st.prune(state, keep_days)
