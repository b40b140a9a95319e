"""Notifications in the state database: the outbox a run fills and its send stages empty, and what decides it.

Extract reads the history of the previous snapshot's orders (`read_history_at`) to find those due by
time; classify reads each staged order's history of notifications (`read_history`) and the opt-outs that
concern the run (`read_suppressions`), then puts the run's notifications in the outbox
(`add_notifications`; `take_over_notifications` for those an abandoned run left due at the same T).
A notification whose order a run at a later T already told is silenced (`overtaken_notifications`,
`silence_notifications`). A send stage takes the due ones (`due_notifications`); finish counts
them (`notification_counts`, `count_handled_by_earlier_runs`, `skipped_notifications`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from include.backorder import Kind, Status
from include.backorder.state.lines import lines_at
from include.backorder.state.tables import (
    OVERTAKEN,
    TOLD,
    notifications,
    staged_arrivals,
    staged_lines,
    suppressions,
)

if TYPE_CHECKING:
    import pandas as pd

SILENCED_PER_STATEMENT = 500  # ids in one UPDATE's IN list


def history_query(reference_time: datetime, order_ids: Any) -> sa.Select[Any]:
    """Per order: emails sent (or silenced) before T, the time of the last one, how many periodic ones
    (a periodic one silenced as overtaken by a later run does not count: the customer never got it).

    `order_ids` (a select of one column) is joined as a derived table: as `IN (subquery)`,
    MariaDB ran it once per notification row (3 s for 4,000 orders, quadratic).
    """
    n = notifications
    orders = order_ids.subquery("run_orders")
    sent_before = sa.and_(n.c.status.in_(TOLD), n.c.dry_run.is_(False), n.c.reference_time < reference_time)
    overtaken = sa.and_(n.c.status == Status.SILENCED, sa.func.coalesce(n.c.detail, "").like(f"{OVERTAKEN}:%"))
    return (
        sa.select(
            n.c.orders_id,
            sa.func.count().label("emails_sent"),
            sa.func.max(n.c.reference_time).label("last_sent_time"),
            sa.func.sum(sa.case((sa.and_(n.c.kind == Kind.PERIODIC, ~overtaken), 1), else_=0)).label("periodic_sent"),
        )
        .select_from(orders.join(n, n.c.orders_id == next(iter(orders.c))))
        .where(sent_before)
        .group_by(n.c.orders_id)
    )


def suppressions_query(run_id: int) -> sa.Select[Any]:
    """The opt-outs that concern the customers of a run's staged lines and arrivals.

    An opt-out counts by customer id only for an id that names one customer: never 0 or NULL (guest
    checkouts of osCommerce-family shops), and not an id that several addresses share among the run's
    orders and the opt-outs recorded under it (a shop's common guest account). Such a row comes back
    with customers_id NULL: it suppresses by its address alone.
    """
    s = suppressions
    address = {t: sa.func.lower(sa.func.trim(t.c.customers_email_address)) for t in (staged_lines, staged_arrivals)}
    addresses = sa.union(*(sa.select(a).where(t.c.run_id == run_id) for t, a in address.items()))
    customers = sa.union(*(sa.select(t.c.customers_id).where(t.c.run_id == run_id) for t in address))
    seen = sa.union_all(
        *(
            sa.select(t.c.customers_id.label("cid"), a.label("addr")).where(t.c.run_id == run_id)
            for t, a in address.items()
        ),
        sa.select(s.c.customers_id, s.c.email_address).where(
            s.c.customers_id.in_(customers), s.c.email_address.is_not(None)
        ),
    ).subquery()
    shared = (
        sa.select(seen.c.cid)
        .where(seen.c.cid.is_not(None))
        .group_by(seen.c.cid)
        .having(sa.func.count(sa.distinct(seen.c.addr)) > 1)
    )
    by_id = sa.and_(s.c.customers_id > 0, s.c.customers_id.in_(customers), s.c.customers_id.not_in(shared))
    return sa.select(
        s.c.email_address, sa.case((by_id, s.c.customers_id), else_=sa.null()).label("customers_id"), s.c.reason
    ).where(sa.or_(s.c.email_address.in_(addresses), by_id))


def read_history(conn: Connection, run_id: int, reference_time: datetime) -> pd.DataFrame:
    """`history_query` for the orders of the run's staged lines and arrivals."""
    import pandas as pd  # only classify reads frames; the other users of the state need no pandas

    staged_orders = sa.union(
        *(sa.select(t.c.orders_id).where(t.c.run_id == run_id) for t in (staged_lines, staged_arrivals))
    )
    return pd.read_sql(history_query(reference_time, staged_orders), conn)


def read_history_at(conn: Connection, reference_time: datetime, snapshot: sa.RowMapping) -> pd.DataFrame:
    """`history_query` for the orders of a snapshot (a bo_snapshot row: a run's previous snapshot)."""
    import pandas as pd

    held = lines_at(snapshot["reference_time"], snapshot["shop_time"]).subquery("held")
    result = conn.execute(history_query(reference_time, sa.select(held.c.orders_id).distinct()))
    rows = [tuple(row) for row in result]  # plain tuples: pandas probes a Row's attributes, row by row, at a cost
    return pd.DataFrame.from_records(rows, columns=list(result.keys()), coerce_float=True)


def read_suppressions(conn: Connection, run_id: int) -> pd.DataFrame:
    """`suppressions_query`: the opt-outs that concern the run's customers."""
    import pandas as pd

    return pd.read_sql(suppressions_query(run_id), conn)


def notifications_at(
    conn: Connection, reference_time: datetime, dry_run: bool
) -> dict[tuple[int, str], tuple[int, str]]:
    """The notifications at T already in the state, of any run (dry runs apart): (id, status) by (orders_id, kind)."""
    n = notifications
    query = sa.select(n.c.id, n.c.orders_id, n.c.kind, n.c.status).where(
        n.c.reference_time == reference_time, n.c.dry_run.is_(dry_run)
    )
    return {(row.orders_id, row.kind): (row.id, row.status) for row in conn.execute(query)}


def add_notifications(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Put notifications in the outbox (rows of `bo_notification`: due, skipped or silenced)."""
    conn.execute(sa.insert(notifications), rows)


def take_over_notifications(conn: Connection, ids: list[int], run_id: int) -> None:
    """Make notifications another run left due at the same T this run's own."""
    conn.execute(sa.update(notifications).where(notifications.c.id.in_(ids)).values(run_id=run_id))


def due_per_kind(conn: Connection, run_id: int) -> dict[str, int]:
    """How many of the run's notifications are due, by kind (every kind named, 0 included)."""
    n = notifications
    due_rows = conn.execute(
        sa.select(n.c.kind, sa.func.count()).where(n.c.run_id == run_id, n.c.status == Status.DUE).group_by(n.c.kind)
    ).all()
    return {kind.value: 0 for kind in Kind} | {kind: int(count) for kind, count in due_rows}  # logged whole: plain keys


def overtaken_notifications(
    conn: Connection,
    run_id: int,
    reference_time: datetime,
    statuses: tuple[str, ...],
    kind: str | None = None,
    part: tuple[int, int] = (0, 1),
) -> list[tuple[int, datetime]]:
    """The run's notifications in `statuses` (of `kind` and `part` only, if given: index, of how many) whose
    order a run at a later T already told; each with the latest such T."""
    n, later = notifications, notifications.alias("later")
    mine = [n.c.run_id == run_id, n.c.status.in_(statuses)]
    if kind is not None:
        mine += [n.c.kind == kind, n.c.id % part[1] == part[0]]
    told_later = later.c.status.in_(TOLD), later.c.dry_run.is_(False), later.c.reference_time > reference_time
    query = (
        sa.select(n.c.id, sa.func.max(later.c.reference_time))
        .join(later, later.c.orders_id == n.c.orders_id)
        .where(*mine, *told_later)
        .group_by(n.c.id)
    )
    return [(nid, later_t) for nid, later_t in conn.execute(query)]


def silence_notifications(conn: Connection, ids: list[int], statuses: tuple[str, ...], detail: str) -> None:
    """Record the notifications `ids` that are still in `statuses` as silenced, saying why in `detail`."""
    n = notifications
    for i in range(0, len(ids), SILENCED_PER_STATEMENT):
        still = n.c.id.in_(ids[i : i + SILENCED_PER_STATEMENT]), n.c.status.in_(statuses)
        conn.execute(sa.update(n).where(*still).values(status=Status.SILENCED, detail=detail))


def due_notifications(
    conn: Connection, run_id: int, kind: str, part: tuple[int, int] = (0, 1)
) -> Sequence[sa.RowMapping]:
    """The run's due notifications of one kind, by order (of `part` only: index, of how many, by id)."""
    n = notifications
    index, parts = part
    due = n.c.run_id == run_id, n.c.kind == kind, n.c.status == Status.DUE, n.c.id % parts == index
    return conn.execute(sa.select(n).where(*due).order_by(n.c.orders_id)).mappings().all()


def notification_counts(conn: Connection, run_id: int) -> dict[str, dict[str, dict[str, int]]]:
    """The run's notifications counted by status, kind and language: {"sent": {"initial": {"en": 3}}, ...}."""
    n = notifications
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for kind, language, status, count in conn.execute(
        sa.select(n.c.kind, n.c.language, n.c.status, sa.func.count())
        .where(n.c.run_id == run_id)
        .group_by(n.c.kind, n.c.language, n.c.status)
    ):
        counts.setdefault(status, {}).setdefault(kind, {})[language] = int(count)
    return counts


def count_handled_by_earlier_runs(conn: Connection, run_id: int, reference_time: datetime, dry_run: bool) -> int:
    """How many notifications at T (dry runs apart) are other runs': a repeated run of T did not send them again."""
    n = notifications
    others_at_t = n.c.reference_time == reference_time, n.c.dry_run.is_(dry_run), n.c.run_id != run_id
    return int(conn.execute(sa.select(sa.func.count()).where(*others_at_t)).scalar_one())


def skipped_notifications(conn: Connection, run_id: int) -> list[dict[str, Any]]:
    """The run's skipped notifications, by order: orders_id, kind and the reason."""
    n = notifications
    query = (
        sa.select(n.c.orders_id, n.c.kind, n.c.detail)
        .where(n.c.run_id == run_id, n.c.status == Status.SKIPPED)
        .order_by(n.c.orders_id)
    )
    return [{"orders_id": r.orders_id, "kind": r.kind, "reason": r.detail} for r in conn.execute(query)]
