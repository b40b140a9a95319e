"""A run's backorder lines in the state database: the line history, and what a run stages between its tasks.

The history (`bo_line_history`) keeps each line's state once per change, with the reference times
between which it held; `snapshot_lines` reads the snapshot at any T from it (`lines_at` when the
snapshot is known), `held_at` as a dict.
Extract compares the shop's lines with the previous snapshot and stages only what the next tasks
need (`stage_lines`, `stage_arrivals`: the lines of the orders classify must look at, each with its
previous date; `stage_changes`: what changed). Classify reads them (`read_staged_lines`,
`read_staged_arrivals`, `read_previous_dates`). Finish applies the changes to the history as the
snapshot at T (`write_snapshot`) and drops what was staged (`drop_staged`), as does a run that
takes an abandoned run's lease over.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from include.backorder.state.tables import OPEN, line_history, snapshots, staged_arrivals, staged_changes, staged_lines

if TYPE_CHECKING:
    import pandas as pd

KEYS_PER_STATEMENT = 1000  # line ids in one statement's IN list


class HeldLine(NamedTuple):
    """What the history keeps of a backorder line: the values whose change is a new row."""

    orders_id: int
    products_id: int
    date_available: datetime


def stage_lines(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Stage backorder lines (rows of `bo_staged_line`, each with its run_id and previous_date)."""
    if rows:
        conn.execute(sa.insert(staged_lines), rows)


def stage_arrivals(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Stage the lines of arrivals (rows of `bo_staged_arrival`, each with its run_id and previous_date)."""
    if rows:
        conn.execute(sa.insert(staged_arrivals), rows)


def stage_changes(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Stage what the run's snapshot changes (rows of `bo_staged_change`; date_available None: the line is gone)."""
    if rows:
        conn.execute(sa.insert(staged_changes), rows)


def _staged(table: sa.Table, run_id: int) -> sa.Select[Any]:
    """A run's staged rows as the shop gave them (their previous dates apart: `read_previous_dates`)."""
    columns = (c for c in table.columns if c.name != "previous_date")
    query = sa.select(*columns).where(table.c.run_id == run_id)
    return query.order_by(table.c.orders_id, table.c.orders_products_id)  # an email lists its lines in this order


def read_staged_lines(conn: Connection, run_id: int) -> pd.DataFrame:
    """The run's staged lines, as the frame classify takes."""
    import pandas as pd  # only classify reads frames; the other users of the state need no pandas

    return pd.read_sql(_staged(staged_lines, run_id), conn)


def read_staged_arrivals(conn: Connection, run_id: int) -> pd.DataFrame:
    """The run's staged arrivals (none unless it sends `available`), as the frame classify takes."""
    import pandas as pd

    return pd.read_sql(_staged(staged_arrivals, run_id), conn)


def read_previous_dates(conn: Connection, run_id: int) -> pd.DataFrame:
    """The date at the previous snapshot of each staged line and arrival that was in it (orders_products_id,
    date_available): the part of the previous snapshot classify compares with."""
    import pandas as pd

    query = sa.union_all(
        *(
            sa.select(t.c.orders_products_id, t.c.previous_date.label("date_available")).where(
                t.c.run_id == run_id, t.c.previous_date.is_not(None)
            )
            for t in (staged_lines, staged_arrivals)
        )
    )
    return pd.read_sql(query, conn)


def drop_staged(conn: Connection, run_id: int) -> None:
    """Remove what a run staged (it finished, or it was abandoned and never will)."""
    for table in (staged_lines, staged_arrivals, staged_changes):
        conn.execute(sa.delete(table).where(table.c.run_id == run_id))


def previous_snapshot(conn: Connection, reference_time: datetime) -> sa.RowMapping | None:
    """The latest snapshot strictly before T, if any."""
    query = (
        sa.select(snapshots)
        .where(snapshots.c.reference_time < reference_time)
        .order_by(snapshots.c.reference_time.desc())
        .limit(1)
    )
    return conn.execute(query).mappings().first()


def get_snapshot(conn: Connection, snapshot_id: int) -> sa.RowMapping | None:
    """The snapshot with this id (the previous snapshot a run pinned)."""
    return conn.execute(sa.select(snapshots).where(snapshots.c.id == snapshot_id)).mappings().first()


def lines_at(reference_time: datetime, shop_time: datetime) -> sa.Select[Any]:
    """The lines of the snapshot at T whose shop time is `shop_time` (orders_products_id, orders_id,
    products_id, date_available): the rows valid at T whose date is still ahead. One range on the
    date index (the lines whose date is later than the snapshot's shop time), then the validity."""
    h = line_history
    return sa.select(h.c.orders_products_id, h.c.orders_id, h.c.products_id, h.c.date_available).where(
        h.c.date_available > shop_time, h.c.valid_to > reference_time, h.c.valid_from <= reference_time
    )


def snapshot_at(conn: Connection, reference_time: datetime) -> sa.RowMapping | None:
    """The latest snapshot at or before T, if any: the one whose lines are "the snapshot at T"."""
    query = (
        sa.select(snapshots)
        .where(snapshots.c.reference_time <= reference_time)
        .order_by(snapshots.c.reference_time.desc())
        .limit(1)
    )
    return conn.execute(query).mappings().first()


def snapshot_lines(conn: Connection, reference_time: datetime) -> sa.Select[Any]:
    """`lines_at` for any T: the lines of the latest snapshot at or before T (none before the first)."""
    snap = snapshot_at(conn, reference_time)
    if snap is None:
        return lines_at(reference_time, OPEN)  # no date is later than OPEN: no line
    return lines_at(reference_time, snap["shop_time"])


def held_at(conn: Connection, reference_time: datetime | None) -> dict[int, HeldLine]:
    """The snapshot at T by orders_products_id (empty for None: there is no previous snapshot)."""
    if reference_time is None:
        return {}
    return {row[0]: HeldLine(row[1], row[2], row[3]) for row in conn.execute(snapshot_lines(conn, reference_time))}


def diff_snapshot(
    previous: dict[int, HeldLine], now: dict[int, HeldLine], shop_time: datetime, run_id: int
) -> tuple[list[dict[str, Any]], int]:
    """What the snapshot at T (`now`, by orders_products_id; `shop_time`: T as the shop writes dates) changes
    against the previous one, as rows of bo_staged_change: new and changed lines, and the lines gone for another
    reason than their date (date_available None). Also how many lines left because their date was reached: such
    a line ends by itself in the history (tables.line_history), so that most common change costs no row."""
    changed = [
        {"run_id": run_id, "orders_products_id": key, **held._asdict()}
        for key, held in now.items()
        if previous.get(key) != held
    ]
    gone = [
        {"run_id": run_id, "orders_products_id": key, **held._asdict(), "date_available": None}
        for key, held in previous.items()
        if key not in now and held.date_available > shop_time
    ]
    reached = sum(1 for key, held in previous.items() if key not in now and held.date_available <= shop_time)
    return changed + gone, reached


def _next_snapshot_time(conn: Connection, reference_time: datetime) -> datetime:
    later = conn.execute(
        sa.select(sa.func.min(snapshots.c.reference_time)).where(snapshots.c.reference_time > reference_time)
    ).scalar_one()
    return later if later is not None else OPEN


def _history_from(conn: Connection, reference_time: datetime) -> bool:
    """Whether the history has a boundary at or after T (T is not later than everything it holds)."""
    h = line_history
    starts = sa.select(h.c.id).where(h.c.valid_from >= reference_time).limit(1)
    ends = sa.select(h.c.id).where(h.c.valid_to >= reference_time, h.c.valid_to < OPEN).limit(1)
    return conn.execute(starts).first() is not None or conn.execute(ends).first() is not None


def _chunks(keys: Iterable[int]) -> Iterable[list[int]]:
    ordered = sorted(keys)
    for start in range(0, len(ordered), KEYS_PER_STATEMENT):
        yield ordered[start : start + KEYS_PER_STATEMENT]


def _staged_changes(conn: Connection, run_id: int) -> dict[int, HeldLine | None]:
    c = staged_changes.c
    rows = conn.execute(
        sa.select(c.orders_products_id, c.orders_id, c.products_id, c.date_available).where(c.run_id == run_id)
    )
    return {row[0]: None if row[3] is None else HeldLine(row[1], row[2], row[3]) for row in rows}


def _append_in_order(conn: Connection, run_id: int, reference_time: datetime, changes: Iterable[int]) -> None:
    """The snapshot at T, when T is later than anything in the history: close the rows of the lines that
    changed or went, and add a row for each new value (the common case, two statements and a few chunks)."""
    h = line_history
    for chunk in _chunks(changes):
        conn.execute(
            sa.update(h).where(h.c.orders_products_id.in_(chunk), h.c.valid_to == OPEN).values(valid_to=reference_time)
        )
    c = staged_changes.c
    new_values = sa.select(
        c.orders_products_id, c.orders_id, c.products_id, c.date_available, sa.literal(reference_time), sa.literal(OPEN)
    ).where(c.run_id == run_id, c.date_available.is_not(None))
    columns = ["orders_products_id", "orders_id", "products_id", "date_available", "valid_from", "valid_to"]
    conn.execute(sa.insert(h).from_select(columns, new_values))


Piece = tuple[datetime, datetime, HeldLine]


def _rewrite(pieces: list[Piece], start: datetime, end: datetime, value: HeldLine | None) -> list[Piece]:
    """A line's pieces with [start, end) set to `value` (None: not held), merged where two meet with one value."""
    out: list[Piece] = []
    for valid_from, valid_to, held in pieces:
        if valid_to <= start or valid_from >= end:
            out.append((valid_from, valid_to, held))
            continue
        if valid_from < start:
            out.append((valid_from, start, held))
        if valid_to > end:
            out.append((end, valid_to, held))
    if value is not None:
        out.append((start, end, value))
    merged: list[Piece] = []
    for piece in sorted(out):
        if merged and merged[-1][1] == piece[0] and merged[-1][2] == piece[2]:
            merged[-1] = (merged[-1][0], piece[1], piece[2])
        else:
            merged.append(piece)
    return merged


def _insert_between(
    conn: Connection, reference_time: datetime, until: datetime, changes: dict[int, HeldLine | None]
) -> None:
    """The snapshot at T anywhere in the history (a repeated run of T, a backfill of an earlier T): for each
    line whose value at T is not what the history says, the value holds from T until the next snapshot,
    (`until`) and what held before and after stays as it was. Only those lines' rows are read and rewritten."""
    h = line_history
    at_t = sa.or_(h.c.valid_from == reference_time, h.c.valid_to == reference_time)
    changed_at_t = {row[0] for row in conn.execute(sa.select(h.c.orders_products_id).where(at_t))}
    for chunk in _chunks(changes.keys() | changed_at_t):
        near = conn.execute(
            sa.select(h)
            .where(h.c.orders_products_id.in_(chunk), h.c.valid_to >= reference_time, h.c.valid_from <= until)
            .order_by(h.c.orders_products_id, h.c.valid_from)
        ).mappings()
        pieces: dict[int, list[Piece]] = {key: [] for key in chunk}
        ids: list[int] = []
        for row in near:
            held = HeldLine(row["orders_id"], row["products_id"], row["date_available"])
            pieces[row["orders_products_id"]].append((row["valid_from"], row["valid_to"], held))
            ids.append(row["id"])
        rows: list[dict[str, Any]] = []
        for key, line_pieces in pieces.items():
            before = next((held for start, end, held in line_pieces if start < reference_time <= end), None)
            value = changes.get(key, before)  # not staged: unchanged against the previous snapshot
            for valid_from, valid_to, held in _rewrite(line_pieces, reference_time, until, value):
                piece = {"orders_products_id": key, **held._asdict(), "valid_from": valid_from, "valid_to": valid_to}
                rows.append(piece)
        if ids:
            conn.execute(sa.delete(h).where(h.c.id.in_(ids)))
        if rows:
            conn.execute(sa.insert(h), rows)


def write_snapshot(
    conn: Connection, run_id: int, reference_time: datetime, shop_time: datetime, lines: int, created_at: datetime
) -> bool:
    """Apply this run's staged changes to the history as the snapshot at T (`shop_time`: T as the shop writes
    its dates); return True if it is the first snapshot at T.

    A line that left because its date was reached is not among the changes: its row ends by itself
    (see tables.line_history).

    The snapshot at every other T stays as it was: a run of a T later than the whole history closes and
    adds rows; a repeated run of T, or a backfill of an earlier T, rewrites only the rows of the lines that
    differ at T. A repeated run of T keeps the snapshot's id, so a later run that pinned it as its
    previous snapshot still finds it. Only a run that still has its staged changes (not finished) may
    call this.
    """
    at_t = snapshots.c.reference_time == reference_time
    snap_id = conn.execute(sa.select(snapshots.c.id).where(at_t)).scalar_one_or_none()
    first = snap_id is None
    values = {"run_id": run_id, "line_count": lines, "created_at": created_at, "shop_time": shop_time}
    if first:
        conn.execute(sa.insert(snapshots).values(reference_time=reference_time, **values))
    else:
        conn.execute(sa.update(snapshots).where(snapshots.c.id == snap_id).values(**values))
    until = _next_snapshot_time(conn, reference_time)
    if until < OPEN or _history_from(conn, reference_time):
        _insert_between(conn, reference_time, until, _staged_changes(conn, run_id))
    else:
        changed = conn.execute(sa.select(staged_changes.c.orders_products_id).where(staged_changes.c.run_id == run_id))
        _append_in_order(conn, run_id, reference_time, [row[0] for row in changed])
    return first
