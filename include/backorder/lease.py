"""One run at a time: a lease in the state database, so that overlapping runs never both send.

`max_active_runs=1` keeps scheduled runs apart, but not a backfill beside them, two manual
triggers, or two Airflow deployments sharing a state database. Two such runs would each classify
against a history that lacks the other's emails and could both send an `initial`. So the extract
stage takes the DAG's lease, every later stage checks its run still holds it, and the last stage
gives it back.

A run may take the lease when it is free, held by a finished run, held by an earlier attempt of
the same DAG run (it was cleared or retried from the start), or held for longer than
`LEASE_EXPIRY` (its run died). Taking it over from an unfinished run marks that run `abandoned`:
its remaining tasks stop instead of sending. Otherwise the new run gets `RunOverlapError` and
waits, through its task's retries, for the lease to be given back.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from include.backorder import state as st

LEASE_EXPIRY = timedelta(hours=12)


class RunOverlapError(RuntimeError):
    """Another run of this DAG holds the lease; this one waits (its task retries)."""


class RunAbandonedError(RuntimeError):
    """This run lost its lease to a later run and must not go on."""


def acquire(conn: Connection, name: str, run_id: int, dag_run_id: str, now: datetime) -> int | None:
    """Take the lease for `run_id`; return the id of a run it was taken from, if that run was unfinished."""
    lease, runs = st.leases, st.runs
    held = conn.execute(sa.select(lease).where(lease.c.name == name)).mappings().first()
    if held is None:
        try:  # the whole transaction is abandoned on failure, so no savepoint is needed
            conn.execute(sa.insert(lease).values(name=name, run_id=run_id, dag_run_id=dag_run_id, acquired_at=now))
        except sa.exc.IntegrityError:
            raise RunOverlapError(f"another run of {name!r} took the lease at the same moment; waiting") from None
        return None
    abandoned = None
    if held["run_id"] is not None:
        holder = conn.execute(sa.select(runs).where(runs.c.id == held["run_id"])).mappings().first()
        if holder is not None and holder["status"] == "running":
            same_dag_run = holder["dag_run_id"] == dag_run_id
            expired = now - held["acquired_at"] >= LEASE_EXPIRY
            if not (same_dag_run or expired):
                raise RunOverlapError(
                    f"run {holder['id']} (dag run {holder['dag_run_id']!r}, T={holder['reference_time']}) holds the"
                    f" lease of {name!r} since {held['acquired_at']}: this run waits for it to finish"
                )
            abandoned = holder["id"]
    # Compare-and-set: if another run changed the lease since we read it, we lost the race.
    changed = conn.execute(
        sa.update(lease)
        .where(lease.c.name == name)
        .where(lease.c.run_id.is_(None) if held["run_id"] is None else lease.c.run_id == held["run_id"])
        .values(run_id=run_id, dag_run_id=dag_run_id, acquired_at=now)
    ).rowcount
    if changed != 1:
        raise RunOverlapError(f"another run of {name!r} took the lease at the same moment; waiting")
    if abandoned is not None:
        conn.execute(sa.update(runs).where(runs.c.id == abandoned).values(status="abandoned"))
    return abandoned


def check(conn: Connection, run_id: int) -> None:
    """Stop a run whose lease was taken over."""
    run = st.get_run(conn, run_id)
    if run["status"] == "abandoned":
        raise RunAbandonedError(
            f"run {run_id} (dag run {run['dag_run_id']!r}) was abandoned: a later run took over its lease."
            " Nothing more is sent for it; later runs decide afresh what is due."
        )


def release(conn: Connection, name: str, run_id: int) -> None:
    conn.execute(sa.update(st.leases).where(st.leases.c.name == name, st.leases.c.run_id == run_id).values(run_id=None))
