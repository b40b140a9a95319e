"""Audit page: what a browser (or someone editing its address bar) can ask of the audit app.

Every row runs against a real state database on SQLite, MariaDB and PostgreSQL, through FastAPI's
TestClient with server exceptions turned into responses, as a browser would see them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from include.backorder import state as st
from include.backorder.audit.app import create_app
from include.backorder.config import DbConnection
from tests.conftest import server_database
from tests.hardening.matrix import Case, params

SURFACE = "Audit page"
EMPTY = "No runs yet; the first run creates the tables."
BEFORE_FIRST_RUN = [
    "/",
    "/runs/1",
    "/runs/1/emails.csv",
    "/emails/1",
    "/emails/1/preview.html",
    "/orders/1",
    "/search?q=ann",
    "/dag-run?dag_id=backorder_notifications&run_id=manual__1",
]

EMPTY_STATE = [
    Case(
        "before-the-first-run",
        "any page of the app (" + ", ".join(f"`{p}`" for p in BEFORE_FIRST_RUN) + ") while"
        " the state database has no tables yet (the plugin installed, the DAG not run)",
        f"200, the page says `{EMPTY}`; `Cache-Control: private, no-store`; after the first run the pages show"
        " the runs",
        "12",
        {"paths": BEFORE_FIRST_RUN},
    ),
]

BAD_PARAMS = [
    Case(
        "offset-1e20",
        "`/?offset=1e20`",
        "422 page `Bad request: offset: ...`, not cached (before: 500)",
        "11",
        {"path": "/?offset=1e20", "status": 422, "says": "Bad request: offset:"},
    ),
    Case(
        "offset-beyond-64-bits",
        "`/?offset=100000000000000000000`",
        "422 page `Bad request: offset: Input should be less than or equal to 2147483647`, not cached (before: 500)",
        "11",
        {
            "path": "/?offset=100000000000000000000",
            "status": 422,
            "says": "Bad request: offset: Input should be less than or equal to 2147483647",
        },
    ),
    Case(
        "products-offset-beyond-64-bits",
        "`/?products_offset=9223372036854775808`",
        "422 page naming `products_offset`, not cached",
        "11",
        {"path": "/?products_offset=9223372036854775808", "status": 422, "says": "Bad request: products_offset:"},
    ),
    Case(
        "run-page-offset",
        "`/runs/1?offset=9223372036854775807`",
        "422 page naming `offset`, not cached",
        "11",
        {"path": "/runs/1?offset=9223372036854775807", "status": 422, "says": "Bad request: offset:"},
    ),
    Case(
        "limit-zero",
        "`/runs/1?limit=0`",
        "422 page `Bad request: limit: ...`, not cached (before: FastAPI's JSON)",
        "11",
        {"path": "/runs/1?limit=0", "status": 422, "says": "Bad request: limit:"},
    ),
    Case(
        "run-id-beyond-64-bits",
        "`/runs/99999999999999999999999`",
        "422 page naming `run_id`, not cached (before: 500)",
        "11",
        {"path": "/runs/99999999999999999999999", "status": 422, "says": "Bad request: run_id:"},
    ),
    Case(
        "order-id-beyond-64-bits",
        "`/orders/99999999999999999999999`",
        "422 page naming `orders_id` (before: 500)",
        "11",
        {"path": "/orders/99999999999999999999999", "status": 422, "says": "Bad request: orders_id:"},
    ),
    Case(
        "email-id-beyond-64-bits",
        "`/emails/99999999999999999999/preview.html`",
        "422 page naming `notification_id` (before: 500)",
        "11",
        {"path": "/emails/99999999999999999999/preview.html", "status": 422, "says": "Bad request: notification_id:"},
    ),
    Case(
        "search-huge-order-id",
        "`/search?q=99999999999999999999999`",
        "200, no order found (before: 500)",
        "11",
        {"path": "/search?q=99999999999999999999999", "status": 200, "says": "99999999999999999999999"},
    ),
    Case(
        "search-other-digits",
        "`/search?q=²` (a digit to str.isdigit, not to int)",
        "200, no order found (before: 500)",
        "11",
        {"path": "/search?q=%C2%B2", "status": 200, "says": "²"},
    ),
    Case(
        "search-nul",
        "`/search?q=%00` (PostgreSQL refuses NUL in a string)",
        "422 page `Bad request: q: String should match pattern ...`, not cached (before: 500 on PostgreSQL)",
        "11",
        {"path": "/search?q=ann%00", "status": 422, "says": "Bad request: q: String should match pattern"},
    ),
    Case(
        "dag-run-without-run-id",
        "`/dag-run?dag_id=backorder_notifications`",
        "422 page `Bad request: run_id: Field required`, not cached (before: FastAPI's JSON)",
        "11",
        {"path": "/dag-run?dag_id=backorder_notifications", "status": 422, "says": "Bad request: run_id: Field"},
    ),
]

BROKEN = [
    Case(
        "half-a-state-database",
        "`/search?q=1` while the state database has `bo_run` but lost `bo_notification` (a failed restore)",
        "500 page `Internal error: see the server's log.` without details, `Cache-Control: private, no-store`"
        " (before: a bare `Internal Server Error`, cacheable)",
        "11",
        {"drop": "bo_notification", "path": "/search?q=1"},
    ),
]

CASES = EMPTY_STATE + BAD_PARAMS + BROKEN


def text(html: str) -> str:
    """What a reader sees of a page: head and tags dropped, entities decoded, whitespace folded."""
    body = re.sub(r"<head>.*</head>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", body))).strip()


@pytest.fixture
def engine(state_db: DbConnection) -> Iterator[sa.Engine]:
    engine = sa.create_engine(state_db.url())
    yield engine
    engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "mariadb", "postgres"])
def migrated(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.Engine]:
    """A state database with its tables and no rows, on each backend, shared by the module's read-only tests."""
    if request.param == "sqlite":
        db = DbConnection("backorder_state_db", "sqlite", host=str(tmp_path_factory.mktemp("audit") / "state.sqlite"))
        engine = sa.create_engine(db.url())
        st.migrate(engine)
        yield engine
        engine.dispose()
        return
    with server_database(request.param, "backorder_state_db") as db:
        engine = sa.create_engine(db.url())
        st.migrate(engine)
        yield engine
        engine.dispose()


def browser(engine: sa.Engine) -> TestClient:
    """The app as a browser sees it: a server error is a response, not an exception in the test."""
    return TestClient(create_app(lambda: engine), raise_server_exceptions=False)


def assert_not_cached(response) -> None:
    assert response.headers["cache-control"] == "private, no-store"


@pytest.mark.parametrize("case", params(EMPTY_STATE))
def test_every_page_before_the_first_run_is_an_empty_state(case: Case, engine: sa.Engine) -> None:
    with browser(engine) as client:
        for path in case.data["paths"]:
            response = client.get(path)
            assert (response.status_code, text(response.text)[:200].count(EMPTY)) == (200, 1), path
            assert_not_cached(response)
        st.migrate(engine)  # what the first run does
        after = client.get("/")
    assert after.status_code == 200 and EMPTY not in text(after.text) and "Runs" in text(after.text)


@pytest.mark.parametrize("case", params(BAD_PARAMS))
def test_a_bad_parameter_is_a_page_that_names_it(case: Case, migrated: sa.Engine) -> None:
    with browser(migrated) as client:
        response = client.get(case.data["path"])
    assert response.status_code == case.data["status"], text(response.text)
    assert response.headers["content-type"].startswith("text/html")
    assert case.data["says"] in text(response.text)
    assert_not_cached(response)


@pytest.mark.parametrize("case", params(BROKEN))
def test_an_unexpected_error_is_a_500_page_not_cached(case: Case, engine: sa.Engine) -> None:
    st.migrate(engine)
    with engine.begin() as c:
        c.execute(sa.text(f"DROP TABLE {case.data['drop']}"))
    with browser(engine) as client:
        response = client.get(case.data["path"])
    assert response.status_code == 500
    assert "Internal error: see the server's log." in text(response.text)
    assert "bo_notification" not in response.text, "no details (SQL, parameters) on the page"
    assert_not_cached(response)
