"""Rendering: a notification becomes a multipart/alternative email (plain text and HTML, UTF-8).

Templates live in `include/templates/<language>/<kind>.{subject.txt,txt,html}` and are compiled
once per Renderer. Dates are formatted by Babel in the customer's locale (medium format).
Values from the shop are made header-safe here (no CR/LF) and HTML-escaped by Jinja2.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path

from babel.dates import format_date
from babel.numbers import format_decimal
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from include.backorder.unsubscribe import Unsubscribe

TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "templates"

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class ListedLine:
    """One product line as an email lists it."""

    products_name: str
    products_model: str | None
    products_quantity: float
    date_available: datetime
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
    shop_name: str = ""
    customers_id: int | None = None


def header_safe(text: str) -> str:
    """One line of text: control characters (CR, LF, tabs) become single spaces."""
    return _CONTROL_RE.sub(" ", text).strip()


def message_id(orders_id: int, kind: str, reference_time: datetime, domain: str) -> str:
    """The same Message-ID for the same order, kind and T, so a repeat is recognisable."""
    stamp = reference_time.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"<backorder.{orders_id}.{kind}.{stamp}@{domain}>"


class Renderer:
    """Compiles the templates once; renders any number of notices."""

    def __init__(self, templates_dir: Path = TEMPLATES_DIR) -> None:
        self.env = Environment(
            loader=FileSystemLoader(templates_dir),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )

    def _context(self, notice: Notice) -> dict[str, object]:
        locale = notice.language

        def day(value: datetime | None) -> str | None:
            return None if value is None else format_date(value.date(), "medium", locale=locale)

        lines = [
            {
                "name": header_safe(line.products_name or ""),
                "model": header_safe(line.products_model or ""),
                "quantity": format_decimal(line.products_quantity, locale=locale),
                "date": day(line.date_available),
                "previous_date": day(line.previous_date),
            }
            for line in notice.lines
        ]
        return {
            "kind": notice.kind,
            "order_id": notice.orders_id,
            "customer_name": header_safe(notice.customers_name or ""),
            "shop_name": header_safe(notice.shop_name),
            "interval_days": notice.reminder_interval_days,
            "lines": lines,
        }

    def render_parts(self, notice: Notice) -> tuple[str, str, str]:
        """(subject, text, html) for a notice."""
        context = self._context(notice)
        base = f"{notice.language}/{notice.kind}"
        subject = self.env.get_template(f"{base}.subject.txt").render(context)
        text = self.env.get_template(f"{base}.txt").render(context)
        html = self.env.get_template(f"{base}.html").render(context)
        return header_safe(subject), text, html

    def render(
        self,
        notice: Notice,
        from_email: str,
        sender_domain: str,
        sent_at: datetime | None = None,
        unsubscribe: Unsubscribe | None = None,
    ) -> EmailMessage:
        subject, text, html = self.render_parts(notice)
        msg = EmailMessage(policy=SMTP)
        msg["From"] = from_email
        msg["To"] = Address(
            display_name=header_safe(notice.customers_name or ""),
            addr_spec=notice.customers_email_address.strip(),
        )
        msg["Subject"] = subject
        msg["Date"] = format_datetime(sent_at or datetime.now(UTC))
        msg["Message-ID"] = message_id(notice.orders_id, notice.kind, notice.reference_time, sender_domain)
        msg["X-Backorder-Notification"] = notice.kind
        msg["X-Backorder-Order-Id"] = str(notice.orders_id)
        msg["X-Backorder-Reference-Time"] = notice.reference_time.astimezone(UTC).isoformat()
        if unsubscribe is not None:
            for name, value in unsubscribe.headers(notice.customers_id, notice.customers_email_address).items():
                msg[name] = value
        msg.set_content(text, charset="utf-8")
        msg.add_alternative(html, subtype="html", charset="utf-8")
        msg["Content-Language"] = notice.language  # after set_content, which clears Content-* headers
        return msg
