"""The optional `available` email: an order's every date reached or cleared while it is still in the statuses."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import sqlalchemy as sa

from include.backorder import state as st
from tests.backorder.test_pipeline import T0, rows, run_day
from tools import demo_shop

T1 = T0 + timedelta(days=1)
T2 = T0 + timedelta(days=2)


def _shop_waits_then_goods_arrive(shop) -> None:
    """Day T0: four orders wait. By T1 order 1's dates are reached (one) and cleared (the other), order 2
    still waits, order 3 left the statuses (shipped), order 4 was never told (no address)."""
    for pid in (1, 2, 3):
        shop.product(pid, datetime(2026, 3, 25))
    shop.order(1, [1, 2], purchased=datetime(2026, 3, 1), language="de", name="Jürgen Müller")
    shop.order(2, [3], purchased=datetime(2026, 3, 1))
    shop.order(3, [1], purchased=datetime(2026, 3, 1))
    shop.order(4, [2], purchased=datetime(2026, 3, 1), email="")


def _goods_arrive(shop) -> None:
    shop.set_date(1, datetime(2026, 3, 2, 12))  # reached by T1
    shop.set_date(2, None)  # cleared
    with shop.engine.begin() as c:
        c.execute(sa.update(demo_shop.orders).where(demo_shop.orders.c.orders_id == 3).values(orders_status=3))


def test_available_goes_once_to_orders_still_in_the_statuses(shop, state_db, smtp, mail_sink) -> None:
    _shop_waits_then_goods_arrive(shop)
    run_day(shop, state_db, smtp, T0, send_available=True)
    assert sorted(m.rcpt_tos[0] for m in mail_sink.messages) == [f"customer{i}@example.com" for i in (1, 2, 3)]
    mail_sink.clear()

    _goods_arrive(shop)
    summary = run_day(shop, state_db, smtp, T1, send_available=True)
    (msg,) = [m.message for m in mail_sink.messages]
    assert msg["To"] == "Jürgen Müller <customer1@example.com>"
    assert msg["X-Backorder-Notification"] == "available"
    assert msg["Subject"] == "Ihre Bestellung 1: Ihre Artikel sind unterwegs"
    text = msg.get_body(("plain",)).get_content()
    assert "1 × Product 1 (M-1)" in text and "1 × Product 2 (M-2)" in text
    assert "voraussichtlich" not in text, "an available email lists the items, not dates"
    assert summary["counts"]["sent"] == {"available": {"de": 1}}

    (note,) = rows(state_db, st.notifications, st.notifications.c.kind == "available")
    listed = {item["products_id"]: item for item in json.loads(note["listed_lines"])}
    assert listed[1]["date_available"] == "2026-03-02T12:00:00" and listed[1]["previous_date"] == "2026-03-25T00:00:00"
    assert listed[2]["date_available"] is None and listed[2]["previous_date"] == "2026-03-25T00:00:00"
    assert not rows(state_db, st.staged_arrivals), "staged arrivals are cleaned up"

    mail_sink.clear()
    run_day(shop, state_db, smtp, T2, send_available=True)
    sent = [(m.rcpt_tos[0], m.message["X-Backorder-Notification"]) for m in mail_sink.messages]
    assert sent == [("customer2@example.com", "periodic")], "order 1 is told once; order 2 still waits"


def test_available_is_off_by_default(shop, state_db, smtp, mail_sink) -> None:
    _shop_waits_then_goods_arrive(shop)
    run_day(shop, state_db, smtp, T0)
    _goods_arrive(shop)
    mail_sink.clear()
    summary = run_day(shop, state_db, smtp, T1)
    assert mail_sink.messages == []
    assert "available" not in json.dumps(summary["counts"])


def test_an_order_that_aged_out_of_max_order_age_days_is_not_available(shop, state_db, smtp, mail_sink) -> None:
    shop.product(1, datetime(2026, 3, 25))
    shop.order(1, [1], purchased=datetime(2026, 2, 28))
    run_day(shop, state_db, smtp, T0, send_available=True, max_order_age_days=3)
    mail_sink.clear()
    run_day(shop, state_db, smtp, T0 + timedelta(days=3), send_available=True, max_order_age_days=3)
    assert mail_sink.messages == [], "its date is still ahead: it left the window, the goods did not arrive"


def test_a_suppressed_customer_gets_no_available_email(shop, state_db, smtp, mail_sink) -> None:
    from include.backorder.unsubscribe import suppress

    _shop_waits_then_goods_arrive(shop)
    run_day(shop, state_db, smtp, T0, send_available=True)
    suppress(state_db, reason="asked by phone", source="admin", customers_id=1)
    _goods_arrive(shop)
    mail_sink.clear()
    run_day(shop, state_db, smtp, T1, send_available=True)
    assert mail_sink.messages == []
    (note,) = rows(state_db, st.notifications, st.notifications.c.kind == "available")
    assert (note["status"], note["detail"]) == ("skipped", "suppressed: asked by phone")
