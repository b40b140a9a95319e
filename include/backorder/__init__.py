"""Backorder notifications: the library behind the `backorder_notifications` DAG.

It reads an osCommerce-family shop, works out which customers wait for backordered goods, and
tells them by email. It does not import Airflow: the DAG turns Airflow connections, params and
the run context into the plain values defined in `config` and calls the stages in `pipeline`.

The words used everywhere, from the SQL to the templates:

- *reference time* (T): the moment a run stands for (its logical date, else its `run_after`).
  Every comparison of a run uses reference times, never the wall clock.
- *backorder line*: a line of `orders_products` whose order is in one of the selected statuses
  and whose product's `products_date_available` is later than T.
- *snapshot*: the backorder lines a run saw, kept in the state database; the *previous snapshot*
  of a run is the latest one strictly before its T.
- *notification*: one email to one order in one run, of a *kind* (`Kind`: `initial`, `periodic`,
  `changed` or, optional with `send_available`, `available`); a row in the state database from the
  moment it is due (the outbox) to the moment it is sent, failed, skipped, silenced or recorded as a
  dry run: its *status* (`Status`).
- *arrival*: an order that waited at the previous snapshot and waits no more (every date reached
  or cleared) while it is still in the statuses; what an `available` email is about.
- *run record*: the audit row of one run: params, counts, skipped orders, stage durations; its
  *run status* (`RunStatus`) says whether the run is running, failed, finished or abandoned.

Kinds and statuses are `StrEnum`s: each member is the plain string (`Kind.INITIAL == "initial"`),
and is written as it in SQL, JSON, f-strings, logs and templates. Only a container printed whole
shows its members' repr (`str([Kind.INITIAL])`): join the members, or use `.value` for such keys.
"""

from enum import StrEnum
from pathlib import Path


class Kind(StrEnum):
    """A notification's kind; each language has a template per kind."""

    INITIAL = "initial"  # nothing was ever sent for the order
    CHANGED = "changed"  # a line's date differs from the previous snapshot, or a line is new in it
    PERIODIC = "periodic"  # a reminder: reminder_interval_days since the last email, fewer than max_reminders
    AVAILABLE = "available"  # the order waits no more (an arrival) and was told it waited (send_available)


# Kind's values in order, as plain strings: a caller may print the tuple whole (argparse's choices do).
KINDS: tuple[str, ...] = tuple(kind.value for kind in Kind)


class Status(StrEnum):
    """A notification's status (`bo_notification.status`)."""

    DUE = "due"  # in the outbox: a send stage takes it (a message refused for now stays due)
    SENT = "sent"
    FAILED = "failed"  # refused for good, or it cannot be rendered
    SKIPPED = "skipped"  # not sent, for the reason in its detail (an unusable address, an opt-out)
    DRY_RUN = "dry_run"  # rendered and recorded, not sent
    SILENCED = "silenced"  # not sent, but counts as told: catch_up_silently, or overtaken by a later run


class RunStatus(StrEnum):
    """A run record's status (`bo_run.status`), moved as lease.py says."""

    RUNNING = "running"  # a stage works, or the run waits between tasks
    FAILED = "failed"  # a stage raised: a later run may take the lease over at once
    FINISHED = "finished"  # final: a stage run again changes nothing
    ABANDONED = "abandoned"  # a later run took its lease over


TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "templates"
# A language is a folder of templates named by its Babel locale (`en`, `de`, `fr`, `pt_BR`, ...).
LANGUAGES: tuple[str, ...] = tuple(sorted(p.name for p in TEMPLATES_DIR.iterdir() if p.is_dir()))
