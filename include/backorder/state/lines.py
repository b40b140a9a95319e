"""A run's backorder lines in the state database: staged by extract, kept as the snapshot at T by finish.

Extract stages the lines it read (`stage_lines`) and, for `available` emails, the lines of the
orders that waited at the previous snapshot and wait no more (`stage_arrivals`). Classify reads
them (`read_staged_lines`, `read_staged_arrivals`) beside the dates of the previous snapshot
(`read_snapshot_dates`). Finish keeps the staged lines as the snapshot at T (`write_snapshot`) and
drops what was staged (`drop_staged`), as does a run that takes an abandoned run's lease over.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from include.backorder.state.tables import snapshot_lines, snapshots, staged_arrivals, staged_lines

if TYPE_CHECKING:
    import pandas as pd


def stage_lines(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Stage backorder lines (rows of `bo_staged_line`, each with its run_id)."""
    conn.execute(sa.insert(staged_lines), rows)


def stage_arrivals(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Stage the lines of arrivals (rows of `bo_staged_arrival`, each with its run_id)."""
    conn.execute(sa.insert(staged_arrivals), rows)


def read_staged_lines(conn: Connection, run_id: int) -> pd.DataFrame:
    """The run's staged lines, as the frame classify takes."""
    import pandas as pd  # only classify reads frames; the other users of the state need no pandas

    return pd.read_sql(sa.select(staged_lines).where(staged_lines.c.run_id == run_id), conn)


def read_staged_arrivals(conn: Connection, run_id: int) -> pd.DataFrame:
    """The run's staged arrivals (none unless it sends `available`), as the frame classify takes."""
    import pandas as pd

    return pd.read_sql(sa.select(staged_arrivals).where(staged_arrivals.c.run_id == run_id), conn)


def drop_staged(conn: Connection, run_id: int) -> None:
    """Remove a run's staged lines and arrivals (it finished, or it was abandoned and never will)."""
    conn.execute(sa.delete(staged_lines).where(staged_lines.c.run_id == run_id))
    conn.execute(sa.delete(staged_arrivals).where(staged_arrivals.c.run_id == run_id))


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


def snapshot_line_orders(conn: Connection, snapshot_id: int) -> list[tuple[int, int]]:
    """(orders_products_id, orders_id) of each line of a snapshot."""
    sl = snapshot_lines
    query = sa.select(sl.c.orders_products_id, sl.c.orders_id).where(sl.c.snapshot_id == snapshot_id)
    return [(row.orders_products_id, row.orders_id) for row in conn.execute(query)]


def read_snapshot_dates(conn: Connection, snapshot_id: int | None) -> pd.DataFrame:
    """The availability date of each line of a snapshot (none for None: the run has no previous snapshot)."""
    import pandas as pd

    sl = snapshot_lines
    query = sa.select(sl.c.orders_products_id, sl.c.date_available).where(sl.c.snapshot_id == (snapshot_id or -1))
    return pd.read_sql(query, conn)


def write_snapshot(conn: Connection, run_id: int, reference_time: datetime, lines: int, created_at: datetime) -> bool:
    """Keep this run's staged lines as the snapshot at T; return True if it is the first snapshot at T.

    A repeated run of T re-writes the snapshot at T in place: its id stays, so a later run that
    pinned it as its previous snapshot still finds it. Only a run that still has its staged lines
    (not finished) may call this.
    """
    at_t = snapshots.c.reference_time == reference_time
    snap_id = conn.execute(sa.select(snapshots.c.id).where(at_t)).scalar_one_or_none()
    first = snap_id is None
    if first:
        snap_id = conn.execute(
            sa.insert(snapshots).values(
                reference_time=reference_time, run_id=run_id, line_count=lines, created_at=created_at
            )
        ).inserted_primary_key[0]  # type: ignore[index]
    else:
        conn.execute(sa.delete(snapshot_lines).where(snapshot_lines.c.snapshot_id == snap_id))
        conn.execute(
            sa.update(snapshots)
            .where(snapshots.c.id == snap_id)
            .values(run_id=run_id, line_count=lines, created_at=created_at)
        )
    line = staged_lines.c
    kept = sa.select(
        sa.literal(snap_id), line.orders_products_id, line.orders_id, line.products_id, line.date_available
    )
    columns = ["snapshot_id", "orders_products_id", "orders_id", "products_id", "date_available"]
    conn.execute(sa.insert(snapshot_lines).from_select(columns, kept.where(line.run_id == run_id)))
    return first
