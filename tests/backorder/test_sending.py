"""The outcome writer's one-statement group UPDATE, on every state backend: each row gets its own
values, a message tried twice in a group keeps its last outcome, NULLs stay NULL."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from include.backorder import pipeline
from include.backorder import state as st
from include.backorder.config import RunContext, RunParams
from include.backorder.sending import write_outcomes

T0 = datetime(2026, 3, 2, tzinfo=UTC)


def test_a_group_of_outcomes_is_written_row_by_row_in_one_statement(shop, state_db) -> None:
    shop.product(1, datetime(2026, 3, 20))
    for oid in (1, 2, 3):
        shop.order(oid, [1], purchased=datetime(2026, 3, 1))
    run = pipeline.extract(shop.conn, state_db, RunContext(T0), RunParams())
    pipeline.load_previous_snapshot(state_db, run.run_id)
    assert pipeline.classify_run(state_db, run.run_id)["initial"] == 3
    engine = sa.create_engine(state_db.url())
    n = st.notifications
    with engine.connect() as conn:
        ids = dict(conn.execute(sa.select(n.c.orders_id, n.c.id)).all())
        sent_at = datetime(2026, 3, 2, 0, 0, 1, 250000)
        write_outcomes(conn, [
            (ids[1], {"status": "due", "detail": "temporary: 451 4.3.0 Try again later", "message_id": "<a@x>"}),
            (ids[2], {"status": "failed", "detail": "550 5.1.1 Mailbox unavailable", "sent_at": sent_at}),
            (ids[1], {"status": "sent", "detail": "250 OK", "message_id": "<a@x>", "sent_at": sent_at}),
        ])  # fmt: skip
        conn.commit()
        write_outcomes(conn, [(ids[3], {"status": "dry_run", "detail": "dry run: not sent"})])  # every sent_at NULL
        conn.commit()
        rows = {r.orders_id: r for r in conn.execute(sa.select(n))}
    engine.dispose()
    assert (rows[1].status, rows[1].detail, rows[1].message_id, rows[1].sent_at) == ("sent", "250 OK", "<a@x>", sent_at)
    assert (rows[2].status, rows[2].detail, rows[2].message_id) == ("failed", "550 5.1.1 Mailbox unavailable", None)
    assert rows[2].sent_at == sent_at
    assert (rows[3].status, rows[3].message_id, rows[3].sent_at) == ("dry_run", None, None)
