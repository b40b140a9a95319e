"""Opt-out: signed tokens, List-Unsubscribe headers, and a recorded opt-out that stops the emails."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from urllib.parse import unquote

import pytest
import sqlalchemy as sa

from include.backorder import pipeline
from include.backorder import state as st
from include.backorder.config import ConfigError, DbConnection, RunContext, RunParams
from include.backorder.unsubscribe import (
    InvalidToken,
    Subscriber,
    make_token,
    record_opt_out,
    suppress,
    verify_token,
)

SECRET = "s3cret-of-the-shop"
T0 = datetime(2026, 3, 2, tzinfo=UTC)


def test_token_round_trip() -> None:
    token = make_token(SECRET, 42, " Ann@Example.com ")
    assert verify_token(SECRET, token) == Subscriber(42, "ann@example.com")


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda t: make_token("another secret", 42, "ann@example.com"), id="signed with another secret"),
        pytest.param(
            lambda t: make_token(SECRET, 43, "ann@example.com").split(".")[0] + "." + t.split(".")[1],
            id="payload swapped, signature kept",
        ),
        pytest.param(lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"), id="signature altered"),
        pytest.param(lambda t: t.split(".")[0], id="no signature"),
        pytest.param(lambda t: "", id="empty"),
        pytest.param(lambda t: "not-a-token", id="garbage"),
    ],
)
def test_forged_or_altered_tokens_are_refused(tamper) -> None:
    token = make_token(SECRET, 42, "ann@example.com")
    with pytest.raises(InvalidToken):
        verify_token(SECRET, tamper(token))


def run_day(shop, state_db, smtp, day: int, secret: str | None = None, **params) -> None:
    run = pipeline.extract(shop.conn, state_db, RunContext(T0 + timedelta(days=day)), RunParams(**params))
    pipeline.load_previous_snapshot(state_db, run.run_id)
    for kind, count in pipeline.classify_run(state_db, run.run_id).items():
        if count:
            pipeline.send(state_db, run.run_id, kind, smtp, secret)
    pipeline.finish(state_db, run.run_id)


@pytest.fixture
def one_order(shop):
    shop.product(1, datetime(2026, 3, 20))
    shop.order(1, [1], purchased=datetime(2026, 3, 1))
    return shop


def test_every_email_offers_one_click_unsubscribe_and_the_opt_out_stops_the_emails(
    one_order, tmp_path, smtp, mail_sink
) -> None:
    state = DbConnection("backorder_state_db", "sqlite", host=str(tmp_path / "state.sqlite"))
    run_day(one_order, state, smtp, 0, SECRET, unsubscribe_url="https://shop.example/unsubscribe")
    msg = message_from_bytes(mail_sink.messages[0].raw, policy=policy.default)
    header = msg["List-Unsubscribe"]
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    mailto, url = (part.strip(" <>") for part in header.split(","))
    assert mailto.startswith("mailto:shop@example.com?subject=unsubscribe%20")
    assert url.startswith("https://shop.example/unsubscribe?token=")
    token = url.split("token=")[1]
    assert unquote(mailto.split("subject=")[1]) == f"unsubscribe {token}"

    assert record_opt_out(state, SECRET, token) == Subscriber(1, "customer1@example.com")
    mail_sink.clear()
    run_day(one_order, state, smtp, 2, SECRET, unsubscribe_url="https://shop.example/unsubscribe")
    assert mail_sink.messages == [], "no periodic reminder after the opt-out"


def test_without_a_secret_the_mailto_still_works(one_order, state_db, smtp, mail_sink) -> None:
    run_day(one_order, state_db, smtp, 0, None, unsubscribe_mailto="optout@shop.example")
    msg = mail_sink.messages[0].message
    assert msg["List-Unsubscribe"] == "<mailto:optout@shop.example?subject=unsubscribe>"
    assert msg["List-Unsubscribe-Post"] is None


def test_an_opt_out_by_customer_id_is_audited_as_a_skip(one_order, state_db, smtp, mail_sink) -> None:
    suppress(state_db, customers_id=1, reason="asked by phone", source="admin")
    run_day(one_order, state_db, smtp, 0)
    assert mail_sink.messages == []
    engine = sa.create_engine(state_db.url())
    with engine.connect() as c:
        row = c.execute(sa.select(st.notifications.c.status, st.notifications.c.detail)).one()
    engine.dispose()
    assert tuple(row) == ("skipped", "suppressed: asked by phone")


def test_an_unsubscribe_url_needs_a_secret(one_order, state_db, smtp) -> None:
    with pytest.raises(ConfigError, match="backorder_unsubscribe_secret"):
        run_day(one_order, state_db, smtp, 0, None, unsubscribe_url="https://shop.example/u")
    with pytest.raises(ConfigError, match="https"):
        RunParams(unsubscribe_url="http://shop.example/u")


@pytest.mark.parametrize("signature", ["ünïcode", "€", "a\x00b", "\U0001f600" * 43])
def test_a_token_with_any_characters_is_invalid_not_a_crash(signature: str) -> None:
    """Finding 11 of issue 14: a non-ASCII signature raised TypeError (compare_digest) instead of InvalidToken."""
    body = make_token(SECRET, 42, "ann@example.com").split(".")[0]
    with pytest.raises(InvalidToken):
        verify_token(SECRET, f"{body}.{signature}")
    with pytest.raises(InvalidToken):
        verify_token(SECRET, f"{signature}.{signature}")


@pytest.mark.parametrize("guest_id", [0, 7], ids=["customers_id 0", "one shared guest account"])
def test_one_guests_opt_out_never_silences_another_guest(shop, state_db, smtp, mail_sink, guest_id: int) -> None:
    """Finding 7 of issue 14: osCommerce-family guest checkouts share customers_id 0 (or one guest account);
    Ann opts out through her email's token, Bea (same id, another address) still gets her reminder."""
    from tools import demo_shop

    shop.product(1, datetime(2026, 3, 20))
    shop.order(1, [1], purchased=datetime(2026, 3, 1), email="ann@guest.example", name="Ann Guest")
    shop.order(2, [1], purchased=datetime(2026, 3, 1), email="bea@guest.example", name="Bea Guest")
    with shop.engine.begin() as c:
        c.execute(sa.update(demo_shop.orders).values(customers_id=guest_id))
    url = "https://shop.example/unsubscribe"
    run_day(shop, state_db, smtp, 0, SECRET, unsubscribe_url=url)
    by_address = {m.rcpt_tos[0]: m.message for m in mail_sink.messages}
    assert set(by_address) == {"ann@guest.example", "bea@guest.example"}
    token = by_address["ann@guest.example"]["List-Unsubscribe"].split("token=")[1].rstrip(">")
    assert record_opt_out(state_db, SECRET, token).email_address == "ann@guest.example"

    mail_sink.clear()
    run_day(shop, state_db, smtp, 2, SECRET, unsubscribe_url=url)  # both reminders are due
    assert [(m.rcpt_tos, m.message["X-Backorder-Notification"]) for m in mail_sink.messages] == [
        (("bea@guest.example",), "periodic")
    ]
    engine = sa.create_engine(state_db.url())
    with engine.connect() as c:
        n = st.notifications
        rows = c.execute(
            sa.select(n.c.orders_id, n.c.status, n.c.detail).where(n.c.kind == "periodic").order_by(n.c.orders_id)
        ).all()
        opt_outs = c.execute(sa.select(st.suppressions.c.email_address, st.suppressions.c.customers_id)).all()
    engine.dispose()
    assert [tuple(r) for r in rows] == [(1, "skipped", "suppressed: unsubscribed"), (2, "sent", rows[1].detail)]
    expected_id = None if guest_id == 0 else guest_id  # 0 is never recorded; a shared id is ignored when read
    assert [tuple(r) for r in opt_outs] == [("ann@guest.example", expected_id)]


def test_an_opt_out_by_a_guest_id_alone_is_refused(tmp_path) -> None:
    state_db = DbConnection("backorder_state_db", "sqlite", host=str(tmp_path / "state.sqlite"))
    with pytest.raises(ValueError, match="guest checkout"):
        suppress(state_db, customers_id=0, reason="asked by phone", source="admin")
    assert make_token(SECRET, 0, "ann@guest.example") == make_token(SECRET, None, "ann@guest.example")
