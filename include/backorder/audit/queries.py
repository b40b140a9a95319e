"""What the audit page shows, read from the state database: runs, a run's emails, an order's history, search.

Plain functions over a SQLAlchemy connection of the state database; each returns dataclasses.
Every list is paginated (a *page* is `limit` rows from `offset`) and served by an index: runs by
`reference_time`, a run's notifications by `run_id`, an order's by `ix_bo_notification_order`,
addresses by `ix_bo_notification_email`, a DAG run's run records by `ix_bo_run_dag_run`, a
snapshot's lines by its primary key. Nothing here reads Airflow's metadata database.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from include.backorder import KINDS
from include.backorder import state as st

PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_ID = 2**31 - 1  # the state database's ids and the shop's order ids are 32-bit: so are offsets here
CSV_COLUMNS = (
    "notification_id",
    "run_id",
    "dag_run_id",
    "reference_time",
    "orders_id",
    "kind",
    "language",
    "customers_name",
    "customers_email_address",
    "status",
    "detail",
    "message_id",
    "sent_at",
    "dry_run",
)


@dataclass(frozen=True)
class Page:
    """Which rows of a list: `limit` of them from `offset`."""

    offset: int = 0
    limit: int = PAGE_SIZE

    def __post_init__(self) -> None:
        if not 0 <= self.offset <= MAX_ID or not 1 <= self.limit <= MAX_PAGE_SIZE:
            raise ValueError(f"a page needs 0 <= offset <= {MAX_ID} and 1 <= limit <= {MAX_PAGE_SIZE}")


@dataclass(frozen=True)
class RunSummary:
    """One run record as the runs list shows it."""

    id: int
    dag_id: str
    dag_run_id: str
    reference_time: datetime
    dry_run: bool
    status: str  # running, failed (a stage raised; see lease.py), finished, abandoned
    line_count: int | None
    order_count: int | None
    started_at: datetime
    finished_at: datetime | None
    by_status: dict[str, int]  # sent, failed, skipped, dry_run, silenced, due -> emails
    sent_by_kind: dict[str, int]  # initial, changed, ... -> emails sent (or recorded in a dry run)


@dataclass(frozen=True)
class RunsPage:
    runs: list[RunSummary]
    total: int
    page: Page


@dataclass(frozen=True)
class DayPoint:
    """One day of the history chart: emails sent and backorder lines seen that day (UTC)."""

    day: date
    emails: int
    lines: int


@dataclass(frozen=True)
class OpenProduct:
    """A product with open backorder lines at the latest snapshot, with its date there and before."""

    products_id: int
    lines: int
    orders: int  # customers (orders) waiting for it
    date_available: datetime
    previous_date: datetime | None  # at the snapshot before; None: not backordered then
    products_name: str = ""  # as the latest emails listed it ('' if none of them did)


@dataclass(frozen=True)
class OpenLines:
    snapshot_id: int | None
    reference_time: datetime | None
    previous_reference_time: datetime | None
    products: list[OpenProduct]
    total_products: int
    page: Page


@dataclass(frozen=True)
class NotificationRecord:
    """One notification: the email to one order in one run, and what became of it."""

    id: int
    run_id: int
    orders_id: int
    kind: str
    language: str
    reference_time: datetime
    dry_run: bool
    customers_name: str | None
    customers_email_address: str | None
    customers_id: int | None
    status: str
    detail: str | None  # the server's reply, the error, or why it was skipped
    message_id: str | None
    sent_at: datetime | None
    listed_lines: list[dict[str, Any]] = field(default_factory=list)
    dag_run_id: str = ""


@dataclass(frozen=True)
class RunDetail:
    """One run record with a page of its emails, its skipped and suppressed orders, its params."""

    run: RunSummary
    params: dict[str, Any]
    stage_seconds: dict[str, float]
    shop_schema: dict[str, Any] | None
    emails: list[NotificationRecord]
    total_emails: int
    skipped: list[NotificationRecord]  # status skipped: no usable address, suppressed (reason 'suppressed: ...')
    page: Page


@dataclass(frozen=True)
class SearchHit:
    """An order found by id or address: its address(es) and how many notifications it has had."""

    orders_id: int
    customers_email_address: str | None
    notifications: int
    last_reference_time: datetime


@dataclass(frozen=True)
class SearchResult:
    hits: list[SearchHit]
    total: int
    page: Page


def _loads(text: str | None, default: Any) -> Any:
    return json.loads(text) if text else default


def _summary(row: sa.RowMapping) -> RunSummary:
    """A run record with its counts ({status: {kind: {language: n}}}, written by finish) added up."""
    counts = _loads(row["counts"], {})
    by_status: dict[str, int] = {}
    by_kind: dict[str, int] = dict.fromkeys(KINDS, 0)
    for status_, kinds in counts.items():
        if not isinstance(kinds, dict):  # handled_by_earlier_runs_at_this_T
            continue
        by_status[status_] = sum(sum(langs.values()) for langs in kinds.values())
        if status_ in (st.STATUS_SENT, st.STATUS_DRY_RUN):
            for kind, langs in kinds.items():
                by_kind[kind] = by_kind.get(kind, 0) + sum(langs.values())
    return RunSummary(
        id=row["id"],
        dag_id=row["dag_id"],
        dag_run_id=row["dag_run_id"],
        reference_time=row["reference_time"],
        dry_run=bool(row["dry_run"]),
        status=row["status"],
        line_count=row["line_count"],
        order_count=row["order_count"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        by_status=by_status,
        sent_by_kind=by_kind,
    )


def runs_page(conn: Connection, page: Page = Page()) -> RunsPage:
    """Run records, newest reference time first."""
    r = st.runs
    rows = conn.execute(
        sa.select(r).order_by(r.c.reference_time.desc(), r.c.id.desc()).offset(page.offset).limit(page.limit)
    ).mappings()
    total = conn.execute(sa.select(sa.func.count()).select_from(r)).scalar_one()
    return RunsPage([_summary(row) for row in rows], int(total), page)


def daily_series(conn: Connection, days: int = 60, until: datetime | None = None) -> list[DayPoint]:
    """Per day (of the reference time) over the last `days` days with runs: emails sent, lines seen.

    Several runs on one day (a re-run, a manual trigger) add their emails; the lines are the last
    finished run's of that day. Dry runs are left out. `until` defaults to the latest run.
    """
    r = st.runs
    if until is None:
        until = conn.execute(sa.select(sa.func.max(r.c.reference_time))).scalar_one()
        if until is None:
            return []
    since = datetime.combine(until.date() - timedelta(days=days - 1), datetime.min.time())
    rows = conn.execute(
        sa.select(r.c.reference_time, r.c.counts, r.c.line_count)
        .where(r.c.reference_time >= since, r.c.reference_time <= until, r.c.dry_run.is_(False))
        .where(r.c.status == st.RUN_FINISHED)
        .order_by(r.c.reference_time, r.c.id)
    ).all()
    emails: dict[date, int] = defaultdict(int)
    lines: dict[date, int] = {}
    for reference_time, counts, line_count in rows:
        day = reference_time.date()
        sent = _loads(counts, {}).get(st.STATUS_SENT, {})
        emails[day] += sum(sum(langs.values()) for langs in sent.values())
        lines[day] = int(line_count or 0)
    return [DayPoint(day, emails[day], lines[day]) for day in sorted(lines)]


def open_lines(conn: Connection, page: Page = Page()) -> OpenLines:
    """The backorder lines of the latest snapshot by product (most lines first), with each
    product's date at the snapshot before."""
    snaps = st.snapshots
    latest = conn.execute(sa.select(snaps).order_by(snaps.c.reference_time.desc()).limit(1)).mappings().first()
    if latest is None:
        return OpenLines(None, None, None, [], 0, page)
    before = st.previous_snapshot(conn, latest["reference_time"])
    held = st.lines_at(latest["reference_time"], latest["shop_time"]).subquery("held")
    total = conn.execute(sa.select(sa.func.count(sa.distinct(held.c.products_id)))).scalar_one()
    lines = sa.func.count().label("lines")
    rows = conn.execute(
        sa.select(
            held.c.products_id,
            lines,
            sa.func.count(sa.distinct(held.c.orders_id)).label("orders"),
            sa.func.max(held.c.date_available).label("date_available"),
        )
        .group_by(held.c.products_id)
        .order_by(lines.desc(), held.c.products_id)
        .offset(page.offset)
        .limit(page.limit)
    ).all()
    previous: dict[int, datetime] = {}
    if before is not None and rows:
        then = st.lines_at(before["reference_time"], before["shop_time"]).subquery("then")
        previous = {
            pid: when
            for pid, when in conn.execute(
                sa.select(then.c.products_id, sa.func.max(then.c.date_available))
                .where(then.c.products_id.in_([row.products_id for row in rows]))
                .group_by(then.c.products_id)
            )
        }
    names = product_names(conn, {row.products_id for row in rows})
    products = [
        OpenProduct(
            row.products_id,
            int(row.lines),
            int(row.orders),
            row.date_available,
            previous.get(row.products_id),
            names.get(row.products_id, ""),
        )
        for row in rows
    ]
    return OpenLines(
        latest["id"], latest["reference_time"], before["reference_time"] if before else None, products, int(total), page
    )


def product_names(conn: Connection, products: set[int], at_most: int = 5000) -> dict[int, str]:
    """Product names as the latest emails listed them (snapshots keep ids only): notifications are
    read newest first until every product is named or `at_most` were read."""
    n = st.notifications
    names: dict[int, str] = {}
    before, read = None, 0
    while products - names.keys() and read < at_most:
        query = sa.select(n.c.id, n.c.listed_lines).order_by(n.c.id.desc()).limit(500)
        rows = conn.execute(query if before is None else query.where(n.c.id < before)).all()
        for row in rows:
            for item in _loads(row.listed_lines, []):
                if item.get("products_id") in products and item.get("products_name"):
                    names.setdefault(item["products_id"], item["products_name"])
        if len(rows) < 500:
            break
        before, read = rows[-1].id, read + len(rows)
    return names


def _email(row: sa.RowMapping) -> NotificationRecord:
    return NotificationRecord(
        id=row["id"],
        run_id=row["run_id"],
        orders_id=row["orders_id"],
        kind=row["kind"],
        language=row["language"],
        reference_time=row["reference_time"],
        dry_run=bool(row["dry_run"]),
        customers_name=row["customers_name"],
        customers_email_address=row["customers_email_address"],
        customers_id=row["customers_id"],
        status=row["status"],
        detail=row["detail"],
        message_id=row["message_id"],
        sent_at=row["sent_at"],
        listed_lines=_loads(row["listed_lines"], []),
        dag_run_id=row.get("dag_run_id") or "",
    )


def _emails_query() -> sa.Select[Any]:
    n, r = st.notifications, st.runs
    return sa.select(n, r.c.dag_run_id).join(r, r.c.id == n.c.run_id)


def run_detail(conn: Connection, run_id: int, page: Page = Page()) -> RunDetail | None:
    """One run record and a page of its emails (by order id); None if there is no such run."""
    row = conn.execute(sa.select(st.runs).where(st.runs.c.id == run_id)).mappings().first()
    if row is None:
        return None
    n = st.notifications
    of_run = n.c.run_id == run_id
    emails = conn.execute(
        _emails_query().where(of_run).order_by(n.c.orders_id, n.c.id).offset(page.offset).limit(page.limit)
    ).mappings()
    total = conn.execute(sa.select(sa.func.count()).select_from(n).where(of_run)).scalar_one()
    skipped = conn.execute(
        _emails_query().where(of_run, n.c.status == st.STATUS_SKIPPED).order_by(n.c.orders_id).limit(MAX_PAGE_SIZE)
    ).mappings()
    return RunDetail(
        run=_summary(row),
        params=_loads(row["params"], {}),
        stage_seconds=_loads(row["stage_seconds"], {}),
        shop_schema=_loads(row["shop_schema"], None),
        emails=[_email(e) for e in emails],
        total_emails=int(total),
        skipped=[_email(e) for e in skipped],
        page=page,
    )


def run_params(conn: Connection, run_id: int) -> dict[str, Any] | None:
    """The params a run used; None if there is no such run."""
    text = conn.execute(sa.select(st.runs.c.params).where(st.runs.c.id == run_id)).scalar_one_or_none()
    return None if text is None else dict(_loads(text, {}))


def runs_of_dag_run(conn: Connection, dag_id: str, dag_run_id: str) -> list[int]:
    """The run records of one Airflow DAG run, newest first (a retried or cleared run has several)."""
    r = st.runs
    return list(
        conn.execute(
            sa.select(r.c.id).where(r.c.dag_id == dag_id, r.c.dag_run_id == dag_run_id).order_by(r.c.id.desc())
        ).scalars()
    )


def email(conn: Connection, notification_id: int) -> NotificationRecord | None:
    row = conn.execute(_emails_query().where(st.notifications.c.id == notification_id)).mappings().first()
    return None if row is None else _email(row)


def order_history(conn: Connection, orders_id: int, page: Page = Page(limit=MAX_PAGE_SIZE)) -> list[NotificationRecord]:
    """Every notification of one order across runs, oldest first."""
    n = st.notifications
    rows = conn.execute(
        _emails_query()
        .where(n.c.orders_id == orders_id)
        .order_by(n.c.reference_time, n.c.id)
        .offset(page.offset)
        .limit(page.limit)
    ).mappings()
    return [_email(row) for row in rows]


def _starts_with(column: sa.ColumnElement[Any], prefix: str, dialect: str) -> sa.ColumnElement[bool]:
    """`column` starts with `prefix`, as a condition its index serves.

    SQLite's LIKE ignores case and so cannot use a plain index (a full scan: 1.4 s for 730,000
    notifications); the range between the prefix and the prefix followed by the highest character
    can. PostgreSQL's index has varchar_pattern_ops for LIKE; MariaDB's LIKE uses its index as is.
    """
    if dialect == "sqlite":
        return sa.and_(column >= prefix, column < prefix + "\U0010ffff")
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(f"{escaped}%", escape="\\")


def search(conn: Connection, query: str, page: Page = Page()) -> SearchResult:
    """Orders by id (all digits: that order) or by address (exact, or by prefix when it ends in '*').

    Case follows the database's collation (MariaDB's is case-insensitive; SQLite's and
    PostgreSQL's are not): addresses are matched as the shop stored them.
    """
    n = st.notifications
    text = query.strip()
    if not text:
        return SearchResult([], 0, page)
    if text.isascii() and text.isdigit():  # str.isdigit() also takes '²' and other scripts' digits
        if int(text) > MAX_ID:
            return SearchResult([], 0, page)
        where = n.c.orders_id == int(text)
    elif text.endswith("*") and len(text) > 1:
        where = _starts_with(n.c.customers_email_address, text[:-1], conn.dialect.name)
    else:
        where = n.c.customers_email_address == text
    grouped = (
        sa.select(
            n.c.orders_id,
            n.c.customers_email_address,
            sa.func.count().label("notifications"),
            sa.func.max(n.c.reference_time).label("last_reference_time"),
        )
        .where(where)
        .group_by(n.c.orders_id, n.c.customers_email_address)
    )
    total = conn.execute(sa.select(sa.func.count()).select_from(grouped.subquery())).scalar_one()
    rows = conn.execute(
        grouped.order_by(sa.desc("last_reference_time"), n.c.orders_id).offset(page.offset).limit(page.limit)
    ).all()
    hits = [
        SearchHit(r.orders_id, r.customers_email_address, int(r.notifications), r.last_reference_time) for r in rows
    ]
    return SearchResult(hits, int(total), page)


def csv_rows(conn: Connection, run_id: int, chunk: int = 1000) -> Iterator[tuple[Any, ...]]:
    """A run's emails as rows of CSV_COLUMNS (the header first), streamed in chunks."""
    n = st.notifications
    yield CSV_COLUMNS
    last_id = 0
    while True:
        rows = (
            conn.execute(_emails_query().where(n.c.run_id == run_id, n.c.id > last_id).order_by(n.c.id).limit(chunk))
            .mappings()
            .all()
        )
        for row in rows:
            yield (
                row["id"],
                row["run_id"],
                row["dag_run_id"],
                row["reference_time"].isoformat(),
                row["orders_id"],
                row["kind"],
                row["language"],
                row["customers_name"] or "",
                row["customers_email_address"] or "",
                row["status"],
                row["detail"] or "",
                row["message_id"] or "",
                row["sent_at"].isoformat() if row["sent_at"] else "",
                bool(row["dry_run"]),
            )
        if len(rows) < chunk:
            return
        last_id = rows[-1]["id"]
