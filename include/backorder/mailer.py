"""Sending: one SMTP connection for a whole batch, and the server's answer for every message.

smtplib speaks the protocol; this module keeps one session open, returns the final reply of each
transaction so it can be audited, and sorts what can go wrong:

- a permanent refusal (5xx) of one message: `PermanentSendError`, the batch goes on;
- a temporary refusal (4xx) of one message: `TemporaryRefusal`, the message may be tried later;
- a lost connection (the server closed it, answered 421, stalled past the timeout, or a socket
  error): reconnect and send the same message again, at most `SmtpSettings.max_reconnects` times in a
  row (3, or the connection's `retry_limit` extra), then `SMTPUnavailable`;
- a refusal of the session, not of a message: a greeting, EHLO or STARTTLS answered 5xx (or
  STARTTLS answered anything but 220), a login refused, any 5xx to MAIL FROM (the sender is the
  same for every message, so it would refuse them all), a 530 "authentication required" or
  "must issue STARTTLS first" at any step: `SMTPSessionRefused` (`SMTPAuthenticationRefused`
  for a refused login), naming the connection, host:port and the server's answer. Nothing of the
  batch is marked failed: its messages stay due for when the settings or the server are fixed.
  Only a refusal at RCPT TO or at the end of a message's data concerns that one message.

`send_many` sends a stream of messages. When the server offers PIPELINING (RFC 2920; Postfix,
Exim and the big sending services do), each message takes one round trip instead of four: the
data of one message, and MAIL, RCPT and DATA of the next, go out in one write, and the four
replies come back together (DATA's 354 is the one reply a client must wait for before the data).
Without PIPELINING, each command waits for its reply, as smtplib does.

The one case SMTP cannot settle: the connection breaks after the message data went out but before
the server's answer came back. The server may have taken the message or not; it is sent again on
the new connection with the same Message-ID, so a receiving side can recognise the repeat. (With
pipelining, the next message's envelope may be out too; it is simply sent again, it has no data.)

Every message goes out the same way, pipelined or not (`wire_data`): line ends made CRLF, a dot
at the start of a line doubled (RFC 5321 4.5.2), ended by CRLF . CRLF, so that no content can
end the data early and be read as commands.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import smtplib
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import TypeVar

from include.backorder.config import SmtpSettings
from include.backorder.mime import Email

log = logging.getLogger(__name__)

RECONNECT_WAITS = (0.5, 2.0, 5.0)  # seconds before the 1st, 2nd, 3rd (and each later) reconnect in a row
CONNECTION_ERRORS = (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, smtplib.SMTPHeloError, OSError)


Item = TypeVar("Item")


class PermanentSendError(Exception):
    """The server refused this one message for good (a 5xx reply)."""


class TemporaryRefusal(Exception):
    """The server refused this one message for now (a 4xx reply); it may take it later."""


class SMTPUnavailable(Exception):
    """The SMTP server could not be reached, or kept dropping the connection."""


class SMTPSessionRefused(Exception):
    """The server refused the session (at connect, EHLO, STARTTLS, login or MAIL FROM): no message
    of the batch can go out until the settings or the server change, so none is marked failed."""


class SMTPAuthenticationRefused(SMTPSessionRefused):
    """The server refused the login (535 and the like). Trying again soon can lock the account, so
    the task fails at once, without retries."""


class Mailer:
    """`with Mailer(settings) as mailer: for key, msg, answer in mailer.send_many(items): ...`: one
    connection for every message (`mailer.send(msg)` sends one)."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings  # its from_email is one address on one line (SmtpSettings refuses others)
        self._smtp: smtplib.SMTP | None = None
        self.reconnects = 0  # over the whole batch, for the log

    @property
    def where(self) -> str:
        """'smtp_default at mail.example.com:587': the connection and server an error line names."""
        return f"{self.settings.conn_id} at {self.settings.host}:{self.settings.port}"

    def _refused(
        self, step: str, code: int, reply: bytes | str, cls: type[SMTPSessionRefused] = SMTPSessionRefused
    ) -> SMTPSessionRefused:
        """The one line a refused session fails the task with."""
        answer = f"{code} {_text(reply)}".strip() if code > 0 else _text(reply)
        return cls(
            f"SMTP connection {self.where} refused the session at {step}: {answer}"
            " (no email was marked failed; they stay due)"
        )

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        smtp: smtplib.SMTP
        try:
            if s.use_ssl:
                smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=ssl.create_default_context())
            else:
                smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
        except smtplib.SMTPConnectError as exc:  # the greeting was not 220
            if not 500 <= exc.smtp_code < 600:
                raise  # 421 busy and the like: a lost connection, reconnect
            raise self._refused("connect", exc.smtp_code, exc.smtp_error) from None
        try:
            self._open_session(smtp)
        except BaseException:
            with contextlib.suppress(OSError):
                smtp.close()
            raise
        return smtp

    def _open_session(self, smtp: smtplib.SMTP) -> None:
        """EHLO, STARTTLS and login; a refusal of any is SMTPSessionRefused, a 421 a lost connection."""
        s = self.settings
        try:
            if s.use_starttls and not s.use_ssl:
                smtp.ehlo_or_helo_if_needed()
                if not smtp.has_extn("starttls"):
                    raise self._refused("STARTTLS", 0, "the server does not offer STARTTLS (use_starttls is set)")
                reply: bytes | str
                try:
                    code, reply = smtp.starttls(context=ssl.create_default_context())
                except smtplib.SMTPResponseException as exc:  # "454 TLS not available"
                    code, reply = exc.smtp_code, exc.smtp_error
                if code == 421:
                    raise smtplib.SMTPServerDisconnected(f"421 {_text(reply)}")
                if code != 220:  # never on in clear text
                    raise self._refused("STARTTLS", code, reply)
            smtp.ehlo_or_helo_if_needed()
        except smtplib.SMTPHeloError as exc:
            if not 500 <= exc.smtp_code < 600:
                raise  # 421 and the like: a lost connection
            raise self._refused("EHLO", exc.smtp_code, exc.smtp_error) from None
        if s.login:
            self._login(smtp)

    def _login(self, smtp: smtplib.SMTP) -> None:
        """AUTH; a refused login is SMTPAuthenticationRefused (a temporary refusal, 454, SMTPSessionRefused)."""
        s = self.settings
        try:
            smtp.login(s.login, s.password)
        except smtplib.SMTPAuthenticationError as exc:
            if exc.smtp_code == 421:
                raise smtplib.SMTPServerDisconnected(f"421 {_text(exc.smtp_error)}") from None
            if 400 <= exc.smtp_code < 500:  # "454 temporary authentication failure": the task retries
                raise self._refused(f"login as {s.login!r}", exc.smtp_code, exc.smtp_error) from None
            raise self._refused(
                f"login as {s.login!r}", exc.smtp_code, exc.smtp_error, SMTPAuthenticationRefused
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise self._refused("login", 0, "the server offers no AUTH, but a login is set") from None
        except smtplib.SMTPException as exc:  # "No suitable authentication method found."
            if isinstance(exc, (smtplib.SMTPServerDisconnected, smtplib.SMTPResponseException)):
                raise  # the connection broke (smtplib's errors are OSErrors: CONNECTION_ERRORS)
            raise self._refused(f"login as {s.login!r}", 0, str(exc)) from None

    def _drop(self) -> None:
        if self._smtp is not None:
            with contextlib.suppress(OSError):
                self._smtp.close()
            self._smtp = None

    def __enter__(self) -> Mailer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._smtp is not None and exc_type is not None:
            self._drop()  # mid-transaction perhaps (a message's DATA answered, its data not sent): just close
        elif self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                self._drop()
            self._smtp = None

    def send(self, msg: Email, before_data: Callable[[], None] | None = None) -> str:
        """Send one message over the open connection (opening or reopening it as needed).

        `before_data` runs after the envelope was accepted and before the message data goes out
        (the send stage waits there for the previous message's outcome to be committed).
        Returns the server's final reply ('250 ...'). Raises PermanentSendError (5xx),
        TemporaryRefusal (4xx), SMTPUnavailable when the connection cannot be (re)established, or
        SMTPSessionRefused when the server refuses the session (see the module's docstring).
        """
        failures = 0
        while True:
            try:
                if self._smtp is None:
                    self._smtp = self._connect()
                return self._transaction(self._smtp, msg, before_data)
            except CONNECTION_ERRORS as exc:
                failures += 1
                self._lost(exc, failures)

    def _lost(self, exc: BaseException, failures: int) -> None:
        """The connection broke (`failures` times in a row): wait before reconnecting, or give up."""
        self._drop()
        if failures > self.settings.max_reconnects:
            raise SMTPUnavailable(
                f"SMTP connection {self.where}: {failures} connection attempts in a row failed; last: {exc!r}"
                " (the emails not sent stay due)"
            ) from None
        self.reconnects += 1
        wait = RECONNECT_WAITS[min(failures, len(RECONNECT_WAITS)) - 1]
        log.warning(
            "SMTP connection %s lost (%r); reconnecting in %.1f s (%d/%d)",
            self.where,
            exc,
            wait,
            failures,
            self.settings.max_reconnects,
        )
        time.sleep(wait)

    def send_many(
        self, items: Iterable[tuple[Item, Email]], before_data: Callable[[], None] | None = None
    ) -> Iterator[tuple[Item, Email, str | PermanentSendError | TemporaryRefusal]]:
        """Send a stream of messages, in order; yield each with the server's final reply ('250 ...')
        or its refusal, as soon as the reply is in. Pipelined when the server offers PIPELINING.

        `before_data` runs before each message's data goes out. Raises SMTPUnavailable when the
        connection cannot be (re)established, SMTPSessionRefused when the server refuses the
        session; the messages not yielded then were not delivered, except the one whose data went
        out unanswered (see the module's docstring).
        """
        stream, again = iter(items), deque[tuple[Item, Email]]()  # again: unanswered when a connection broke
        failures = 0
        while True:
            try:
                if self._smtp is None:
                    self._smtp = self._connect()
                smtp = self._smtp
                if not smtp.has_extn("pipelining"):
                    yield from self._lockstep(again, stream, before_data)
                    return
                for done in self._pipelined(smtp, again, stream, before_data):
                    failures = 0
                    yield done
                return
            except CONNECTION_ERRORS as exc:
                failures += 1
                self._lost(exc, failures)

    def _lockstep(
        self,
        again: deque[tuple[Item, Email]],
        stream: Iterator[tuple[Item, Email]],
        before_data: Callable[[], None] | None,
    ) -> Iterator[tuple[Item, Email, str | PermanentSendError | TemporaryRefusal]]:
        while (item := again.popleft() if again else next(stream, None)) is not None:
            key, msg = item
            if (unusable := _unusable_recipient(msg)) is not None:
                yield key, msg, unusable
                continue
            try:
                yield key, msg, self.send(msg, before_data)
            except (PermanentSendError, TemporaryRefusal) as refusal:
                yield key, msg, refusal

    def _next_write(self, ready: tuple[Item, Email] | None, upcoming: tuple[Item, Email] | None) -> bytes:
        """The data of the message whose DATA was answered (as `wire_data`), then the envelope and
        DATA of the next one."""
        out = []
        if ready is not None:
            out.append(wire_data(ready[1].data))
        if upcoming is not None:
            out.append(
                f"MAIL FROM:{_quoted(self.settings.from_email)}\r\nRCPT TO:<{upcoming[1].recipient}>"
                "\r\nDATA\r\n".encode("ascii")
            )
        return b"".join(out)

    def _pipelined(
        self,
        smtp: smtplib.SMTP,
        again: deque[tuple[Item, Email]],
        stream: Iterator[tuple[Item, Email]],
        before_data: Callable[[], None] | None,
    ) -> Iterator[tuple[Item, Email, str | PermanentSendError | TemporaryRefusal]]:
        """The pipelined loop over one connection. What is in flight when it breaks goes back to `again`."""
        ready: tuple[Item, Email] | None = None  # DATA answered 354: its data goes out with the next write
        upcoming: tuple[Item, Email] | None = None
        try:
            while True:
                upcoming = again.popleft() if again else next(stream, None)
                while upcoming is not None and (unusable := _unusable_recipient(upcoming[1])) is not None:
                    yield upcoming[0], upcoming[1], unusable
                    upcoming = again.popleft() if again else next(stream, None)
                if ready is None and upcoming is None:
                    return
                if ready is not None and before_data is not None:
                    before_data()
                smtp.send(self._next_write(ready, upcoming))
                if ready is not None:
                    answer = self._data_answer(*smtp.getreply())
                    key, msg = ready
                    ready = None
                    yield key, msg, answer
                if upcoming is not None:
                    refusal = self._envelope_refusal(smtp)
                    if refusal is None:
                        ready = upcoming
                    else:
                        yield upcoming[0], upcoming[1], refusal
                    upcoming = None
        except BaseException:
            for item in (upcoming, ready):  # the next envelope, then the unanswered data, go first next time
                if item is not None:
                    again.appendleft(item)
            raise

    def _data_answer(self, code: int, reply: bytes) -> str | PermanentSendError | TemporaryRefusal:
        """The answer to a message's data from the server's reply; a 421 is a lost connection, a
        refusal of the session raises."""
        if code == 421:
            raise smtplib.SMTPServerDisconnected(f"421 {reply.decode('utf-8', 'replace')}")
        if _refuses_session("end of data", code):
            raise self._refused("the end of a message's data", code, reply)
        return _final(code, reply)

    def _envelope_refusal(self, smtp: smtplib.SMTP) -> PermanentSendError | TemporaryRefusal | None:
        """Read the replies to a pipelined MAIL, RCPT and DATA: None when all were accepted (250,
        250/251, 354); else the message's refusal, with the transaction reset (RSET) so the next
        message starts clean. A 421 is a lost connection and a refusal of the session raises,
        both at once: a server closing the connection answers nothing after them."""
        replies: list[tuple[int, bytes]] = []
        for step in ("MAIL FROM", "RCPT TO", "DATA"):
            code, text = smtp.getreply()
            if code == 421:  # "service not available, closing transmission channel"
                raise smtplib.SMTPServerDisconnected(f"421 {text.decode('utf-8', 'replace')}")
            if _refuses_session(step, code):
                raise self._refused(step, code, text)
            replies.append((code, text))
        (mail, mail_text), (rcpt, rcpt_text), (data, data_text) = replies
        if mail == 250 and rcpt in (250, 251) and data == 354:
            return None
        if data == 354:  # a server that took DATA anyway gets an empty message, which it refuses
            smtp.send(b".\r\n")
            smtp.getreply()
        smtp.rset()
        code, text = (
            (mail, mail_text) if mail != 250 else (rcpt, rcpt_text) if rcpt not in (250, 251) else (data, data_text)
        )
        return _refusal(code, text.decode("utf-8", "replace"))

    def _transaction(self, smtp: smtplib.SMTP, msg: Email, before_data: Callable[[], None] | None) -> str:
        """One message, each command waiting for its reply."""
        step = "MAIL FROM"
        try:
            code, reply = smtp.mail(self.settings.from_email)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, reply, self.settings.from_email)
            step = "RCPT TO"
            code, reply = smtp.rcpt(msg.recipient)
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({msg.recipient: (code, reply)})
            if before_data is not None:
                before_data()
            step = "DATA"
            code, reply = smtp.docmd("DATA")
            if code != 354:
                raise smtplib.SMTPDataError(code, reply)
            step = "end of data"
            smtp.send(wire_data(msg.data))
            code, reply = smtp.getreply()
            if code != 250:  # the server refused the message at the end of its data
                raise smtplib.SMTPDataError(code, reply)
        except (smtplib.SMTPSenderRefused, smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError) as exc:
            code, text = _reply_of(exc)
            if code == 421:  # "service not available, closing transmission channel"
                raise smtplib.SMTPServerDisconnected(f"{code} {text}") from None
            if _refuses_session(step, code):
                raise self._refused(step, code, text) from None
            smtp.rset()  # a connection error here is handled like any other
            raise _refusal(code, text) from exc
        return f"{code} {reply.decode('utf-8', 'replace')}"


# A lone CR or LF: some servers end a line there, others do not, so a "." after one could end the
# data for one and not the other (SMTP smuggling). Every line end goes out as CRLF.
_BARE_LINE_END = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_LINE_START_DOT = re.compile(rb"^\.", re.MULTILINE)  # after CRLF or at the start: a line's first character


def wire_data(data: bytes) -> bytes:
    """A message's data as it goes after DATA's 354: line ends CRLF, a "." starting a line doubled
    (the server removes it again, RFC 5321 4.5.2), a final CRLF if missing, then ".\r\n". The one
    place data is written, pipelined or not: no line of a message can end it early."""
    stuffed = _LINE_START_DOT.sub(b"..", _BARE_LINE_END.sub(b"\r\n", data))
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + b".\r\n"


# In an address that goes into a command line: a line break would end the command and start another.
_RECIPIENT = re.compile(r"[^\s<>\0]+@[^\s<>\0]+")


def _unusable_recipient(msg: Email) -> PermanentSendError | None:
    """A recipient that cannot go into RCPT TO:<...> as it is (a line break, a space, angle brackets):
    refused for good before it reaches the server, so no address can add commands of its own."""
    if _RECIPIENT.fullmatch(msg.recipient):
        return None
    return PermanentSendError(f"recipient {msg.recipient!r} cannot be put in an SMTP command; not sent")


def _refuses_session(step: str, code: int) -> bool:
    """Whether a reply at `step` refuses the session rather than one message: any 5xx to MAIL FROM
    (the same sender for every message), and "530 authentication required" / "must issue STARTTLS
    first" (or 535) wherever it comes."""
    return code in (530, 535) or (step == "MAIL FROM" and 500 <= code < 600)


@functools.lru_cache(maxsize=16)
def _quoted(address: str) -> str:
    """'<shop@example.com>' for 'Shop <shop@example.com>' (smtplib's quoteaddr parses it every time)."""
    return smtplib.quoteaddr(address)


def _refusal(code: int, text: str) -> PermanentSendError | TemporaryRefusal:
    """A 5xx refuses the message for good, anything else for now."""
    return PermanentSendError(f"{code} {text}") if 500 <= code < 600 else TemporaryRefusal(f"{code} {text}")


def _final(code: int, reply: bytes) -> str | PermanentSendError | TemporaryRefusal:
    """The answer to a message's data: the reply, or its refusal."""
    text = reply.decode("utf-8", "replace")
    return f"{code} {text}" if code == 250 else _refusal(code, text)


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def _reply_of(exc: smtplib.SMTPException) -> tuple[int, str]:
    raw: bytes | str
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, raw = next(iter(exc.recipients.values()))
    elif isinstance(exc, (smtplib.SMTPSenderRefused, smtplib.SMTPDataError)):
        code, raw = exc.smtp_code, exc.smtp_error
    else:
        return 0, str(exc)
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return int(code), text
