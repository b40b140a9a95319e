"""A run's record (`bo_run`): created by extract, added to by each stage, completed by finish.

Extract creates it (`create_run_record`) and says what it found (`record_extract`); the previous
snapshot stage pins the snapshot the run is compared with (`pin_previous_snapshot`); every stage
adds its seconds (`record_stage_time`); finish completes it (`complete_run_record`). Its status
moves from running to failed, finished or abandoned as lease.py says.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from include.backorder import RunStatus
from include.backorder.state.tables import dumps, runs


def create_run_record(
    conn: Connection,
    *,
    dag_id: str,
    dag_run_id: str,
    reference_time: datetime,
    dry_run: bool,
    params: str,
    shop_schema: dict[str, Any],
    started_at: datetime,
) -> int:
    """Write a new run's record, running, with the params it uses (JSON) and the shop's schema; return its id."""
    inserted = conn.execute(
        sa.insert(runs).values(
            dag_id=dag_id,
            dag_run_id=dag_run_id,
            reference_time=reference_time,
            dry_run=dry_run,
            params=params,
            status=RunStatus.RUNNING,
            stage_seconds="{}",
            shop_schema=dumps(shop_schema),
            started_at=started_at,
        )
    )
    run_id: int = inserted.inserted_primary_key[0]  # type: ignore[index]
    return run_id


def get_run(conn: Connection, run_id: int) -> sa.RowMapping:
    row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).mappings().first()
    if row is None:
        raise LookupError(f"no run record {run_id} in the state database")
    return row


def record_extract(
    conn: Connection, run_id: int, *, line_count: int, order_count: int, suspect_lines: list[dict[str, Any]] | None
) -> None:
    """What extract found: its backorder lines and orders, and the suspect lines (None: there were none)."""
    conn.execute(
        sa.update(runs)
        .where(runs.c.id == run_id)
        .values(
            line_count=line_count,
            order_count=order_count,
            suspect_lines=None if suspect_lines is None else dumps(suspect_lines),
        )
    )


def pin_previous_snapshot(conn: Connection, run_id: int, snapshot_id: int | None) -> None:
    """Keep the snapshot the run is compared with (None: it has none, it is the first run)."""
    conn.execute(sa.update(runs).where(runs.c.id == run_id).values(previous_snapshot_id=snapshot_id))


def record_stage_time(conn: Connection, run_id: int, stage: str, seconds: float) -> None:
    record_stage_times(conn, run_id, {stage: seconds})


def record_stage_times(conn: Connection, run_id: int, seconds: dict[str, float]) -> None:
    """Add stage durations to the run record. Parallel send tasks write it too: the row is written
    (locked) before it is read, which also serialises writers on SQLite, where FOR UPDATE is ignored."""
    this_run = runs.c.id == run_id
    conn.execute(sa.update(runs).where(this_run).values(stage_seconds=runs.c.stage_seconds))
    current = json.loads(conn.execute(sa.select(runs.c.stage_seconds).where(this_run)).scalar_one())
    current.update({stage: round(value, 3) for stage, value in seconds.items()})
    conn.execute(sa.update(runs).where(this_run).values(stage_seconds=json.dumps(current)))


def stage_seconds(conn: Connection, run_id: int) -> dict[str, float]:
    """The seconds each stage of the run took so far, by stage."""
    seconds: dict[str, float] = json.loads(
        conn.execute(sa.select(runs.c.stage_seconds).where(runs.c.id == run_id)).scalar_one()
    )
    return seconds


def complete_run_record(
    conn: Connection, run_id: int, *, counts: dict[str, Any], skipped: list[dict[str, Any]], finished_at: datetime
) -> None:
    """Mark the run finished, with its notifications counted (by status, kind and language) and its skipped orders."""
    conn.execute(
        sa.update(runs)
        .where(runs.c.id == run_id)
        .values(status=RunStatus.FINISHED, counts=dumps(counts), skipped=dumps(skipped), finished_at=finished_at)
    )
