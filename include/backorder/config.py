"""Plain configuration values the DAG hands to the library: run params, database and SMTP settings.

Everything here is validated on construction, so a bad value fails the run at its first task
with a message that names the value, before anything is read or sent.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from include.backorder import LANGUAGES
from include.backorder.mime import UNSAFE_RE

# The patterns of the DAG's params (dags/backorder_notifications.py holds the same strings, and
# tests/dags/test_dag_integrity.py checks that they are): JSON Schema `pattern`s, which are searched
# (re.search), so each is anchored; `$(?!\n)` is the end of the text in both Python and ECMA 262
# (Python's bare `$` also matches before a final newline). Addresses and URLs reach headers
# (List-Unsubscribe) and links, so they are printable ASCII without spaces: nothing that could
# break a header line or an attribute.
_END = r"$(?!\n)"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
ADDRESS = rf"[A-Za-z0-9.!#$%&'*+/=?^_`{{|}}~-]+@{_LABEL}(?:\.{_LABEL})+"  # the HTML standard's valid email address
_URL_CHARS = r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]"  # RFC 3986: an IRI's other characters percent-encoded
_URL_CHARS_BRACES = r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%{}]"  # and the {order_id} placeholder
PATTERNS: dict[str, str] = {
    "table_prefix": f"^[A-Za-z0-9_]*{_END}",
    "brand_color": f"^#(?:[0-9A-Fa-f]{{3}}){{1,2}}{_END}",
    "unsubscribe_mailto": f"^(?:{ADDRESS})?{_END}",
    "support_email": f"^(?:{ADDRESS})?{_END}",
    "unsubscribe_url": f"^(?:https://{_URL_CHARS}+)?{_END}",
    "logo_url": f"^(?:https://{_URL_CHARS}+)?{_END}",
    "order_url": f"^(?:https://{_URL_CHARS_BRACES}*\\{{order_id\\}}{_URL_CHARS_BRACES}*)?{_END}",
}
# What each pattern asks for, in the error line.
_PATTERN_MEANS = {
    "table_prefix": "may only hold letters, digits and '_'",
    "brand_color": "must be a hex colour like #1f4e79",
    "unsubscribe_mailto": "must be an email address (one local@domain, printable ASCII, no spaces or line breaks)",
    "support_email": "must be an email address (one local@domain, printable ASCII, no spaces or line breaks)",
    "unsubscribe_url": "must be an https:// URL (printable ASCII, no spaces or line breaks; percent-encode others)",
    "logo_url": "must be an https:// URL (printable ASCII, no spaces or line breaks; percent-encode others)",
    "order_url": "must be an https:// URL with {order_id} where the order number goes (printable ASCII, no spaces"
    " or line breaks)",
}
# Texts the emails show: each bounded, so that no branding can push an email past render.MAX_EMAIL_BYTES
# (a postal address of a megabyte would, whatever the list of lines) or a URL past what mail clients take.
MAX_LENGTHS: dict[str, int] = {
    "shop_name": 200,
    "postal_address": 1000,
    "unsubscribe_mailto": 254,  # RFC 5321's longest path, less the angle brackets
    "support_email": 254,
    # in List-Unsubscribe with "?token=" and a token of up to about 420 characters, on one header
    # line of at most 998 (RFC 5322; a server refuses a longer one, and with it every email)
    "unsubscribe_url": 500,
    "logo_url": 2000,
    "order_url": 2000,
    "table_prefix": 64,
}
MAX_ID = 2**31 - 1  # the shops' ids are 32-bit integers (a larger one fails the query on SQLite)
# Day counts become timedeltas from T: beyond a hundred years they leave the calendar (OverflowError).
MAX_DAYS = 36500
MAX_SEND_PARALLELISM = 16  # batches per kind, each a mapped task with its own SMTP connection


def check_pattern(name: str, value: str) -> None:
    """Refuse a param that does not match its pattern (as the DAG's JSON Schema would)."""
    if not isinstance(value, str) or not re.search(PATTERNS[name], value):
        raise ConfigError(f"{name} {_PATTERN_MEANS[name]}, got {value!r}")


def check_length(name: str, value: str) -> None:
    """Refuse a text param longer than MAX_LENGTHS allows (as the DAG's JSON Schema `maxLength` would)."""
    if not isinstance(value, str):  # a caller of the library, not the DAG's form: say so, not TypeError
        raise ConfigError(f"{name} must be text, got {value!r}")
    if len(value) > MAX_LENGTHS[name]:
        raise ConfigError(f"{name} may be at most {MAX_LENGTHS[name]} characters long, got {len(value)}")


def check_conf_keys(conf: Mapping[str, Any] | None, known: Iterable[str]) -> None:
    """Refuse a run conf with a key that is no param (a typo such as `dryrun` would otherwise run with
    the defaults and send real email); names the key and the closest known param."""
    names = sorted(known)
    unknown = sorted(set(conf or {}) - set(names))
    if not unknown:
        return
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ConfigError(
        f"the run conf has {'an unknown key' if len(unknown) == 1 else 'unknown keys'}: {', '.join(hints)};"
        f" nothing was read or sent. The params are: {', '.join(names)}"
    )


class ConfigError(ValueError):
    """A param or connection value that no retry can fix."""


@dataclass(frozen=True)
class Branding:
    """How the emails present the shop: name, logo, colour, how to reach it, the order page."""

    shop_name: str = ""
    logo_url: str = ""  # https URL of an image, shown at most 200 x 48 px
    brand_color: str = "#1f4e79"  # header band, links and order button
    support_email: str = ""
    postal_address: str = ""  # the footer's imprint, lines separated by newlines
    order_url: str = ""  # https URL of a customer's order page, with {order_id} where the id goes

    def __post_init__(self) -> None:
        for name in ("shop_name", "postal_address", "logo_url", "support_email", "order_url"):
            check_length(name, getattr(self, name))
        for name in ("logo_url", "brand_color", "support_email", "order_url"):
            check_pattern(name, getattr(self, name))

    def order_link(self, orders_id: int) -> str:
        return self.order_url.replace("{order_id}", str(orders_id)) if self.order_url else ""


@dataclass(frozen=True)
class RunParams:
    """The DAG params of one run, as plain values (see the README for each one)."""

    order_status_ids: tuple[int, ...] = (1, 2)
    reminder_interval_days: int = 2
    max_reminders: int | None = None
    max_order_age_days: int | None = None
    table_prefix: str = ""
    default_language: str = "en"
    dry_run: bool = False
    catch_up_silently: bool = False
    shop_timezone: str = "UTC"
    shop_name: str = ""
    unsubscribe_mailto: str = ""
    unsubscribe_url: str = ""
    send_available: bool = False
    send_parallelism: int = 1  # the DAG plans the batches; kept here so that the run record has every param
    logo_url: str = ""
    brand_color: str = "#1f4e79"
    support_email: str = ""
    postal_address: str = ""
    order_url: str = ""

    def __post_init__(self) -> None:
        if not self.order_status_ids or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_ID for s in self.order_status_ids
        ):
            raise ConfigError(
                f"order_status_ids must be a non-empty list of integers from 0 to {MAX_ID},"
                f" got {self.order_status_ids!r}"
            )
        if not 1 <= self.reminder_interval_days <= MAX_DAYS:
            raise ConfigError(f"reminder_interval_days must be from 1 to {MAX_DAYS}, got {self.reminder_interval_days}")
        if not 1 <= self.send_parallelism <= MAX_SEND_PARALLELISM:
            raise ConfigError(f"send_parallelism must be from 1 to {MAX_SEND_PARALLELISM}, got {self.send_parallelism}")
        if self.max_reminders is not None and self.max_reminders < 0:
            raise ConfigError(f"max_reminders must be >= 0 or null, got {self.max_reminders}")
        if self.max_order_age_days is not None and not 1 <= self.max_order_age_days <= MAX_DAYS:
            raise ConfigError(
                f"max_order_age_days must be from 1 to {MAX_DAYS} (a hundred years) or null, got"
                f" {self.max_order_age_days}"
            )
        for name in ("table_prefix", "unsubscribe_mailto", "unsubscribe_url"):
            check_length(name, getattr(self, name))
            check_pattern(name, getattr(self, name))
        if self.default_language not in LANGUAGES:
            raise ConfigError(f"default_language must be one of {LANGUAGES}, got {self.default_language!r}")
        if self.dry_run and self.catch_up_silently:
            raise ConfigError("dry_run and catch_up_silently exclude each other: choose one")
        try:
            ZoneInfo(self.shop_timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(f"shop_timezone is not a known IANA time zone: {self.shop_timezone!r}") from exc
        self.branding()  # validates the branding params

    def branding(self) -> Branding:
        return Branding(
            shop_name=self.shop_name,
            logo_url=self.logo_url,
            brand_color=self.brand_color,
            support_email=self.support_email,
            postal_address=self.postal_address,
            order_url=self.order_url,
        )

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> RunParams:
        """Build from DAG params (a dict); unknown keys are ignored (the DAG refuses them in a run conf:
        check_conf_keys), missing ones take defaults."""
        fields = cls.__dataclass_fields__
        known = {k: v for k, v in values.items() if k in fields}
        for key, value in known.items():  # an optional text left empty in the UI's form arrives as null
            if value is None and isinstance(fields[key].default, str):
                known[key] = fields[key].default
        if "order_status_ids" in known:
            known["order_status_ids"] = tuple(known["order_status_ids"])
        return cls(**known)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunParams:
        return cls.from_mapping(json.loads(text))

    def shop_time(self, reference_time: datetime) -> datetime:
        """T as the shop writes its dates: naive wall-clock time in the shop's time zone."""
        return reference_time.astimezone(ZoneInfo(self.shop_timezone)).replace(tzinfo=None)


@dataclass(frozen=True)
class DbConnection:
    """A database as an Airflow connection describes it, without Airflow."""

    conn_id: str
    conn_type: str
    host: str = ""
    port: int | None = None
    login: str = ""
    password: str = ""
    schema: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_airflow(cls, conn_id: str, c: Any) -> DbConnection:
        """From an Airflow Connection (any object with its attributes; Airflow is not imported here)."""
        return cls(
            conn_id=conn_id,
            conn_type=c.conn_type or "",
            host=c.host or "",
            port=c.port,
            login=c.login or "",
            password=c.password or "",
            schema=c.schema or "",
            extra=c.extra_dejson,
        )

    def url(self, read_only: bool = False) -> Any:
        """The SQLAlchemy URL; raises ConfigError for a connection type we cannot read.

        `read_only` opens a SQLite file read-only (a missing file is an error, not a new empty
        database); server databases rely on the grants of the connection's user.
        """
        from sqlalchemy.engine import URL

        kind = self.conn_type.lower()
        if kind == "sqlite":
            path = self.host or self.schema
            if not path.startswith("/"):
                raise ConfigError(
                    f"connection {self.conn_id!r}: a sqlite connection needs the absolute path of the "
                    f"database file in 'host', got {path!r}"
                )
            if read_only:
                return URL.create("sqlite", database=f"file:{path}?mode=ro", query={"uri": "true"})
            return URL.create("sqlite", database=path)
        if kind == "mysql":
            charset = str(self.extra.get("charset") or "utf8mb4")
            return URL.create(
                "mysql+pymysql",
                username=self.login or None,
                password=self.password or None,
                host=self.host or "127.0.0.1",
                port=self.port or 3306,
                database=self.schema or None,
                query={"charset": charset},
            )
        if kind in ("postgres", "postgresql"):
            return URL.create(
                "postgresql+psycopg2",
                username=self.login or None,
                password=self.password or None,
                host=self.host or "127.0.0.1",
                port=self.port or 5432,
                database=self.schema or None,
            )
        raise ConfigError(
            f"connection {self.conn_id!r}: conn_type {self.conn_type!r} is not supported "
            "(use sqlite, mysql or postgres)"
        )


@dataclass(frozen=True)
class SmtpSettings:
    """An SMTP server as the SMTP provider's connection describes it (same extras, same defaults)."""

    host: str
    port: int
    from_email: str
    login: str = ""
    password: str = ""
    use_ssl: bool = True
    use_starttls: bool = True
    timeout: float = 30.0
    conn_id: str = "smtp_default"  # the Airflow connection it came from: errors name it

    def __post_init__(self) -> None:
        addr = parseaddr(self.from_email)[1]
        if UNSAFE_RE.search(self.from_email) or not re.fullmatch(ADDRESS, addr):
            raise ConfigError(
                "the SMTP connection needs a sender address in extra.from_email, 'shop@example.com' or"
                f" 'Shop <shop@example.com>' (no line breaks or control characters), got {self.from_email!r}"
            )

    @property
    def sender_domain(self) -> str:
        return self.from_email.rsplit("@", 1)[1].strip(" >")


@dataclass(frozen=True)
class RunContext:
    """Which run this is, from Airflow's context."""

    reference_time: datetime
    dag_id: str = "backorder_notifications"
    dag_run_id: str = ""

    def __post_init__(self) -> None:
        if self.reference_time.tzinfo is None:
            raise ConfigError("reference_time must be timezone-aware")

    @property
    def reference_utc(self) -> datetime:
        """T as stored in the state database: naive UTC."""
        return self.reference_time.astimezone(UTC).replace(tzinfo=None)
