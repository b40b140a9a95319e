"""SMTP server behaviour: what a real server does wrong, and what the shop sees of it.

Six orders are due for their first email (state on SQLite; the state backends are covered by the
state database surface). The send stage runs as its task does: when it fails, it runs again (the
task's retry), until it succeeds or three tries failed. Every row runs with a server that offers
PIPELINING and with one that does not. What is checked is what the user sees: the emails the real
SMTP server on loopback received (each once), the statuses in the state database, and the error
line the task fails with.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import logging
import re
import shutil
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from include.backorder import pipeline
from include.backorder import state as st
from include.backorder.config import DbConnection, RunContext, RunParams, SmtpSettings
from include.backorder.mailer import Mailer
from include.backorder.mime import Email
from tests.conftest import ROOT, Shop
from tests.hardening.matrix import Case, params
from tools import demo_shop
from tools.smtp_sink import Faults

SURFACE = "SMTP server behaviour"

T0 = datetime(2026, 3, 2, tzinfo=UTC)
ORDERS = range(1, 7)
EVERY_ORDER_ONCE = dict.fromkeys(ORDERS, 1)
ALL_SENT = dict.fromkeys(ORDERS, "sent")
ALL_DUE = dict.fromkeys(ORDERS, "due")


def address(oid: int) -> str:
    return f"customer{oid}@example.com"


REFUSED = r"SMTPSessionRefused: SMTP connection smtp_default at 127\.0\.0\.1:\d+ refused the session at "
STAY_DUE = r" \(no email was marked failed; they stay due\)$"

# Faults after which every email arrives exactly once and is recorded `sent`; "reconnects" is how
# many times the log says the connection was re-established, "reason" what it says was lost.
DELIVERED = [
    Case(
        id="close-after-answer",
        given="The server answers the 2nd and the 4th message (250), then closes the connection at once",
        expect="Every email received exactly once, all `sent`; the log says the connection was re-established 2 times",
        data={"faults": Faults(drop_after={2, 4}), "reconnects": 2, "reason": ""},
    ),
    Case(
        id="421-at-mail",
        given='The server answers MAIL FROM with "421 service not available" and closes, twice',
        expect="Every email received exactly once, all `sent`; the log names the 421 and 2 reconnects",
        data={"faults": Faults(busy=2), "reconnects": 2, "reason": "421 4.3.2"},
    ),
    Case(
        id="421-at-rcpt",
        given='The server answers RCPT TO with "421" and closes',
        expect="Every email received exactly once, all `sent`; the log names the 421 and 1 reconnect",
        data={"faults": Faults(busy_rcpt=1), "reconnects": 1, "reason": "421 4.3.2"},
    ),
    Case(
        id="421-at-end-of-data",
        given='The server answers the end of a message\'s data with "421" (message not taken) and closes',
        expect="That email is sent again on a new connection: every email received exactly once, all `sent`",
        data={"faults": Faults(busy_data=1), "reconnects": 1, "reason": "421 4.3.2"},
    ),
    Case(
        id="stall",
        given="The server stalls before answering one recipient, past the client's timeout",
        expect="Reconnect; every email received exactly once, all `sent`",
        data={"faults": Faults(stall={address(4): 2.0}), "reconnects": 1, "reason": "timed out"},
    ),
    Case(
        id="451-twice",
        given='The server answers one recipient "451 try again later" twice',
        expect="Tried again within the task: every email received exactly once, all `sent`, the task succeeds",
        data={"faults": Faults(defer={address(3): 2}), "reconnects": 0, "reason": ""},
    ),
    Case(
        id="login-accepted",
        given="The server requires AUTH (LOGIN/PLAIN) and the connection's login is right",
        expect="Every email received exactly once, all `sent`",
        data={
            "faults": Faults(auth_required=True, accounts={"shop": "right"}),
            "smtp": {"login": "shop", "password": "right"},
            "reconnects": 0,
            "reason": "",
        },
    ),
]

# Refusals of one message: recorded per message, never tried again.
PER_MESSAGE = [
    Case(
        id="550-at-rcpt",
        given='The server refuses two recipients for good: "550 mailbox unavailable" at RCPT TO',
        expect="Those two `failed` with the server's answer, never tried again; the other emails received once",
        data={"faults": Faults(refuse={address(2), address(5)}), "failed": {2, 5}, "detail": "550 5.1.1 Mailbox"},
    ),
    Case(
        id="554-at-end-of-data",
        given='The server refuses one message at the end of its data: "554 message content rejected"',
        expect="That email `failed` with the server's answer; the others received once, `sent`",
        data={"faults": Faults(reject_data={address(4)}), "failed": {4}, "detail": "554 5.6.0 Message content"},
    ),
]

# Refusals of the session (finding 6): no email is marked failed, the task fails with one line.
SESSION = [
    Case(
        id="554-greeting",
        given='The server greets with "554 no SMTP service here" and closes',
        expect="The task fails: `SMTPSessionRefused: SMTP connection smtp_default at host:port refused the session "
        "at connect: 554 ...`; nothing received, every email still `due`",
        finding="6",
        data={"faults": Faults(greeting="554 5.3.2 No SMTP service here"), "error": REFUSED + r"connect: 554 5\.3\.2"},
    ),
    Case(
        id="530-starttls-first",
        given='The server answers MAIL FROM "530 must issue a STARTTLS command first" (TLS switched off by mistake)',
        expect="The task fails naming smtp_default, host:port and the 530; every email still `due`",
        finding="6",
        data={
            "faults": Faults(refuse_mail="530 5.7.0 Must issue a STARTTLS command first"),
            "error": REFUSED + r"MAIL FROM: 530 5\.7\.0 Must issue a STARTTLS",
        },
    ),
    Case(
        id="530-auth-required",
        given="The server requires AUTH and the connection has no login: MAIL FROM gets 530",
        expect='The task fails: "... refused the session at MAIL FROM: 530 5.7.0 Authentication required"; '
        "every email still `due`",
        finding="6",
        data={"faults": Faults(auth_required=True), "error": REFUSED + r"MAIL FROM: 530 5\.7\.0 Authentication"},
    ),
    Case(
        id="554-at-mail",
        given='The server answers MAIL FROM "554 service unavailable; client host blocked"',
        expect="The task fails naming smtp_default, host:port and the 554; every email still `due`",
        finding="6",
        data={
            "faults": Faults(refuse_mail="554 5.7.1 Service unavailable; client host blocked"),
            "error": REFUSED + r"MAIL FROM: 554 5\.7\.1",
        },
    ),
    Case(
        id="refused-mid-batch",
        given='The server takes 3 messages, then answers every MAIL FROM "554" (a sending limit)',
        expect="The 3 received once and `sent`; the task fails naming the 554; the other 3 still `due`",
        finding="6",
        data={
            "faults": Faults(refuse_mail="554 5.7.1 Daily sending limit reached", refuse_mail_after=3),
            "error": REFUSED + r"MAIL FROM: 554 5\.7\.1 Daily",
            "sent_first": 3,
        },
    ),
    Case(
        id="454-starttls",
        given='The server offers STARTTLS and answers it "454 TLS not available"',
        expect="The task fails at STARTTLS naming smtp_default and the 454 (nothing goes out in clear text); "
        "every email still `due`",
        finding="6",
        data={
            "faults": Faults(offer_starttls=True),
            "smtp": {"use_starttls": True},
            "error": REFUSED + r"STARTTLS: 454 TLS not available",
        },
    ),
    Case(
        id="535-login-refused",
        given="The server refuses the login: 535 authentication credentials invalid",
        expect="The task fails at once, without retries (a locked account is worse): `SMTP connection smtp_default "
        "at host:port refused the session at login as 'shop': 535 ...`; every email still `due`",
        finding="6",
        data={
            "faults": Faults(auth_required=True, accounts={"shop": "right"}),
            "smtp": {"login": "shop", "password": "wrong"},
            "error": r"AirflowFailException: SMTP connection smtp_default at 127\.0\.0\.1:\d+ refused the session"
            r" at login as 'shop': 535 5\.7\.8 Authentication credentials invalid" + STAY_DUE,
            "tries": 1,  # of 3: the first fails the task without retries
        },
    ),
]

OTHER = [
    Case(
        id="451-beyond-tries",
        given='The server answers one recipient "451" four times (more than the tries within the task)',
        expect='The task fails "1 message(s) got a temporary answer and stay due for the retry"; the retry '
        "delivers it: every email received exactly once, all `sent`",
        data={"faults": Faults(defer={address(3): 4})},
    ),
    Case(
        id="cut-before-answer",
        given="The server takes the 3rd message and closes before answering it",
        expect="The one case SMTP cannot settle: that email arrives twice, with the same Message-ID; all `sent`",
        data={"faults": Faults(cut_after={3})},
    ),
    Case(
        id="server-gone",
        given='The server answers "421" to every connection, then comes back',
        expect="Each try fails: `SMTPUnavailable: SMTP connection smtp_default at host:port: 4 connection attempts "
        "in a row failed ...`, every email still `due`; once it is back, every email received exactly once",
        data={"faults": Faults(busy=1000)},
    ),
]

DOTS = [
    Case(
        id="dot-lines",
        given='Lines ".", "..", ".x" at a line\'s start anywhere in a message (first line, header block, a '
        "quoted-printable and an 8-bit body, last line), and in customer and product names; pipelined and lockstep",
        expect="The server stores each message byte for byte as meant, none cut short; the next message arrives "
        "intact; all `sent`",
        finding="2",
    ),
]

CASES = DOTS + DELIVERED + PER_MESSAGE + SESSION + OTHER


@pytest.fixture(scope="module", autouse=True)
def dag_loaded() -> None:
    """Airflow sets up its logging when the DAG file is first loaded: before the tests capture logs."""
    dag_task_wrapper()


@pytest.fixture(autouse=True, params=[True, False], ids=["pipelining", "lockstep"])
def server_pipelining(request, mail_sink) -> bool:
    mail_sink.pipelining = request.param
    return bool(request.param)


@pytest.fixture(scope="module")
def due_state(tmp_path_factory) -> tuple[Path, int]:
    """A state database in which six orders are each due for their initial email (made once, copied per test)."""
    folder = tmp_path_factory.mktemp("smtp-server")
    engine = sa.create_engine(f"sqlite:///{folder / 'shop.sqlite'}")
    demo_shop.create_schema(engine)
    shop = Shop(folder / "shop.sqlite", engine)
    shop.product(1, datetime(2026, 3, 20))
    for oid in ORDERS:
        shop.order(oid, [1], purchased=datetime(2026, 3, 1))
    state = DbConnection("backorder_state_db", "sqlite", host=str(folder / "state.sqlite"))
    run = pipeline.extract(shop.conn, state, RunContext(T0), RunParams())
    pipeline.load_previous_snapshot(state, run.run_id)
    assert pipeline.classify_run(state, run.run_id)["initial"] == len(ORDERS)
    engine.dispose()
    return folder / "state.sqlite", run.run_id


@pytest.fixture
def due_run(due_state, tmp_path) -> tuple[DbConnection, int]:
    path, run_id = due_state
    shutil.copyfile(path, tmp_path / "state.sqlite")
    return DbConnection("backorder_state_db", "sqlite", host=str(tmp_path / "state.sqlite")), run_id


@functools.cache
def dag_task_wrapper() -> Callable[[], AbstractContextManager[None]]:
    """The DAG's wrapper of its tasks' work, `permanent_errors_fail_at_once` (from the DAG file, as Airflow
    parses it): what it turns into AirflowFailException fails the task without retries."""
    spec = importlib.util.spec_from_file_location(
        "backorder_dag_under_test", ROOT / "dags" / "backorder_notifications.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.permanent_errors_fail_at_once


def send_with_retries(state: DbConnection, run_id: int, smtp: SmtpSettings, tries: int = 3) -> list[str]:
    """The send task (wrapped as in the DAG) and its retries, until one succeeds or `tries` failed, or
    one fails without retries (AirflowFailException); returns the error lines of the failed tries."""
    from airflow.sdk.exceptions import AirflowFailException

    errors: list[str] = []
    for _ in range(tries):
        try:
            with dag_task_wrapper()():
                pipeline.send(state, run_id, "initial", smtp)
            return errors
        except AirflowFailException as exc:  # no retries
            errors.append(f"{type(exc).__name__}: {exc}")
            return errors
        except Exception as exc:  # what fails the task, for Airflow to retry
            errors.append(f"{type(exc).__name__}: {exc}")
    return errors


def statuses(state: DbConnection) -> dict[int, str]:
    return {oid: status for oid, (status, _) in outcomes(state).items()}


def outcomes(state: DbConnection) -> dict[int, tuple[str, str | None]]:
    engine = sa.create_engine(state.url())
    n = st.notifications
    with engine.connect() as c:
        result = {
            r.orders_id: (r.status, r.detail) for r in c.execute(sa.select(n.c.orders_id, n.c.status, n.c.detail))
        }
    engine.dispose()
    return result


def received(mail_sink) -> dict[int, int]:
    return dict(Counter(int(m.message["X-Backorder-Order-Id"]) for m in mail_sink.messages))


def settings(smtp: SmtpSettings, case: Case) -> SmtpSettings:
    return replace(smtp, timeout=1.0, **case.data.get("smtp", {}))


DOT_LINES = [b".", b"..", b".x", b"...", b". "]


def dotted(n: int) -> Email:
    """A message with lines starting with "." in every position the mailer cannot rule out."""
    lines = [
        b".x-first: the data's first line",
        f"Message-ID: <dots{n}@example.com>".encode(),
        *DOT_LINES,  # header block: what a CR/LF in a header value would make of a value starting with "."
        b'Content-Type: multipart/alternative; boundary="b"',
        b"",
        b"--b",
        b"Content-Transfer-Encoding: quoted-printable",  # keeps a dot at a line's start
        b"",
        *DOT_LINES,
        b"--b",
        b"Content-Transfer-Encoding: 8bit",
        b"",
        *DOT_LINES,
        b"--b--",
        b".",  # the last line: exactly the end-of-data marker
    ]
    return Email(f"<dots{n}@example.com>", address(n), b"\r\n".join(lines) + b"\r\n")


@pytest.mark.parametrize("case", params(DOTS))
def test_lines_starting_with_a_dot_arrive_as_meant(case: Case, shop, tmp_path, mail_sink, smtp) -> None:
    messages = [dotted(1), dotted(2)]
    with Mailer(replace(smtp, timeout=5.0)) as mailer:
        replies = [str(outcome) for _, _, outcome in mailer.send_many((m.message_id, m) for m in messages)]
    assert [r[:4] for r in replies] == ["250 ", "250 "], replies
    assert [m.raw for m in mail_sink.messages] == [m.data for m in messages]
    mail_sink.clear()

    names = [".", "..", ".x", ".\n..\n.x"]  # a name with line breaks is shown on one line
    for pid, name in enumerate(names, start=1):
        shop.product(pid, datetime(2026, 3, 20))
        shop.order(pid, [pid], purchased=datetime(2026, 3, 1), name=name)
        with shop.engine.begin() as c:
            c.execute(
                sa.update(demo_shop.orders_products)
                .where(demo_shop.orders_products.c.products_id == pid)
                .values(products_name=name)
            )
    state = DbConnection("backorder_state_db", "sqlite", host=str(tmp_path / "state.sqlite"))
    run = pipeline.extract(shop.conn, state, RunContext(T0), RunParams())
    pipeline.load_previous_snapshot(state, run.run_id)
    pipeline.classify_run(state, run.run_id)
    assert send_with_retries(state, run.run_id, smtp) == []
    assert received(mail_sink) == dict.fromkeys(range(1, len(names) + 1), 1)
    assert statuses(state) == dict.fromkeys(range(1, len(names) + 1), "sent")
    for item in mail_sink.messages:
        text, html = (part.get_content() for part in item.message.iter_parts())
        name = " ".join(names[int(item.message["X-Backorder-Order-Id"]) - 1].split())
        assert f"x {name} (M-" in text and f">{name}<br" in html, (name, text)
        assert item.raw.endswith(b"--\r\n")  # the closing boundary: nothing cut short


@pytest.mark.parametrize("case", params(DELIVERED))
def test_every_email_is_received_exactly_once(case: Case, due_run, mail_sink, smtp, no_waits, caplog) -> None:
    state, run_id = due_run
    mail_sink.faults = copy.deepcopy(case.data["faults"])  # its counters go down
    with caplog.at_level(logging.INFO, logger="include.backorder"):
        errors = send_with_retries(state, run_id, settings(smtp, case))
    assert errors == []
    assert received(mail_sink) == EVERY_ORDER_ONCE
    assert statuses(state) == ALL_SENT
    assert len({m.message["Message-ID"] for m in mail_sink.messages}) == len(ORDERS)
    log = [r.getMessage() for r in caplog.records]
    reconnects = case.data["reconnects"]
    if reconnects:
        assert f"send_initial: the SMTP connection was re-established {reconnects} time(s)" in log
        lost = [line for line in log if " lost (" in line]
        assert len(lost) == reconnects and all(case.data["reason"] in line for line in lost), lost
    else:
        assert not [line for line in log if "re-established" in line or " lost (" in line]


@pytest.mark.parametrize("case", params(PER_MESSAGE))
def test_a_refused_message_is_failed_and_never_tried_again(case: Case, due_run, mail_sink, smtp, no_waits) -> None:
    state, run_id = due_run
    mail_sink.faults = copy.deepcopy(case.data["faults"])
    assert send_with_retries(state, run_id, settings(smtp, case)) == []
    failed = case.data["failed"]
    assert received(mail_sink) == {oid: 1 for oid in ORDERS if oid not in failed}
    got = outcomes(state)
    assert {oid for oid, (status, _) in got.items() if status == "failed"} == failed
    assert all((got[oid][1] or "").startswith(case.data["detail"]) for oid in failed), got
    assert {oid for oid, (status, _) in got.items() if status == "sent"} == set(ORDERS) - failed
    assert pipeline.send(state, run_id, "initial", smtp) == {}  # a re-run does not try them again
    assert received(mail_sink) == {oid: 1 for oid in ORDERS if oid not in failed}


@pytest.mark.parametrize("case", params(SESSION))
def test_a_refused_session_fails_the_task_and_every_email_stays_due(
    case: Case, due_run, mail_sink, smtp, no_waits
) -> None:
    state, run_id = due_run
    mail_sink.faults = copy.deepcopy(case.data["faults"])
    errors = send_with_retries(state, run_id, settings(smtp, case))
    assert len(errors) == case.data.get("tries", 3)
    assert all(re.match(case.data["error"], error) for error in errors), errors
    first = case.data.get("sent_first", 0)
    assert received(mail_sink) == dict.fromkeys(range(1, first + 1), 1)
    assert statuses(state) == ALL_SENT | dict.fromkeys(range(first + 1, len(ORDERS) + 1), "due")
    accounts = case.data["faults"].accounts
    mail_sink.faults = Faults(accounts=accounts)  # the server or the settings are fixed
    fixed = replace(smtp, login="shop", password=accounts["shop"]) if accounts else smtp
    assert send_with_retries(state, run_id, fixed) == []
    assert received(mail_sink) == EVERY_ORDER_ONCE
    assert statuses(state) == ALL_SENT


@pytest.mark.parametrize("case", params(OTHER))
def test_other_server_behaviour(case: Case, due_run, mail_sink, smtp, no_waits) -> None:
    state, run_id = due_run
    mail_sink.faults = copy.deepcopy(case.data["faults"])
    errors = send_with_retries(state, run_id, settings(smtp, case))
    if case.id == "451-beyond-tries":
        assert len(errors) == 1
        assert errors[0].startswith(
            "TemporarySendError: 1 message(s) got a temporary answer and stay due for the retry: ['order 3: 451"
        )
        assert received(mail_sink) == EVERY_ORDER_ONCE
    elif case.id == "cut-before-answer":
        assert errors == []
        assert received(mail_sink) == EVERY_ORDER_ONCE | {3: 2}
        third = [m.message["Message-ID"] for m in mail_sink.messages if m.message["X-Backorder-Order-Id"] == "3"]
        assert third[0] == third[1] == "<backorder.3.initial.20260302T000000Z@example.com>"
    else:
        assert case.id == "server-gone"
        assert len(errors) == 3
        pattern = r"SMTPUnavailable: SMTP connection smtp_default at 127\.0\.0\.1:\d+: 4 connection attempts in a row"
        assert all(re.match(pattern, e) for e in errors), errors
        assert statuses(state) == ALL_DUE
        assert received(mail_sink) == {}
        mail_sink.faults = Faults()  # the server is back: the next retry sends everything once
        assert send_with_retries(state, run_id, smtp) == []
        assert received(mail_sink) == EVERY_ORDER_ONCE
    assert statuses(state) == ALL_SENT
