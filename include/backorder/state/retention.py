"""Retention (`[backorder] keep_days`): delete what the state database no longer needs, in small batches.

Without pruning the state grows by every run's record and notifications, and by every change of a line,
for ever. `prune(engine, keep_days)` deletes what is older than `keep_days` days, counted back from the
state's latest snapshot (never from the wall clock: a DAG paused for a month keeps its history when it
resumes), except what the rules still need:

- the *horizon*: cutoff = the latest snapshot's T - keep_days; the *boundary* is the latest snapshot at or
  before the cutoff, kept, so that a run (a backfill) at any T after it still finds its previous snapshot;
- the *kept orders*: every order that waited at the boundary or at any snapshot since (its lines have a
  history row that had not ended by the boundary), the orders still waiting at the latest snapshot
  among them. Everything of a kept order is kept, however old: its line history and its notifications
  are the evidence its next email is decided on (told before, when, how many reminders), also for a
  backfill of a day after the boundary, when the order may wait no more at the latest snapshot.

Deleted, in this order, each in batches of `batch` ids, each batch its own transaction (the state is never
locked for long, and a run may go on beside it; every DELETE checks its conditions again):

1. `bo_line_history` rows that ended at or before the boundary (valid_to <= boundary, or a date reached by the
   boundary's shop time), of orders not kept:
   the snapshot at the boundary and at every T after it reads back exactly as before;
2. `bo_notification` rows with reference_time < cutoff, of orders not kept;
3. `bo_snapshot` rows with reference_time < cutoff, except the boundary;
4. `bo_run` rows with reference_time < cutoff that are no longer referenced (by a notification, a snapshot,
   or staged rows of a run under way), not running, and not the lease's holder.

`bo_suppression` (the opt-outs) and `bo_lease` are never pruned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from include.backorder import RunStatus
from include.backorder.config import MAX_DAYS
from include.backorder.state.tables import (
    leases,
    line_history,
    notifications,
    runs,
    snapshots,
    staged_arrivals,
    staged_changes,
    staged_lines,
)

log = logging.getLogger(__name__)

BATCH = 5000  # ids per DELETE, each batch its own transaction
LOG_EVERY = 20  # batches between two progress lines of one table
MAX_KEEP_DAYS = MAX_DAYS  # as the params' day counts: 100 years
# The tables prune deletes from, in the order it does.
PRUNED_TABLES = ("bo_line_history", "bo_notification", "bo_snapshot", "bo_run")


@dataclass(frozen=True)
class Horizon:
    """What a prune keeps: everything from `cutoff` on, the snapshot at `boundary`, the history from it on."""

    latest: datetime  # T of the latest snapshot
    cutoff: datetime  # latest - keep_days
    boundary: datetime | None  # T of the latest snapshot at or before the cutoff (kept); None: there is none
    boundary_id: int | None
    boundary_shop_time: datetime | None = None  # the boundary's shop time: a row whose date is not later ended

    @property
    def history_until(self) -> datetime:
        """History rows that ended at or before this may go (the boundary; without one, the cutoff)."""
        return self.boundary if self.boundary is not None else self.cutoff


def horizon(conn: Connection, keep_days: int) -> Horizon | None:
    """The horizon of a prune with `keep_days`; None when the state holds no snapshot (nothing to prune)."""
    s = snapshots.c
    latest = conn.execute(sa.select(sa.func.max(s.reference_time))).scalar_one_or_none()
    if latest is None:
        return None
    cutoff = latest - timedelta(days=keep_days)
    boundary = conn.execute(
        sa.select(s.id, s.reference_time, s.shop_time)
        .where(s.reference_time <= cutoff)
        .order_by(s.reference_time.desc())
        .limit(1)
    ).first()
    if boundary is None:
        return Horizon(latest, cutoff, None, None)
    return Horizon(latest, cutoff, boundary.reference_time, boundary.id, boundary.shop_time)


def _ended(until: datetime, shop_time: datetime | None) -> sa.ColumnElement[bool]:
    """A history row that holds at no snapshot from `until` on: closed by then, or (with the shop time of the
    snapshot at `until`) its date reached by then."""
    h = line_history.c
    return h.valid_to <= until if shop_time is None else sa.or_(h.valid_to <= until, h.date_available <= shop_time)


def kept_orders(conn: Connection, since: datetime, shop_time: datetime | None = None) -> set[int]:
    """The orders with a line in the snapshot at `since` or at any snapshot after it (a history row that has not
    ended by `since`, see `_ended`)."""
    h = line_history.c
    query = sa.select(h.orders_id).where(~_ended(since, shop_time)).distinct()
    return {int(oid) for oid in conn.execute(query).scalars()}


def old_history(
    conn: Connection, until: datetime, after_id: int, limit: int, shop_time: datetime | None = None
) -> list[tuple[int, int]]:
    """The next `limit` history rows by id after `after_id` that ended by `until` (`_ended`): (id, orders_id)."""
    h = line_history.c
    query = sa.select(h.id, h.orders_id).where(_ended(until, shop_time), h.id > after_id).order_by(h.id).limit(limit)
    return [(int(i), int(o)) for i, o in conn.execute(query)]


def delete_history(conn: Connection, ids: list[int], until: datetime, shop_time: datetime | None = None) -> int:
    """Delete these history rows, each only if it still ended by `until`; return how many went."""
    h = line_history.c
    return int(conn.execute(sa.delete(line_history).where(h.id.in_(ids), _ended(until, shop_time))).rowcount)


def old_notifications(conn: Connection, cutoff: datetime, after_id: int, limit: int) -> list[tuple[int, int]]:
    """The next `limit` notifications by id after `after_id` at a T before `cutoff`: (id, orders_id)."""
    n = notifications.c
    query = sa.select(n.id, n.orders_id).where(n.reference_time < cutoff, n.id > after_id).order_by(n.id).limit(limit)
    return [(int(i), int(o)) for i, o in conn.execute(query)]


def delete_notifications(conn: Connection, ids: list[int], cutoff: datetime) -> int:
    n = notifications.c
    return int(conn.execute(sa.delete(notifications).where(n.id.in_(ids), n.reference_time < cutoff)).rowcount)


def _old_snapshot(cutoff: datetime, keep_id: int | None) -> list[sa.ColumnElement[bool]]:
    s = snapshots.c
    return [s.reference_time < cutoff] + ([s.id != keep_id] if keep_id is not None else [])


def old_snapshots(conn: Connection, cutoff: datetime, keep_id: int | None, after_id: int, limit: int) -> list[int]:
    """The next `limit` snapshots by id after `after_id` at a T before `cutoff`, but not `keep_id` (the boundary)."""
    s = snapshots.c
    query = sa.select(s.id).where(*_old_snapshot(cutoff, keep_id), s.id > after_id).order_by(s.id).limit(limit)
    return [int(i) for i in conn.execute(query).scalars()]


def delete_snapshots(conn: Connection, ids: list[int], cutoff: datetime, keep_id: int | None) -> int:
    s = snapshots.c
    return int(conn.execute(sa.delete(snapshots).where(s.id.in_(ids), *_old_snapshot(cutoff, keep_id))).rowcount)


def _prunable_run(cutoff: datetime) -> list[sa.ColumnElement[bool]]:
    """A run record before `cutoff` that nothing needs: no notification, snapshot or staged row refers to it
    (the foreign keys to bo_run), it is not running and does not hold the lease."""
    r = runs.c
    referenced = [
        sa.exists().where(table.c.run_id == r.id)
        for table in (notifications, snapshots, staged_lines, staged_arrivals, staged_changes)
    ]
    holders = sa.select(leases.c.run_id).where(leases.c.run_id.is_not(None))
    return [r.reference_time < cutoff, r.status != RunStatus.RUNNING, r.id.not_in(holders), *(~e for e in referenced)]


def old_runs(conn: Connection, cutoff: datetime, after_id: int, limit: int) -> list[int]:
    """The next `limit` prunable run records by id after `after_id` (see `_prunable_run`)."""
    r = runs.c
    query = sa.select(r.id).where(*_prunable_run(cutoff), r.id > after_id).order_by(r.id).limit(limit)
    return [int(i) for i in conn.execute(query).scalars()]


def delete_runs(conn: Connection, ids: list[int], cutoff: datetime) -> int:
    """Delete these run records, each only if it is still prunable (checked again in the DELETE itself)."""
    return int(conn.execute(sa.delete(runs).where(runs.c.id.in_(ids), *_prunable_run(cutoff))).rowcount)


# One batch: given the last id seen, a transaction's connection and the batch size, return the ids it read
# (empty: the table is done) and how many rows it deleted.
Batch = Callable[[Connection, int, int], tuple[list[int], int]]


def _batches(engine: Engine, table: str, step: Batch, size: int) -> int:
    """Run `step` batch after batch, each in its own transaction, until it reads nothing; return rows deleted."""
    deleted, batches, after = 0, 0, 0
    started = time.perf_counter()
    while True:
        with engine.begin() as conn:
            ids, gone = step(conn, after, size)
        if not ids:
            break
        after, deleted, batches = max(ids), deleted + gone, batches + 1
        if batches % LOG_EVERY == 0:
            log.info(
                "prune: %s: %d rows deleted so far (%d batches of %d, %.1f s)",
                table,
                deleted,
                batches,
                size,
                _since(started),
            )
    log.info("prune: %s: %d rows deleted in %d batch(es) (%.2f s)", table, deleted, batches, _since(started))
    return deleted


def _since(started: float) -> float:
    return time.perf_counter() - started


def _unkept(rows: list[tuple[int, int]], kept: set[int]) -> Iterator[int]:
    return (row_id for row_id, orders_id in rows if orders_id not in kept)


def prune(engine: Engine, keep_days: int, batch: int = BATCH) -> dict[str, int]:
    """Delete what is older than `keep_days` days before the latest snapshot and no rule needs (see the module's
    docstring); return the rows deleted per table (`PRUNED_TABLES`, in that order)."""
    if isinstance(keep_days, bool) or not isinstance(keep_days, int) or not 1 <= keep_days <= MAX_KEEP_DAYS:
        raise ValueError(f"keep_days must be a whole number of days from 1 to {MAX_KEEP_DAYS}, not {keep_days!r}")
    if batch < 1:
        raise ValueError(f"batch must be 1 or more, not {batch!r}")
    counts = dict.fromkeys(PRUNED_TABLES, 0)
    started = time.perf_counter()
    with engine.connect() as conn:
        edge = horizon(conn, keep_days)
        if edge is None:
            log.info("prune: keep_days %d: no snapshot yet: nothing pruned", keep_days)
            return counts
        kept = kept_orders(conn, edge.history_until, edge.boundary_shop_time)
    log.info(
        "prune: keep_days %d: latest snapshot %s, cutoff %s; kept: the snapshot at %s and the history from it on,"
        " and everything of the %d order(s) waiting at it or since",
        keep_days,
        edge.latest.isoformat(),
        edge.cutoff.isoformat(),
        edge.boundary.isoformat() if edge.boundary else "none (no snapshot at or before the cutoff)",
        len(kept),
    )
    until, until_shop, cutoff = edge.history_until, edge.boundary_shop_time, edge.cutoff

    def history(conn: Connection, after: int, size: int) -> tuple[list[int], int]:
        rows = old_history(conn, until, after, size, until_shop)
        doomed = list(_unkept(rows, kept))
        return [row_id for row_id, _ in rows], delete_history(conn, doomed, until, until_shop) if doomed else 0

    def emails(conn: Connection, after: int, size: int) -> tuple[list[int], int]:
        rows = old_notifications(conn, cutoff, after, size)
        doomed = list(_unkept(rows, kept))
        return [row_id for row_id, _ in rows], delete_notifications(conn, doomed, cutoff) if doomed else 0

    def snaps(conn: Connection, after: int, size: int) -> tuple[list[int], int]:
        ids = old_snapshots(conn, cutoff, edge.boundary_id, after, size)
        return ids, delete_snapshots(conn, ids, cutoff, edge.boundary_id) if ids else 0

    def records(conn: Connection, after: int, size: int) -> tuple[list[int], int]:
        ids = old_runs(conn, cutoff, after, size)
        return ids, delete_runs(conn, ids, cutoff) if ids else 0

    for table, step in zip(PRUNED_TABLES, (history, emails, snaps, records), strict=True):
        counts[table] = _batches(engine, table, step, batch)
    log.info(
        "prune: deleted %s in %.2f s",
        ", ".join(f"{table} {count}" for table, count in counts.items()),
        _since(started),
    )
    return counts
