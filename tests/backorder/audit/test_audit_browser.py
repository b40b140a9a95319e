"""The audit page in a real browser: a real `airflow api-server` with this project's plugin, headless
Chromium driven over the Chrome DevTools Protocol (the `websockets` package; no browser download).

The api-server runs alone on a fresh PostgreSQL metadata database (`airflow db migrate`), with the
three days of tests/backorder/audit/conftest.py in a SQLite state database. The browser logs in as the simple
auth manager's admin through the login form (/auth/login/; the UI keeps the token in the `_token`
cookie, which the plugin's pages accept). It opens the nav page in the UI
(/plugin/backorder-notifications: the audit page in the UI's iframe), one run's page and one email's
page, asserts on what they show, and saves screenshots:
audit-runs.png, audit-run.png and audit-email.png, 1280 px wide, into the test's temporary folder,
or, to refresh the README's pictures, into docs/screenshots/ with
`BACKORDER_AUDIT_SCREENSHOTS=docs/screenshots .venv/bin/python -m pytest tests/backorder/audit/test_audit_browser.py`
(they show the run's wall-clock times, so every run changes them: not written by default).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from tests.airflow_stack import AIRFLOW, airflow_env, cli, free_port, postgres_url, wait_for
from tests.backorder.audit.conftest import History, dag_run_id
from tests.conftest import ROOT, _unavailable, airflow_conn_json, server_database
from tools import picture as pic
from tools.local_airflow import stop_session

WIDTH, HEIGHT = 1280, 800
SCREENSHOTS_ENV = "BACKORDER_AUDIT_SCREENSHOTS"  # a folder (relative: to the project root) for the PNGs


class Page:
    """One Chromium tab over the DevTools Protocol: navigate, evaluate JavaScript, screenshot."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.last_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.last_id += 1
        self.ws.send(json.dumps({"id": self.last_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("id") == self.last_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str, text_js: str = "document.body ? document.body.innerText : ''") -> str:
        """Navigate to `url`; the page's text (`text_js`) once the page has loaded and the text is there."""
        self.call("Page.navigate", url=url)

        def loaded() -> str | None:
            if self.evaluate("document.readyState") != "complete":
                return None
            text = self.evaluate(f"(() => {{ try {{ return {text_js}; }} catch (e) {{ return ''; }} }})()")
            return str(text) if text else None

        return wait_for(f"{url} to load", loaded, timeout=30, every=0.2)

    def screenshot(self, out: Path, full_page: bool) -> None:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            height = int(self.evaluate("document.documentElement.scrollHeight"))
            params |= {
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": WIDTH, "height": max(height, HEIGHT), "scale": 1},
            }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", **params)["data"]))


@pytest.fixture(scope="module")
def chromium() -> str:
    try:
        return pic.chromium_path()
    except pic.ChromiumMissing as exc:
        _unavailable("chromium", exc)
        raise


@pytest.fixture(scope="module")
def api_server(sqlite_history: History, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """`airflow api-server` with the plugin; yields its base URL and the admin's password."""
    home = tmp_path_factory.mktemp("airflow-home")
    port = free_port()
    with server_database("postgres", "airflow_db") as metadata:
        env = airflow_env(
            home, port, postgres_url(metadata), {"backorder_state_db": airflow_conn_json(sqlite_history.state_db)}
        )
        env |= {
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__API_AUTH__JWT_SECRET": "audit-browser-test-secret-" + "0123456789abcdef" * 3,
        }
        cli(env, "db", "migrate")
        log_file = home / "api-server.log"
        with log_file.open("w") as log:
            proc = subprocess.Popen(
                [AIRFLOW, "api-server", "--port", str(port), "--host", "127.0.0.1"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        base = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"airflow api-server exited with {proc.returncode}; see {log_file}")
            try:
                with urllib.request.urlopen(f"{base}/api/v2/monitor/health", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False

        try:
            wait_for("airflow api-server to answer", answers, timeout=120, every=0.5)
            passwords = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())
            yield base, passwords["admin"]
        finally:
            left = stop_session(proc)
            assert left == 0, f"{left} processes of airflow api-server had to be killed; see {log_file}"


@pytest.fixture(scope="module")
def page(chromium: str) -> Iterator[Page]:
    """A tab of headless Chromium with a throw-away profile, 1280 x 800."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="backorder-chromium-", ignore_cleanup_errors=True) as tmp:
        cmd = [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            f"--remote-debugging-port={port}",
            f"--user-data-dir={tmp}/profile",
            f"--window-size={WIDTH},{HEIGHT}",
            "about:blank",
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

        def tab() -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
                    pages = [t for t in json.load(r) if t["type"] == "page"]
            except (OSError, ValueError):
                return None
            return str(pages[0]["webSocketDebuggerUrl"]) if pages else None

        try:
            with connect(wait_for("chromium's DevTools", tab, timeout=30, every=0.2), max_size=None) as ws:
                p = Page(ws)
                p.call("Page.enable")
                p.call(
                    "Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False
                )
                yield p
        finally:
            stop_session(proc)


def log_in(page: Page, base: str, password: str) -> None:
    """Through the simple auth manager's login form, typed into as a user would; it sets the `_token` cookie."""
    page.open(f"{base}/auth/login/", "document.querySelector('input[type=password]') ? document.body.innerText : ''")
    page.evaluate("document.querySelector('input[name=username], input[type=text]').focus()")
    page.call("Input.insertText", text="admin")
    page.evaluate("document.querySelector('input[type=password]').focus()")
    page.call("Input.insertText", text=password)
    page.evaluate("document.querySelector('button[type=submit]').click()")

    def logged_in() -> bool:
        cookies = page.call("Network.getCookies")["cookies"]
        return "/auth/login" not in page.evaluate("location.href") and any(c["name"] == "_token" for c in cookies)

    wait_for("the login to finish", logged_in, timeout=30, every=0.2)


def table(page: Page, document: str, header: str) -> list[dict[str, str]]:
    """The rows, by column, of the first table in `document` (JavaScript) that has a column `header`."""
    header_row, *rows = page.evaluate(
        f"[...[...{document}.querySelectorAll('table')].find(t => t.rows[0].innerText.includes({header!r})).rows]"
        ".map(r => [...r.cells].map(c => c.innerText.trim()))"
    )
    return [dict(zip(header_row, row, strict=True)) for row in rows]


def test_the_pages_in_a_browser(
    page: Page, api_server: tuple[str, str], sqlite_history: History, tmp_path: Path
) -> None:
    shots = ROOT / os.environ[SCREENSHOTS_ENV] if os.environ.get(SCREENSHOTS_ENV) else tmp_path
    base, password = api_server
    page.call("Network.clearBrowserCookies")
    anonymous = page.open(f"{base}/backorder/")
    assert "Not authenticated" in anonymous and "customer" not in anonymous
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{base}/backorder/", timeout=30)
    refused.value.close()
    assert refused.value.code == 401

    log_in(page, base, password)
    # The nav page: the UI with the audit page in its iframe (same origin, so its text is readable).
    frame_text = "document.querySelector('iframe').contentDocument.body.innerText"
    runs = page.open(
        f"{base}/plugin/backorder-notifications", f"{frame_text}.includes('Reference time') && {frame_text}"
    )
    outer = page.evaluate("document.body.innerText")
    assert "Backorder notifications" in outer
    for text in (
        "Emails sent per day",
        "Runs",
        "Open backorder lines by product",
        "Product 1",
        *(dag_run_id(day) for day in range(3)),
    ):
        assert text in runs, text
    # Day 0 sent 3 initial emails, day 1 2 changed, day 2 1 periodic; each refused 1 and skipped 2.
    counts = table(page, "document.querySelector('iframe').contentDocument", "Reference time")
    assert [(r["DAG run"], r["initial"], r["changed"], r["periodic"], r["failed"], r["skipped"]) for r in counts] == [
        (dag_run_id(2), "0", "0", "1", "1", "2"),
        (dag_run_id(1), "0", "2", "0", "1", "2"),
        (dag_run_id(0), "3", "0", "0", "1", "2"),
    ]
    page.evaluate("new Promise(r => setTimeout(r, 500))")  # let the UI finish its fonts and icons
    page.screenshot(shots / "audit-runs.png", full_page=False)

    # A run's page: day 0, every initial email, the refused address with the server's reply.
    run = page.open(f"{base}/backorder/runs/{sqlite_history.run_ids[0]}")
    assert "Emails (6)" in run and "Skipped and suppressed orders (2)" in run
    emails = table(page, "document", "Server reply / reason")
    assert [
        (e["Order"], e["Recipient"], e["Kind"], e["Language"], e["Status"], e["Server reply / reason"]) for e in emails
    ] == [
        ("1", "Jürgen Müller <customer1@example.com>", "initial", "de", "sent", "250 2.0.0 Ok: queued as 1"),
        ("2", "Ann Example", "initial", "en", "skipped", "no email address"),
        ("3", "Ann Example <ann@example.com>", "initial", "en", "sent", "250 2.0.0 Ok: queued as 2"),
        ("4", "Ann Example <customer4@example.com>", "initial", "en", "skipped", "suppressed: asked by phone"),
        ("5", "<b>Eve</b> & Co <customer5@example.com>", "initial", "en", "sent", "250 2.0.0 Ok: queued as 3"),
        ("6", "Ann Example <gone@example.com>", "initial", "en", "failed", "550 5.1.1 Mailbox unavailable"),
    ]
    assert page.evaluate("document.querySelectorAll('b').length") == 0, "the customer's name is escaped"
    # The run's CSV, fetched by the page with the login cookie.
    csv_url = f"{base}/backorder/runs/{sqlite_history.run_ids[0]}/emails.csv"
    status, csv = page.evaluate(f"fetch({csv_url!r}).then(async r => [r.status, await r.text()])")
    assert status == 200 and "gone@example.com" in csv and "550 5.1.1 Mailbox unavailable" in csv, csv
    page.screenshot(shots / "audit-run.png", full_page=True)
    # An email's page: its HTML part in a sandboxed iframe, an opaque origin that the page's script
    # cannot read; what the iframe loads is fetched with the same cookie instead (and is in the screenshot).
    email_url = page.evaluate("document.querySelector('a[href*=\"/emails/\"]').href")
    email = page.open(email_url)
    for text in (
        "Ihre Bestellung 1",
        "Jürgen Müller <customer1@example.com>",
        "initial / de",
        "250 2.0.0 Ok: queued as 1",
    ):
        assert text in email, text
    assert page.evaluate("document.querySelector('iframe.preview').contentDocument") is None
    preview_url = page.evaluate("document.querySelector('iframe.preview').src")
    status, html = page.evaluate(f"fetch({preview_url!r}).then(async r => [r.status, await r.text()])")
    assert status == 200 and "Guten Tag Jürgen Müller" in html
    page.evaluate("new Promise(r => setTimeout(r, 500))")  # the iframe's layout
    page.screenshot(shots / "audit-email.png", full_page=True)
    sizes = [pic.png_size(shots / f"audit-{name}.png") for name in ("runs", "run", "email")]
    assert sizes[0] == (WIDTH, HEIGHT) and all(width == WIDTH and height > HEIGHT for width, height in sizes[1:])
