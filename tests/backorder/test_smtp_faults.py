"""The mailer against a real SMTP server (the aiosmtpd sink), with the bytes it writes.

The dots: a line of a message that starts with "." must go out with the dot doubled, or a line
"." ends the data early (the server stores a truncated message, and reads the rest as commands).
The bodies the renderer writes are base64, so today such a line can only come from the header
block (a CR/LF that reached a header value) or a future encoding (quoted-printable keeps dots):
the tests hand the mailer messages with such lines in every position and compare the bytes the
server stored with the bytes meant, pipelined and lockstep, and that the next message is intact.

The faults: each fault of the sink happens as named, and the mailer's count of reconnects says so;
every message still arrives exactly once. (What the user sees of each, through the send stage, is in
tests/hardening/test_smtp_server.py.)
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from dataclasses import replace

import pytest

from include.backorder.config import ConfigError
from include.backorder.mailer import Mailer, PermanentSendError, _refuses_session, wire_data
from include.backorder.mime import Email
from tools.smtp_sink import Faults

CRLF = b"\r\n"
DOT_LINES = [b".", b"..", b".x", b"...", b". ", b".\t."]


@pytest.fixture(params=[True, False], ids=["pipelining", "lockstep"])
def server(request, mail_sink):
    """The sink, once offering PIPELINING (one write for MAIL, RCPT and DATA) and once not."""
    mail_sink.pipelining = request.param
    return mail_sink


def message(n: int, lines: list[bytes]) -> Email:
    return Email(f"<m{n}@example.com>", f"customer{n}@example.com", CRLF.join(lines) + CRLF)


def dotted(n: int) -> Email:
    """A message with lines starting with "." first, in the header block, in a quoted-printable and
    an 8-bit body, and last (where a lone "." is exactly the end-of-data marker)."""
    return message(
        n,
        [
            b".x-first: the data's first line",
            f"Message-ID: <m{n}@example.com>".encode(),
            b"Subject: dots",
            *DOT_LINES,  # header position: what a CR/LF in a header value makes of a value starting with "."
            b"MIME-Version: 1.0",
            b'Content-Type: multipart/alternative; boundary="b"',
            b"",
            b"--b",
            b'Content-Type: text/plain; charset="utf-8"',
            b"Content-Transfer-Encoding: quoted-printable",  # keeps a dot at a line's start as it is
            b"",
            *DOT_LINES,
            b"--b",
            b'Content-Type: text/html; charset="utf-8"',
            b"Content-Transfer-Encoding: 8bit",
            b"",
            b"<p>",
            *DOT_LINES,
            b"</p>",
            b"--b--",
            b".",
        ],
    )


def plain(n: int) -> Email:
    return message(n, [f"Message-ID: <m{n}@example.com>".encode(), b"Subject: plain", b"", b"nothing special"])


def send_all(smtp, messages: list[Email]) -> tuple[list[str], int]:
    with Mailer(smtp) as mailer:
        answers = [answer for _, _, answer in mailer.send_many((m.message_id, m) for m in messages)]
    return [str(o) for o in answers], mailer.reconnects


def test_lines_starting_with_a_dot_arrive_byte_for_byte_and_the_next_message_intact(server, smtp) -> None:
    messages = [dotted(1), plain(2), dotted(3), dotted(4), plain(5)]
    answers, reconnects = send_all(replace(smtp, timeout=5.0), messages)
    assert [o[:4] for o in answers] == ["250 "] * 5, answers
    assert reconnects == 0
    assert [m.raw for m in server.messages] == [m.data for m in messages]
    assert [m.rcpt_tos for m in server.messages] == [(m.recipient,) for m in messages]


def test_bare_line_ends_and_a_missing_final_line_end_cannot_end_the_data(server, smtp) -> None:
    """A lone LF or CR is sent as CRLF (some servers end a line there, others not: a "." after one
    would end the data for some), and a message not ending in CRLF gets one before the end marker."""
    odd = Email("<odd@example.com>", "customer1@example.com", b"Subject: x\r\n\r\nline\n.\nmore\r.")
    answers, _ = send_all(replace(smtp, timeout=5.0), [odd, plain(2)])
    assert [o[:4] for o in answers] == ["250 ", "250 "], answers
    assert [m.raw for m in server.messages] == [b"Subject: x\r\n\r\nline\r\n.\r\nmore\r\n.\r\n", plain(2).data]


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        (b".\r\n", b"..\r\n.\r\n"),
        (b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n.\r\n"),
        (b"a\r\n..x\r\n", b"a\r\n...x\r\n.\r\n"),
        (b"a\r\nb.\r\n", b"a\r\nb.\r\n.\r\n"),  # a dot not at a line's start stays single
        (b"a\n.\n", b"a\r\n..\r\n.\r\n"),
        (b"a\r.", b"a\r\n..\r\n.\r\n"),
        (b"", b"\r\n.\r\n"),
    ],
)
def test_wire_data(data: bytes, wire: bytes) -> None:
    assert wire_data(data) == wire


RECONNECTING_FAULTS = [
    pytest.param(
        Faults(drop_after={2, 4}), 2, "Connection unexpectedly closed|Broken pipe|reset", id="close-after-250"
    ),
    pytest.param(Faults(busy=2), 2, "421 4.3.2 Service not available", id="421-at-MAIL"),
    pytest.param(Faults(busy_rcpt=1), 1, "421 4.3.2 Service not available", id="421-at-RCPT"),
    pytest.param(Faults(busy_data=1), 1, "421 4.3.2 Service shutting down", id="421-at-end-of-data"),
    pytest.param(Faults(stall={"customer3@example.com": 2.0}), 1, "timed out", id="stall-past-timeout"),
]


@pytest.mark.parametrize(("faults", "reconnects", "reason"), RECONNECTING_FAULTS)
def test_each_fault_happens_as_named_and_every_message_arrives_once(
    server, smtp, no_waits, caplog, faults, reconnects, reason
) -> None:
    server.faults = copy.deepcopy(faults)
    messages = [plain(n) for n in range(1, 7)]
    with caplog.at_level(logging.WARNING, logger="include.backorder.mailer"):
        answers, counted = send_all(replace(smtp, timeout=1.0), messages)
    assert counted == reconnects
    # Ours only: the SMTP server's own log (aiosmtpd) may also say "connection lost", as the timing falls.
    lost = [r.getMessage() for r in caplog.records if r.name == "include.backorder.mailer" and "lost" in r.getMessage()]
    assert len(lost) == reconnects, lost
    assert all(any(part in line for part in reason.split("|")) for line in lost), lost
    assert [o[:4] for o in answers] == ["250 "] * 6
    assert Counter(m.raw for m in server.messages) == Counter(m.data for m in messages)


@pytest.mark.parametrize(
    ("step", "code", "session"),
    [
        ("MAIL FROM", 550, True),  # the sender is the same for every message: all would be refused
        ("MAIL FROM", 554, True),
        ("MAIL FROM", 530, True),
        ("MAIL FROM", 451, False),  # for now: the message stays due
        ("RCPT TO", 550, False),  # this recipient
        ("RCPT TO", 530, True),  # "authentication required", whichever command gets it
        ("RCPT TO", 452, False),
        ("end of data", 554, False),  # this message
        ("end of data", 535, True),
    ],
)
def test_which_refusals_concern_the_session(step: str, code: int, session: bool) -> None:
    assert _refuses_session(step, code) is session


def test_a_recipient_with_a_line_break_is_refused_and_cannot_add_commands(server, smtp) -> None:
    """A recipient goes into RCPT TO:<...>; with a line break it would carry commands of its own."""
    evil = Email("<evil@example.com>", "a@example.com>\r\nRCPT TO:<bcc@example.org", plain(1).data)
    messages = [plain(1), evil, plain(3)]
    with Mailer(smtp) as mailer:
        answers = [(key, answer) for key, _, answer in mailer.send_many((m.message_id, m) for m in messages)]
    got = dict(answers)  # in the order the answers came: the refusal needs none
    assert {key: str(o)[:4] for key, o in got.items()} == {
        "<m1@example.com>": "250 ",
        "<m3@example.com>": "250 ",
        "<evil@example.com>": "reci",
    }
    assert isinstance(got["<evil@example.com>"], PermanentSendError)
    assert [m.rcpt_tos for m in server.messages] == [("customer1@example.com",), ("customer3@example.com",)]


def test_a_sender_address_with_a_line_break_is_a_config_error(smtp) -> None:
    with pytest.raises(ConfigError, match=r"extra.from_email.*no line breaks"):
        Mailer(replace(smtp, from_email="shop@example.com\r\nRCPT TO:<x@example.org>"))
