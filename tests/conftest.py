"""Shared fixtures: a SQLite shop built from the demo shop's osCommerce 2.3 tables, a state
database on each backend (SQLite, MariaDB, PostgreSQL), and a real SMTP server on loopback.

MariaDB (127.0.0.1:3306, root) and PostgreSQL (127.0.0.1:5432, user postgres) are used when they
answer; otherwise their tests skip with a one-line reason, unless BACKORDER_REQUIRE_SERVERS=1
(set by .ci/run), which turns the skip into a failure. Each test gets a fresh database, dropped
afterwards.

Airflow's environment is set here, before anything imports Airflow, so that no test writes
into ~/airflow.

The last lines of a test run (`pytest_terminal_summary`) say what was skipped and why, grouped by cause
(no Chromium, a server not answering, ...), with the command that makes those tests run.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="backorder-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("PYTHONPATH", str(ROOT))

import sqlalchemy as sa  # noqa: E402

from include.backorder.config import DbConnection, SmtpSettings  # noqa: E402
from tools import demo_shop, picture  # noqa: E402
from tools.smtp_sink import MailSink, Received  # noqa: E402


@dataclass
class Shop:
    """A SQLite shop with the osCommerce 2.3 tables, filled row by row by a test."""

    path: Path
    engine: sa.Engine
    _next_line: int = field(default=1)

    @property
    def conn(self) -> DbConnection:
        return DbConnection(conn_id="shop_db", conn_type="sqlite", host=str(self.path))

    def product(self, pid: int, date_available: datetime | str | None, name: str = "") -> None:
        value = demo_shop.fmt(date_available) if isinstance(date_available, datetime) else date_available
        with self.engine.begin() as c:
            c.execute(
                sa.insert(demo_shop.products).values(
                    products_id=pid,
                    products_quantity=0,
                    products_model=f"M-{pid}",
                    products_price=10,
                    products_date_available=value,
                    products_date_added="2025-01-01 00:00:00",
                    products_status=1,
                )
            )

    def set_date(self, pid: int, date_available: datetime | str | None) -> None:
        value = demo_shop.fmt(date_available) if isinstance(date_available, datetime) else date_available
        with self.engine.begin() as c:
            c.execute(
                sa.update(demo_shop.products)
                .where(demo_shop.products.c.products_id == pid)
                .values(products_date_available=value)
            )

    def order(
        self,
        oid: int,
        products: list[int],
        *,
        purchased: datetime,
        status: int = 1,
        email: str | None = None,
        name: str = "Ann Example",
        language: str = "en",
        quantity: int = 1,
    ) -> None:
        with self.engine.begin() as c:
            c.execute(
                sa.insert(demo_shop.orders).values(
                    orders_id=oid,
                    customers_id=oid,
                    customers_name=name,
                    customers_email_address=f"customer{oid}@example.com" if email is None else email,
                    date_purchased=demo_shop.fmt(purchased),
                    orders_status=status,
                    language_code=language,
                )
            )
            for pid in products:
                c.execute(
                    sa.insert(demo_shop.orders_products).values(
                        orders_products_id=self._next_line,
                        orders_id=oid,
                        products_id=pid,
                        products_model=f"M-{pid}",
                        products_name=f"Product {pid}",
                        products_price=10,
                        products_quantity=quantity,
                    )
                )
                self._next_line += 1


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[Shop]:
    path = tmp_path / "shop.sqlite"
    engine = sa.create_engine(f"sqlite:///{path}")
    demo_shop.create_schema(engine)
    yield Shop(path, engine)
    engine.dispose()


MARIADB = DbConnection("server", "mysql", host="127.0.0.1", port=3306, login="root")
POSTGRES = DbConnection("server", "postgres", host="127.0.0.1", port=5432, login="postgres", schema="postgres")


def _unavailable(what: str, exc: Exception) -> None:
    reason = f"{what} not reachable: {str(exc).splitlines()[0]}"
    if os.environ.get("BACKORDER_REQUIRE_SERVERS") == "1":
        pytest.fail(f"{reason} (BACKORDER_REQUIRE_SERVERS=1)")
    pytest.skip(reason)


@contextmanager
def server_database(kind: str, conn_id: str) -> Iterator[DbConnection]:
    """A fresh, empty database on the machine's MariaDB or PostgreSQL, dropped afterwards."""
    server = MARIADB if kind == "mariadb" else POSTGRES
    name = f"bo_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server.url(), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.exec_driver_sql(f"CREATE DATABASE {name}")
    except sa.exc.OperationalError as exc:
        admin.dispose()
        _unavailable(f"{kind} on {server.host}:{server.port}", exc)
    try:
        yield replace(server, conn_id=conn_id, schema=name)
    finally:
        with admin.connect() as c:
            if kind == "postgres":
                c.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            else:
                c.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        admin.dispose()


@pytest.fixture(params=["sqlite", "mariadb", "postgres"])
def state_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DbConnection]:
    """The state database, once on each backend."""
    if request.param == "sqlite":
        yield DbConnection(conn_id="backorder_state_db", conn_type="sqlite", host=str(tmp_path / "state.sqlite"))
        return
    with server_database(request.param, "backorder_state_db") as db:
        yield db


def airflow_conn_json(db: DbConnection) -> str:
    """The AIRFLOW_CONN_* value for a database connection."""
    fields = {"conn_type": db.conn_type, "host": db.host, "port": db.port, "login": db.login, "schema": db.schema}
    return json.dumps({k: v for k, v in fields.items() if v} | ({"extra": db.extra} if db.extra else {}))


# The headers a backorder email may carry, each once; anything else would be an injected one.
EMAIL_HEADERS = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-language",
    "x-backorder-notification",
    "x-backorder-order-id",
    "x-backorder-reference-time",
    "list-unsubscribe",
    "list-unsubscribe-post",
}


def assert_well_formed(item: Received) -> None:
    """A backorder email as a mail client parses it (policy default): structure, charset, headers."""
    msg, raw = item.message, item.raw
    assert raw.isascii(), "7-bit on the wire"
    names = [name.lower() for name in msg]
    assert set(names) <= EMAIL_HEADERS, f"unexpected headers: {set(names) - EMAIL_HEADERS}"
    assert len(names) == len(set(names)), f"a header appears twice: {names}"
    assert not msg.defects, msg.defects
    (to,) = msg["To"].addresses
    assert (to.addr_spec,) == item.rcpt_tos
    subject = str(msg["Subject"])
    assert subject and "\r" not in subject and "\n" not in subject
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert [p.get_content_charset() for p in parts] == ["utf-8", "utf-8"]
    assert all(not p.defects for p in parts)
    html = parts[1].get_content()
    assert "<script" not in html.lower() and "{{" not in html and "{%" not in html


class CheckedSink(MailSink):
    """A MailSink that keeps every message it received, also across clear(), to check them at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.every: list[Received] = []

    def keep(self, item: Received) -> int:
        self.every.append(item)
        return super().keep(item)


@pytest.fixture
def mail_sink() -> Iterator[CheckedSink]:
    """An SMTP server on loopback; every backorder email it received is checked by assert_well_formed."""
    sink = CheckedSink()
    with sink:
        yield sink
    for item in sink.every:
        if item.message["X-Backorder-Notification"]:
            assert_well_formed(item)


@pytest.fixture
def smtp(mail_sink: MailSink) -> SmtpSettings:
    return SmtpSettings(
        host="127.0.0.1", port=mail_sink.port, from_email="shop@example.com", use_ssl=False, use_starttls=False
    )


@pytest.fixture
def no_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reconnects and second tries without the production waits (seconds), so tests stay quick."""
    from include.backorder import mailer, sending

    monkeypatch.setattr(mailer, "RECONNECT_WAITS", (0.0, 0.0, 0.0))
    monkeypatch.setattr(sending, "TEMPORARY_WAITS", (0.0, 0.0))


# --- the skip summary: the last lines of the run ------------------------------------------------------


@dataclass(frozen=True)
class SkipCause:
    """A reason tests skip for, recognised in the skip's text, and how to make those tests run."""

    tests: str  # what the tests need, as in "43 browser tests skipped"
    pattern: str  # searched in the skip's reason
    why: str  # what the summary says, formatted with the pattern's named groups
    fix: str


SERVER_FIX = "start it there (.ci/run starts the machine's MariaDB, PostgreSQL and Redis)"
SKIP_CAUSES = (
    SkipCause(
        "browser",
        rf"(?P<binary>\S+) not found on PATH; {re.escape(picture.INSTALL_HINT)}",
        "{binary} not found on PATH",
        "apt-get install -y --no-install-recommends chromium fonts-liberation (as .ci/run does)",
    ),
    SkipCause(
        "browser",
        "Arial is laid out in a wider stand-in font",
        "Arial is laid out in a wider stand-in font",
        "apt-get install -y --no-install-recommends fonts-liberation (as .ci/run does)",
    ),
    SkipCause("MariaDB", r"^mariadb on (?P<at>\S+) not reachable", "{at} not reachable", SERVER_FIX),
    SkipCause("PostgreSQL", r"^postgres on (?P<at>\S+) not reachable", "{at} not reachable", SERVER_FIX),
    SkipCause("Redis", r"^Redis on (?P<at>\S+) not reachable", "{at} not reachable", SERVER_FIX),
    SkipCause(
        "PostgreSQL",
        "PostgreSQL's initdb and pg_ctl are not installed",
        "PostgreSQL's initdb and pg_ctl are not installed",
        "apt-get install -y --no-install-recommends postgresql",
    ),
    SkipCause(
        "compose file",
        "docker-compose not installed",
        "docker-compose not installed",
        "apt-get install -y --no-install-recommends docker-compose (as .ci/run does)",
    ),
)


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def skip_summary(reports: list[pytest.TestReport | pytest.CollectReport]) -> list[str]:
    """One line per cause: how many tests skipped, why, and how to run them; other reasons as they are."""
    known: Counter[tuple[int, str]] = Counter()  # (index in SKIP_CAUSES, why)
    other: Counter[str] = Counter()
    for report in reports:
        reason = _skip_reason(report)
        for index, cause in enumerate(SKIP_CAUSES):
            if found := re.search(cause.pattern, reason):
                known[index, cause.why.format(**found.groupdict())] += 1
                break
        else:
            other[reason] += 1

    def skipped(n: int, what: str = "") -> str:
        return f"{n} {what + ' ' if what else ''}test{'s' if n != 1 else ''} skipped"

    lines = [
        f"{skipped(n, SKIP_CAUSES[index].tests)}: {why}; to run them: {SKIP_CAUSES[index].fix}"
        for (index, why), n in sorted(known.items())
    ]
    return lines + [f"{skipped(n)}: {reason}" for reason, n in other.most_common()]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> Iterator[None]:
    """The skip summary after every other section (as the outermost wrapper, also after -ra's short test
    summary), so that only pytest's closing count line follows it: a run without a browser or a server says
    so where one looks."""
    result = yield
    lines = skip_summary(terminalreporter.stats.get("skipped", []))
    if lines:
        terminalreporter.write_sep("=", "skipped, and how to run them", yellow=True)
        for line in lines:
            terminalreporter.write_line(line, yellow=True)
    return result
