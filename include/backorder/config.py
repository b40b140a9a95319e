"""Plain configuration values the DAG hands to the library: run params, database and SMTP settings.

Everything here is validated on construction, so a bad value fails the run at its first task
with a message that names the value, before anything is read or sent.

The run params are declared once, as the fields of `RunParams`: each field's type and default, and
(through `param(...)`) its JSON Schema, its description and its section of the trigger form.
`param_specs()` gives them as plain data (`ParamSpec`); the Airflow adapter (include/backorder/airflow.py)
turns those into the DAG's Params. Adding a param is adding a field here (and using it).
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from email.utils import parseaddr
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from include.backorder import LANGUAGES
from include.backorder.mime import UNSAFE_RE

# The patterns of the text params: the JSON Schema `pattern`s of the trigger form (RunParams' fields name them),
# and what the library checks again (check_pattern). A JSON Schema pattern is searched (re.search), so each is
# anchored; `$(?!\n)` is the end of the text in both Python and ECMA 262
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
MAX_PARALLEL_SENDS = 4  # send tasks running at once in one DAG run, at most (each holds an SMTP connection)
MIN_BATCH = 500  # emails per batch at least: a smaller kind is sent by one task
DEFAULT_BRAND_COLOR = "#1f4e79"
# Optional text params also take null: the UI's trigger form sends an empty text field as null, and a
# plain "string" type would keep its Trigger button disabled until every such field is filled.
TEXT = ("null", "string")


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
    brand_color: str = DEFAULT_BRAND_COLOR  # header band, links and order button
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


@functools.cache
def iana_zones() -> tuple[str, ...]:
    """The IANA time zones this machine knows (none without a zone database: no tzdata), sorted."""
    return tuple(sorted(available_timezones()))


def _json(value: Any) -> Any:
    """A deep copy with tuples as lists: what JSON (and an Airflow Param's schema) holds."""
    if isinstance(value, tuple | list):
        return [_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _json(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class ParamSpec:
    """One run param as plain data: what the trigger form shows and validates, what RunParams takes.

    `schema` is its JSON Schema (`type`, bounds, `pattern`, ...); `choices`, read when the schema is
    made, gives its `enum` (none when there are no choices); `section` groups it in the trigger form.
    """

    name: str
    default: Any  # as JSON: a list where RunParams holds a tuple
    description: str
    schema: Mapping[str, Any]
    section: str | None = None
    choices: Callable[[], Sequence[str]] | None = None

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema as the DAG's Param holds it, with the enum and the form's section; a fresh copy."""
        out: dict[str, Any] = _json(self.schema)
        if self.choices is not None and (choices := list(self.choices())):
            out["enum"] = choices
        if self.section:
            out["section"] = self.section
        return out


_SPEC = "param"  # the key of a RunParams field's metadata that holds its ParamSpec


def param(
    default: Any,
    description: str,
    *,
    section: str | None = None,
    choices: Callable[[], Sequence[str]] | None = None,
    **schema: Any,
) -> Any:
    """A RunParams field that is a run param: its default, and what the trigger form needs (see ParamSpec)."""
    spec = ParamSpec("", None, description, schema, section, choices)
    return field(default=default, metadata={_SPEC: spec})


def param_specs() -> tuple[ParamSpec, ...]:
    """The run params in the trigger form's order (RunParams' fields), each with its name and default."""
    return tuple(replace(f.metadata[_SPEC], name=f.name, default=_json(f.default)) for f in fields(RunParams))


def send_batches(due: int, send_parallelism: int) -> int:
    """How many batches (mapped send tasks, one SMTP connection each) send `due` emails of one kind:
    `send_parallelism`, but each of MIN_BATCH emails at least; none when nothing is due."""
    return 0 if due <= 0 else max(1, min(send_parallelism, -(-due // MIN_BATCH)))


def _text(name: str, description: str, *, section: str | None = None) -> Any:
    """An optional text param (empty by default; null from the trigger form reads as empty), bounded by
    MAX_LENGTHS and, where it has one, matched by its pattern in PATTERNS."""
    pattern: dict[str, Any] = {"pattern": PATTERNS[name]} if name in PATTERNS else {}
    return param("", description, section=section, type=TEXT, maxLength=MAX_LENGTHS[name], **pattern)


@dataclass(frozen=True)
class RunParams:
    """The DAG params of one run, as plain values; each field is a param of the trigger form, in its order
    (see the README for each one)."""

    order_status_ids: tuple[int, ...] = param(
        (1, 2),
        "Only orders in these statuses (orders_status ids) are processed.",
        type="array",
        items={"type": "integer", "minimum": 0, "maximum": MAX_ID},
        minItems=1,
    )
    reminder_interval_days: int = param(
        2, "Days between periodic reminders (and since any email).", type="integer", minimum=1, maximum=MAX_DAYS
    )
    max_reminders: int | None = param(
        None, "Periodic reminders per order at most; null for unlimited.", type=["null", "integer"], minimum=0
    )
    max_order_age_days: int | None = param(
        None,
        "Ignore orders purchased longer ago than this at T; null: no limit.",
        type=["null", "integer"],
        minimum=1,
        maximum=MAX_DAYS,
    )
    table_prefix: str = _text("table_prefix", "Prefix of the shop's tables (Zen Cart DB_PREFIX), e.g. zen_.")
    default_language: str = param(
        "en",
        "Language for orders whose language the shop does not store.",
        choices=lambda: LANGUAGES,
        type="string",
    )
    dry_run: bool = param(
        False, "Classify and render, record what would be sent; send nothing, keep state.", type="boolean"
    )
    catch_up_silently: bool = param(
        False,
        "Bring the state up to date without emailing (e.g. a backfill): due emails are recorded as silenced and"
        " count as told.",
        type="boolean",
    )
    # The form offers the IANA zones (a typo is flagged before the run starts); without a zone database on
    # the machine (no tzdata), the library's check at the first task is the only one.
    shop_timezone: str = param(
        "UTC",
        "IANA time zone the shop writes its dates in, e.g. Europe/Berlin.",
        choices=iana_zones,
        type="string",
    )
    shop_name: str = _text("shop_name", "Signature of the emails; empty: 'Your shop team'.")
    unsubscribe_mailto: str = _text(
        "unsubscribe_mailto", "Address for List-Unsubscribe mailto opt-outs; empty: the sender."
    )
    unsubscribe_url: str = _text(
        "unsubscribe_url",
        "https URL taking one-click opt-outs (?token=...); needs the Variable backorder_unsubscribe_secret.",
    )
    send_parallelism: int = param(  # the DAG plans the batches; kept here so that the run record has every param
        1,
        "Batches per kind, each sent by its own task over its own SMTP connection (mapped tasks; at most"
        f" {MAX_PARALLEL_SENDS} run at once, {MIN_BATCH} emails per batch at least).",
        type="integer",
        minimum=1,
        maximum=MAX_SEND_PARALLELISM,
    )
    send_available: bool = param(
        False,
        "Also send `available`: an order's every date was reached or cleared while it is still in the statuses.",
        type="boolean",
    )
    logo_url: str = _text(
        "logo_url", "https URL of the shop's logo (shown at most 200 x 48 px); empty: the name.", section="Branding"
    )
    brand_color: str = param(
        DEFAULT_BRAND_COLOR,
        "Colour of the header band, links and button, e.g. #1f4e79.",
        section="Branding",
        type="string",
        pattern=PATTERNS["brand_color"],
    )
    support_email: str = _text(
        "support_email", "Address the footer offers for questions; empty: none.", section="Branding"
    )
    postal_address: str = param(
        "",
        "The shop's postal address for the footer, lines separated by newlines.",
        section="Branding",
        type=TEXT,
        maxLength=MAX_LENGTHS["postal_address"],
        format="multiline",
    )
    order_url: str = _text(
        "order_url",
        "The customer's order page with {order_id}, e.g."
        " https://shop.example/account_history_info.php?order_id={order_id}.",
        section="Branding",
    )

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
        """Build from DAG params (a dict): every param it names is kept, so the run record (to_json) holds each
        one a run used; missing ones take defaults; unknown keys are ignored (the DAG refuses them in a run
        conf: check_conf_keys)."""
        declared = cls.__dataclass_fields__
        known = {k: v for k, v in values.items() if k in declared}
        for key, value in known.items():  # an optional text left empty in the UI's form arrives as null
            if value is None and isinstance(declared[key].default, str):
                known[key] = declared[key].default
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
    def from_airflow(cls, c: Any) -> DbConnection:
        """From an Airflow Connection (any object with its attributes; Airflow is not imported here)."""
        return cls(
            conn_id=c.conn_id or "",
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


# What a connection extra that is a flag may say as text (a connection URI's query gives text).
_FLAG_TEXTS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


@dataclass(frozen=True)
class _Extras:
    """An Airflow connection's extras, read one by one; a value we cannot honour is a ConfigError naming it."""

    conn_id: str
    values: Mapping[str, Any]

    def refuse(self, name: str, what: str) -> ConfigError:
        return ConfigError(f"connection {self.conn_id!r}: extra {name} {what}, got {self.values[name]!r}")

    def flag(self, name: str) -> bool:
        """A boolean extra; unset, null or empty is false."""
        value = self.values.get(name)
        if isinstance(value, str) and value.strip().lower() in _FLAG_TEXTS | {"": False}:
            return _FLAG_TEXTS.get(value.strip().lower(), False)
        if value is None or isinstance(value, bool) or value in (0, 1):
            return bool(value)
        raise self.refuse(name, "must be true or false")

    def number(self, name: str, default: float) -> float:
        """A number extra (also as text); unset, null or empty is `default`."""
        value = self.values.get(name)
        if value is None or value == "":
            return float(default)
        try:
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        except (TypeError, ValueError):
            raise self.refuse(name, "must be a number") from None

    def only(self, name: str, allowed: str, why: str) -> None:
        """Refuse any value of a text extra but `allowed` (unset, null or empty is `allowed`)."""
        if str(self.values.get(name) or allowed).strip().lower() != allowed:
            raise self.refuse(name, f"may only be {allowed!r} ({why})")


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
    max_reconnects: int = 3  # after a lost connection, in a row, before the batch gives up (mailer.py)

    def __post_init__(self) -> None:
        addr = parseaddr(self.from_email)[1]
        if UNSAFE_RE.search(self.from_email) or not re.fullmatch(ADDRESS, addr):
            raise ConfigError(
                "the SMTP connection needs a sender address in extra.from_email, 'shop@example.com' or"
                f" 'Shop <shop@example.com>' (no line breaks or control characters), got {self.from_email!r}"
            )
        if not self.timeout > 0:
            raise ConfigError(f"the SMTP connection's timeout must be a positive number of seconds, got {self.timeout}")
        if self.max_reconnects < 0:
            raise ConfigError(f"the SMTP connection's reconnects must be 0 or more, got {self.max_reconnects}")

    @classmethod
    def from_airflow(cls, c: Any) -> SmtpSettings:
        """From an Airflow connection of the SMTP provider (any object with its attributes and `extra_dejson`;
        Airflow is not imported here), read as the provider's SmtpHook reads it.

        Honoured as SmtpHook honours them:

        - host, port: the server; no port is 465 (SSL) or 25 (without SSL), smtplib's defaults as in the hook.
          No host is `localhost` (the hook would not connect at all).
        - login, password: the mailer logs in whenever a login is set (the hook only when both are set).
        - extra `from_email`: the sender (required here: every email needs one).
        - extra `disable_ssl`: connect in plain text (smtplib.SMTP) instead of over SSL (smtplib.SMTP_SSL).
        - extra `disable_tls`: do not upgrade a plain-text connection with STARTTLS. Over SSL, STARTTLS is never
          asked for (the hook would ask for it and fail). Both flags are booleans: true/false, also as the text
          `true`, `false`, `1`, `0`, `yes`, `no`, `on`, `off` a URI gives (the hook takes any non-empty text
          as true, `"false"` included).
        - extra `timeout`: seconds for the connection and each reply (default 30), more than 0.
        - extra `retry_limit`: reconnects in a row after a lost connection before the batch gives up (the
          emails not sent stay due and the task's retries take over); default 3 here (the hook's is 5). A
          refused message is never sent again (the hook re-sends any failed message).
        - extra `ssl_context`: `default` (or unset): the server's certificate is checked against the
          system's CAs, for SSL and STARTTLS alike.
        - extra `auth_type`: `basic` (or unset): login and password.

        Refused with a ConfigError that names the extra (the mailer cannot honour it): `ssl_context` `none`
        (the mailer always checks the certificate) or any other value, `auth_type` `oauth2` (no XOAUTH2) or any
        other value, a `timeout` or `retry_limit` that is no number or out of range, a flag that is no boolean.

        Not used, as SmtpHook does not use them here: `subject_template` and `html_content_template` (the hook
        reads them only when the caller gives no subject or content; every email has both), and the OAuth2
        extras `access_token`, `client_id`, `client_secret`, `tenant_id`, `scope` (only with `auth_type`
        `oauth2`).
        """
        extra = _Extras(c.conn_id or "smtp_default", c.extra_dejson or {})
        extra.only("ssl_context", "default", "the server's certificate is always checked")
        extra.only("auth_type", "basic", "a login and password")
        timeout = extra.number("timeout", 30.0)
        if not timeout > 0:
            raise extra.refuse("timeout", "must be more than 0 seconds")
        reconnects = extra.number("retry_limit", 3)
        if not (reconnects >= 0 and reconnects.is_integer()):
            raise extra.refuse("retry_limit", "must be a whole number, 0 or more")
        use_ssl = not extra.flag("disable_ssl")
        return cls(
            host=c.host or "localhost",
            port=c.port or (465 if use_ssl else 25),
            from_email=str(extra.values.get("from_email") or ""),
            login=c.login or "",
            password=c.password or "",
            use_ssl=use_ssl,
            use_starttls=not extra.flag("disable_tls"),
            timeout=timeout,
            conn_id=extra.conn_id,
            max_reconnects=int(reconnects),
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
