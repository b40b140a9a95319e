"""Classification: which order gets which notification in a run. A pure function from frames to frames.

For each order with at least one backorder line, at most one notification per run, first match wins:
1. `initial`  - no email of any kind was ever sent for this order (before T);
2. `changed`  - a line's date differs from the previous snapshot, or a line is new in it;
3. `periodic` - at least `reminder_interval_days` days passed since the last email (the difference
   of two reference times), and fewer than `max_reminders` periodic emails were sent.
And, when the run is given *arrived* lines (the `send_available` param): an order that waited at
the previous snapshot, waits no more (every date reached or cleared) and is still in the statuses
gets 4. `available`, if it was ever told about the wait.
An order whose address is unusable still gets its kind, with a skip reason instead of an email.

*Suspect lines*: shop data that cannot be shown to a customer as it is. `line_problem` names the
problem, the extract stage records every suspect line in the run record (`bo_run.suspect_lines`,
the audit) and names it in the run's log, and the emails treat it so:
- a quantity that is not positive (negative, zero) or missing: the line is left out of every email
  (it is a correction or a broken row, not goods the customer waits for); an order with only such
  lines gets no email;
- a date in 2100 or later (a shop's "never", e.g. 9999-12-31): the line is listed with "no date yet",
  as a cleared date would be; a change between two such dates is no change;
- a product deleted from `products`: the line is not listed, and its order never gets `available`
  (shop.py finds these lines).
NULL in any shop column never reaches a row, a template or a header as NaN: `plain_records` turns
the frames' rows into Python values (None for NULL) at one place before rows are written; a NULL
name gives the greeting without a name, a NULL address a skip with its reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from babel import Locale, UnknownLocaleError
from babel.core import parse_locale

from include.backorder import LANGUAGES
from include.backorder.shop import PRODUCT_COLUMNS
from include.backorder.unsubscribe import one_customer


def _language_aliases() -> dict[str, str]:
    """Language *names* shops store for each template language, in English and in the language itself
    (xt:Commerce, modified and Gambio keep folder names such as 'german'; others 'Deutsch'), from Babel.
    Codes and locales ('de', 'de-AT', 'en_US.UTF-8', 'ger') are not listed here: `template_language`
    parses them with Babel."""
    aliases: dict[str, str] = {}
    for code in LANGUAGES:
        locale = Locale.parse(code)
        for name in (locale.get_language_name("en"), locale.get_language_name(code)):
            if name:
                aliases.setdefault(name.strip().casefold(), code)
    return aliases


LANGUAGE_ALIASES: dict[str, str] = _language_aliases()

SKIP_NO_EMAIL = "no email address"
SKIP_BAD_EMAIL = "email address is not valid"
SKIP_NON_ASCII_EMAIL = "email address is not ASCII (needs SMTPUTF8, not supported yet)"

_EMAIL_RE = re.compile(r"^[^@\s<>()\[\],;:\"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$")

# A date from here on is a placeholder, not a date to tell a customer (shop time, naive).
LAST_PLAUSIBLE_DATE = datetime(2100, 1, 1)
PROBLEM_DELETED_PRODUCT = (
    "product no longer in the shop's products table: not listed; the order gets no available email"
)

NOTIFICATION_COLUMNS = [
    "orders_id",
    "kind",
    "customers_id",
    "customers_email_address",
    "customers_name",
    "language",
    "skip_reason",
]
LISTED_COLUMNS = [*PRODUCT_COLUMNS, "previous_date"]


@dataclass(frozen=True)
class Rules:
    """What classification needs to know about the run."""

    reference_time: datetime  # naive UTC, as reference times are stored
    reminder_interval_days: int
    max_reminders: int | None
    default_language: str


@dataclass(frozen=True)
class Classification:
    notifications: pd.DataFrame  # one row per order to notify: NOTIFICATION_COLUMNS
    listed: pd.DataFrame  # the lines each notification lists: LISTED_COLUMNS
    waiting_orders: int  # orders with backorder lines, notified or not


def _locale(value: str) -> Locale | None:
    """What the shop stored as a Babel locale: a code or tag in either separator ('de', 'de-AT', 'de_CH',
    'en_US.UTF-8', 'de_DE@euro', 'ger'), or, when the region is unknown to Babel ('de-XX'), its language;
    None when it is no locale."""
    tag = value.strip().replace("-", "_")  # BCP 47 tags and POSIX locales, one separator
    if not tag:
        return None
    try:
        return Locale.parse(tag, sep="_")
    except (ValueError, UnknownLocaleError):
        pass
    try:
        return Locale.parse(parse_locale(tag, sep="_")[0])
    except (ValueError, UnknownLocaleError):
        return None


_TEMPLATE_LOCALES: dict[str, Locale] = {code: Locale.parse(code) for code in LANGUAGES}


def _template_for(locale: Locale) -> str | None:
    """The most specific template language that fits `locale`: same language, and the same script and
    territory where the template folder names them (`pt_BR` for 'pt-BR', `pt` for 'pt-PT')."""
    fitting = [
        (bool(tmpl.territory) + bool(tmpl.script), code)
        for code, tmpl in _TEMPLATE_LOCALES.items()
        if tmpl.language == locale.language
        and tmpl.territory in (None, locale.territory)
        and tmpl.script in (None, locale.script)
    ]
    return max(fitting)[1] if fitting else None


def template_language(value: object, default: str) -> str:
    """The template language for what the shop stored: a language name ('german', 'Deutsch', 'English')
    or anything Babel parses as a locale ('de', 'DE', 'de-AT', 'de_CH', 'en-GB', 'en_US.UTF-8');
    `default` for anything else, or for a language without templates."""
    if not isinstance(value, str):
        return default
    named = LANGUAGE_ALIASES.get(value.strip().casefold())
    if named is not None:
        return named
    locale = _locale(value)
    return (_template_for(locale) if locale is not None else None) or default


def _suppression(suppressed: pd.DataFrame, email: object, customer: object) -> str | None:
    """'suppressed: <reason>' when the address opted out, or the customer did and the id names one customer:
    never by an id of 0 or NULL (guest checkouts; suppressions_query also drops an id several addresses share)."""
    address = email.strip().lower() if isinstance(email, str) else None
    hit = suppressed["email_address"] == address
    if (one := one_customer(customer)) is not None:
        hit |= suppressed["customers_id"] == one
    found = suppressed[hit]
    return None if found.empty else f"suppressed: {found['reason'].iloc[0]}"


def email_problem(value: object) -> str | None:
    """Why an address cannot be used, or None when it can."""
    if not isinstance(value, str) or not value.strip():
        return SKIP_NO_EMAIL
    address = value.strip()
    if not address.isascii():
        return SKIP_NON_ASCII_EMAIL
    if len(address) > 254 or not _EMAIL_RE.match(address):
        return SKIP_BAD_EMAIL
    return None


def plain(value: Any) -> Any:
    """A value from a frame as the state database and the templates take it: NaN, NaT and NA -> None,
    numpy numbers -> int or float, Timestamps -> datetime."""
    if value is None or value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, float | np.floating) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    if isinstance(value, np.generic):
        return value.item()
    return value


def plain_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The frame's rows as dicts of plain Python values (see `plain`): the one way rows leave a frame."""
    return [{str(key): plain(value) for key, value in record.items()} for record in frame.to_dict("records")]


def _quantity(value: Any) -> float | None:
    value = plain(value)
    return None if value is None else float(value)


def line_problem(line: Mapping[str, Any]) -> str | None:
    """Why a backorder or arrived line is suspect, and what the emails do with it; None when it is not."""
    quantity = _quantity(line.get("products_quantity"))
    if quantity is None:
        return "no quantity: left out of the email"
    if quantity <= 0:
        return f"quantity {quantity:g} is not positive: left out of the email"
    date = plain(line.get("date_available"))
    if isinstance(date, datetime) and date >= LAST_PLAUSIBLE_DATE:
        return f"date {date:%Y-%m-%d} is in 2100 or later: the email shows no date"
    return None


def shown_date(value: Any) -> datetime | None:
    """A line's date as an email shows it: None (no date) for NULL and for dates in 2100 or later."""
    date = plain(value)
    return date if isinstance(date, datetime) and date < LAST_PLAUSIBLE_DATE else None


def _listable(lines: pd.DataFrame) -> pd.DataFrame:
    """The lines an email may list: a positive quantity (see the module docstring)."""
    if lines.empty:
        return lines
    return lines[pd.to_numeric(lines["products_quantity"], errors="coerce").gt(0)]


def _with_previous_dates(lines: pd.DataFrame, previous: pd.DataFrame) -> pd.DataFrame:
    prev = previous[["orders_products_id", "date_available"]].rename(columns={"date_available": "previous_date"})
    prev = prev.astype({"previous_date": "datetime64[us]"})
    return lines.astype({"date_available": "datetime64[us]"}).merge(prev, on="orders_products_id", how="left")


def _per_order(lines: pd.DataFrame, history: pd.DataFrame, **more: tuple[str, str]) -> pd.DataFrame:
    orders = lines.groupby("orders_id", sort=True).agg(
        customers_email_address=("customers_email_address", "first"),
        customers_name=("customers_name", "first"),
        customers_id=("customers_id", "first"),
        order_language=("order_language", "first"),
        **more,
    )
    hist = history.set_index("orders_id")[["emails_sent", "last_sent_time", "periodic_sent"]]
    return orders.join(hist, how="left")


def _by_time(orders: pd.DataFrame, rules: Rules) -> tuple[pd.Series[bool], pd.Series[bool]]:
    """Per order (history columns: emails_sent, last_sent_time, periodic_sent; NaN for none): never told,
    and due for a reminder (`reminder_interval_days` since the last email, fewer than `max_reminders`)."""
    emails_sent = orders["emails_sent"].fillna(0).astype(int)
    periodic_sent = orders["periodic_sent"].fillna(0).astype(int)
    since_last = pd.Timestamp(rules.reference_time) - pd.to_datetime(orders["last_sent_time"])
    reminder_due = since_last >= pd.Timedelta(timedelta(days=rules.reminder_interval_days))
    if rules.max_reminders is not None:
        reminder_due &= periodic_sent < rules.max_reminders
    return emails_sent == 0, reminder_due.fillna(False).astype(bool)


def due_by_time(orders: set[int], history: pd.DataFrame, rules: Rules) -> set[int]:
    """Of `orders`, those `classify` gives a notification whatever their lines did: never told (`initial`)
    or due for a reminder (`periodic`). `history` as for `classify` (orders without a row were never told).
    Extract stages the lines of these and of the orders with a new or changed line, and no others: for
    every other order `classify` decides nothing."""
    frame = pd.DataFrame(index=pd.Index(sorted(orders), name="orders_id"))
    frame = frame.join(history.set_index("orders_id")[["emails_sent", "last_sent_time", "periodic_sent"]], how="left")
    never_told, reminder_due = _by_time(frame, rules)
    return {int(order) for order in frame.index[never_told | reminder_due]}


def classify(
    lines: pd.DataFrame,
    previous: pd.DataFrame,
    history: pd.DataFrame,
    rules: Rules,
    suppressed: pd.DataFrame | None = None,
    arrived: pd.DataFrame | None = None,
) -> Classification:
    """lines: backorder lines now; previous: the previous snapshot's lines; history: sent emails per order;
    suppressed: opt-outs (email_address lower-case, customers_id, reason), which skip an order with that reason;
    arrived: the lines of orders that wait no more (None: `available` is off).
    """
    arrived = _listable(arrived) if arrived is not None else pd.DataFrame(columns=lines.columns)
    lines = _listable(lines)
    if lines.empty and arrived.empty:
        return Classification(pd.DataFrame(columns=NOTIFICATION_COLUMNS), pd.DataFrame(columns=LISTED_COLUMNS), 0)
    merged = _with_previous_dates(lines, previous)
    never = pd.Timestamp(LAST_PLAUSIBLE_DATE)
    both_never = (merged["previous_date"] >= never) & (merged["date_available"] >= never)
    merged["line_changed"] = merged["previous_date"].isna() | (
        (merged["previous_date"] != merged["date_available"]) & ~both_never
    )
    orders = _per_order(merged, history, any_changed=("line_changed", "any"))
    never_told, reminder_due = _by_time(orders, rules)
    orders["kind"] = np.select(
        [never_told, orders["any_changed"], reminder_due],
        ["initial", "changed", "periodic"],
        default="",
    )
    chosen = orders[orders["kind"] != ""].reset_index()
    if not arrived.empty:
        gone = _with_previous_dates(arrived, previous)
        told = _per_order(gone, history)
        told = told[told["emails_sent"].fillna(0) > 0].assign(kind="available").reset_index()
        gone = gone[gone["orders_id"].isin(told["orders_id"])].assign(line_changed=False)
        merged = pd.concat([merged, gone], ignore_index=True) if not merged.empty else gone
        chosen = pd.concat([chosen, told], ignore_index=True) if not chosen.empty else told
    chosen["language"] = [template_language(v, rules.default_language) for v in chosen["order_language"]]
    chosen["skip_reason"] = [email_problem(v) for v in chosen["customers_email_address"]]
    if suppressed is not None and not suppressed.empty:
        chosen["skip_reason"] = [
            _suppression(suppressed, email, customer) or reason
            for email, customer, reason in zip(
                chosen["customers_email_address"], chosen["customers_id"], chosen["skip_reason"], strict=True
            )
        ]

    listed = merged.merge(chosen[["orders_id", "kind"]], on="orders_id")
    listed = listed[(listed["kind"] != "changed") | listed["line_changed"]]
    return Classification(
        notifications=chosen[NOTIFICATION_COLUMNS].reset_index(drop=True),
        listed=listed[LISTED_COLUMNS].reset_index(drop=True),
        waiting_orders=len(orders),
    )
