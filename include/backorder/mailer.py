"""Sending: one SMTP connection for a whole batch, and the server's answer for every message.

smtplib speaks the protocol; this module keeps one session open, returns the final reply of each
transaction so it can be audited, and sorts failures into permanent (5xx: this message will never
go out, carry on) and everything else (the connection or a temporary 4xx: stop, a retry resumes).
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from types import TracebackType

from include.backorder.config import SmtpSettings


class PermanentSendError(Exception):
    """The server refused this one message for good (a 5xx reply)."""


class TemporaryRefusal(Exception):
    """The server refused this one message for now (a 4xx reply); it may take it later."""


class Mailer:
    """`with Mailer(settings) as mailer: mailer.send(msg)`: one connection for every message."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None

    def __enter__(self) -> Mailer:
        s = self.settings
        if s.use_ssl:
            self._smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout, context=ssl.create_default_context())
        else:
            self._smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout)
            if s.use_starttls:
                self._smtp.starttls(context=ssl.create_default_context())
        self._smtp.ehlo_or_helo_if_needed()
        if s.login:
            self._smtp.login(s.login, s.password)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._smtp is not None:
            try:
                self._smtp.quit()
            except (smtplib.SMTPException, OSError):
                self._smtp.close()
            self._smtp = None

    def send(self, msg: EmailMessage) -> str:
        """Send one message; return the server's final reply ('250 ...').

        Raises PermanentSendError on a 5xx reply and TemporaryRefusal on a 4xx reply (the session
        is reset and stays usable); connection and socket errors propagate.
        """
        smtp = self._smtp
        if smtp is None:
            raise RuntimeError("Mailer used outside its 'with' block")
        recipient = msg["To"].addresses[0].addr_spec
        try:
            code, reply = smtp.mail(self.settings.from_email)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, reply, self.settings.from_email)
            code, reply = smtp.rcpt(recipient)
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({recipient: (code, reply)})
            code, reply = smtp.data(msg.as_bytes())
        except (smtplib.SMTPSenderRefused, smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError) as exc:
            code, text = _reply_of(exc)
            smtp.rset()
            if 500 <= code < 600:
                raise PermanentSendError(f"{code} {text}") from exc
            raise TemporaryRefusal(f"{code} {text}") from exc
        return f"{code} {reply.decode('utf-8', 'replace')}"


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
