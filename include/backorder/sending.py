"""The send stage: render a batch of due notifications, send them over one SMTP session, record each outcome.

Three things run at once, so the SMTP session is the only thing the batch waits for:

- a *render worker* process renders messages ahead (render_worker.py; a process, not a thread:
  rendering is CPU work, and a thread holding the GIL delays every reply the session waits for;
  a small batch is rendered in line);
- the *session* (this thread) sends them one by one (mailer.py);
- an *outcome writer* thread commits the messages' outcomes shortly after their SMTP
  transactions (the outbox contract: a retry sends only what is not recorded as sent), four or
  so in one transaction and one UPDATE (group commit).

Before the data of a message goes out, the session waits until at most UNRECORDED_AT_MOST - 1
earlier messages lack a committed outcome. So at any moment at most UNRECORDED_AT_MOST (8)
messages can be delivered without their outcome recorded: if the process dies there, the retry
sends those again, with the same Message-IDs. When the state database fails (locked past its
timeout, connection lost), the session stops there too, and the task fails with one line naming
the connection (`OutcomeWriteError`); what is not recorded stays due for the retry.

With one flush per message (about 1.5 ms on this project's machines, more than an SMTP
transaction to a nearby server) sending would be bound by the disk; with 8 it is bound by the
SMTP server.

Seconds spent rendering, in SMTP, committing and waiting for a rendered message are kept per
batch and written to the run record's `stage_seconds` (`send_initial.render`, ...).

One word per thing: a *render result* is what rendering one notification gave (its message, or
why it cannot be rendered; render_worker.py); the server's *answer* to one message is its reply,
or its refusal for now (4xx) or for good (5xx) (mailer.py); a notification's *outcome* is what the
state records of its send: its status (sent, failed, dry_run, or still due after a refusal for
now), detail, Message-ID and sent_at.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parseaddr
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from include.backorder import Status, lease
from include.backorder import state as st
from include.backorder.config import ConfigError, RunParams, SmtpSettings
from include.backorder.mailer import Mailer, PermanentSendError, TemporaryRefusal
from include.backorder.mime import Email
from include.backorder.render import ListedLine, Notification, Renderer
from include.backorder.render_worker import RenderResult, RenderWorker, Setup, render_chunk
from include.backorder.unsubscribe import Unsubscribe

log = logging.getLogger(__name__)

PROGRESS_EVERY = 1000
TEMPORARY_WAITS = (1.0, 3.0)  # seconds before the 2nd and 3rd try of messages refused with a 4xx
# Sent messages whose outcome may not be committed yet, at most. 1 would wait for a disk flush
# per message (about 1.5 ms here, twice what the SMTP transaction takes); 8 lets the writer
# commit in groups while a crash can still resend no more than 8 messages, same Message-IDs.
UNRECORDED_AT_MOST = 8
GROUP_COMMIT_MAX = 256  # outcomes per transaction at most
COMMIT_EVERY = 4  # outcomes gathered before a commit, unless the session waits or the batch ends
COMMIT_DELAY = 0.2  # seconds an outcome may wait for others at most
RENDER_PROCESS_MIN = 200  # a batch this big is rendered by a worker process; a smaller one in line
SEND_PARTS = ("render", "smtp", "commit", "commit_wait", "render_wait")  # where a batch's seconds went


Outgoing = tuple[sa.RowMapping, Email]
Answer = str | PermanentSendError | TemporaryRefusal  # the server's reply to a message it took, or its refusal
Answered = tuple[sa.RowMapping, Email, Answer]


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def notification_of(row: sa.RowMapping, params: RunParams) -> Notification:
    """A notification row of the outbox as the renderer's Notification."""
    lines = tuple(
        ListedLine(
            products_name=item["products_name"] or "",
            products_model=item["products_model"],
            products_quantity=item["products_quantity"],
            date_available=datetime.fromisoformat(item["date_available"]) if item["date_available"] else None,
            previous_date=datetime.fromisoformat(item["previous_date"]) if item["previous_date"] else None,
        )
        for item in json.loads(row["listed_lines"])
    )
    return Notification(
        orders_id=row["orders_id"],
        kind=row["kind"],
        language=row["language"],
        customers_email_address=row["customers_email_address"],
        customers_name=row["customers_name"] or "",
        reference_time=row["reference_time"].replace(tzinfo=UTC),
        lines=lines,
        reminder_interval_days=params.reminder_interval_days,
        customers_id=row["customers_id"],
    )


OUTCOME_COLUMNS = ("status", "detail", "message_id", "sent_at")


@lru_cache(maxsize=GROUP_COMMIT_MAX)
def outcome_update(size: int) -> sa.Update:
    """One UPDATE for a group of `size` outcomes, each column set by a CASE over the ids: one
    statement and one round trip for the group (executemany sends an UPDATE per row), built once
    per group size."""
    n = st.notifications
    ids = [sa.bindparam(f"id{i}", type_=n.c.id.type) for i in range(size)]
    return (
        sa.update(n)
        .where(n.c.id.in_(ids))
        .values(
            {
                column: sa.case(
                    *((n.c.id == ids[i], sa.bindparam(f"{column}{i}", type_=n.c[column].type)) for i in range(size)),
                    else_=n.c[column],
                )  # the column's type for all-NULL groups
                for column in OUTCOME_COLUMNS
            }
        )
    )


def outcome_params(group: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """The parameters of `outcome_update(len(group))`. Every outcome sets status and detail; the
    columns it leaves out are NULL in a due row, and so written as NULL."""
    defaults: dict[str, Any] = {column: None for column in OUTCOME_COLUMNS} | {"status": Status.DUE}
    params: dict[str, Any] = {}
    for i, (nid, values) in enumerate(group):
        params[f"id{i}"] = nid
        for column, value in (defaults | values).items():
            params[f"{column}{i}"] = value
    return params


def write_outcomes(conn: sa.Connection, group: list[tuple[int, dict[str, Any]]]) -> None:
    """Write a group of outcomes in one statement (not committed). A message tried twice in the
    group (refused for now, then sent) gets its last outcome."""
    latest = list(dict(group).items())
    conn.execute(outcome_update(len(latest)), outcome_params(latest))


class OutcomeWriteError(Exception):
    """The state database failed while the outcomes of sent messages were being recorded."""


class OutcomeWriter:
    """Commits notifications' outcomes on a thread of its own, several in one transaction (group
    commit: one flush to disk for several outcomes).

    A group is committed once COMMIT_EVERY outcomes have gathered, at once when the session has to
    wait for it (the UNRECORDED_AT_MOST barrier) or the batch ends, and at the latest COMMIT_DELAY
    seconds after its first outcome arrived. Committing every outcome as soon as it arrives would
    spend a commit on each message whenever the session is slower than the disk.
    """

    def __init__(self, state: Engine, conn_id: str = "backorder_state_db") -> None:
        self.state = state
        self.conn_id = conn_id
        self.seconds = 0.0
        self.commits = 0
        self._buffer: list[tuple[int, dict[str, Any]]] = []
        self._pending = 0  # handed over, not committed yet (buffered or being committed)
        self._urgent = False  # the session waits in settled()
        self._closing = False
        self._changed = threading.Condition()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="outcome-writer", daemon=True)
        self._thread.start()

    def put(self, notification_id: int, values: dict[str, Any]) -> None:
        self._raise_error()
        with self._changed:
            self._buffer.append((notification_id, values))
            self._pending += 1
            if len(self._buffer) in (1, COMMIT_EVERY):  # the writer starts the clock, or has a group
                self._changed.notify_all()

    def settled(self, at_most: int = 0) -> None:
        """Wait until at most `at_most` outcomes handed over are not committed yet; raise what the writer hit."""
        with self._changed:
            while self._pending > at_most and self._error is None:
                self._urgent = True
                self._changed.notify_all()
                self._changed.wait()
        self._raise_error()

    def close(self) -> None:
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._thread.join()
        self._raise_error()

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _next_group(self) -> tuple[list[tuple[int, dict[str, Any]]], bool]:
        """The next group to commit (waiting until one is due), and whether close() was called."""
        with self._changed:
            while not self._buffer and not self._closing:
                self._changed.wait()
            deadline = time.monotonic() + COMMIT_DELAY
            while len(self._buffer) < COMMIT_EVERY and not (self._urgent or self._closing):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            group, self._buffer = self._buffer[:GROUP_COMMIT_MAX], self._buffer[GROUP_COMMIT_MAX:]
            self._urgent = False
            return group, self._closing and not self._buffer

    def _run(self) -> None:
        conn = None
        try:
            conn = self.state.connect()
        except BaseException as exc:  # the database is unreachable: settled() and put() raise it
            self._fail(exc, 0)
        closing = False
        while not closing:
            group, closing = self._next_group()
            started = time.perf_counter()
            try:
                if conn is not None and self._error is None and group:
                    write_outcomes(conn, group)
                    conn.commit()
                    self.commits += 1
            except BaseException as exc:
                self._fail(exc, self._pending)
            self.seconds += time.perf_counter() - started
            with self._changed:
                self._pending -= len(group)
                self._changed.notify_all()
        if conn is not None:
            with contextlib.suppress(Exception):  # a connection the database dropped cannot roll back
                conn.close()

    def _fail(self, exc: BaseException, unrecorded: int) -> None:
        """Keep the error for the session as one line naming the connection (not the statement and its
        parameters, which hold addresses); the session raises it at its next step."""
        if not isinstance(exc, Exception):  # KeyboardInterrupt and the like: as they are
            error: BaseException = exc
        else:
            cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
            error = OutcomeWriteError(
                f"state database {self.conn_id}: recording the outcome of {unrecorded} message(s) failed"
                f" ({type(cause).__name__}: {' '.join(str(cause).split())}); sending stopped, and every email"
                " whose outcome is not recorded stays due: the retry sends it (again, with the same Message-ID,"
                f" for at most {UNRECORDED_AT_MOST} that the server took)"
            )
        with self._changed:
            if self._error is None:
                self._error = error
            self._changed.notify_all()


@dataclass(frozen=True)
class Batch:
    """The due notifications of one kind in one run (or one `part` of them: index, of how many), with the
    run's params and what rendering them takes. Plain data: `load_batch` reads it, a `Sender` sends it."""

    run_id: int
    kind: str
    part: tuple[int, int]
    params: RunParams
    rows: Sequence[sa.RowMapping]
    setup: Setup


def load_batch(
    state: Engine,
    run_id: int,
    kind: str,
    smtp: SmtpSettings,
    unsubscribe_secret: str | None,
    part: tuple[int, int] = (0, 1),
) -> Batch:
    """Check that the run still holds its lease, read its params and its due notifications of `kind` (of
    `part`), and set up how they are rendered: branding, sender, unsubscribe links (a ConfigError if
    unsubscribe_url is set without a secret to sign them)."""
    with state.connect() as conn:
        lease.check(conn, run_id)
        params = RunParams.from_json(st.get_run(conn, run_id)["params"])
        rows = st.due_notifications(conn, run_id, kind, part)
    if params.unsubscribe_url and not unsubscribe_secret:
        raise ConfigError(
            "unsubscribe_url is set but there is no secret to sign its tokens: set the Airflow Variable"
            " backorder_unsubscribe_secret"
        )
    unsubscribe = Unsubscribe(
        mailto=params.unsubscribe_mailto or parseaddr(smtp.from_email)[1],
        url=params.unsubscribe_url,
        secret=unsubscribe_secret,
    )
    setup = Setup(params.branding(), smtp.from_email, smtp.sender_domain, unsubscribe)
    return Batch(run_id, kind, part, params, rows, setup)


class Sender:
    """Sends a batch (or records it as a dry run) and hands what became of each notification to the
    outcome writer; counts and times it. `with Sender(batch, state) as sender: sender.send_all(mailer)`:
    leaving the block waits until every outcome is committed."""

    def __init__(self, batch: Batch, state: Engine, state_conn_id: str = "backorder_state_db") -> None:
        self.batch = batch
        self.counts: Counter[str] = Counter()
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.temporary: list[str] = []
        self.started = time.perf_counter()
        self._lock = threading.Lock()
        self.writer = OutcomeWriter(state, state_conn_id)

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close(raise_error=exc_type is None)  # an error in the block is the one raised

    def record(self, row: sa.RowMapping, status: Status | None, **values: Any) -> None:
        """Hand one message's outcome to the writer (its new status, if any, and `values`); count it."""
        if status:
            values["status"] = status
            with self._lock:
                self.counts[f"{status}:{row['language']}"] += 1
        self.writer.put(row["id"], values)

    def close(self, raise_error: bool = True) -> None:
        """Wait for every outcome to be committed (and raise what the writer hit, unless told not to)."""
        try:
            self.writer.close()
        except BaseException:
            if raise_error:
                raise
        finally:
            self.seconds["commit"] = self.writer.seconds

    def _previous_outcomes_committed(self) -> None:
        """Before a message's data goes out: at most UNRECORDED_AT_MOST - 1 earlier outcomes are
        not committed yet, so that a crash can leave at most UNRECORDED_AT_MOST sent but unrecorded."""
        started = time.perf_counter()
        self.writer.settled(UNRECORDED_AT_MOST - 1)
        self.seconds["commit_wait"] += time.perf_counter() - started

    def _render_results(self) -> Iterator[RenderResult]:
        """Every row rendered: in line for a small batch, ahead by a worker process for a big one."""
        items = ((row["id"], notification_of(row, self.batch.params)) for row in self.batch.rows)
        if len(self.batch.rows) < RENDER_PROCESS_MIN:
            renderer = Renderer(self.batch.setup.branding)
            for item in items:
                yield from render_chunk(renderer, self.batch.setup, [item])
            return
        with RenderWorker(self.batch.setup) as worker:
            waited = time.perf_counter()
            for result in worker.render(items):
                self.seconds["render_wait"] += time.perf_counter() - waited
                yield result
                waited = time.perf_counter()

    def messages(self) -> Iterator[tuple[sa.RowMapping, Email]]:
        """Email messages; one that cannot be rendered is marked failed and the batch goes on."""
        by_id = {row["id"]: row for row in self.batch.rows}
        for result in self._render_results():
            self.seconds["render"] += result.seconds
            row = by_id[result.key]
            if result.message is None:
                self.record(row, Status.FAILED, detail=f"cannot render: {result.error}")
                kind, order = self.batch.kind, row["orders_id"]
                log.warning("send_%s: order %d cannot be rendered: %s", kind, order, result.error)
            else:
                yield row, result.message

    def record_dry_run(self) -> None:
        for row, msg in self.messages():
            self.record(row, Status.DRY_RUN, message_id=msg.message_id, detail="dry run: not sent")

    def send_all(self, mailer: Mailer) -> None:
        """Send every message; those refused for now (4xx) get a few more tries after short waits."""
        later = self._send_pass(mailer, self.messages())
        for wait in TEMPORARY_WAITS:
            if not later:
                break
            kind = self.batch.kind
            log.info("send_%s: %d message(s) refused for now; trying them again in %.0f s", kind, len(later), wait)
            time.sleep(wait)
            later = self._send_pass(mailer, ((row, msg) for row, msg, _ in later))
        self.temporary = [f"order {row['orders_id']}: {reason}" for row, _, reason in later]

    def _send_pass(self, mailer: Mailer, items: Iterator[Outgoing]) -> list[tuple[sa.RowMapping, Email, str]]:
        later: list[tuple[sa.RowMapping, Email, str]] = []
        answers = mailer.send_many(self._timed_input(items), before_data=self._previous_outcomes_committed)
        for i, (row, msg, answer) in enumerate(self._timed_smtp(answers), start=1):
            if isinstance(answer, PermanentSendError):
                self.record(row, Status.FAILED, message_id=msg.message_id, detail=str(answer), sent_at=utcnow())
                address = row["customers_email_address"]
                log.warning("send_%s: order %d to %s refused: %s", self.batch.kind, row["orders_id"], address, answer)
            elif isinstance(answer, TemporaryRefusal):
                self.record(row, None, message_id=msg.message_id, detail=f"temporary: {answer}")  # stays due
                later.append((row, msg, str(answer)))
            else:
                self.record(row, Status.SENT, message_id=msg.message_id, detail=answer, sent_at=utcnow())
            if i % PROGRESS_EVERY == 0:
                log.info(
                    "send_%s: %d/%d messages handled (%.0f/s)",
                    self.batch.kind,
                    i,
                    len(self.batch.rows),
                    i / (time.perf_counter() - self.started),
                )
        return later

    def _timed_input(self, items: Iterator[Outgoing]) -> Iterator[Outgoing]:
        """`items`, the seconds spent getting each (rendering, waiting for the worker) kept apart."""
        while True:
            started = time.perf_counter()
            item = next(items, None)
            self.seconds["input"] += time.perf_counter() - started
            if item is None:
                return
            yield item

    def _timed_smtp(self, answers: Iterator[Answered]) -> Iterator[Answered]:
        """`answers`, the seconds the session spent on each added to `smtp` (net of getting the
        messages and of waiting for commits, which happen meanwhile)."""
        while True:
            started, elsewhere = time.perf_counter(), self.seconds["input"] + self.seconds["commit_wait"]
            answered = next(answers, None)
            spent = time.perf_counter() - started
            self.seconds["smtp"] += spent - (self.seconds["input"] + self.seconds["commit_wait"] - elsewhere)
            if answered is None:
                return
            yield answered
