"""Rendering: a notification becomes a multipart/alternative email (plain text and HTML, UTF-8).

Templates live in `include/templates/<language>/<kind>.{subject.txt,txt,html}`; the HTML ones
extend `_layout.html` and get `_email.css` inlined as they load (see layout.py). A Renderer
compiles them once for one shop's branding and renders any number of notices. Dates are
formatted by Babel in the customer's locale (medium format). Values from the shop are made
header-safe here (no CR/LF, mojibake repaired) and HTML-escaped by Jinja2.
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
from include.backorder.mime import Rendered
from include.backorder.unsubscribe import Unsubscribe


@dataclass(frozen=True)
class ListedLine:
    """One product line as an email lists it."""

    products_name: str
    products_model: str | None
    products_quantity: float
    date_available: datetime | None  # None: cleared (an `available` email)
    previous_date: datetime | None = None


@dataclass(frozen=True)
class Notice:
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
    """Compiles the templates once; renders any number of notices."""

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

    def _context(self, notice: Notice, unsubscribe_link: str) -> dict[str, object]:
        locale = notice.language
        lines = [
            {
                "name": header_safe(line.products_name or ""),
                "model": header_safe(line.products_model or ""),
                "quantity": _quantity(line.products_quantity, locale),
                "date": _day(line.date_available, locale),
                "previous_date": _day(line.previous_date, locale),
            }
            for line in notice.lines
        ]
        brand = self.branding
        return {
            "kind": notice.kind,
            "order_id": notice.orders_id,
            "customer_name": header_safe(notice.customers_name or ""),
            "interval_days": notice.reminder_interval_days,
            "lines": lines,
            "shop_name": header_safe(brand.shop_name),
            "logo_url": brand.logo_url,
            "support_email": brand.support_email,
            "postal_lines": [header_safe(line) for line in brand.postal_address.splitlines() if line.strip()],
            "order_link": brand.order_link(notice.orders_id),
            "unsubscribe_link": unsubscribe_link,
        }

    def render_parts(self, notice: Notice, unsubscribe_link: str = "") -> tuple[str, str, str]:
        """(subject, text, html) for a notice; the footer offers `unsubscribe_link` when given."""
        context = self._context(notice, unsubscribe_link)
        base = f"{notice.language}/{notice.kind}"
        subject = header_safe(self.env.get_template(f"{base}.subject.txt").render(context))
        text = self.env.get_template(f"{base}.txt").render(context)
        html = self.env.get_template(f"{base}.html").render(context, subject=subject)
        return subject, text, html

    def render(
        self,
        notice: Notice,
        from_email: str,
        sender_domain: str,
        sent_at: datetime | None = None,
        unsubscribe: Unsubscribe | None = None,
    ) -> Rendered:
        """The finished message (see mime.py for how it is assembled)."""
        link = unsubscribe.link(notice.customers_id, notice.customers_email_address) if unsubscribe else ""
        subject, text, html = self.render_parts(notice, link)
        recipient = notice.customers_email_address.strip()
        mid = message_id(notice.orders_id, notice.kind, notice.reference_time, sender_domain)
        headers = [
            _from_header(from_email),
            mime.address_header("To", header_safe(notice.customers_name or ""), recipient),
            mime.header("Subject", subject),
            mime.header("Date", format_datetime(sent_at) if sent_at else _date_header(int(time.time()))),
            mime.header("Message-ID", mid),
            mime.header("X-Backorder-Notification", notice.kind),
            mime.header("X-Backorder-Order-Id", str(notice.orders_id)),
            mime.header("X-Backorder-Reference-Time", _stamps(notice.reference_time)[1]),
        ]
        if unsubscribe is not None:
            for name, value in unsubscribe.headers(notice.customers_id, notice.customers_email_address).items():
                headers.append(mime.header(name, value))
        return Rendered(mid, recipient, mime.assemble(headers, text, html, notice.language))


@lru_cache(maxsize=64)
def _from_header(from_email: str) -> mime.HeaderLine:
    """The sender as configured ('Shop <shop@example.com>'), its name encoded when not ASCII."""
    name, addr = parseaddr(from_email)
    return mime.address_header("From", header_safe(name), addr)
