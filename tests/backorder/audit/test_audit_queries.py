"""The audit page's queries over a real state database, on each backend."""

from __future__ import annotations

from datetime import date, datetime

import pytest
import sqlalchemy as sa

from include.backorder import state as st
from include.backorder.audit import queries as q
from tests.backorder.audit.conftest import History, dag_run_id


def test_runs_newest_first_with_counts_per_kind_and_status(history: History) -> None:
    engine = history.engine()
    with engine.connect() as c:
        page = q.runs_page(c)
        second = q.runs_page(c, q.Page(offset=1, limit=1))
    engine.dispose()
    assert page.total == 3 and [r.id for r in page.runs] == history.run_ids[::-1]
    day0 = page.runs[-1]
    assert day0.dag_run_id == dag_run_id(0) and day0.status == "finished"
    assert day0.by_status == {"sent": 3, "failed": 1, "skipped": 2}
    assert day0.sent_by_kind == {"initial": 3, "changed": 0, "periodic": 0, "available": 0}
    assert page.runs[1].sent_by_kind["changed"] == 2 and page.runs[0].sent_by_kind["periodic"] == 1
    assert [r.id for r in second.runs] == [history.run_ids[1]] and second.total == 3


def test_daily_series_and_open_lines_by_product(history: History) -> None:
    engine = history.engine()
    with engine.connect() as c:
        series = q.daily_series(c)
        open_lines = q.open_lines(c)
    engine.dispose()
    assert [(p.day, p.emails, p.lines) for p in series] == [
        (date(2026, 3, 2), 3, 7),
        (date(2026, 3, 3), 2, 7),
        (date(2026, 3, 4), 1, 7),
    ]
    assert open_lines.reference_time == datetime(2026, 3, 4)
    assert open_lines.previous_reference_time == datetime(2026, 3, 3)
    assert [(p.products_id, p.lines, p.orders, p.date_available, p.previous_date) for p in open_lines.products] == [
        (1, 5, 5, datetime(2026, 3, 20), datetime(2026, 3, 20)),
        (2, 2, 2, datetime(2026, 3, 27), datetime(2026, 3, 27)),
    ]
    assert [p.products_name for p in open_lines.products] == ["Product 1", "Product 2"]


def test_run_detail_order_history_search_and_csv(history: History) -> None:
    day0, day1, _ = history.run_ids
    engine = history.engine()
    with engine.connect() as c:
        detail = q.run_detail(c, day0)
        page2 = q.run_detail(c, day0, q.Page(offset=4, limit=4))
        changed = q.run_detail(c, day1)
        order1 = q.order_history(c, 1)
        by_id = q.search(c, "3")
        by_address = q.search(c, "ann@example.com")
        by_prefix = q.search(c, "customer*")
        none = q.search(c, "customer%*")  # % is a literal, not a wildcard
        rows = list(q.csv_rows(c, day0))
        missing = q.run_detail(c, 999)
        of_dag_run = q.runs_of_dag_run(c, "backorder_notifications", dag_run_id(1))
    engine.dispose()
    assert detail is not None and missing is None
    assert detail.total_emails == 6 and detail.params["reminder_interval_days"] == 2
    assert [(e.orders_id, e.kind, e.language, e.status) for e in detail.emails] == [
        (1, "initial", "de", "sent"),
        (2, "initial", "en", "skipped"),
        (3, "initial", "en", "sent"),
        (4, "initial", "en", "skipped"),
        (5, "initial", "en", "sent"),
        (6, "initial", "en", "failed"),
    ]
    assert (detail.emails[0].detail or "").startswith("250 ") and detail.emails[0].customers_name == "Jürgen Müller"
    assert detail.emails[5].detail == "550 5.1.1 Mailbox unavailable"
    assert [(e.orders_id, e.detail) for e in detail.skipped] == [
        (2, "no email address"),
        (4, "suppressed: asked by phone"),
    ]
    assert page2 is not None and [e.orders_id for e in page2.emails] == [5, 6] and page2.total_emails == 6
    assert changed is not None  # day 1: the skipped and the refused orders are tried again
    assert [(e.orders_id, e.kind, e.status) for e in changed.emails] == [
        (1, "changed", "sent"),
        (2, "initial", "skipped"),
        (3, "changed", "sent"),
        (4, "initial", "skipped"),
        (6, "initial", "failed"),
    ]
    assert [(e.kind, e.reference_time, e.dag_run_id) for e in order1] == [
        ("initial", datetime(2026, 3, 2), dag_run_id(0)),
        ("changed", datetime(2026, 3, 3), dag_run_id(1)),
    ]
    assert [(h.orders_id, h.notifications) for h in by_id.hits] == [(3, 2)]
    assert [(h.orders_id, h.customers_email_address) for h in by_address.hits] == [(3, "ann@example.com")]
    assert {h.orders_id for h in by_prefix.hits} == {1, 4, 5} and by_prefix.total == 3
    assert none.hits == []
    assert rows[0] == q.CSV_COLUMNS and len(rows) == 7
    assert rows[1][4:10] == (1, "initial", "de", "Jürgen Müller", "customer1@example.com", "sent")
    assert of_dag_run == [day1]


def test_the_page_queries_use_their_indexes() -> None:
    """The indexes the queries rely on exist in the schema (the migrations are checked against it)."""
    indexed = {
        (table.name, tuple(c.name for c in index.columns))
        for table in st.metadata.tables.values()
        for index in table.indexes
    }
    assert ("bo_run", ("reference_time",)) in indexed
    assert ("bo_run", ("dag_id", "dag_run_id")) in indexed
    assert ("bo_notification", ("run_id",)) in indexed
    assert ("bo_notification", ("customers_email_address",)) in indexed
    assert ("bo_notification", ("orders_id", "status", "reference_time")) in indexed


@pytest.mark.parametrize("offset, limit", [(-1, 10), (0, 0), (0, q.MAX_PAGE_SIZE + 1)])
def test_a_page_out_of_bounds_is_refused(offset: int, limit: int) -> None:
    with pytest.raises(ValueError, match="a page needs"):
        q.Page(offset, limit)


def test_an_empty_state_database_gives_empty_pages(tmp_path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'state.sqlite'}")
    st.migrate(engine)
    with engine.connect() as c:
        assert q.runs_page(c).runs == [] and q.daily_series(c) == []
        assert q.open_lines(c).products == [] and q.search(c, "").hits == []
    engine.dispose()
