"""Sending: one SMTP connection for a whole batch, and the server's answer for every message.

smtplib speaks the protocol; this module keeps one session open, returns the final reply of each
transaction so it can be audited, and sorts what can go wrong:

- a permanent refusal (5xx) of one message: `PermanentSendError`, the batch goes on;
- a temporary refusal (4xx) of one message: `TemporaryRefusal`, the message may be tried later;
- a lost connection (the server closed it, answered 421, stalled past the timeout, or a socket
  error): reconnect and send the same message again, at most `MAX_RECONNECTS` times in a row,
  then `SMTPUnavailable`.

When the server offers PIPELINING (RFC 2920; Postfix, Exim and the big sending services do), a
message takes two round trips instead of four: MAIL, RCPT and DATA go out together and their
three replies are read together, then the data. Without it, each command waits for its reply.

The one case SMTP cannot settle: the connection breaks after the message data went out but before
the server's answer came back. The server may have taken the message or not; it is sent again on
the new connection with the same Message-ID, so a receiving side can recognise the repeat.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import smtplib
import ssl
import time
from collections.abc import Callable
from types import TracebackType

from include.backorder.config import SmtpSettings
from include.backorder.mime import Rendered

log = logging.getLogger(__name__)

MAX_RECONNECTS = 3
RECONNECT_WAITS = (0.5, 2.0, 5.0)  # seconds before the 1st, 2nd, 3rd reconnect in a row
CONNECTION_ERRORS = (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, smtplib.SMTPHeloError, OSError)


class PermanentSendError(Exception):
    """The server refused this one message for good (a 5xx reply)."""


class TemporaryRefusal(Exception):
    """The server refused this one message for now (a 4xx reply); it may take it later."""


class SMTPUnavailable(Exception):
    """The SMTP server could not be reached, or kept dropping the connection."""


class Mailer:
    """`with Mailer(settings) as mailer: mailer.send(msg)`: one connection for every message."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None
        self.reconnects = 0  # over the whole batch, for the log

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        smtp: smtplib.SMTP
        if s.use_ssl:
            smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            if s.use_starttls:
                smtp.starttls(context=ssl.create_default_context())
        smtp.ehlo_or_helo_if_needed()
        if s.login:
            smtp.login(s.login, s.password)
        return smtp

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
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                self._drop()
            self._smtp = None

    def send(self, msg: Rendered, before_data: Callable[[], None] | None = None) -> str:
        """Send one message over the open connection (opening or reopening it as needed).

        `before_data` runs after the envelope was accepted and before the message data goes out
        (the send stage waits there for the previous message's outcome to be committed).
        Returns the server's final reply ('250 ...'). Raises PermanentSendError (5xx),
        TemporaryRefusal (4xx), or SMTPUnavailable when the connection cannot be (re)established.
        """
        failures = 0
        while True:
            try:
                if self._smtp is None:
                    self._smtp = self._connect()
                return self._transaction(self._smtp, msg, before_data)
            except CONNECTION_ERRORS as exc:
                self._drop()
                failures += 1
                if failures > MAX_RECONNECTS:
                    raise SMTPUnavailable(
                        f"{self.settings.host}:{self.settings.port}: {failures} connection attempts in a row failed;"
                        f" last: {exc!r}"
                    ) from None
                self.reconnects += 1
                wait = RECONNECT_WAITS[failures - 1]
                log.warning("SMTP connection lost (%r); reconnecting in %.1f s (%d/%d)", exc, wait, failures,
                            MAX_RECONNECTS)  # fmt: skip
                time.sleep(wait)

    def _transaction(self, smtp: smtplib.SMTP, msg: Rendered, before_data: Callable[[], None] | None) -> str:
        recipient = msg.recipient
        try:
            if smtp.has_extn("pipelining"):
                code, reply = _pipelined(smtp, self.settings.from_email, msg, before_data)
            else:
                code, reply = smtp.mail(self.settings.from_email)
                if code != 250:
                    raise smtplib.SMTPSenderRefused(code, reply, self.settings.from_email)
                code, reply = smtp.rcpt(recipient)
                if code not in (250, 251):
                    raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
                if before_data is not None:
                    before_data()
                code, reply = smtp.data(msg.data)
            if code != 250:  # the server refused the message at the end of its data
                raise smtplib.SMTPDataError(code, reply)
        except (smtplib.SMTPSenderRefused, smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError) as exc:
            code, text = _reply_of(exc)
            if code == 421:  # "service not available, closing transmission channel"
                raise smtplib.SMTPServerDisconnected(f"{code} {text}") from None
            smtp.rset()  # a connection error here is handled like any other
            if 500 <= code < 600:
                raise PermanentSendError(f"{code} {text}") from exc
            raise TemporaryRefusal(f"{code} {text}") from exc
        return f"{code} {reply.decode('utf-8', 'replace')}"


_LINE_START_DOT = re.compile(rb"^\\.", re.MULTILINE)


@functools.lru_cache(maxsize=16)
def _quoted(address: str) -> str:
    """'<shop@example.com>' for 'Shop <shop@example.com>' (smtplib's quoteaddr parses it every time)."""
    return smtplib.quoteaddr(address)


def _pipelined(
    smtp: smtplib.SMTP, from_email: str, msg: Rendered, before_data: Callable[[], None] | None
) -> tuple[int, bytes]:
    """One transaction with PIPELINING: MAIL, RCPT and DATA in one write, their replies read in
    order, then (if all three were accepted) the data. Returns the final reply, as `smtp.data`
    does; raises for a refused envelope or DATA, and for a lost connection, what smtplib raises."""
    smtp.send(f"MAIL FROM:{_quoted(from_email)}\r\nRCPT TO:<{msg.recipient}>\r\nDATA\r\n")  # recipient: an addr-spec
    mail, rcpt, data = smtp.getreply(), smtp.getreply(), smtp.getreply()
    if data[0] == 354 and (mail[0] != 250 or rcpt[0] not in (250, 251)):
        smtp.send(b".\r\n")  # a server that took DATA anyway gets an empty message, which it refuses
        smtp.getreply()
    if mail[0] != 250:
        raise smtplib.SMTPSenderRefused(mail[0], mail[1], from_email)
    if rcpt[0] not in (250, 251):
        raise smtplib.SMTPRecipientsRefused({msg.recipient: rcpt})
    if data[0] != 354:
        raise smtplib.SMTPDataError(*data)
    if before_data is not None:
        before_data()
    # The data is CRLF-terminated lines already (mime.py); dots at line starts doubled (RFC 5321 4.5.2).
    smtp.send(_LINE_START_DOT.sub(b"..", msg.data) + b".\r\n")
    return smtp.getreply()


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
