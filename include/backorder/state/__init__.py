"""The state database: the pipeline's own tables, and every statement the stages run against them.

`from include.backorder import state as st` gives all of it; each part is a module of its own:

- `tables`: the tables (`st.runs`, `st.notifications`, ...), Alembic's `migrate`, and
  how a value is stored (`storable`, `dumps`);
- `run_records`: a run's record, created by extract and completed by finish;
- `lines`: the line history (the snapshot at any T), and what extract stages for classify and finish;
- `outbox`: the notifications a run puts in the outbox and its sends take out, and what decides them;
- `retention`: what `[backorder] keep_days` deletes (`prune`), in batches, and what it keeps.

The functions take an open connection and leave the transaction to the caller: a stage runs them
in one transaction (pipeline.py). `prune` is the exception: it takes the engine and commits each batch
on its own, so that a large prune never holds the state database for long. The lease's statements
stay in lease.py, and the send stage's group UPDATE of statuses in sending.py, beside the code whose
rules they carry out.
"""

from include.backorder.state.lines import (
    HeldLine,
    drop_staged,
    get_snapshot,
    held_at,
    lines_at,
    previous_snapshot,
    read_previous_dates,
    read_staged_arrivals,
    read_staged_lines,
    stage_arrivals,
    stage_changes,
    stage_lines,
    write_snapshot,
)
from include.backorder.state.outbox import (
    add_notifications,
    count_handled_by_earlier_runs,
    due_notifications,
    due_per_kind,
    history_query,
    notification_counts,
    notifications_at,
    overtaken_notifications,
    read_history,
    read_history_at,
    read_suppressions,
    silence_notifications,
    skipped_notifications,
    suppressions_query,
    take_over_notifications,
)
from include.backorder.state.retention import PRUNED_TABLES, Horizon, horizon, kept_orders, prune
from include.backorder.state.run_records import (
    complete_run_record,
    create_run_record,
    get_run,
    pin_previous_snapshot,
    record_extract,
    record_stage_time,
    record_stage_times,
    stage_seconds,
)
from include.backorder.state.tables import (
    MIGRATIONS_DIR,
    OPEN,
    OVERTAKEN,
    RUN_FINISHED,
    STATUS_DRY_RUN,
    STATUS_SENT,
    STATUS_SKIPPED,
    TOLD,
    VERSION_TABLE,
    current_revision,
    dumps,
    leases,
    line_history,
    metadata,
    migrate,
    notifications,
    runs,
    snapshots,
    staged_arrivals,
    staged_changes,
    staged_lines,
    storable,
    suppressions,
)

__all__ = [
    "MIGRATIONS_DIR",
    "OPEN",
    "OVERTAKEN",
    "PRUNED_TABLES",
    "RUN_FINISHED",
    "STATUS_DRY_RUN",
    "STATUS_SENT",
    "STATUS_SKIPPED",
    "TOLD",
    "VERSION_TABLE",
    "HeldLine",
    "Horizon",
    "add_notifications",
    "complete_run_record",
    "count_handled_by_earlier_runs",
    "create_run_record",
    "current_revision",
    "drop_staged",
    "due_notifications",
    "due_per_kind",
    "dumps",
    "get_run",
    "get_snapshot",
    "held_at",
    "history_query",
    "horizon",
    "kept_orders",
    "leases",
    "line_history",
    "lines_at",
    "metadata",
    "migrate",
    "notification_counts",
    "notifications",
    "notifications_at",
    "overtaken_notifications",
    "pin_previous_snapshot",
    "previous_snapshot",
    "prune",
    "read_history",
    "read_history_at",
    "read_previous_dates",
    "read_staged_arrivals",
    "read_staged_lines",
    "read_suppressions",
    "record_extract",
    "record_stage_time",
    "record_stage_times",
    "runs",
    "silence_notifications",
    "skipped_notifications",
    "snapshots",
    "stage_arrivals",
    "stage_changes",
    "stage_lines",
    "stage_seconds",
    "staged_arrivals",
    "staged_changes",
    "staged_lines",
    "storable",
    "suppressions",
    "suppressions_query",
    "take_over_notifications",
    "write_snapshot",
]
