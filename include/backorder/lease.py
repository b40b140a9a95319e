"""One run at a time: a lease in the state database, so that overlapping runs never both send.

`max_active_runs=1` keeps scheduled runs apart, but not a backfill beside them, two manual
triggers, or two Airflow deployments sharing a state database. Two such runs would each classify
against a history that lacks the other's emails and could both send an `initial`. So the extract
stage takes the DAG's lease (`acquire`, in the transaction that creates the run record), every
later stage holds it while it works (`hold`), and the last stage gives it back (`release`).

The lease must not outlive its run: a run that crashed, was killed or was marked failed must not
block the next one for hours. But between two tasks of a healthy run no process runs for it (the
next task waits in the scheduler's queue), so silence alone does not prove a run dead. The lease
row (`bo_lease`) therefore says which of two states its holder is in:

- *a stage is running* (`heartbeat_at` set): the stage wrote `heartbeat_at` when it started and a
  background thread writes it again every `beat_every` (20 s) while the stage works. A running
  stage that has not beaten for `heartbeat_timeout` (2 min) is dead: SIGKILL, out of memory, a
  lost worker.
- *between tasks* (`heartbeat_at` NULL): a stage that ends well clears `heartbeat_at` and renews
  `acquired_at`. The next task gets `between_tasks` (30 min) to start: a busy scheduler takes
  minutes, not half an hour; a DAG run stopped from outside never comes back.

A stage that fails (an exception, including the SIGTERM of "mark failed") marks its run `failed`
at once: nothing of the run is running now, and its task either fails or waits for a retry. A
failed holder's lease can be taken over immediately; if nobody took it, the retry finds it still
held and goes on (the run is `running` again). Send stages are the exception: several run side by
side (mapped batches, kinds), so a failing one only stops beating and leaves the lease to its
siblings' heartbeats, which lapse `heartbeat_timeout` after the last one stops. The DAG adds what
the library cannot see (dags/backorder_notifications.py): when one of the tasks that run alone
(`load_previous_snapshot`, `classify`, `write_snapshot_and_audit`) is killed, marked failed or
fails outside its stage, its failure (or retry) callback marks the run failed (`task_ended`),
unless a stage of the run still beats (a late callback must not free a retry that already runs).

The extract stage needs no heartbeat: the lease row it writes stays locked by its transaction
until it commits (on SQLite the whole database is), so a rival waits for it or gives up, and a
killed extract rolls back with everything it staged. On SQLite a heartbeat likewise waits while a
stage's own transaction holds the database, as every rival does. A stage run again for a run
that already finished (a cleared task) holds nothing: there is no lease left to hold.

Another run may take the lease when it is free; held by a finished or `failed` run; held by an
earlier attempt of the same DAG run (cleared, or retried from the start); held by a running
stage silent for `heartbeat_timeout`; held between tasks for `between_tasks`; or, as a last
resort, not renewed for `expiry` (12 h: a stage that beats but never ends). Taking it over from
an unfinished run marks that run `abandoned`: its remaining tasks stop instead of sending, and
the taker decides afresh what is due (at the same T it takes over the rows still due). Otherwise
the new run gets `RunOverlapError` and waits, through its task's retries.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from include.backorder import RunStatus
from include.backorder import state as st

log = logging.getLogger(__name__)

LEASE_EXPIRY = timedelta(hours=12)


def utcnow() -> datetime:
    """Now as the state database keeps times: naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Policy:
    """How long silence must last before a holder counts as dead, and how often a stage beats.

    `clock` gives naive UTC; tests inject one to step over the timeouts without waiting.
    """

    heartbeat_timeout: timedelta = timedelta(minutes=2)
    between_tasks: timedelta = timedelta(minutes=30)
    expiry: timedelta = LEASE_EXPIRY
    beat_every: float = 20.0  # seconds
    clock: Callable[[], datetime] = field(default=utcnow)

    def __post_init__(self) -> None:
        if not 0 < self.beat_every * 3 <= self.heartbeat_timeout.total_seconds():
            raise ValueError(f"beat_every ({self.beat_every} s) must fit three times into heartbeat_timeout")


POLICY = Policy()  # what the stages use (tests replace it)


class RunOverlapError(RuntimeError):
    """Another run of this DAG holds the lease; this one waits (its task retries)."""


class RunAbandonedError(RuntimeError):
    """This run lost its lease to a later run and must not go on."""


def _alive(held: sa.RowMapping, now: datetime, policy: Policy) -> tuple[bool, str]:
    """Whether a running holder still counts as alive, and why (or why it is provably not running)."""
    renewed, beat = held["acquired_at"], held["heartbeat_at"]
    if renewed is not None and now - renewed >= policy.expiry:
        return False, f"no stage of it ended since {renewed} ({policy.expiry} ago at least: the last resort)"
    if beat is not None:
        if now - beat < policy.heartbeat_timeout:
            return True, f"a stage of it is running (last heartbeat {beat})"
        return False, f"its running stage has not beaten since {beat} (its process died)"
    if renewed is None or now - renewed < policy.between_tasks:
        return True, f"it is between two tasks since {renewed}"
    return False, f"its next task has not started since {renewed} (its DAG run was stopped)"


def acquire(
    conn: Connection, name: str, run_id: int, dag_run_id: str, now: datetime, policy: Policy | None = None
) -> int | None:
    """Take the lease for `run_id`; return the id of a run it was taken from, if that run was unfinished."""
    policy = policy or POLICY
    lease, runs = st.leases, st.runs
    taken = {"run_id": run_id, "dag_run_id": dag_run_id, "acquired_at": now, "heartbeat_at": None}
    held = conn.execute(sa.select(lease).where(lease.c.name == name)).mappings().first()
    if held is None:
        try:  # the whole transaction is abandoned on failure, so no savepoint is needed
            conn.execute(sa.insert(lease).values(name=name, **taken))
        except sa.exc.IntegrityError:
            raise RunOverlapError(f"another run of {name!r} took the lease at the same moment; waiting") from None
        return None
    abandoned = None
    if held["run_id"] is not None:
        holder = conn.execute(sa.select(runs).where(runs.c.id == held["run_id"])).mappings().first()
        if holder is not None and holder["status"] in (RunStatus.RUNNING, RunStatus.FAILED):
            running = holder["status"] == RunStatus.RUNNING
            alive, why = _alive(held, now, policy) if running else (False, "its last stage failed")
            if alive and holder["dag_run_id"] != dag_run_id:
                raise RunOverlapError(
                    f"run {holder['id']} (dag run {holder['dag_run_id']!r}, T={holder['reference_time']}) holds the"
                    f" lease of {name!r} and {why}: this run waits for it to finish"
                )
            abandoned = holder["id"]
            if holder["dag_run_id"] == dag_run_id:
                why = "it is an earlier attempt of the same DAG run"
            log.warning("lease %r: run %d takes over from run %d: %s", name, run_id, abandoned, why)
    # Compare-and-set: if another run changed the lease since we read it, we lost the race.
    changed = conn.execute(
        sa.update(lease)
        .where(lease.c.name == name)
        .where(lease.c.run_id.is_(None) if held["run_id"] is None else lease.c.run_id == held["run_id"])
        .values(**taken)
    ).rowcount
    if changed != 1:
        raise RunOverlapError(f"another run of {name!r} took the lease at the same moment; waiting")
    if abandoned is not None:
        conn.execute(sa.update(runs).where(runs.c.id == abandoned).values(status=RunStatus.ABANDONED))
    return abandoned


def check(conn: Connection, run_id: int) -> None:
    """Stop a run whose lease was taken over."""
    run = st.get_run(conn, run_id)
    if run["status"] == RunStatus.ABANDONED:
        raise RunAbandonedError(
            f"run {run_id} (dag run {run['dag_run_id']!r}) was abandoned: a later run took over its lease."
            " Nothing more is sent for it; later runs decide afresh what is due."
        )


def _held_by(run_id: int) -> sa.ColumnElement[bool]:
    return st.leases.c.run_id == run_id


def between_tasks(conn: Connection, run_id: int, now: datetime) -> None:
    """A stage ended well: its run waits for its next task (no heartbeat; `between_tasks` applies)."""
    conn.execute(sa.update(st.leases).where(_held_by(run_id)).values(heartbeat_at=None, acquired_at=now))


def mark_failed(conn: Connection, run_id: int) -> None:
    """The run's stage failed: nothing of it runs now, so another run may take its lease at once."""
    running = (st.runs.c.id == run_id, st.runs.c.status == RunStatus.RUNNING)
    conn.execute(sa.update(st.runs).where(*running).values(status=RunStatus.FAILED))
    conn.execute(sa.update(st.leases).where(_held_by(run_id)).values(heartbeat_at=None))


def task_ended(conn: Connection, name: str, dag_run_id: str, now: datetime, policy: Policy | None = None) -> int | None:
    """For the DAG's failure callbacks: a task of this DAG run that runs alone ended in failure
    (killed, marked failed, or failing before its stage began). Mark the holder failed if it is of
    this DAG run and no stage of it beats (a late callback must not free a retry that already
    runs); return its run id, or None."""
    policy = policy or POLICY
    held = (
        conn.execute(sa.select(st.leases).where(st.leases.c.name == name, st.leases.c.dag_run_id == dag_run_id))
        .mappings()
        .first()
    )
    if held is None or held["run_id"] is None:
        return None
    beat = held["heartbeat_at"]
    if beat is not None and now - beat < policy.heartbeat_timeout:
        return None
    mark_failed(conn, held["run_id"])
    return int(held["run_id"])


def release(conn: Connection, name: str, run_id: int) -> None:
    conn.execute(
        sa.update(st.leases).where(st.leases.c.name == name, _held_by(run_id)).values(run_id=None, heartbeat_at=None)
    )


class Holding:
    """A stage holding its run's lease: beats on a thread until closed."""

    def __init__(self, engine: Engine, run_id: int, stage: str, policy: Policy) -> None:
        self.engine, self.run_id, self.stage, self.policy = engine, run_id, stage, policy
        self.lost = False  # the lease was taken over while the stage ran
        self.released = False  # the run holds the lease no more (lost, or given back by finish)
        self._stop = threading.Event()
        self._warned = False
        self._thread = threading.Thread(target=self._beat_until_stopped, name=f"lease-{stage}", daemon=True)

    def start(self) -> bool:
        """Check the run still holds the lease and say a stage of it runs (committed before the work
        starts); False for a finished run, whose stage is run again without the lease (nothing to hold)."""
        with self.engine.begin() as conn:
            check(conn, self.run_id)
            run = st.get_run(conn, self.run_id)
            if run["status"] == RunStatus.FINISHED:
                return False
            holder = conn.execute(sa.select(st.leases.c.run_id).where(st.leases.c.name == run["dag_id"])).scalar()
            if holder != self.run_id:  # only a run that took the lease over can have it now
                conn.execute(sa.update(st.runs).where(st.runs.c.id == self.run_id).values(status=RunStatus.ABANDONED))
            else:
                if run["status"] == RunStatus.FAILED:  # the retry of a failed stage, and nobody took over: go on
                    conn.execute(sa.update(st.runs).where(st.runs.c.id == self.run_id).values(status=RunStatus.RUNNING))
                    log.info("%s: run %d still holds the lease after its failure; going on", self.stage, self.run_id)
                self._beat(conn)
        if holder != self.run_id:
            with self.engine.connect() as conn:
                check(conn, self.run_id)  # raises RunAbandonedError
        self._thread.start()
        return True

    def _beat(self, conn: Connection) -> None:
        if (
            conn.execute(
                sa.update(st.leases).where(_held_by(self.run_id)).values(heartbeat_at=self.policy.clock())
            ).rowcount
            == 0
        ):
            # The run holds the lease no more: taken over (the taker marked it abandoned), or given
            # back by this very stage (finish) a moment before it ends. Either way, stop beating.
            self.released = True
            self.lost = st.get_run(conn, self.run_id)["status"] == RunStatus.ABANDONED

    def _beat_until_stopped(self) -> None:
        while not self._stop.wait(self.policy.beat_every) and not self.released:
            try:
                with self.engine.begin() as conn:
                    self._beat(conn)
            except Exception as exc:  # a missed beat is not fatal: the next one may get through
                if not self._warned:
                    log.warning("%s: cannot write the lease heartbeat (trying again): %s", self.stage, exc)
                    self._warned = True

    def stop(self) -> None:
        """Stop beating (before the stage's end state is written, so no late beat overwrites it)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


@contextmanager
def hold(
    engine: Engine, run_id: int, stage: str, *, beside_others: bool = False, policy: Policy | None = None
) -> Iterator[Holding]:
    """Hold the run's lease while a stage works: check it, beat, and leave it between tasks or failed.

    `beside_others`: the stage may run beside other stages of its run (the send batches); its
    failure then only stops its heartbeat instead of marking the run failed.
    """
    holding = Holding(engine, run_id, stage, policy or POLICY)
    if not holding.start():
        yield holding
        return
    try:
        yield holding
    except BaseException:
        holding.stop()
        if not beside_others:
            try:
                with engine.begin() as conn:
                    mark_failed(conn, run_id)
            except Exception as exc:  # the state database itself may be what failed: the original error counts
                log.warning("%s: could not mark run %d failed in the lease: %s", stage, run_id, exc)
        raise
    holding.stop()
    with engine.begin() as conn:
        between_tasks(conn, run_id, holding.policy.clock())
    if holding.lost:
        raise RunAbandonedError(
            f"run {run_id}: a later run took over its lease while {stage} ran; nothing more is done for it"
        )
