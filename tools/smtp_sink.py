"""A real SMTP server on loopback (aiosmtpd) that keeps every message: for the demo and the tests.

Each message is kept in memory (`sink.messages`) and, when a folder is given, written as an `.eml`
file under `<folder>/<reference date>/<kind>-<order id>-<language>.eml`.

For the tests it can also misbehave on purpose, the way real servers do (`sink.faults`): refuse
recipients for good (550) or for a while (451), close the connection right after answering the
n-th message or before answering it, answer 421 "service not available" (and close) at MAIL, RCPT
or the end of a message's data, stall, refuse a message at the end of its data; or refuse the
whole session: a 554 greeting, a reply to every MAIL FROM (530 "must issue STARTTLS first", 554),
AUTH required (530) or a login refused (535), STARTTLS offered but not available (454).
Each fault is served as named: a reply, then the connection closed, happens in that order.
It offers PIPELINING as most real servers do (`pipelining=False`: a server that does not).

`sink.wait_for(n)` waits until the sink has taken n messages; `sink.watch` (a callable) is called
with each message's number as it is kept, before it is answered, on the server's thread.
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    raw: bytes


@dataclass
class Faults:
    """What the sink does wrong, and how often; counters go down as faults are served."""

    refuse: set[str] = field(default_factory=set)  # recipients answered 550, always
    defer: dict[str, int] = field(default_factory=dict)  # recipient -> how many more 451 answers
    drop_after: set[int] = field(default_factory=set)  # take the n-th message, answer 250, then close at once
    cut_after: set[int] = field(default_factory=set)  # take the n-th message, close before answering
    busy: int = 0  # how many more MAIL commands get "421", then a closed connection
    busy_rcpt: int = 0  # how many more RCPT commands get "421", then a closed connection
    busy_data: int = 0  # how many more messages get "421" at the end of their data (not taken), then a close
    stall: dict[str, float] = field(default_factory=dict)  # recipient -> seconds to wait once before answering
    slow: float = 0.0  # seconds to think before answering each message's data
    hold: dict[int, threading.Event] = field(default_factory=dict)  # take the n-th message, answer once it is set
    reject_data: set[str] = field(default_factory=set)  # recipients whose message is refused (554) at its end
    # Refusals of the whole session:
    greeting: str = ""  # answer a new connection with this ("554 5.3.2 No SMTP service here") and close it
    refuse_mail: str = ""  # the reply to every MAIL FROM ("530 5.7.0 Must issue a STARTTLS command first") ...
    refuse_mail_after: int = 0  # ... once this many messages were taken
    auth_required: bool = False  # AUTH offered and required: MAIL FROM without it gets 530
    accounts: dict[str, str] = field(default_factory=dict)  # login -> password AUTH accepts; others get 535
    offer_starttls: bool = False  # offer STARTTLS, then answer it 454 (this sink has no certificate)


class _Handler:
    def __init__(self, sink: MailSink) -> None:
        self.sink = sink

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.sink.faults.offer_starttls:
            responses = [*responses[:-1], "250-STARTTLS", responses[-1]]
        return offer_pipelining(responses) if self.sink.pipelining else responses

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        faults = self.sink.faults
        if faults.busy > 0:
            faults.busy -= 1
            return await _answer_and_close(server, "421 4.3.2 Service not available, closing channel")
        if faults.refuse_mail and self.sink.accepted >= faults.refuse_mail_after:
            return faults.refuse_mail
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        faults = self.sink.faults
        if address in faults.stall:
            await asyncio.sleep(faults.stall.pop(address))
        if faults.busy_rcpt > 0:
            faults.busy_rcpt -= 1
            return await _answer_and_close(server, "421 4.3.2 Service not available, closing channel")
        if address in faults.refuse:
            return "550 5.1.1 Mailbox unavailable"
        if faults.defer.get(address, 0) > 0:
            faults.defer[address] -= 1
            return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        faults = self.sink.faults
        if faults.slow:
            await asyncio.sleep(faults.slow)
        if faults.busy_data > 0:
            faults.busy_data -= 1
            return await _answer_and_close(server, "421 4.3.2 Service shutting down, message not taken")
        if faults.reject_data & set(envelope.rcpt_tos):
            return "554 5.6.0 Message content rejected"
        raw = envelope.original_content or envelope.content
        msg = message_from_bytes(raw, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        number = self.sink.keep(Received(envelope.mail_from, tuple(envelope.rcpt_tos), msg, raw))
        reply = f"250 2.0.0 Ok: queued as {number}"
        if number in faults.hold:
            await asyncio.get_running_loop().run_in_executor(None, faults.hold.pop(number).wait)
        if number in faults.cut_after:
            faults.cut_after.discard(number)
            server.transport.close()  # the message is kept, but the client never hears so
        elif number in faults.drop_after:
            faults.drop_after.discard(number)
            return await _answer_and_close(server, reply)
        return reply


async def _answer_and_close(server: SMTP, reply: str) -> str:
    """Answer, then close the connection, in that order (a server going down says so first). The
    reply returned is written to the closed connection, that is nowhere."""
    await server.push(reply)
    assert server.transport is not None
    server.transport.close()
    return reply


class _Server(SMTP):
    """aiosmtpd's server, able to refuse a connection in its greeting."""

    def __init__(self, sink: MailSink, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sink = sink

    async def _handle_client(self) -> None:
        if self.sink.faults.greeting:
            await self.push(self.sink.faults.greeting)
            assert self.transport is not None
            self.transport.close()
            return
        await super()._handle_client()


class _Controller(Controller):
    """A server per connection, set up from the sink's faults as they are when the client connects."""

    def __init__(self, sink: MailSink, **kwargs: Any) -> None:
        super().__init__(_Handler(sink), **kwargs)
        self.sink = sink

    def factory(self) -> SMTP:
        faults, kwargs = self.sink.faults, dict(self.SMTP_kwargs)
        if faults.auth_required or faults.accounts:
            kwargs |= {
                "auth_require_tls": False,
                "auth_required": faults.auth_required,
                "authenticator": self._authenticate,
            }
        with warnings.catch_warnings():  # "Requiring AUTH while not requiring TLS": on loopback, on purpose
            warnings.simplefilter("ignore")
            return _Server(self.sink, self.handler, **kwargs)

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and self.sink.faults.accounts.get(
            data.login.decode("utf-8", "replace")
        ) == data.password.decode("utf-8", "replace")
        return AuthResult(success=ok, handled=False)


class MailSink:
    """`with MailSink(folder) as sink:` an SMTP server on 127.0.0.1:`sink.port`."""

    def __init__(self, folder: Path | None = None, port: int = 0, pipelining: bool = True) -> None:
        self.folder = folder
        self.pipelining = pipelining  # offer PIPELINING (RFC 2920) in the EHLO reply
        self.faults = Faults()
        self.accepted = 0  # messages taken since start, whatever clear() did
        self.messages: list[Received] = []
        self.watch: Callable[[int], None] | None = None  # called with each message's number as it is kept
        self._lock = threading.Lock()
        self._taken = threading.Condition(self._lock)
        self._controller = _Controller(self, hostname="127.0.0.1", port=port or _free_port())

    @property
    def port(self) -> int:
        return int(self._controller.port)

    def keep(self, item: Received) -> int:
        """Keep a message; return its number since the sink started (1, 2, ...)."""
        with self._lock:
            self.accepted += 1
            number = self.accepted
            self.messages.append(item)
            if self.folder is not None:
                path = self.folder / eml_name(item.message, len(self.messages))
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(item.raw)
            self._taken.notify_all()
        if self.watch is not None:
            self.watch(number)
        return number

    def wait_for(self, count: int, timeout: float = 30.0) -> None:
        """Wait until the sink has taken `count` messages since it started; TimeoutError after `timeout` s."""
        with self._taken:
            if not self._taken.wait_for(lambda: self.accepted >= count, timeout):
                raise TimeoutError(f"the SMTP sink took {self.accepted} message(s) in {timeout} s, not {count}")

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def __enter__(self) -> MailSink:
        self._controller.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._controller.stop()


def offer_pipelining(responses: list[str]) -> list[str]:
    """aiosmtpd's EHLO reply lines with PIPELINING added (for a `handle_EHLO` hook). aiosmtpd reads
    commands one after the other from the stream, so it takes pipelined ones; it just does not say
    so. Postfix and Exim do."""
    return [*responses[:-1], responses[-1].replace("250 ", "250-", 1), "250 PIPELINING"]


def eml_name(msg: EmailMessage, number: int) -> str:
    """'2026-11-02/initial-17-de.eml' for a backorder email; 'other/<n>.eml' for anything else."""
    kind, order, when = msg["X-Backorder-Notification"], msg["X-Backorder-Order-Id"], msg["X-Backorder-Reference-Time"]
    if not (kind and order and when):
        return f"other/{number}.eml"
    return f"{str(when)[:10]}/{kind}-{order}-{msg['Content-Language'] or 'xx'}.eml"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
