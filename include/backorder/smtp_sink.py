"""A real SMTP server on loopback (aiosmtpd) that keeps every message: for the demo and the tests.

Each message is kept in memory (`sink.messages`) and, when a folder is given, written as an `.eml`
file under `<folder>/<reference date>/<kind>-<order id>-<language>.eml`.

For the tests it can also misbehave on purpose, the way real servers do (`sink.faults`): refuse
recipients for good (550) or for a while (451), close the connection after the n-th message (with
or without answering it first), answer 421 "service not available" for a while, stall, or refuse a
message at the end of its data.
It offers PIPELINING as most real servers do (`pipelining=False`: a server that does not).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller


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
    drop_after: set[int] = field(default_factory=set)  # after accepting the n-th message, close (answered)
    cut_after: set[int] = field(default_factory=set)  # take the n-th message, close before answering
    busy: int = 0  # how many more MAIL commands get "421" and a closed connection
    stall: dict[str, float] = field(default_factory=dict)  # recipient -> seconds to wait once before answering
    slow: float = 0.0  # seconds to think before answering each message's data
    reject_data: set[str] = field(default_factory=set)  # recipients whose message is refused (554) at its end


class _Handler:
    def __init__(self, sink: MailSink) -> None:
        self.sink = sink

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return offer_pipelining(responses) if self.sink.pipelining else responses

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        faults = self.sink.faults
        if faults.busy > 0:
            faults.busy -= 1
            server.transport.close()
            return "421 4.3.2 Service not available, closing channel"
        envelope.mail_from = address
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        faults = self.sink.faults
        if address in faults.stall:
            await asyncio.sleep(faults.stall.pop(address))
        if address in faults.refuse:
            return "550 5.1.1 Mailbox unavailable"
        if faults.defer.get(address, 0) > 0:
            faults.defer[address] -= 1
            return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.sink.faults.slow:
            await asyncio.sleep(self.sink.faults.slow)
        if self.sink.faults.reject_data & set(envelope.rcpt_tos):
            return "554 5.6.0 Message content rejected"
        raw = envelope.original_content or envelope.content
        msg = message_from_bytes(raw, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        number = self.sink.keep(Received(envelope.mail_from, tuple(envelope.rcpt_tos), msg, raw))
        faults = self.sink.faults
        if number in faults.cut_after:
            faults.cut_after.discard(number)
            server.transport.close()  # the message is kept, but the client never hears so
        elif number in faults.drop_after:
            faults.drop_after.discard(number)
            asyncio.get_running_loop().call_later(0.05, server.transport.close)
        return f"250 2.0.0 Ok: queued as {number}"


class MailSink:
    """`with MailSink(folder) as sink:` an SMTP server on 127.0.0.1:`sink.port`."""

    def __init__(self, folder: Path | None = None, port: int = 0, pipelining: bool = True) -> None:
        self.folder = folder
        self.pipelining = pipelining  # offer PIPELINING (RFC 2920) in the EHLO reply
        self.faults = Faults()
        self.accepted = 0  # messages taken since start, whatever clear() did
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=port or _free_port())

    @property
    def port(self) -> int:
        return int(self._controller.port)

    def keep(self, item: Received) -> int:
        """Keep a message; return its number since the sink started (1, 2, ...)."""
        with self._lock:
            self.accepted += 1
            self.messages.append(item)
            if self.folder is not None:
                path = self.folder / eml_name(item.message, len(self.messages))
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(item.raw)
            return self.accepted

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
