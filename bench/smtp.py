"""SMTP side of the benchmark: a counting SMTP sink in its own process, and the ways of sending to it.

- `SinkProcess`: an aiosmtpd server on 127.0.0.1 in a process of its own (multiprocessing 'spawn',
  so it shares neither our heap nor our GIL) that only counts messages, bytes and connections. Like
  Postfix and Exim it offers PIPELINING; smtplib (L_send) does not use it, our Mailer does.
- `send_one_connection`: L_send, smtplib over one connection with the same MAIL/RCPT/DATA calls as
  `include.backorder.mailer.Mailer`, sending bytes rendered beforehand: our sending minus our overhead.
- `send_like_email_operator`: the peer figure, the way Airflow's `EmailOperator`
  (apache-airflow-providers-smtp 3.2.0) sends: a new `SmtpHook` context, that is a new connection,
  and `send_email_smtp` for every message.
- `send_parallel`: the messages split into batches, each over its own connection, in threads.
- `send_pipelined`: the sink's own capacity over one connection, with a client that does not wait.

`python -m bench.smtp --messages 20000` prints each figure as min/median/max over repeats in
messages/s (the repeats run in rounds, every mode once per round), with the CPU seconds the sink
and the client spent.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import multiprocessing
import os
import re
import signal
import smtplib
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from multiprocessing.synchronize import Event
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.smtp import SMTP, syntax

from tools.smtp_sink import offer_pipelining

HOST = "127.0.0.1"
SENDER = "shop@example.com"
RECIPIENT = "customer@example.com"
CONN_ID = "bench_smtp"
# aiosmtpd refuses DATA above its limit (default 32 MiB) and advertises it as SIZE; a real MTA
# advertises one too. 64 MiB: no message of ours comes near it, the sink never refuses one.
DATA_SIZE_LIMIT = 64 * 1024 * 1024


# ---------------------------------------------------------------------------------------------
# The sink
# ---------------------------------------------------------------------------------------------


class _Counter:
    """The sink's counters (shared with the parent) and, for stock aiosmtpd, its DATA hook."""

    def __init__(self, messages: ctypes.c_int64, nbytes: ctypes.c_int64, connections: ctypes.c_int64) -> None:
        self.messages, self.nbytes, self.connections = messages, nbytes, connections

    def add(self, size: int) -> None:
        self.messages.value += 1
        self.nbytes.value += size

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.add(len(envelope.original_content))
        return "250 2.0.0 OK"

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        """Offer PIPELINING, as Postfix and Exim do."""
        session.host_name = hostname
        return offer_pipelining(responses)


class LeanSMTP(SMTP):
    """aiosmtpd's SMTP without the two costs a counting sink does not need.

    Profiled (py-spy) with stock aiosmtpd 1.4.6 at one connection, a third of the sink's CPU went
    to them: parsing each MAIL/RCPT address with the email package's RFC 5322 header parser
    (which also defines a typing.Protocol class on every call), and reading DATA line by line in
    Python. Here an address is whatever is in <...>, and DATA is read up to the terminating
    CRLF.CRLF with a few `readuntil` calls. Greeting, EHLO, MAIL, RCPT, RSET, QUIT, the checks of
    command order and the replies stay aiosmtpd's. Counts the same bytes as stock aiosmtpd:
    the message after dot-unstuffing, without the final ".\r\n".
    """

    # The StreamReader's buffer limit (aiosmtpd uses it as its line length limit): raised so that
    # one readuntil() can return a whole message.
    line_length_limit = DATA_SIZE_LIMIT

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        text = arg.strip()
        if not text:
            return "", ""
        if text.startswith("<"):
            end = text.find(">")
            return (text[1:end], text[end + 1 :]) if end > 0 else (None, None)
        address, _, rest = text.partition(" ")
        return address, rest

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        # The data ends with a line holding only ".": CRLF "." CRLF, or "." CRLF first thing for an
        # empty message. A line that merely ends in "." stops readuntil() early: read on.
        data = await self._reader.readuntil(b".\r\n")
        while not (data.endswith(b"\r\n.\r\n") or data == b".\r\n"):
            data += await self._reader.readuntil(b".\r\n")
        stuffed = data.count(b"\r\n..") + data.startswith(b"..")  # the dots a client doubled at line starts
        self.event_handler.add(len(data) - 3 - stuffed)
        self._set_post_data_state()
        await self.push("250 2.0.0 OK")


def _serve(
    host: str,
    port_out: ctypes.c_int64,
    ready: Event,
    counter: _Counter,
    data_size_limit: int,
    lean: bool,
    use_uvloop: bool,
) -> None:
    """The sink process: serve SMTP on `host`, count, and stop on SIGTERM."""
    # aiosmtpd logs every command at INFO; whatever configured logging, the sink does not log.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    protocol = LeanSMTP if lean else SMTP

    async def serve() -> None:
        loop = asyncio.get_running_loop()

        def new_session() -> SMTP:  # called once per accepted TCP connection
            counter.connections.value += 1
            return protocol(
                counter,
                data_size_limit=data_size_limit,
                decode_data=False,
                hostname="sink.localhost",  # without it aiosmtpd calls socket.getfqdn() per connection
                loop=loop,
            )

        server = await loop.create_server(new_session, host=host, port=0, backlog=128)
        stop = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
        port_out.value = server.sockets[0].getsockname()[1]
        ready.set()  # create_server returned: the socket listens
        async with server:
            await stop

    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            use_uvloop = False
    if use_uvloop:
        uvloop.run(serve())
    else:
        asyncio.run(serve())


def _process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process."""
    try:
        import psutil
    except ImportError:  # Linux without psutil: the same numbers from /proc
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


class SinkProcess:
    """`with SinkProcess() as sink:` an SMTP server on 127.0.0.1:`sink.port` that only counts.

    It runs aiosmtpd in a process of its own and does nothing with a message but add 1 to
    `messages` and its length to `bytes` (after dot-unstuffing, CRLF line ends, without the final
    ".\\r\\n"), and counts accepted TCP connections in `connections`. The counters are
    `multiprocessing` shared values without a lock (`RawValue`, what `Value(..., lock=False)`
    returns): only the sink writes them, from one event loop thread, and reading an aligned 64-bit
    integer is atomic. So `reset()` must only be called while nothing is being sent.

    `lean` (default) serves `LeanSMTP`, aiosmtpd without its address parsing and line-by-line DATA
    reading; `lean=False` serves stock aiosmtpd. `use_uvloop` (default) runs the event loop on
    uvloop (installed with Airflow) when it is importable. Both make the sink cheaper, so that more
    of what is measured is the client.
    """

    def __init__(
        self,
        host: str = HOST,
        *,
        data_size_limit: int = DATA_SIZE_LIMIT,
        lean: bool = True,
        use_uvloop: bool = True,
        start_timeout: float = 60.0,
    ) -> None:
        self.host = host
        self.start_timeout = start_timeout
        ctx = multiprocessing.get_context("spawn")
        self._counter = _Counter(
            ctx.RawValue(ctypes.c_int64, 0), ctx.RawValue(ctypes.c_int64, 0), ctx.RawValue(ctypes.c_int64, 0)
        )
        self._port = ctx.RawValue(ctypes.c_int64, 0)
        self._ready = ctx.Event()
        self.process = ctx.Process(
            target=_serve,
            args=(host, self._port, self._ready, self._counter, data_size_limit, lean, use_uvloop),
            name="smtp-sink",
            daemon=True,  # never outlives us, even if we die without __exit__
        )

    @property
    def port(self) -> int:
        return int(self._port.value)

    @property
    def messages(self) -> int:
        return int(self._counter.messages.value)

    @property
    def bytes(self) -> int:
        return int(self._counter.nbytes.value)

    @property
    def connections(self) -> int:
        return int(self._counter.connections.value)

    def reset(self) -> None:
        """Set the counters to 0 (only while nothing is being sent)."""
        self._counter.messages.value = 0
        self._counter.nbytes.value = 0
        self._counter.connections.value = 0

    def wait_for(self, n: int, timeout: float = 30.0) -> int:
        """Wait until at least n messages arrived; return the count. TimeoutError after `timeout` s."""
        deadline = time.monotonic() + timeout
        while (count := self.messages) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the sink has {count} messages after {timeout} s, expected {n}")
            if not self.process.is_alive():
                raise RuntimeError(f"the sink process ended (exit code {self.process.exitcode}) at {count} messages")
            time.sleep(0.001)
        return count

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) the sink process has used since it started."""
        if self.process.pid is None:
            raise RuntimeError("the sink is not running")
        return _process_cpu_seconds(self.process.pid)

    def start(self) -> None:
        self.process.start()
        deadline = time.monotonic() + self.start_timeout
        while not self._ready.wait(0.05):
            if not self.process.is_alive():
                raise RuntimeError(f"the sink process ended at start (exit code {self.process.exitcode})")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"the sink did not listen within {self.start_timeout} s")

    def stop(self) -> None:
        """SIGTERM (the sink closes its server and exits), then SIGKILL if it has not ended in 5 s."""
        if self.process.pid is None:
            return
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
        self.process.join()

    def __enter__(self) -> SinkProcess:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------
# Sending
# ---------------------------------------------------------------------------------------------


def _transaction(smtp: smtplib.SMTP, msg: bytes, sender: str, recipients: Sequence[str]) -> None:
    """One message, with the calls `Mailer._transaction` makes: MAIL, RCPT per recipient, DATA."""
    code, reply = smtp.mail(sender)
    if code != 250:
        raise smtplib.SMTPSenderRefused(code, reply, sender)
    for rcpt in recipients:
        code, reply = smtp.rcpt(rcpt)
        if code not in (250, 251):
            raise smtplib.SMTPRecipientsRefused({rcpt: (code, reply)})
    code, reply = smtp.data(msg)
    if code != 250:
        raise smtplib.SMTPDataError(code, reply)


def send_one_connection(
    host: str,
    port: int,
    messages: Sequence[bytes],
    sender: str = SENDER,
    recipients: Sequence[str] = (RECIPIENT,),
    *,
    timeout: float = 30.0,
) -> float:
    """L_send: every message over one smtplib connection, as Mailer does (connect, EHLO, ..., QUIT).

    Returns the seconds from connecting to the server's answer to QUIT.
    """
    start = time.perf_counter()
    smtp = smtplib.SMTP(host, port, timeout=timeout)
    try:
        smtp.ehlo_or_helo_if_needed()
        for msg in messages:
            _transaction(smtp, msg, sender, recipients)
        smtp.quit()
    finally:
        smtp.close()
    return time.perf_counter() - start


def smtp_connection_json(host: str, port: int, from_email: str = SENDER) -> str:
    """An Airflow SMTP connection to a plain-text server (no SSL, no STARTTLS), as JSON."""
    extra = {"disable_ssl": True, "disable_tls": True, "from_email": from_email}
    return json.dumps({"conn_type": "smtp", "host": host, "port": port, "extra": extra})


def _prepare_airflow() -> None:
    """Before Airflow is first imported: unless AIRFLOW_HOME is set, a temporary one (importing it writes there)."""
    if "airflow" not in sys.modules and not os.environ.get("AIRFLOW_HOME"):
        os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="bench-airflow-")
        os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


def send_like_email_operator(
    messages: Sequence[tuple[str, str]],
    *,
    conn_id: str = CONN_ID,
    host: str | None = None,
    port: int | None = None,
    to: str = RECIPIENT,
    from_email: str | None = None,
) -> float:
    """The peer figure: each (subject, html) sent the way `EmailOperator.execute` sends one email.

    Per message: `with SmtpHook(conn_id) as hook:` (looks the connection up, opens a new SMTP
    connection, EHLO) and `hook.send_email_smtp(...)` (builds a MIMEMultipart with one text/html
    part, `sendmail`), then the hook closes the connection (no QUIT, as the hook does). With
    `host` and `port`, the connection is given as `AIRFLOW_CONN_<CONN_ID>`; otherwise it must exist.
    Returns the seconds for all messages. Only the sending is timed: a real `EmailOperator` also
    runs a whole task instance per email.
    """
    _prepare_airflow()
    if host is not None and port is not None:
        os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = smtp_connection_json(host, port, from_email or SENDER)
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    start = time.perf_counter()
    for subject, html in messages:
        with SmtpHook(smtp_conn_id=conn_id) as hook:
            hook.send_email_smtp(
                to=to,
                subject=subject,
                html_content=html,
                from_email=from_email or hook.from_email,
                files=[],
                cc=None,
                bcc=None,
                mime_subtype="mixed",
                mime_charset="utf-8",
                conn_id=conn_id,
                custom_headers=None,
            )
    return time.perf_counter() - start


def split(messages: Sequence[bytes], parts: int) -> list[Sequence[bytes]]:
    """`messages` in `parts` consecutive batches whose sizes differ by at most one."""
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    size, extra = divmod(len(messages), parts)
    batches, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        batches.append(messages[start:end])
        start = end
    return batches


def send_parallel(
    host: str,
    port: int,
    messages: Sequence[bytes],
    connections: int,
    sender: str = SENDER,
    recipients: Sequence[str] = (RECIPIENT,),
) -> float:
    """The messages in `connections` batches, each over its own connection, one thread per batch.

    Threads, not processes: an smtplib client spends most of a transaction waiting for the
    server's reply (socket calls release the GIL), and on loopback the sink takes a core of its
    own; processes would add pickling the messages over and a start-up per process, for a gain
    only when the client is CPU-bound, which `main` shows it is not. Returns the seconds from
    the first connect to the last QUIT.
    """
    batches = [b for b in split(messages, connections) if b]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, len(batches)), thread_name_prefix="smtp-batch") as pool:
        futures = [pool.submit(send_one_connection, host, port, batch, sender, recipients) for batch in batches]
        for future in futures:
            future.result()
    return time.perf_counter() - start


def _wire_form(msg: bytes) -> bytes:
    """A message as DATA carries it, as smtplib sends it: CRLF line ends, leading dots doubled, CRLF at the end."""
    data = re.sub(rb"(?m)^\.", b"..", re.sub(rb"\r\n|\r|\n", b"\r\n", msg))
    return data if data.endswith(b"\r\n") else data + b"\r\n"


@dataclass(frozen=True)
class Pipelined:
    """Messages encoded for `send_pipelined`: envelope, DATA and the data, 32 messages a chunk."""

    chunks: list[bytes]
    messages: int
    recipients: int


def pipelined(messages: Sequence[bytes], sender: str = SENDER, recipients: Sequence[str] = (RECIPIENT,)) -> Pipelined:
    """Encode the messages for `send_pipelined` once, so that the timed sending is only writing them."""
    envelope = f"MAIL FROM:<{sender}>\r\n".encode() + b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in recipients)
    wire: dict[int, bytes] = {}
    for msg in messages:
        if id(msg) not in wire:
            wire[id(msg)] = envelope + b"DATA\r\n" + _wire_form(msg) + b".\r\n"
    chunks = [b"".join(wire[id(m)] for m in messages[i : i + 32]) for i in range(0, len(messages), 32)]
    return Pipelined(chunks, len(messages), len(recipients))


def send_pipelined(
    host: str,
    port: int,
    messages: Sequence[bytes] | Pipelined,
    sender: str = SENDER,
    recipients: Sequence[str] = (RECIPIENT,),
    *,
    timeout: float = 60.0,
) -> float:
    """The sink's capacity over one connection: the client writes without waiting for replies.

    Every command and message goes out as soon as the socket takes it (give `pipelined(...)` to
    encode them before, not while, the clock runs) and a second thread reads the replies, so the
    client costs little and the sink, busy all the time, is what limits. Not a way to send mail:
    a client must wait for "354" before the data (RFC 2920); it works because aiosmtpd reads the
    data from what it has buffered. Raises RuntimeError unless every reply is 2xx/3xx.
    """
    payload = messages if isinstance(messages, Pipelined) else pipelined(messages, sender, recipients)
    # greeting, EHLO, per message MAIL, RCPT..., DATA (354), the data (250); QUIT
    expected = 2 + payload.messages * (payload.recipients + 3) + 1
    replies: list[bytes] = []  # the last line of each reply

    start = time.perf_counter()
    with socket.create_connection((host, port), timeout=timeout) as sock:

        def read() -> None:
            with sock.makefile("rb") as replies_in:
                while len(replies) < expected and (line := replies_in.readline()):
                    if line[3:4] != b"-":
                        replies.append(line)

        reader = threading.Thread(target=read, name="smtp-replies", daemon=True)
        reader.start()
        sock.sendall(b"EHLO bench.localhost\r\n")
        for chunk in payload.chunks:
            sock.sendall(chunk)
        sock.sendall(b"QUIT\r\n")
        reader.join(timeout)
    seconds = time.perf_counter() - start
    refused = [r for r in replies if r[:1] not in (b"2", b"3")]
    if len(replies) != expected or refused:
        raise RuntimeError(f"{len(replies)} replies of {expected} expected; refusals: {refused[:3]!r}")
    return seconds


# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------


def sample_messages(n: int, size_bytes: int = 6000, sender: str = SENDER, recipient: str = RECIPIENT) -> list[bytes]:
    """n distinct RFC 5322 messages of `size_bytes` each (at least the headers): 7-bit, CRLF, lines of 76."""
    messages = []
    for i in range(n):
        head = (
            f"From: {sender}\r\nTo: {recipient}\r\nSubject: Your order {i}: still on backorder\r\n"
            f"Date: Mon, 23 Nov 2026 06:00:00 +0000\r\nMessage-ID: <bench.{i}@example.com>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n"
            "Content-Transfer-Encoding: 7bit\r\n\r\n"
        ).encode()
        body, line = bytearray(), (f"message {i} " + "x" * 76)[:76].encode() + b"\r\n"
        while len(head) + len(body) + len(line) <= size_bytes:
            body += line
        rest = size_bytes - len(head) - len(body)
        if rest >= 3:
            body += b"y" * (rest - 2) + b"\r\n"
        messages.append(head + bytes(body))
    return messages


def rendered_samples(n: int, distinct: int = 64) -> tuple[list[bytes], list[tuple[str, str]]]:
    """n backorder emails rendered by our Renderer, as `make preview` renders them, in two forms.

    (the whole message as Mailer sends it, for `send_one_connection` and `send_parallel`;
    (subject, html) as an EmailOperator would be given it, for `send_like_email_operator`).
    `distinct` different ones (every kind and language, different orders and customers), repeated
    to n: what the server does with a message does not depend on which one it is.
    """
    from datetime import UTC, datetime

    from include.backorder import KINDS, LANGUAGES
    from include.backorder.config import RunParams
    from include.backorder.render import Notification, Renderer
    from include.backorder.unsubscribe import Unsubscribe
    from tools.preview import SAMPLE_LINES

    params = RunParams()
    renderer = Renderer(params.branding())
    unsubscribe = Unsubscribe(mailto=SENDER)
    at = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
    whole: list[bytes] = []
    parts: list[tuple[str, str]] = []
    for i in range(min(n, distinct)):
        kind = KINDS[i % len(KINDS)]
        language = LANGUAGES[(i // len(KINDS)) % len(LANGUAGES)]
        notification = Notification(
            orders_id=4711 + i,
            kind=kind,
            language=language,
            customers_email_address=f"customer{i}@example.com",
            customers_name=f"Jürgen Müller {i}",
            reference_time=at,
            lines=SAMPLE_LINES,
            reminder_interval_days=params.reminder_interval_days,
            customers_id=i,
        )
        whole.append(renderer.render(notification, f"Shop <{SENDER}>", "example.com", at, unsubscribe).as_bytes())
        subject, _text, html = renderer.render_parts(
            notification, unsubscribe.link(i, notification.customers_email_address)
        )
        parts.append((subject, html))
    return [whole[i % len(whole)] for i in range(n)], [parts[i % len(parts)] for i in range(n)]


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One timed sending: wall seconds, what the sink counted, CPU seconds of sink and client."""

    seconds: float
    messages: int
    bytes: int
    connections: int
    sink_cpu: float
    client_cpu: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def measure(sink: SinkProcess, send: Callable[[], float], expected: int) -> Run:
    """Run `send` (which returns its seconds) against a reset sink; check the sink got every message."""
    sink.reset()
    sink_cpu, client_cpu = sink.cpu_seconds(), time.process_time()
    seconds = send()
    sink.wait_for(expected, timeout=30)
    run = Run(
        seconds,
        sink.messages,
        sink.bytes,
        sink.connections,
        sink.cpu_seconds() - sink_cpu,
        time.process_time() - client_cpu,
    )
    if run.messages != expected:
        raise RuntimeError(f"the sink counted {run.messages} messages, {expected} were sent")
    return run


def summary(label: str, runs: Sequence[Run]) -> str:
    rates = [r.rate for r in runs]
    n = runs[0].messages
    wall = sum(r.seconds for r in runs)
    sink_cpu = sum(r.sink_cpu for r in runs)
    client_cpu = sum(r.client_cpu for r in runs)
    return (
        f"{label:<34} {min(rates):>7.0f} {statistics.median(rates):>7.0f} {max(rates):>7.0f}"
        f"  {runs[0].bytes / n:>6.0f} {runs[0].connections:>6}"
        f"  {sink_cpu / len(runs):>6.2f} ({100 * sink_cpu / wall:>3.0f}%)"
        f"  {client_cpu / len(runs):>6.2f} ({100 * client_cpu / wall:>3.0f}%)"
        f"  {1e6 * sink_cpu / (n * len(runs)):>5.0f} {1e6 * client_cpu / (n * len(runs)):>5.0f}"
    )


HEADER = (
    f"{'mode':<34} {'min/s':>7} {'median':>7} {'max/s':>7}  {'B/msg':>6} {'conns':>6}"
    f"  {'sink CPU s (of wall)':>20}  {'client CPU s':>14}  {'sink':>5} {'clnt':>5}\n"
    f"{'':<34} {'':>7} {'':>7} {'':>7}  {'':>6} {'':>6}  {'per repeat':>20}  {'per repeat':>14}"
    f"  {'us CPU/msg':>11}"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000, help="messages per repeat (default 5000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", default="1,2,4", help="parallel connections to show (default 1,2,4)")
    parser.add_argument(
        "--size", type=int, default=0, help="send synthetic messages of this many bytes instead of rendered emails"
    )
    parser.add_argument("--no-uvloop", action="store_true", help="run the sink on asyncio's own event loop")
    parser.add_argument("--stock-aiosmtpd", action="store_true", help="serve stock aiosmtpd, not LeanSMTP")
    parser.add_argument("--skip-operator", action="store_true", help="leave out the EmailOperator-style figure")
    args = parser.parse_args(argv)
    n = args.messages
    _prepare_airflow()

    t0 = time.perf_counter()
    if args.size:
        whole = sample_messages(n, args.size)
        subjects = [
            (f"Your order {i}: still on backorder", "<p>" + "x" * (args.size * 3 // 4) + "</p>")
            for i in range(min(n, 64))
        ]
        as_operator = [subjects[i % len(subjects)] for i in range(n)]
    else:
        whole, as_operator = rendered_samples(n)
    print(
        f"{n} messages, {sum(map(len, whole)) / n:.0f} bytes each on average, prepared in"
        f" {time.perf_counter() - t0:.1f} s; {args.repeats} repeats; {os.cpu_count()} CPUs,"
        f" load average {_load()}"
    )

    connections = [int(c) for c in args.connections.split(",") if c.strip()]
    with SinkProcess(lean=not args.stock_aiosmtpd, use_uvloop=not args.no_uvloop) as sink:
        port = sink.port
        server = "stock aiosmtpd" if args.stock_aiosmtpd else "LeanSMTP"
        loop = "asyncio" if args.no_uvloop else "uvloop (if installed)"
        print(f"sink: pid {sink.process.pid}, 127.0.0.1:{port}, {server} on {loop}\n")
        send_one_connection(HOST, port, whole[:200])  # warm up both ends
        rows: list[tuple[str, Callable[[], float]]] = [
            ("sink capacity: pipelined, 1 conn", partial(send_pipelined, HOST, port, pipelined(whole))),
            ("L_send: smtplib, one connection", partial(send_one_connection, HOST, port, whole)),
        ]
        if not args.skip_operator:
            send_like_email_operator(as_operator[:50], host=HOST, port=port)  # imports Airflow, warms up
            rows.append(
                (
                    "EmailOperator-style: conn/message",
                    partial(send_like_email_operator, as_operator, host=HOST, port=port),
                )
            )
        for k in connections:
            rows.append((f"parallel: {k} connection(s), threads", partial(send_parallel, HOST, port, whole, k)))
        # Round by round, every mode once per round: whatever else loads the machine meanwhile
        # falls on every mode alike, not on one.
        runs: dict[str, list[Run]] = {label: [] for label, _ in rows}
        for round_ in range(1, args.repeats + 1):
            for label, send in rows:
                runs[label].append(measure(sink, send, n))
            print(f"  round {round_}/{args.repeats} done, load average {_load()}", file=sys.stderr, flush=True)
        total = sink.cpu_seconds()
    print(HEADER)
    for label, _ in rows:
        print(summary(label, runs[label]))
    print(
        f"\nsink process CPU in all: {total:.1f} s; load average at the end {_load()}. 'of wall': CPU seconds /"
        " wall seconds of the runs; 100% is one core, the most a single-threaded process can use."
    )
    return 0


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    raise SystemExit(main())
