"""Classification as a table of cases: every rule of the run contract, and the priority between them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from include.backorder.classify import (
    SKIP_BAD_EMAIL,
    SKIP_NO_EMAIL,
    SKIP_NON_ASCII_EMAIL,
    Rules,
    classify,
    email_problem,
    line_problem,
    plain,
    plain_records,
    template_language,
)

T = datetime(2026, 3, 10)
D1 = datetime(2026, 4, 1)
D2 = datetime(2026, 5, 1)


def day(n: int) -> datetime:
    return T - timedelta(days=n)


@dataclass
class Case:
    """One order with lines (orders_products_id -> date), its previous snapshot and its history."""

    lines: dict[int, datetime]
    previous: dict[int, datetime] = field(default_factory=dict)
    emails_sent: int = 0
    last_sent: datetime | None = None
    periodic_sent: int = 0
    email: str | None = "ann@example.com"
    language: str | None = "en"


def frames(cases: dict[int, Case]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    lines = pd.DataFrame(
        [
            {
                "orders_id": oid,
                "orders_products_id": opid,
                "products_id": opid,
                "products_name": f"P{opid}",
                "products_model": None,
                "products_quantity": 1.0,
                "date_available": date,
                "customers_id": 100 + oid,
                "customers_name": "Ann",
                "customers_email_address": c.email,
                "order_language": c.language,
                "date_purchased": day(30),
            }
            for oid, c in cases.items()
            for opid, date in c.lines.items()
        ]
    )
    previous = pd.DataFrame(
        [{"orders_products_id": opid, "date_available": d} for c in cases.values() for opid, d in c.previous.items()],
        columns=["orders_products_id", "date_available"],
    )
    history = pd.DataFrame(
        [
            {
                "orders_id": oid,
                "emails_sent": c.emails_sent,
                "last_sent_time": c.last_sent,
                "periodic_sent": c.periodic_sent,
            }
            for oid, c in cases.items()
            if c.emails_sent
        ],
        columns=["orders_id", "emails_sent", "last_sent_time", "periodic_sent"],
    )
    return lines, previous, history


def run(cases: dict[int, Case], interval: int = 2, max_reminders: int | None = None, default_language: str = "en"):
    lines, previous, history = frames(cases)
    return classify(lines, previous, history, Rules(T, interval, max_reminders, default_language))


def kind_of(case: Case, **rules) -> str:
    result = run({1: case}, **rules)
    kinds = result.notifications["kind"].tolist()
    assert len(kinds) <= 1, "at most one email per order and run"
    return kinds[0] if kinds else "-"


told: dict[str, Any] = {"emails_sent": 1, "last_sent": day(1)}  # told yesterday


@pytest.mark.parametrize(
    ("case", "rules", "expected"),
    [
        pytest.param(Case({1: D1}), {}, "initial", id="never told, no snapshot -> initial"),
        pytest.param(Case({1: D1}, previous={1: D1}), {}, "initial", id="never told, known line -> initial"),
        pytest.param(Case({1: D2}, previous={1: D1}), {}, "initial", id="never told beats changed"),
        pytest.param(
            Case({1: D1}, previous={1: D1}, emails_sent=1, last_sent=day(5)),
            {},
            "periodic",
            id="told 5 days ago, nothing changed -> periodic",
        ),
        pytest.param(Case({1: D2}, previous={1: D1}, **told), {}, "changed", id="date moved later -> changed"),
        pytest.param(Case({1: D1}, previous={1: D2}, **told), {}, "changed", id="date moved earlier -> changed"),
        pytest.param(
            Case({1: D1, 2: D2}, previous={1: D1}, **told), {}, "changed", id="newly backordered line -> changed"
        ),
        pytest.param(
            Case({1: D2}, previous={1: D1}, emails_sent=3, last_sent=day(9)), {}, "changed", id="changed beats periodic"
        ),
        pytest.param(Case({1: D1}, previous={1: D1}, **told), {}, "-", id="told yesterday, nothing changed -> nothing"),
        pytest.param(
            Case({1: D1}, previous={1: D1}, emails_sent=1, last_sent=day(2)),
            {},
            "periodic",
            id="exactly the interval -> periodic",
        ),
        pytest.param(
            Case({1: D1}, previous={1: D1}, emails_sent=1, last_sent=T - timedelta(days=2, seconds=-1)),
            {},
            "-",
            id="one second short of the interval -> nothing",
        ),
        pytest.param(
            Case({1: D1}, previous={1: D1}, emails_sent=1, last_sent=day(2)),
            {"interval": 3},
            "-",
            id="interval 3, told 2 days ago -> nothing",
        ),
        pytest.param(
            Case({1: D1}, previous={1: D1}, emails_sent=3, last_sent=day(4), periodic_sent=2),
            {"max_reminders": 2},
            "-",
            id="max_reminders reached -> nothing",
        ),
        pytest.param(
            Case({1: D1}, previous={1: D1}, emails_sent=2, last_sent=day(4), periodic_sent=1),
            {"max_reminders": 2},
            "periodic",
            id="below max_reminders -> periodic",
        ),
        pytest.param(
            Case({1: D1}, previous={1: D1}, emails_sent=1, last_sent=day(4)),
            {"max_reminders": 0},
            "-",
            id="max_reminders 0 -> never periodic",
        ),
        pytest.param(
            Case({1: D2}, previous={1: D1}, emails_sent=3, last_sent=day(4), periodic_sent=2),
            {"max_reminders": 2},
            "changed",
            id="max_reminders does not stop changed",
        ),
        pytest.param(
            Case({1: D1}, previous={1: D1}, emails_sent=5, last_sent=day(4), periodic_sent=4),
            {"max_reminders": None},
            "periodic",
            id="max_reminders null -> unlimited",
        ),
    ],
)
def test_kind(case: Case, rules: dict, expected: str) -> None:
    assert kind_of(case, **rules) == expected


def test_changed_lists_only_changed_lines_with_previous_dates() -> None:
    result = run({1: Case({1: D1, 2: D2, 3: D1}, previous={1: D1, 2: D1}, **told)})
    listed = result.listed.sort_values("orders_products_id")
    assert listed["orders_products_id"].tolist() == [2, 3]
    assert listed["previous_date"].iloc[0] == pd.Timestamp(D1)
    assert pd.isna(listed["previous_date"].iloc[1])  # newly backordered: no previous date
    assert listed["date_available"].tolist() == [pd.Timestamp(D2), pd.Timestamp(D1)]


@pytest.mark.parametrize(
    ("kind_case", "kind"),
    [
        (Case({1: D1, 2: D2}), "initial"),
        (Case({1: D1, 2: D2}, previous={1: D1, 2: D2}, emails_sent=1, last_sent=day(3)), "periodic"),
    ],
)
def test_initial_and_periodic_list_every_line(kind_case: Case, kind: str) -> None:
    result = run({1: kind_case})
    assert result.notifications["kind"].tolist() == [kind]
    assert sorted(result.listed["orders_products_id"]) == [1, 2]


def test_orders_that_left_the_snapshot_get_nothing() -> None:
    # Order 2's line was in the previous snapshot but is no longer backordered: it is not in `lines`.
    lines, previous, history = frames({1: Case({1: D1}, previous={1: D1}, **told)})
    previous = pd.concat([previous, pd.DataFrame([{"orders_products_id": 99, "date_available": D1}])])
    result = classify(lines, previous, history, Rules(T, 2, None, "en"))
    assert result.notifications.empty
    assert result.waiting_orders == 1


def test_several_orders_each_get_their_own_kind() -> None:
    result = run(
        {
            1: Case({1: D1}),
            2: Case({2: D2}, previous={2: D1}, **told),
            3: Case({3: D1}, previous={3: D1}, emails_sent=1, last_sent=day(2)),
            4: Case({4: D1}, previous={4: D1}, **told),
        }
    )
    got = dict(zip(result.notifications["orders_id"], result.notifications["kind"], strict=True))
    assert got == {1: "initial", 2: "changed", 3: "periodic"}
    assert result.waiting_orders == 4


def test_no_lines_gives_no_notifications() -> None:
    lines, previous, history = frames({})
    result = classify(pd.DataFrame(columns=lines.columns), previous, history, Rules(T, 2, None, "en"))
    assert result.notifications.empty and result.listed.empty and result.waiting_orders == 0


@pytest.mark.parametrize(
    ("email", "reason"),
    [
        pytest.param("ann@example.com", None, id="valid"),
        pytest.param("  ann@example.com ", None, id="surrounding spaces"),
        pytest.param(None, SKIP_NO_EMAIL, id="NULL"),
        pytest.param("", SKIP_NO_EMAIL, id="empty"),
        pytest.param("   ", SKIP_NO_EMAIL, id="blank"),
        pytest.param("not-an-address", SKIP_BAD_EMAIL, id="no at sign"),
        pytest.param("ann@localhost", SKIP_BAD_EMAIL, id="no domain dot"),
        pytest.param("ann@example.com\r\nBcc: x@evil.com", SKIP_BAD_EMAIL, id="header injection"),
        pytest.param("a b@example.com", SKIP_BAD_EMAIL, id="space inside"),
        pytest.param("jürgen@example.de", SKIP_NON_ASCII_EMAIL, id="non-ASCII local part"),
    ],
)
def test_unusable_addresses_are_skipped_with_a_reason(email: str | None, reason: str | None) -> None:
    assert email_problem(email) == reason
    result = run({1: Case({1: D1}, email=email)})
    assert result.notifications["kind"].tolist() == ["initial"]  # the kind is still decided, for the audit
    skip = result.notifications["skip_reason"].iloc[0]
    assert (skip if isinstance(skip, str) else None) == reason


@pytest.mark.parametrize(
    ("stored", "default", "expected"),
    [
        ("en", "en", "en"),
        ("de", "en", "de"),
        ("german", "en", "de"),
        ("Deutsch", "en", "de"),
        ("english", "de", "en"),
        ("ENGLISH", "de", "en"),
        (" de ", "en", "de"),
        ("fr", "en", "en"),
        ("french", "de", "de"),
        ("", "de", "de"),
        (None, "de", "de"),
        (None, "en", "en"),
    ],
)
def test_language_from_the_order_else_default(stored: str | None, default: str, expected: str) -> None:
    assert template_language(stored, default) == expected
    result = run({1: Case({1: D1}, language=stored)}, default_language=default)
    assert result.notifications["language"].tolist() == [expected]


def test_suppressed_addresses_and_customers_are_skipped_with_the_reason() -> None:
    lines, previous, history = frames(
        {
            1: Case({1: D1}, email="Ann@Example.com "),
            2: Case({2: D1}, email="bob@example.com"),
            3: Case({3: D1}, email="carl@example.com"),
        }
    )
    suppressed = pd.DataFrame(
        [
            {"email_address": "ann@example.com", "customers_id": None, "reason": "one-click unsubscribe"},
            {"email_address": None, "customers_id": 102, "reason": "asked by phone"},
        ]
    )
    result = classify(lines, previous, history, Rules(T, 2, None, "en"), suppressed)
    got = dict(zip(result.notifications["orders_id"], result.notifications["skip_reason"], strict=True))
    assert got[1] == "suppressed: one-click unsubscribe"  # matched case-insensitively
    assert got[2] == "suppressed: asked by phone"  # matched by customer id
    assert not isinstance(got[3], str)


NEVER = datetime(9999, 12, 31)


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        pytest.param(
            Case({1: NEVER}, previous={1: datetime(2999, 1, 1)}, **told),
            "-",
            id="one 'never' date for another -> nothing (both shown as no date)",
        ),
        pytest.param(Case({1: D1}, previous={1: NEVER}, **told), "changed", id="'never' became a date -> changed"),
        pytest.param(Case({1: NEVER}, previous={1: D1}, **told), "changed", id="a date became 'never' -> changed"),
    ],
)
def test_dates_in_2100_or_later_are_no_date(case: Case, expected: str) -> None:
    """Finding 11: a shop's 'never' (9999-12-31) is shown as no date; two of them are no change."""
    assert kind_of(case) == expected


@pytest.mark.parametrize(
    ("quantity", "listed"),
    [
        pytest.param(2.0, True, id="positive"),
        pytest.param(0.5, True, id="fractional (Zen Cart, Gambio)"),
        pytest.param(0.0, False, id="zero"),
        pytest.param(-1.0, False, id="negative"),
        pytest.param(None, False, id="NULL"),
    ],
)
def test_lines_without_a_positive_quantity_are_never_listed(quantity: float | None, listed: bool) -> None:
    """Finding 11: a quantity that is not positive is left out of every email; alone, it makes no email."""
    lines, previous, history = frames({1: Case({1: D1, 2: D2}), 2: Case({3: D1})})
    lines["products_quantity"] = lines["products_quantity"].astype(object)
    lines.loc[lines["orders_products_id"].isin([1, 3]), "products_quantity"] = quantity
    result = classify(lines, previous, history, Rules(T, 2, None, "en"))
    assert sorted(result.listed["orders_products_id"]) == ([1, 2, 3] if listed else [2])
    assert sorted(result.notifications["orders_id"]) == ([1, 2] if listed else [1])


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        pytest.param({"products_quantity": 1, "date_available": D1}, None, id="plain"),
        pytest.param(
            {"products_quantity": -2, "date_available": D1},
            "quantity -2 is not positive: left out of the email",
            id="negative",
        ),
        pytest.param(
            {"products_quantity": 0.0, "date_available": D1},
            "quantity 0 is not positive: left out of the email",
            id="zero",
        ),
        pytest.param(
            {"products_quantity": float("nan"), "date_available": D1}, "no quantity: left out of the email", id="NaN"
        ),
        pytest.param(
            {"products_quantity": 1, "date_available": datetime(2100, 1, 1)},
            "date 2100-01-01 is in 2100 or later: the email shows no date",
            id="2100",
        ),
        pytest.param({"products_quantity": 1, "date_available": datetime(2099, 12, 31, 23)}, None, id="2099"),
        pytest.param({"products_quantity": 1, "date_available": None}, None, id="cleared date"),
    ],
)
def test_line_problem(line: dict[str, Any], problem: str | None) -> None:
    assert line_problem(line) == problem


def test_plain_records_turn_nulls_into_none_never_nan() -> None:
    """Finding 5: with another order in the frame, pandas makes NaN of a NULL name; rows get None."""
    lines, previous, history = frames({1: Case({1: D1}), 2: Case({2: D1}, email=None)})
    lines["customers_name"] = lines["customers_name"].astype(object)
    lines.loc[lines["orders_id"] == 2, ["customers_name", "customers_id", "order_language"]] = None
    result = classify(lines, previous, history, Rules(T, 2, None, "en"))
    raw = result.notifications.to_dict("records")[1]
    assert any(isinstance(v, float) and math.isnan(v) for v in raw.values()), "pandas makes NaN (the finding)"
    note = plain_records(result.notifications)[1]
    assert note["customers_name"] is None and note["customers_id"] is None
    assert note["customers_email_address"] is None and note["skip_reason"] == SKIP_NO_EMAIL
    assert plain_records(result.notifications)[0]["customers_id"] == 101
    listed = plain_records(result.listed)[0]
    assert type(listed["date_available"]) is datetime and listed["previous_date"] is None
    assert plain(pd.NaT) is None and plain(np.float64("nan")) is None and plain(pd.NA) is None
