"""A real SMTP server on loopback (aiosmtpd) that keeps every message: for the demo and the tests.

Recipients in `sink.refuse` get a permanent 550, those in `sink.defer` a temporary 451, so tests
can see how the pipeline handles them. Each message is kept in memory (`sink.messages`) and, when
a folder is given, written as an `.eml` file under `<folder>/<reference date>/<kind>-<order id>-<language>.eml`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
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


class _Handler:
    def __init__(self, sink: MailSink) -> None:
        self.sink = sink

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if address in self.sink.refuse:
            return "550 5.1.1 Mailbox unavailable"
        if address in self.sink.defer:
            return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        raw = envelope.original_content or envelope.content
        msg = message_from_bytes(raw, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        self.sink.keep(Received(envelope.mail_from, tuple(envelope.rcpt_tos), msg, raw))
        return f"250 2.0.0 Ok: queued as {len(self.sink.messages)}"


class MailSink:
    """`with MailSink(folder) as sink:` an SMTP server on 127.0.0.1:`sink.port`."""

    def __init__(self, folder: Path | None = None, port: int = 0) -> None:
        self.folder = folder
        self.refuse: set[str] = set()  # recipients answered with 550 (permanent)
        self.defer: set[str] = set()  # recipients answered with 451 (temporary)
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=port or _free_port())

    @property
    def port(self) -> int:
        return int(self._controller.port)

    def keep(self, item: Received) -> None:
        with self._lock:
            self.messages.append(item)
            if self.folder is not None:
                path = self.folder / eml_name(item.message, len(self.messages))
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(item.raw)

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
