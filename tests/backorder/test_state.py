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
    # Rows written by revision 0001's code: only the columns that revision has.
    run_cols = "id dag_id dag_run_id reference_time dry_run params status stage_seconds started_at"
    note_cols = (
        "run_id orders_id kind reference_time dry_run customers_email_address language listed_lines status detail"
        " created_at"
    )
    run_0001 = sa.table("bo_run", *(sa.column(name) for name in run_cols.split()))
    note_0001 = sa.table("bo_notification", *(sa.column(name) for name in note_cols.split()))
    with engine.begin() as c:
        c.execute(
            run_0001.insert().values(
                id=1, dag_id="backorder_notifications", dag_run_id="scheduled__2026-03-02",
                reference_time=datetime(2026, 3, 2), dry_run=False, params="{}", status="finished",
                stage_seconds="{}", started_at=datetime(2026, 3, 2, 0, 0, 5),
            )
        )  # fmt: skip
        c.execute(
            note_0001.insert().values(
                run_id=1, orders_id=7, kind="initial", reference_time=datetime(2026, 3, 2), dry_run=False,
                customers_email_address="ann@example.com", language="de", listed_lines="[]", status="sent",
                detail="250 OK", created_at=datetime(2026, 3, 2, 0, 0, 6),
            )
        )  # fmt: skip

    st.migrate(engine)
    assert st.current_revision(engine) == "0007"
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
