"""The state database's schema: Alembic migrations create it, upgrades keep every row."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from include.backorder import KINDS, Kind, RunStatus, Status
from include.backorder import state as st


def head_revision() -> str:
    """The newest migration's revision, as Alembic finds it (not a copy that a new migration makes stale)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(st.MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None
    return head


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
                id=1,
                dag_id="backorder_notifications",
                dag_run_id="scheduled__2026-03-02",
                reference_time=datetime(2026, 3, 2),
                dry_run=False,
                params="{}",
                status="finished",
                stage_seconds="{}",
                started_at=datetime(2026, 3, 2, 0, 0, 5),
            )
        )
        c.execute(
            note_0001.insert().values(
                run_id=1,
                orders_id=7,
                kind="initial",
                reference_time=datetime(2026, 3, 2),
                dry_run=False,
                customers_email_address="ann@example.com",
                language="de",
                listed_lines="[]",
                status="sent",
                detail="250 OK",
                created_at=datetime(2026, 3, 2, 0, 0, 6),
            )
        )

    st.migrate(engine)
    assert st.current_revision(engine) == head_revision()
    with engine.connect() as c:
        run = c.execute(sa.select(st.runs)).mappings().one()
        note = c.execute(sa.select(st.notifications)).mappings().one()
    assert (run["dag_run_id"], run["reference_time"], run["shop_schema"]) == (
        "scheduled__2026-03-02",
        datetime(2026, 3, 2),
        None,
    )
    assert (note["orders_id"], note["status"], note["detail"], note["language"]) == (7, "sent", "250 OK", "de")
    st.migrate(engine)  # idempotent: nothing changes the second time
    assert st.current_revision(engine) == head_revision()
    with engine.connect() as c:
        assert c.execute(sa.select(st.runs.c.id)).scalars().all() == [1]
        assert c.execute(sa.select(st.notifications.c.orders_id)).scalars().all() == [7]
    engine.dispose()


def test_the_schema_revision_the_code_knows_is_alembics_head() -> None:
    """migrate() skips Alembic when the version table already names SCHEMA_REVISION: it must be the head."""
    assert head_revision() == st.SCHEMA_REVISION


def test_migrations_build_exactly_the_tables_the_code_uses(state_db) -> None:
    engine = sa.create_engine(state_db.url())
    st.migrate(engine)
    with engine.connect() as c:
        context = MigrationContext.configure(c, opts={"version_table": st.VERSION_TABLE})
        assert compare_metadata(context, st.metadata) == []
    engine.dispose()


def test_upgrade_from_0007_widens_the_shop_columns_and_keeps_the_rows(state_db) -> None:
    """Finding 4: a state created at 0007 (products_model VARCHAR(64), TEXT for the lines an email
    lists) with a run under way takes 255-character models and large orders after the upgrade."""
    engine = sa.create_engine(state_db.url())
    st.migrate(engine, "0007")
    model_64 = "M" * 64
    t = datetime(2026, 3, 2)
    run_cols = "id dag_id dag_run_id reference_time dry_run params status stage_seconds started_at skipped"
    staged_cols = "run_id orders_products_id orders_id products_id products_model date_available customers_name"
    run_0007 = sa.table("bo_run", *(sa.column(name) for name in run_cols.split()))
    staged_0007 = sa.table("bo_staged_line", *(sa.column(name) for name in staged_cols.split()))
    with engine.begin() as c:
        c.execute(
            run_0007.insert().values(
                id=1,
                dag_id="backorder_notifications",
                dag_run_id="scheduled__2026-03-02",
                reference_time=t,
                dry_run=False,
                params="{}",
                status="running",
                stage_seconds="{}",
                started_at=t,
                skipped='[{"orders_id": 9, "kind": "initial", "reason": "no email address"}]',
            )
        )
        c.execute(
            staged_0007.insert().values(
                run_id=1,
                orders_products_id=5,
                orders_id=7,
                products_id=3,
                products_model=model_64,
                date_available=datetime(2026, 4, 1),
                customers_name="Jürgen Müller",
            )
        )

    st.migrate(engine)
    assert st.current_revision(engine) == head_revision()
    big_listing = st.dumps([{"products_name": "Größe " * 42, "products_model": "M" * 255, "n": i} for i in range(400)])
    assert len(big_listing.encode()) > 65_535, "more than MySQL's TEXT holds"
    with engine.begin() as c:
        c.execute(
            sa.insert(st.staged_lines).values(
                run_id=1,
                orders_products_id=6,
                orders_id=7,
                products_id=4,
                products_model="Ü" * 255,
                date_available=datetime(2026, 4, 2),
            )
        )
        c.execute(
            sa.insert(st.notifications).values(
                run_id=1,
                orders_id=7,
                kind="initial",
                reference_time=t,
                dry_run=False,
                language="de",
                listed_lines=big_listing,
                status="due",
                created_at=t,
            )
        )
        c.execute(sa.update(st.runs).values(suspect_lines='[{"orders_id": 7}]'))
    with engine.connect() as c:
        models = (
            c.execute(sa.select(st.staged_lines.c.products_model).order_by(st.staged_lines.c.orders_products_id))
            .scalars()
            .all()
        )
        run = c.execute(sa.select(st.runs)).mappings().one()
        listed = c.execute(sa.select(st.notifications.c.listed_lines)).scalar_one()
    assert models == [model_64, "Ü" * 255]
    assert run["status"] == "running" and "no email address" in run["skipped"]
    assert run["suspect_lines"] == '[{"orders_id": 7}]'
    assert listed == big_listing

    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(st.MIGRATIONS_DIR))
    with engine.begin() as c:
        c.execute(sa.delete(st.notifications))
        config.attributes["connection"] = c
        command.downgrade(config, "0007")
    assert st.current_revision(engine) == "0007"
    with engine.connect() as c:
        cut = c.execute(sa.text("SELECT products_model FROM bo_staged_line ORDER BY orders_products_id")).scalars()
        assert list(cut) == [model_64, "Ü" * 64]
    st.migrate(engine)
    assert st.current_revision(engine) == head_revision()
    engine.dispose()


def test_kinds_and_statuses_keep_the_strings_the_state_holds() -> None:
    """Rows written by every earlier version hold these strings: a member's value never changes."""
    assert KINDS == ("initial", "changed", "periodic", "available") == tuple(Kind)
    assert [status.value for status in Status] == ["due", "sent", "failed", "skipped", "dry_run", "silenced"]
    assert [status.value for status in RunStatus] == ["running", "failed", "finished", "abandoned"]
    assert st.TOLD == ("sent", "silenced")
