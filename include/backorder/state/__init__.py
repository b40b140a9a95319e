"""The state database: the pipeline's own tables, and every statement the stages run against them.

`from include.backorder import state as st` gives all of it; each part is a module of its own:

- `tables`: the tables (`st.runs`, `st.notifications`, ...), Alembic's `migrate`, and
  how a value is stored (`storable`, `dumps`);
- `run_records`: a run's record, created by extract and completed by finish;
- `lines`: a run's backorder lines, staged by extract and kept as the snapshot at T by finish;
- `outbox`: the notifications a run puts in the outbox and its sends take out, and what decides them.

The functions take an open connection and leave the transaction to the caller: a stage runs them
in one transaction (pipeline.py). The lease's statements stay in lease.py, and the send stage's
group UPDATE of statuses in sending.py, beside the code whose rules they carry out.
"""

from include.backorder.state.lines import (
    drop_staged,
    get_snapshot,
    previous_snapshot,
    read_snapshot_dates,
    read_staged_arrivals,
    read_staged_lines,
    snapshot_line_orders,
    stage_arrivals,
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
    read_suppressions,
    silence_notifications,
    skipped_notifications,
    suppressions_query,
    take_over_notifications,
)
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
    metadata,
    migrate,
    notifications,
    runs,
    snapshot_lines,
    snapshots,
    staged_arrivals,
    staged_lines,
    storable,
    suppressions,
)

__all__ = [
    "MIGRATIONS_DIR",
    "OVERTAKEN",
    "RUN_FINISHED",
    "STATUS_DRY_RUN",
    "STATUS_SENT",
    "STATUS_SKIPPED",
    "TOLD",
    "VERSION_TABLE",
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
    "history_query",
    "leases",
    "metadata",
    "migrate",
    "notification_counts",
    "notifications",
    "notifications_at",
    "overtaken_notifications",
    "pin_previous_snapshot",
    "previous_snapshot",
    "read_history",
    "read_snapshot_dates",
    "read_staged_arrivals",
    "read_staged_lines",
    "read_suppressions",
    "record_extract",
    "record_stage_time",
    "record_stage_times",
    "runs",
    "silence_notifications",
    "skipped_notifications",
    "snapshot_line_orders",
    "snapshot_lines",
    "snapshots",
    "stage_arrivals",
    "stage_lines",
    "stage_seconds",
    "staged_arrivals",
    "staged_lines",
    "storable",
    "suppressions",
    "suppressions_query",
    "take_over_notifications",
    "write_snapshot",
]
