"""Engines for the shop and the state database, made in one place, and what their failures say.

Every engine is created by `engine()`: with `hide_parameters`, so that an error about a statement
never carries its bound values (customers' names and addresses) into a task log; without
PostgreSQL's echo of a refused row; and with `pool_pre_ping`. `connect_or_explain()` opens the
first connection and turns its failure into one line that names the Airflow connection:
`LoginRefusedError` when the server refused the login (a wrong password: no retry can fix it, so
the task fails at once), `DatabaseUnavailableError` otherwise (a server down or unreachable: the
task's retries may help).
"""

from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from include.backorder.config import ConfigError, DbConnection

# How the drivers say that the login was refused: MySQL/MariaDB error numbers (1045 access denied,
# 1044 access denied to the database, 1698 access denied without password) and PostgreSQL's texts.
MYSQL_LOGIN_REFUSED = frozenset({1044, 1045, 1698})
POSTGRES_LOGIN_REFUSED = ("password authentication failed", "no password supplied", "no pg_hba.conf entry")


class DatabaseUnavailableError(RuntimeError):
    """A database cannot be reached (a retry may help)."""


class LoginRefusedError(ConfigError):
    """A database refused the connection's login or password: fix the connection; no retry can."""


# PostgreSQL repeats a refused row in its message (NOT NULL and CHECK violations): names, addresses.
_FAILING_ROW = re.compile(r"^DETAIL:\s+Failing row contains .*$", re.MULTILINE)


def engine(db: DbConnection, *, read_only: bool = False, **options: Any) -> Engine:
    """The engine of an Airflow connection's database; row values never appear in its errors."""
    made = sa.create_engine(db.url(read_only=read_only), hide_parameters=True, pool_pre_ping=True, **options)
    sa.event.listen(made, "handle_error", _without_row_values)
    return made


def _without_row_values(context: sa.engine.ExceptionContext) -> None:
    """Drop PostgreSQL's "Failing row contains (...)" from the driver's error and SQLAlchemy's, which
    quotes it: `hide_parameters` hides the bound values, not the server's echo of them."""
    orig = context.original_exception
    text = str(orig)
    cleaned = _FAILING_ROW.sub("DETAIL:  (the failing row is not shown)", text)
    if cleaned == text:
        return
    orig.args = (cleaned,)
    wrapped = context.sqlalchemy_exception
    if wrapped is not None and wrapped.args and isinstance(wrapped.args[0], str):
        wrapped.args = (wrapped.args[0].replace(text, cleaned), *wrapped.args[1:])


def first_line(exc: BaseException | None) -> str:
    """The driver's message in one line (PostgreSQL's spans several)."""
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else type(exc).__name__


def login_refused(exc: sa.exc.DBAPIError) -> bool:
    orig = exc.orig
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in MYSQL_LOGIN_REFUSED:
        return True
    return any(text in str(orig) for text in POSTGRES_LOGIN_REFUSED)


def connect_or_explain(
    engine: Engine, db: DbConnection, what: str, unavailable: type[DatabaseUnavailableError] = DatabaseUnavailableError
) -> None:
    """Open (and pool) the first connection; a failure becomes one line naming the connection."""
    try:
        engine.connect().close()
    except sa.exc.DBAPIError as exc:
        if login_refused(exc):
            raise LoginRefusedError(
                f"connection {db.conn_id!r}: the {what} refused the login of {db.login or '(no user)'!r}"
                f" ({first_line(exc.orig)}): check the connection's login and password"
            ) from None
        raise unavailable(f"connection {db.conn_id!r}: cannot read the {what}: {first_line(exc.orig)}") from None
