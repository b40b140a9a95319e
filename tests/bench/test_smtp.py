"""The SMTP benchmark's sink and senders: they count, deliver and stop as they say (counts only, no timings)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from email import message_from_bytes

import pytest

from bench.smtp import (
    HOST,
    SinkProcess,
    main,
    pipelined,
    rendered_samples,
    sample_messages,
    send_like_email_operator,
    send_one_connection,
    send_parallel,
    send_pipelined,
    smtp_connection_json,
    split,
)
from tools.smtp_sink import MailSink

# Lines a sink must get right: dot-stuffing (".", "..", ".x" at line starts), a line ending in "."
# (which ends a readuntil(b".\r\n") early), and a message without a final CRLF (smtplib adds it).
AWKWARD = [
    b"Subject: dots\r\n\r\n.\r\n..\r\n.x\r\nend.\r\n",
    b"Subject: dot last\r\n\r\n.",
    b"Subject: no CRLF\r\n\r\nlast line.",
    b"Subject: one line\r\n\r\nx\r\n",
]


def wire_size(msg: bytes) -> int:
    """What the server gets of a message: smtplib ends it with CRLF."""
    return len(msg) if msg.endswith(b"\r\n") else len(msg) + 2


@pytest.fixture(scope="module")
def sink() -> Iterator[SinkProcess]:
    with SinkProcess() as running:
        yield running


@pytest.fixture
def fresh(sink: SinkProcess) -> SinkProcess:
    sink.reset()
    return sink


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "stock-aiosmtpd"])
def test_one_connection_counts_every_message_and_byte(lean: bool) -> None:
    messages = sample_messages(300, 2000) + AWKWARD
    with SinkProcess(lean=lean) as sink:
        send_one_connection(HOST, sink.port, messages)
        assert sink.wait_for(len(messages), timeout=10) == len(messages)
        assert sink.messages == len(messages)
        assert sink.bytes == sum(map(wire_size, messages))
        assert sink.connections == 1


def test_pipelined_counts_every_message_and_byte(fresh: SinkProcess) -> None:
    messages = sample_messages(250, 3000) + AWKWARD
    send_pipelined(HOST, fresh.port, messages, recipients=["a@example.com", "b@example.com"])
    assert fresh.messages == len(messages)
    assert fresh.bytes == sum(map(wire_size, messages))
    assert fresh.connections == 1
    fresh.reset()
    send_pipelined(HOST, fresh.port, pipelined(messages))  # encoded beforehand
    assert (fresh.messages, fresh.bytes, fresh.connections) == (len(messages), sum(map(wire_size, messages)), 1)


def test_several_recipients_are_one_message(fresh: SinkProcess) -> None:
    messages = sample_messages(20, 1000)
    send_one_connection(HOST, fresh.port, messages, recipients=["a@example.com", "b@example.com"])
    assert (fresh.messages, fresh.bytes, fresh.connections) == (20, 20 * 1000, 1)


def test_reset_and_wait_for(fresh: SinkProcess) -> None:
    send_one_connection(HOST, fresh.port, sample_messages(5, 500))
    assert fresh.wait_for(5, timeout=5) == 5
    with pytest.raises(TimeoutError):
        fresh.wait_for(6, timeout=0.05)
    fresh.reset()
    assert (fresh.messages, fresh.bytes, fresh.connections) == (0, 0, 0)


def test_cpu_seconds_are_the_sink_process_s_own() -> None:
    """The CPU figure is read from the sink's process, so a sink that is not running has none."""
    with pytest.raises(RuntimeError, match="the sink is not running"):
        SinkProcess().cpu_seconds()


@pytest.mark.parametrize("connections", [1, 2, 4])
def test_parallel_counts_and_opens_one_connection_per_batch(fresh: SinkProcess, connections: int) -> None:
    messages = sample_messages(301, 1500)
    send_parallel(HOST, fresh.port, messages, connections)
    assert fresh.messages == 301
    assert fresh.bytes == 301 * 1500
    assert fresh.connections == connections


@pytest.mark.parametrize("connections", [1, 2, 4])
def test_parallel_delivers_every_message_exactly_once(mail_sink: MailSink, connections: int) -> None:
    """Against the sink that keeps messages: every Message-ID arrives, none twice."""
    messages = sample_messages(203, 1000)
    send_parallel(HOST, mail_sink.port, messages, connections)
    received = [item.message["Message-ID"] for item in mail_sink.messages]
    assert len(received) == len(set(received)) == 203
    assert set(received) == {message_from_bytes(m)["Message-ID"] for m in messages}


@pytest.mark.parametrize("parts", [1, 2, 3, 4, 7])
def test_split_is_a_partition_in_order(parts: int) -> None:
    messages = [bytes([i]) for i in range(23)]
    batches = split(messages, parts)
    assert len(batches) == parts
    assert [m for batch in batches for m in batch] == messages
    assert max(map(len, batches)) - min(map(len, batches)) <= 1


def test_email_operator_style_opens_a_connection_per_message(
    fresh: SinkProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Registered with monkeypatch so it is removed again; the function sets it from host and port.
    monkeypatch.setenv("AIRFLOW_CONN_BENCH_SMTP", smtp_connection_json(HOST, fresh.port))
    _whole, as_operator = rendered_samples(60, distinct=8)
    send_like_email_operator(as_operator, host=HOST, port=fresh.port)
    assert fresh.messages == 60
    assert fresh.connections == 60
    assert fresh.bytes > 60 * 5000  # whole rendered emails went out, not empty ones


def test_email_operator_style_with_an_existing_connection(fresh: SinkProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_OTHER_SMTP", smtp_connection_json(HOST, fresh.port))
    send_like_email_operator([("Subject", "<p>Hello</p>")] * 3, conn_id="other_smtp")
    assert (fresh.messages, fresh.connections) == (3, 3)


def test_rendered_samples_are_our_emails() -> None:
    whole, as_operator = rendered_samples(10, distinct=8)
    assert len(whole) == len(as_operator) == 10
    assert whole[8] == whole[0]  # the distinct ones, repeated
    for raw in whole[:8]:
        msg = message_from_bytes(raw)
        assert msg["X-Backorder-Notification"] and msg.get_content_type() == "multipart/alternative"
        assert 4000 < len(raw) < 12000
    assert all(subject and "<html" in html.lower() for subject, html in as_operator)


def test_sample_messages_have_the_size_asked() -> None:
    messages = sample_messages(3, 6000)
    assert [len(m) for m in messages] == [6000] * 3
    assert len(set(messages)) == 3
    assert all(m.isascii() and b"\r\n\r\n" in m for m in messages)


def test_the_sink_process_stops_on_exit() -> None:
    with SinkProcess() as sink:
        assert sink.process.is_alive()
    assert not sink.process.is_alive()
    assert sink.process.exitcode == 0  # it closed its server on SIGTERM and ended by itself


def test_the_sink_process_stops_after_an_error_in_the_block() -> None:
    with pytest.raises(RuntimeError, match="in the block"), SinkProcess() as sink:
        pid = sink.process.pid
        assert sink.process.is_alive(), "running while the block runs"
        raise RuntimeError("in the block")
    assert not sink.process.is_alive()
    assert pid is not None  # for the type checker: a started process has one
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone and reaped: no such process


def test_main_prints_every_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--messages", "40", "--repeats", "1", "--size", "1000", "--skip-operator"]) == 0
    out = capsys.readouterr().out
    assert "L_send" in out
    for connections in (1, 2, 4):
        assert f"parallel: {connections} connection(s)" in out
