"""Opt-out: signed unsubscribe tokens for the List-Unsubscribe header, and recording an opt-out.

A token names the customer (the shop's customer id and the address) and is signed with
HMAC-SHA256 under a secret the shop keeps (the Airflow Variable `backorder_unsubscribe_secret`).
`verify_token` refuses a forged or altered token. `record_opt_out` verifies a token and adds the
customer to `bo_suppression`: a shop wires its unsubscribe page, or the one-click POST that mail
clients send to the `unsubscribe_url`, to that function. `suppress` records an opt-out that
came another way (a reply to the mailto address, a phone call).

Guests: osCommerce-family shops store a guest checkout with `customers_id` 0 (or under one shared
guest account). An opt-out therefore never suppresses by an id that is 0 or NULL (it is recorded by
address alone), and classification ignores an id shared by several addresses (state.suppressions_query):
one guest's opt-out never silences another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import numbers
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

import sqlalchemy as sa

from include.backorder import db
from include.backorder import state as st
from include.backorder.config import DbConnection


class InvalidToken(ValueError):
    """The token was not made with our secret, or was altered."""


@dataclass(frozen=True)
class Subscriber:
    customers_id: int | None
    email_address: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def one_customer(customers_id: object) -> int | None:
    """The id when it names one customer (a positive integer), else None: 0 and NULL are guest checkouts."""
    if isinstance(customers_id, bool) or not isinstance(customers_id, numbers.Real):
        return None
    if isinstance(customers_id, numbers.Integral):
        return int(customers_id) if int(customers_id) > 0 else None
    value = float(customers_id)  # NaN (a NULL read by pandas) is no integer
    return int(value) if value > 0 and value.is_integer() else None


def make_token(secret: str, customers_id: int | None, email_address: str) -> str:
    payload = json.dumps({"c": one_customer(customers_id), "e": email_address.strip().lower()}, separators=(",", ":"))
    body = _b64(payload.encode())
    signature = _b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())
    return f"{body}.{signature}"


def verify_token(secret: str, token: str) -> Subscriber:
    """The customer a token names; InvalidToken for anything we did not sign (any text, any characters)."""
    if not isinstance(token, str) or not token.isascii():  # what we sign is ASCII; compare_digest needs it
        raise InvalidToken("the unsubscribe token is not valid")
    body, _, signature = token.strip().partition(".")
    expected = _b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())
    if not body or not hmac.compare_digest(signature.encode(), expected.encode()):
        raise InvalidToken("the unsubscribe token is not valid")
    try:
        data = json.loads(_unb64(body))
        return Subscriber(customers_id=one_customer(data["c"]), email_address=str(data["e"]))
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:  # signed but malformed: our own bug
        raise InvalidToken("the unsubscribe token cannot be read") from exc


@dataclass(frozen=True)
class Unsubscribe:
    """What a message's List-Unsubscribe header offers."""

    mailto: str  # an address that takes opt-outs by email
    url: str = ""  # an https URL that takes the one-click POST (RFC 8058); needs a token
    secret: str | None = None

    def _targets(self, customers_id: int | None, email_address: str) -> tuple[str, str]:
        """(mailto URI, https URL or "") for one customer; both carry the token when there is a secret."""
        token = make_token(self.secret, customers_id, email_address) if self.secret else None
        mailto = f"mailto:{self.mailto}?subject={quote(f'unsubscribe {token}' if token else 'unsubscribe')}"
        url = f"{self.url}{'&' if '?' in self.url else '?'}token={token}" if self.url and token else ""
        return mailto, url

    def link(self, customers_id: int | None, email_address: str) -> str:
        """The link an email's footer offers: the https URL when there is one, else the mailto."""
        mailto, url = self._targets(customers_id, email_address)
        return url or mailto

    def headers(self, customers_id: int | None, email_address: str) -> dict[str, str]:
        mailto, url = self._targets(customers_id, email_address)
        if url:
            return {"List-Unsubscribe-Post": "List-Unsubscribe=One-Click", "List-Unsubscribe": f"<{mailto}>, <{url}>"}
        return {"List-Unsubscribe": f"<{mailto}>"}


def suppress(
    state_db: DbConnection,
    *,
    reason: str,
    source: str,
    email_address: str | None = None,
    customers_id: int | None = None,
) -> None:
    """Record that an address, a customer, or both want no more of these emails. A customer id of 0 or
    NULL (a guest checkout) is not recorded: the opt-out is by address then."""
    customers_id = one_customer(customers_id)
    if not email_address and customers_id is None:
        raise ValueError(
            "an opt-out needs an email address or a customer id above 0 (0 is the guest checkout of"
            " osCommerce-family shops: give the guest's address)"
        )
    engine = db.engine(state_db)
    try:
        st.migrate(engine)
        with engine.begin() as conn:
            conn.execute(
                sa.insert(st.suppressions).values(
                    email_address=email_address.strip().lower() if email_address else None,
                    customers_id=customers_id,
                    reason=reason,
                    source=source,
                    created_at=datetime.now(UTC).replace(tzinfo=None),
                )
            )
    finally:
        engine.dispose()


def record_opt_out(state_db: DbConnection, secret: str, token: str, source: str = "one-click") -> Subscriber:
    """Verify an unsubscribe token and suppress the customer it names; raises InvalidToken."""
    who = verify_token(secret, token)
    suppress(
        state_db, reason="unsubscribed", source=source, email_address=who.email_address, customers_id=who.customers_id
    )
    return who
