"""The audit app's pages through FastAPI's TestClient, over a state database the real stages wrote."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from html import unescape
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from fastapi import HTTPException, Request
from fastapi.testclient import TestClient

from include.backorder.audit.app import create_app, csv_safe
from tests.backorder.audit.conftest import DAG_ID, History, dag_run_id


@pytest.fixture(scope="module")
def client(sqlite_history: History) -> Iterator[TestClient]:
    engine = sqlite_history.engine()
    with TestClient(create_app(lambda: engine)) as client:
        yield client
    engine.dispose()


def text(html: str) -> str:
    """What a reader sees of a page: head and tags dropped, entities decoded, whitespace folded."""
    body = re.sub(r"<head>.*</head>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", body))).strip()


def test_index_lists_runs_charts_and_open_lines(client: TestClient, sqlite_history: History) -> None:
    response = client.get("/")
    assert response.status_code == 200 and response.headers["cache-control"] == "private, no-store"
    page = text(response.text)
    for day in (0, 1, 2):
        assert dag_run_id(day) in page
    # day 0: 3 initial sent, 1 failed, 2 skipped
    assert f"2026-03-02 00:00 {dag_run_id(0)} finished 7 6 3 0 0 0 1 2 0" in page
    assert response.text.count("<rect ") == 6, "two charts of three days"
    assert "Emails sent per day" in page and "Backorder lines per day" in page
    assert "1 Product 1 5 5 2026-03-20 2026-03-20" in page and "2 Product 2 2 2 2026-03-27 2026-03-27" in page


def test_run_page_lists_every_email_with_its_reply_and_the_params(client: TestClient, sqlite_history: History) -> None:
    run_id = sqlite_history.run_ids[0]
    response = client.get(f"/runs/{run_id}")
    assert response.status_code == 200
    page = text(response.text)
    assert "Jürgen Müller <customer1@example.com> initial de sent 250 " in page
    assert "gone@example.com> initial en failed 550 5.1.1 Mailbox unavailable" in page
    assert "Skipped and suppressed orders (2)" in page
    assert "2 initial no email address" in page
    assert "4 initial customer4@example.com suppressed: asked by phone" in page
    assert "reminder_interval_days 2" in page and "order_status_ids [1, 2]" in page and "shop_name Outdoor & Co" in page
    assert "&lt;b&gt;Eve&lt;/b&gt; &amp; Co" in response.text and "<b>Eve</b>" not in response.text, "escaped"
    assert f'href="/runs/{run_id}/emails.csv"' in response.text


def test_run_page_is_paginated(client: TestClient, sqlite_history: History) -> None:
    run_id = sqlite_history.run_ids[0]
    first = client.get(f"/runs/{run_id}", params={"limit": 4})
    assert "1–4 of 6" in text(first.text)
    assert f'href="/runs/{run_id}?offset=4&amp;limit=4"' in first.text
    second = text(client.get(f"/runs/{run_id}", params={"offset": 4, "limit": 4}).text)
    assert "5–6 of 6" in second and "customer5@example.com" in second and "customer1@example.com>" not in second
    assert client.get(f"/runs/{run_id}", params={"limit": 0}).status_code == 422


def test_the_link_from_a_dag_run_opens_its_run_record(client: TestClient, sqlite_history: History) -> None:
    response = client.get("/dag-run", params={"dag_id": DAG_ID, "run_id": dag_run_id(1)}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == f"/runs/{sqlite_history.run_ids[1]}"
    missing = client.get("/dag-run", params={"dag_id": DAG_ID, "run_id": "manual__nope"})
    assert missing.status_code == 404 and "No run record for DAG run" in missing.text


def test_an_email_page_shows_its_rendered_preview(client: TestClient, sqlite_history: History) -> None:
    run_page = client.get(f"/runs/{sqlite_history.run_ids[0]}").text
    first_email = re.search(r'href="(/emails/\d+)"', run_page)
    assert first_email is not None
    page = client.get(first_email.group(1))
    assert page.status_code == 200
    assert "Jürgen Müller" in page.text and "Message-ID" in page.text
    assert "Product 1" in text(page.text), "the plain text part lists the products"
    preview = client.get(first_email.group(1) + "/preview.html")
    assert preview.status_code == 200 and preview.headers["content-type"].startswith("text/html")
    assert preview.headers["content-security-policy"].startswith("sandbox")
    assert preview.headers["cache-control"] == "private, no-store"
    assert "Product 1" in preview.text and "Jürgen Müller" in preview.text and "Outdoor &amp; Co" in preview.text


def test_order_history_across_runs(client: TestClient) -> None:
    page = text(client.get("/orders/1").text)
    assert "Order 1: 2 notifications" in page
    assert f"2026-03-02 00:00 {dag_run_id(0)} 1 Jürgen Müller <customer1@example.com> initial de sent" in page
    assert f"2026-03-03 00:00 {dag_run_id(1)} 1 Jürgen Müller <customer1@example.com> changed de sent" in page
    assert client.get("/orders/999").status_code == 404


def test_search_by_order_id_and_by_address(client: TestClient) -> None:
    by_id = text(client.get("/search", params={"q": "3"}).text)
    assert "3 ann@example.com 2" in by_id
    by_address = text(client.get("/search", params={"q": "ann@example.com"}).text)
    assert "3 ann@example.com 2" in by_address
    by_prefix = client.get("/search", params={"q": "customer*"}).text
    assert {int(i) for i in re.findall(r'href="/orders/(\d+)"', by_prefix)} == {1, 4, 5}
    assert "Nothing found." in client.get("/search", params={"q": "nobody@example.com"}).text


def test_csv_export_of_a_run(client: TestClient, sqlite_history: History) -> None:
    run_id = sqlite_history.run_ids[0]
    response = client.get(f"/runs/{run_id}/emails.csv")
    assert response.status_code == 200 and response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == f'attachment; filename="backorder-run-{run_id}-emails.csv"'
    assert response.headers["cache-control"] == "private, no-store"
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["orders_id"], r["kind"], r["status"]) for r in rows] == [
        ("1", "initial", "sent"),
        ("2", "initial", "skipped"),
        ("3", "initial", "sent"),
        ("4", "initial", "skipped"),
        ("5", "initial", "sent"),
        ("6", "initial", "failed"),
    ]
    assert rows[0]["customers_email_address"] == "customer1@example.com" and rows[0]["detail"].startswith("250 ")
    assert rows[5]["detail"] == "550 5.1.1 Mailbox unavailable"
    assert client.get("/runs/999/emails.csv").status_code == 404


@pytest.mark.parametrize(
    "value, cell", [("=HYPERLINK(1)", "'=HYPERLINK(1)"), ("+1", "'+1"), ("@a", "'@a"), ("Ann", "Ann"), (3, 3)]
)
def test_csv_cells_never_become_formulas(value: object, cell: object) -> None:
    assert csv_safe(value) == cell


@pytest.mark.parametrize("path", ["/runs/999", "/emails/999", "/emails/999/preview.html", "/orders/999"])
def test_unknown_ids_are_404_pages_not_cached(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404 and "in the state database" in response.text
    assert response.headers["cache-control"] == "private, no-store"


def test_every_route_runs_the_access_dependencies(sqlite_history: History) -> None:
    def only_with_header(request: Request) -> None:
        if request.headers.get("x-test-user") != "ok":
            raise HTTPException(401, "Not authenticated", headers={"WWW-Authenticate": "Bearer"})

    engine = sa.create_engine(sqlite_history.state_db.url())
    run_id = sqlite_history.run_ids[0]
    paths = [
        "/",
        f"/runs/{run_id}",
        f"/runs/{run_id}/emails.csv",
        "/orders/1",
        "/search?q=1",
        "/emails/1",
        "/emails/1/preview.html",
        "/dag-run?" + urlencode({"dag_id": DAG_ID, "run_id": dag_run_id(0)}),
    ]
    with TestClient(create_app(lambda: engine, [only_with_header])) as guarded:
        for path in paths:
            refused = guarded.get(path)
            assert refused.status_code == 401, path
            assert "customer" not in refused.text and refused.headers["cache-control"] == "private, no-store"
            expected = 303 if path.startswith("/dag-run?") else 200  # the DAG run's tab redirects to its run's page
            assert guarded.get(path, headers={"x-test-user": "ok"}, follow_redirects=False).status_code == expected
    engine.dispose()


def test_an_older_runs_params_that_validation_now_refuses_still_give_its_emails() -> None:
    """Issue 14 made the address and URL patterns stricter: a run recorded before keeps its email pages."""
    from include.backorder.audit.app import _recorded_params

    recorded = {"logo_url": "https://shop.example/bild-ä.png", "shop_name": "Outdoor & Co", "reminder_interval_days": 3}
    params = _recorded_params(recorded)
    assert (params.logo_url, params.shop_name, params.reminder_interval_days) == ("", "Outdoor & Co", 3)
