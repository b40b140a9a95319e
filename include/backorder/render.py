"""Rendering: a notification becomes a multipart/alternative email (plain text and HTML, UTF-8).

Templates live in `include/templates/<language>/<kind>.{subject.txt,txt,html}`; the HTML ones
extend `_layout.html` and get `_email.css` inlined as they load (see layout.py). A Renderer
compiles them once for one shop's branding and renders any number of notifications. Dates are
formatted by Babel in the customer's locale (medium format). Values from the shop are made
header-safe here (no CR/LF, mojibake repaired) and HTML-escaped by Jinja2; a value that is not
text (None, or a NaN a data frame made of a NULL) is shown as no value at all.

An email lists at most MAX_LISTED_LINES product lines, and fewer when their length would take the
message past MAX_EMAIL_BYTES; the rest are counted ("and 975 more items", with the order link when
the shop has one). The audit keeps every line: only the email is bounded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parseaddr
from functools import lru_cache
from pathlib import Path

import ftfy
from babel.dates import format_date
from babel.numbers import format_decimal
from jinja2 import Environment, StrictUndefined, select_autoescape

from include.backorder import TEMPLATES_DIR, mime
from include.backorder.config import Branding
from include.backorder.layout import InliningLoader
from include.backorder.mime import Email
from include.backorder.unsubscribe import Unsubscribe

MAX_EMAIL_BYTES = 100_000
"""Every email stays below this size, as sent (headers, both parts, base64). Gmail clips a message
over about 102 KB and hides what follows behind "[Message clipped]": the end of the list, the
footer and the unsubscribe link among it. 100,000 bytes is below that whether a KB is 1,000 or 1,024."""

MAX_LISTED_LINES = 25
"""An email lists at most this many product lines; the others are counted ("and 975 more items")
and, when the shop has an order page (`order_url`), linked. 25 ordinary lines make an email of
about 50 KB, well under MAX_EMAIL_BYTES; a customer does not read a longer list in an email, and
an order of 1,000 backordered lines made one of 1.3 MB that Gmail clipped. Lines as long as a shop
allows (255 characters of name and model, HTML-escaped or 4-byte emoji) list fewer: the renderer
drops lines until the message fits MAX_EMAIL_BYTES."""

HEADER_ALLOWANCE = 8_000
"""What `render_parts` leaves of MAX_EMAIL_BYTES for the headers when it does not know them (the
audit page's preview): a To of 255 emoji and both unsubscribe links take about 3,000 bytes."""


@dataclass(frozen=True)
class ListedLine:
    """One product line as an email lists it."""

    products_name: str
    products_model: str | None
    products_quantity: float
    date_available: datetime | None  # None: cleared (an `available` email)
    previous_date: datetime | None = None


@dataclass(frozen=True)
class Notification:
    """Everything one email says: who, which order, which kind, which lines."""

    orders_id: int
    kind: str
    language: str
    customers_email_address: str
    customers_name: str
    reference_time: datetime  # aware
    lines: tuple[ListedLine, ...]
    reminder_interval_days: int
    customers_id: int | None = None


# ftfy repairs UTF-8 read as latin1 ("MÃ¼ller" -> "Müller") and HTML entities a shop stored
# ("Tom &amp; Jerry"); it leaves curly quotes and full-width characters as the shop wrote them.
_FIXER = ftfy.TextFixerConfig(uncurl_quotes=False, fix_character_width=False, explain=False)


@lru_cache(maxsize=65536)
def header_safe(text: str) -> str:
    """One line of clean text: mojibake repaired, control characters (CR, LF, tabs, C1, U+2028/9) made single
    spaces: exactly what mime's header builder refuses (mime.UNSAFE_RE)."""
    return mime.UNSAFE_RE.sub(" ", ftfy.fix_text(text, _FIXER)).strip()


def _text(value: object) -> str:
    """A shop value as one line of clean text; "" for anything that is not text (None, NaN), so a
    missing name gives the greeting without a name, never "Dear NaN"."""
    return header_safe(value) if isinstance(value, str) else ""


@lru_cache(maxsize=64)
def _mime_frame(language: str) -> int:
    """Bytes of a message without its headers and bodies: the MIME lines around the two parts."""
    return len(mime.assemble([], "", "", language))


def _encoded_size(body: str) -> int:
    """Bytes `body` takes in the message: UTF-8 with CRLF line ends, base64 in lines of 76 (mime.py)."""
    raw = len(body.encode("utf-8")) + body.count("\n") - body.count("\r\n")
    b64 = -(-raw // 3) * 4
    return b64 + 2 * -(-b64 // 76)


@lru_cache(maxsize=4096)
def _day(value: datetime | None, locale: str) -> str | None:
    return None if value is None else format_date(value.date(), "medium", locale=locale)


@lru_cache(maxsize=1024)
def _quantity(value: float, locale: str) -> str:
    return format_decimal(value, locale=locale)


@lru_cache(maxsize=64)
def _stamps(reference_time: datetime) -> tuple[str, str]:
    """T as the Message-ID's stamp and as the X-Backorder-Reference-Time header (one T per run)."""
    utc = reference_time.astimezone(UTC)
    return utc.strftime("%Y%m%dT%H%M%SZ"), utc.isoformat()


@lru_cache(maxsize=8)
def _date_header(second: int) -> str:
    return format_datetime(datetime.fromtimestamp(second, UTC))


def message_id(orders_id: int, kind: str, reference_time: datetime, domain: str) -> str:
    """The same Message-ID for the same order, kind and T, so a repeat is recognisable."""
    return f"<backorder.{orders_id}.{kind}.{_stamps(reference_time)[0]}@{domain}>"


class Renderer:
    """Compiles the templates once; renders any number of notifications."""

    def __init__(self, branding: Branding | None = None, templates_dir: Path = TEMPLATES_DIR) -> None:
        self.branding = branding or Branding()
        self.env = Environment(
            loader=InliningLoader(templates_dir, self.branding),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,  # compiled once; no stat() of the files per message
        )

    def _context(self, notification: Notification, unsubscribe_link: str, shown: int) -> dict[str, object]:
        """What the templates see, listing the first `shown` lines of the notification."""
        locale = notification.language
        lines = [
            {
                "name": _text(line.products_name),
                "model": _text(line.products_model),
                "quantity": _quantity(line.products_quantity, locale),
                "date": _day(line.date_available, locale),
                "previous_date": _day(line.previous_date, locale),
            }
            for line in notification.lines[:shown]
        ]
        more = len(notification.lines) - len(lines)
        brand = self.branding
        return {
            "kind": notification.kind,
            "order_id": notification.orders_id,
            "customer_name": _text(notification.customers_name),
            "interval_days": notification.reminder_interval_days,
            "lines": lines,
            "more_lines": more,  # lines of the order not listed (MAX_LISTED_LINES, MAX_EMAIL_BYTES)
            "more_lines_text": _quantity(more, locale) if more else "",
            "shop_name": header_safe(brand.shop_name),
            "logo_url": brand.logo_url,
            "support_email": brand.support_email,
            "postal_lines": [header_safe(line) for line in brand.postal_address.splitlines() if line.strip()],
            "order_link": brand.order_link(notification.orders_id),
            "unsubscribe_link": unsubscribe_link,
        }

    def _subject(self, notification: Notification, context: dict[str, object]) -> str:
        return header_safe(
            self.env.get_template(f"{notification.language}/{notification.kind}.subject.txt").render(context)
        )

    def _bodies(self, notification: Notification, context: dict[str, object], max_bytes: int) -> tuple[str, str]:
        """(text, html) from `context` (made by `_context` with MAX_LISTED_LINES, and the subject), listing
        fewer lines when the two would take more than `max_bytes` in the message; with no line listed
        they are as small as they get."""
        base = f"{notification.language}/{notification.kind}"
        text_template, html_template = self.env.get_template(f"{base}.txt"), self.env.get_template(f"{base}.html")
        text, html = text_template.render(context), html_template.render(context)
        size = _encoded_size(text) + _encoded_size(html)
        shown = min(len(notification.lines), MAX_LISTED_LINES)
        if size <= max_bytes or not shown:
            return text, html
        # Rare (lines near the longest a shop allows): estimate from the average line, then drop one
        # line at a time; lines differ in length, so every count is measured.
        link, subject = context["unsubscribe_link"], context["subject"]

        def with_lines(count: int) -> tuple[str, str, int]:
            fewer = self._context(notification, str(link), count) | {"subject": subject}
            text, html = text_template.render(fewer), html_template.render(fewer)
            return text, html, _encoded_size(text) + _encoded_size(html)

        empty = with_lines(0)[2]
        while size > max_bytes and shown:
            per_line = max((size - empty) / shown, 1.0)
            shown = max(0, min(shown - 1, int((max_bytes - empty) / per_line)))
            text, html, size = with_lines(shown)
        return text, html

    def render_parts(
        self,
        notification: Notification,
        unsubscribe_link: str = "",
        max_bytes: int = MAX_EMAIL_BYTES - HEADER_ALLOWANCE,
    ) -> tuple[str, str, str]:
        """(subject, text, html) for a notification; the footer offers `unsubscribe_link` when given. The
        bodies list at most MAX_LISTED_LINES lines, and fewer when they would take more than
        `max_bytes` in the message (`render` passes what its headers leave of MAX_EMAIL_BYTES)."""
        context = self._context(notification, unsubscribe_link, MAX_LISTED_LINES)
        context["subject"] = subject = self._subject(notification, context)
        return (subject, *self._bodies(notification, context, max_bytes))

    def render(
        self,
        notification: Notification,
        from_email: str,
        sender_domain: str,
        sent_at: datetime | None = None,
        unsubscribe: Unsubscribe | None = None,
    ) -> Email:
        """The finished message (see mime.py for how it is assembled)."""
        link = unsubscribe.link(notification.customers_id, notification.customers_email_address) if unsubscribe else ""
        context = self._context(notification, link, MAX_LISTED_LINES)
        context["subject"] = subject = self._subject(notification, context)
        recipient = notification.customers_email_address.strip()
        mid = message_id(notification.orders_id, notification.kind, notification.reference_time, sender_domain)
        headers = [
            _from_header(from_email),
            mime.address_header("To", _text(notification.customers_name), recipient),
            mime.header("Subject", subject),
            mime.header("Date", format_datetime(sent_at) if sent_at else _date_header(int(time.time()))),
            mime.header("Message-ID", mid),
            mime.header("X-Backorder-Notification", notification.kind),
            mime.header("X-Backorder-Order-Id", str(notification.orders_id)),
            mime.header("X-Backorder-Reference-Time", _stamps(notification.reference_time)[1]),
        ]
        if unsubscribe is not None:
            for name, value in unsubscribe.headers(
                notification.customers_id, notification.customers_email_address
            ).items():
                headers.append(mime.header(name, value))
        frame = len(mime.CRLF.join(headers)) + len(mime.CRLF) + _mime_frame(notification.language)
        text, html = self._bodies(notification, context, MAX_EMAIL_BYTES - 1 - frame)
        return Email(mid, recipient, mime.assemble(headers, text, html, notification.language))


@lru_cache(maxsize=64)
def _from_header(from_email: str) -> mime.HeaderLine:
    """The sender as configured ('Shop <shop@example.com>'), its name encoded when not ASCII."""
    name, addr = parseaddr(from_email)
    return mime.address_header("From", header_safe(name), addr)
