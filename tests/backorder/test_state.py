"""The state database's schema: Alembic migrations create it, upgrades keep every row."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from include.backorder import state as st


def test_upgrade_from_the_first_revision_keeps_the_rows(state_db) -> None:
    engine = sa.create_engine(state_db.url())
    st.migrate(engine, "0001")
    assert st.current_revision(engine) == "0001"
    with engine.begin() as c:
        c.exec_driver_sql(
            "INSERT INTO bo_run (id, dag_id, dag_run_id, reference_time, dry_run, params, status, stage_seconds,"
            " started_at) VALUES (1, 'backorder_notifications', 'scheduled__2026-03-02', '2026-03-02 00:00:00',"
            " 0, '{}', 'finished', '{}', '2026-03-02 00:00:05')"
        )
        c.exec_driver_sql(
            "INSERT INTO bo_notification (run_id, orders_id, kind, reference_time, dry_run, customers_email_address,"
            " language, lines, status, detail, created_at) VALUES (1, 7, 'initial', '2026-03-02 00:00:00', 0,"
            " 'ann@example.com', 'de', '[]', 'sent', '250 OK', '2026-03-02 00:00:06')"
        )

    st.migrate(engine)
    assert st.current_revision(engine) == "0002"
    with engine.connect() as c:
        run = c.execute(sa.select(st.runs)).mappings().one()
        note = c.execute(sa.select(st.notifications)).mappings().one()
    assert (run["dag_run_id"], run["reference_time"], run["shop_schema"]) == (
        "scheduled__2026-03-02",
        datetime(2026, 3, 2),
        None,
    )
    assert (note["orders_id"], note["status"], note["detail"], note["language"]) == (7, "sent", "250 OK", "de")
    st.migrate(engine)  # idempotent
    engine.dispose()


def test_migrations_build_exactly_the_tables_the_code_uses(state_db) -> None:
    engine = sa.create_engine(state_db.url())
    st.migrate(engine)
    with engine.connect() as c:
        context = MigrationContext.configure(c, opts={"version_table": st.VERSION_TABLE})
        assert compare_metadata(context, st.metadata) == []
    engine.dispose()
