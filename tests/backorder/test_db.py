"""include/backorder/db.py: every shop and state engine is made in one place, hiding row values in errors."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from include.backorder import db
from include.backorder.config import DbConnection
from tests.conftest import ROOT

# Developer tools that build their own SQLite demo databases (no customer's data, no Airflow connection).
DEV_TOOLS = {"tools/demo.py", "tools/demo_shop.py", "tools/local_airflow.py", "tools/preview.py"}


def test_every_engine_of_a_connection_is_made_by_db_engine() -> None:
    made_elsewhere = [
        f"{path.relative_to(ROOT)}:{number}"
        for folder in ("include", "plugins", "dags")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if str(path.relative_to(ROOT)) not in DEV_TOOLS | {"include/backorder/db.py"}
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if re.search(r"\bcreate_engine\(", line)
    ]
    assert made_elsewhere == [], "use include.backorder.db.engine(), which hides parameters in errors"


def test_an_engine_hides_the_values_of_a_failing_statement(tmp_path) -> None:
    engine = db.engine(DbConnection("backorder_state_db", "sqlite", host=str(tmp_path / "s.sqlite")))
    try:
        with pytest.raises(sa.exc.OperationalError) as caught, engine.connect() as c:
            c.execute(sa.text("INSERT INTO no_such_table VALUES (:name)"), {"name": "Erika Mustermann"})
    finally:
        engine.dispose()
    assert "Erika" not in str(caught.value) and "parameters hidden" in str(caught.value)


@pytest.mark.parametrize(
    ("orig", "refused"),
    [
        (Exception(1045, "Access denied for user 'shop'@'10.0.0.5' (using password: YES)"), True),
        (Exception(1698, "Access denied for user 'root'@'localhost'"), True),
        (Exception(2003, "Can't connect to MySQL server on '10.0.0.5'"), False),
        (Exception('connection to server at "db" failed: FATAL:  password authentication failed for user "x"'), True),
        (Exception('connection to server at "db", port 5432 failed: Connection refused'), False),
    ],
)
def test_a_refused_login_is_told_from_an_unreachable_server(orig: Exception, refused: bool) -> None:
    assert db.login_refused(sa.exc.OperationalError("connect", None, orig)) is refused


def test_a_refused_row_is_not_echoed_by_any_backend(state_db: DbConnection) -> None:
    """PostgreSQL says "Failing row contains (..., Erika Mustermann, ...)" for a NOT NULL violation."""
    import traceback
    from datetime import datetime

    from include.backorder import state as st

    engine = db.engine(state_db)
    try:
        st.migrate(engine)
        row = {
            "run_id": 1,
            "orders_id": 7,
            "kind": "initial",
            "reference_time": datetime(2026, 3, 2),
            "dry_run": False,
            "customers_name": "Erika Mustermann",
            "language": None,
            "listed_lines": "[]",
            "customers_email_address": "erika.mustermann@example.org",
            "status": "due",
            "created_at": datetime(2026, 3, 2),
        }
        with pytest.raises(sa.exc.DBAPIError) as caught, engine.begin() as c:
            c.execute(sa.insert(st.notifications), row)
    finally:
        engine.dispose()
    shown = "".join(traceback.format_exception(caught.value))
    assert "language" in shown  # the reason stays
    assert "Erika" not in shown and "erika.mustermann" not in shown
