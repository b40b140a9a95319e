"""What the emails show: very large orders, names a shop left empty, the languages shops store.

Every email here is sent to the real SMTP server on loopback (`mail_sink`) and checked as it was
received: its size on the wire, the lines it lists, its footer and unsubscribe link, its greeting
and language. The rows with a pipeline run go through the library's stages (extract, classify,
send, finish) against a SQLite shop and the state database.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace
from datetime import UTC, datetime
from html import escape
from typing import Any

import pytest
import sqlalchemy as sa

from include.backorder import KINDS, LANGUAGES, pipeline
from include.backorder import state as st
from include.backorder.config import MAX_LENGTHS, Branding, DbConnection, RunContext, RunParams, SmtpSettings
from include.backorder.mailer import Mailer
from include.backorder.render import MAX_EMAIL_BYTES, MAX_LISTED_LINES, ListedLine, Notification, Renderer
from include.backorder.unsubscribe import Unsubscribe
from tests.conftest import Shop, assert_well_formed
from tests.hardening.matrix import Case, params
from tools import demo_shop
from tools.smtp_sink import MailSink, Received

SURFACE = "What the emails show"
OTHER = {"en": "de", "de": "en"}

LONGEST = 255  # products_name and products_model in osCommerce 2.4 and its family: varchar(255)
CLIP = 102_000  # Gmail clips a message above about 102 KB

CASES = [
    Case(
        id="order-of-1000-long-lines",
        given="an order with 1,000 backordered lines, name and model 255 characters each (ASCII), branding"
        " set (logo, postal address, support address, order page), every kind, English and German",
        expect="each email is under 100,000 bytes as received; it lists at most 25 lines, then 'and 975 more"
        " items, all listed on your order page' ('und 975 weitere Artikel') with the order link; the footer"
        " with the postal address and the unsubscribe link is there in both parts",
        finding="13",
        data={"fill": "x", "lines": 1000},
    ),
    Case(
        id="order-of-1000-umlaut-lines",
        given="the same with names and models of 255 umlauts (2 bytes each in UTF-8)",
        expect="under 100,000 bytes: fewer lines are listed (as many as fit), the rest counted and linked;"
        " footer and unsubscribe link there",
        finding="13",
        data={"fill": "ü", "lines": 1000},
    ),
    Case(
        id="order-of-1000-escaped-lines",
        given="the same with names and models of 255 '&' (5 bytes each in HTML: &amp;)",
        expect="under 100,000 bytes, the rest counted and linked; footer and unsubscribe link there",
        finding="13",
        data={"fill": "&", "lines": 1000},
    ),
    Case(
        id="order-of-1000-emoji-lines",
        given="the same with names and models of 255 emoji (4 bytes each in UTF-8), and a customer name of 255",
        expect="under 100,000 bytes, at least one line listed, the rest counted and linked; footer and"
        " unsubscribe link there",
        finding="13",
        data={"fill": "\N{GRINNING FACE}", "lines": 1000},
    ),
    Case(
        id="order-of-1000-emoji-lines-longest-branding",
        given="the same, and every branding text as long as its param allows (shop name 200 emoji, postal address"
        " 1,000 characters of emoji, logo and order URLs 2,000 characters, unsubscribe URL 500, addresses 254)",
        expect="under 100,000 bytes, at least one line listed, the rest counted and linked; footer and"
        " unsubscribe link there (a longer branding text is refused as a param: see Params and run conf)",
        finding="13",
        data={"fill": "\N{GRINNING FACE}", "lines": 1000, "branding": "longest"},
    ),
    Case(
        id="order-of-1000-lines-no-order-page",
        given="an order with 1,000 long lines, the shop has no order page (`order_url` empty)",
        expect="'... and 975 more items.' ('und 975 weitere Artikel.') without a link; under 100,000 bytes",
        finding="13",
        data={"fill": "x", "lines": 1000, "order_url": ""},
    ),
    Case(
        id="one-line-more-than-listed",
        given="an order with 26 backordered lines",
        expect="25 listed, then 'and 1 more item' ('und 1 weiterer Artikel')",
        finding="13",
        data={"fill": "x", "lines": MAX_LISTED_LINES + 1, "name": 40},
    ),
    Case(
        id="as-many-lines-as-listed",
        given="an order with 25 backordered lines of ordinary length",
        expect="all 25 listed, no 'more items'",
        finding="13",
        data={"fill": "x", "lines": MAX_LISTED_LINES, "name": 40},
    ),
    Case(
        id="audit-keeps-every-line",
        given="a run on a shop with an order of 1,000 backordered lines (SQLite, MariaDB and PostgreSQL state)",
        expect="the customer receives one email listing 25 lines and 'and 975 more items'; the audit"
        " (bo_notification.listed_lines) keeps all 1,000",
        finding="13",
    ),
    *[
        Case(
            id=f"customer-name-{label}",
            given=f"the order's customer name is {words}",
            expect="every kind in both languages greets without a name: 'Dear customer,' / 'Sehr geehrte Kundin,"
            " sehr geehrter Kunde,'; the To header is the bare address",
            finding="5",
            data={"name": value},
        )
        for label, value, words in (
            ("NULL", None, "NULL"),
            ("empty", "", "empty"),
            ("blank", "   ", "spaces only"),
            ("NaN", math.nan, "NaN (a NULL read through a data frame)"),
            ("control-characters", "\r\n\t", "control characters only (CR, LF, tab)"),
        )
    ],
    *[
        Case(
            id=f"language-{value}",
            given=f"the order's language is stored as {value!r}",
            expect=f"the email is in {'German' if language == 'de' else 'English'}"
            + (" (the run's default_language)" if fallback else ""),
            finding=finding,
            # The run's default is the other language, unless the row is about falling back to it.
            data={"language": value, "expected": language, "default": language if fallback else OTHER[language]},
        )
        for value, language, fallback, finding in (  # finding: the rows that got the default before
            ("de-AT", "de", False, "11"),
            ("de_DE", "de", False, "11"),
            ("de-CH", "de", False, "11"),
            ("en-GB", "en", False, "11"),
            ("en_US.UTF-8", "en", False, "11"),
            ("DE", "de", False, ""),
            ("german", "de", False, ""),
            ("Deutsch", "de", False, ""),
            ("fr-FR", "de", True, ""),
            ("xx-YY", "en", True, ""),
        )
    ],
]
BIG = [c for c in CASES if c.finding == "13" and "lines" in c.data]
NAMES = [c for c in CASES if c.id.startswith("customer-name-")]
LANGUAGE_CASES = [c for c in CASES if c.id.startswith("language-")]

BRANDING = Branding(
    shop_name="Trailhead Outdoor",
    logo_url="https://trailhead.example/images/logo-trailhead-outdoor.png",
    brand_color="#2f6b3a",
    support_email="help@trailhead.example",
    postal_address="Trailhead Outdoor GmbH\nBergstraße 5\n79098 Freiburg im Breisgau\nGermany",
    order_url="https://trailhead.example/account_history_info.php?order_id={order_id}",
)
UNSUBSCRIBE = Unsubscribe(
    mailto="optout@trailhead.example", url="https://trailhead.example/backorder/optout", secret="s3cret"
)


def _longest_branding() -> tuple[Branding, Unsubscribe]:
    """Every branding text at its param's MAX_LENGTHS (config.py), the longest the DAG lets through."""
    emoji = "\N{GRINNING FACE}"
    postal_head = "79098 Freiburg im Breisgau\n"
    url = "https://trailhead.example/"
    domain = ".".join(["d" * 61] * 3) + ".example"  # labels of at most 63 characters
    branding = Branding(
        shop_name=emoji * MAX_LENGTHS["shop_name"],
        logo_url=url + "l" * (MAX_LENGTHS["logo_url"] - len(url)),
        support_email=("h" * 64 + "@" + domain)[: MAX_LENGTHS["support_email"] - 8] + ".example",
        postal_address=postal_head + emoji * (MAX_LENGTHS["postal_address"] - len(postal_head)),
        order_url=url + "?order_id={order_id}&" + "o" * (MAX_LENGTHS["order_url"] - len(url) - 21),
    )
    unsubscribe = Unsubscribe(
        mailto="o" * 64 + "@" + domain[: MAX_LENGTHS["unsubscribe_mailto"] - 65 - 8] + ".example",
        url=url + "u" * (MAX_LENGTHS["unsubscribe_url"] - len(url)),
        secret="s3cret",
    )
    for name in ("shop_name", "postal_address", "logo_url", "support_email", "order_url"):
        assert len(getattr(branding, name)) <= MAX_LENGTHS[name], name
    RunParams(unsubscribe_mailto=unsubscribe.mailto, unsubscribe_url=unsubscribe.url)  # the params take them
    return branding, unsubscribe


T = datetime(2026, 11, 23, tzinfo=UTC)
FOOTER = {
    "en": ("You receive this email because you ordered items", "Unsubscribe from these updates"),
    "de": ("Sie erhalten diese E-Mail, weil Sie Artikel bestellt haben", "Diese Benachrichtigungen abbestellen"),
}
GREETING = {"en": "Dear customer,", "de": "Sehr geehrte Kundin, sehr geehrter Kunde,"}
MORE_RE = {
    "en": re.compile(r"and (1 more item|([\d,]+) more items)(, all listed on)?"),
    "de": re.compile(r"und (1 weiterer Artikel|([\d.]+) weitere Artikel)(, alle auf der)?"),
}


def send(
    smtp: SmtpSettings,
    sink: MailSink,
    renderer: Renderer,
    notification: Notification,
    unsubscribe: Unsubscribe = UNSUBSCRIBE,
) -> Received:
    """Render and send one email; the message as the SMTP server received it."""
    before = len(sink.messages)
    with Mailer(smtp) as mailer:
        mailer.send(
            renderer.render(
                notification, "Trailhead Outdoor <shop@trailhead.example>", "trailhead.example", T, unsubscribe
            )
        )
    assert len(sink.messages) == before + 1
    return sink.messages[-1]


def bodies(item: Received) -> tuple[str, str]:
    msg: Any = item.message
    return msg.get_body(("plain",)).get_content(), msg.get_body(("html",)).get_content()


def long_lines(fill: str, count: int, length: int = LONGEST) -> tuple[ListedLine, ...]:
    """`count` lines whose name and model are `length` characters, each name starting with its number."""
    return tuple(
        ListedLine(
            f"{i:04d}" + fill * (length - 4),
            f"M{i:04d}" + fill * (length - 5),
            99999.0,
            datetime(2026, 12, 17),
            datetime(2026, 12, 3),
        )
        for i in range(count)
    )


def listed_and_more(text: str, language: str) -> tuple[int, int, bool]:
    """(lines the text part lists, the 'N more' it counts, whether that sentence points to the order page)."""
    listed = len(re.findall(r"^  - ", text, re.MULTILINE))
    found = MORE_RE[language].search(text)
    if found is None:
        return listed, 0, False
    more = 1 if found.group(2) is None else int(found.group(2).replace(",", "").replace(".", ""))
    assert more > 1 or found.group(2) is None, "one more item is said in the singular"
    return listed, more, found.group(3) is not None


@pytest.mark.parametrize("case", params(BIG))
def test_a_large_order_makes_an_email_under_100_kb_with_its_footer(
    case: Case, smtp: SmtpSettings, mail_sink: MailSink
) -> None:
    branding = replace(BRANDING, order_url=case.data.get("order_url", BRANDING.order_url))
    unsubscribe = UNSUBSCRIBE
    if case.data.get("branding") == "longest":
        branding, unsubscribe = _longest_branding()
    renderer = Renderer(branding)
    fill, count = case.data["fill"], case.data["lines"]
    lines = long_lines(fill, count, case.data.get("name", LONGEST))
    link = unsubscribe.link(815, "juergen.mueller@example.com")
    order_link = branding.order_link(4711)
    sizes = []
    for kind in KINDS:
        for language in LANGUAGES:
            notification = Notification(
                4711, kind, language, "juergen.mueller@example.com", fill * LONGEST, T, lines, 3, 815
            )
            item = send(smtp, mail_sink, renderer, notification, unsubscribe)
            where = f"{kind}/{language}"
            sizes.append(len(item.raw))
            assert len(item.raw) < MAX_EMAIL_BYTES <= CLIP, where
            text, html = bodies(item)
            listed, more, linked = listed_and_more(text, language)
            assert 1 <= listed <= min(count, MAX_LISTED_LINES), where
            assert listed + more == count, where  # every line either listed or counted
            assert len(re.findall(r'<td class="qty"', html)) == listed, where  # the HTML lists the same
            if more:
                assert linked is bool(order_link), where
                assert (f'<a href="{escape(order_link)}"' in html.split('class="more"', 1)[1]) is bool(order_link), (
                    where
                )
            else:
                assert 'class="more"' not in html, where
            notice_text, unsubscribe_text = FOOTER[language]
            for body in (text, html):
                assert notice_text in body and unsubscribe_text in body and "79098 Freiburg im Breisgau" in body
                assert link in body and body.index(link) < CLIP, where
            assert html.rstrip().endswith("</html>"), where
            if count == MAX_LISTED_LINES + 1:
                assert (listed, more) == (MAX_LISTED_LINES, 1), where
            if count == MAX_LISTED_LINES:
                assert (listed, more) == (MAX_LISTED_LINES, 0), where
    print(f"{case.id}: largest email {max(sizes):,} bytes")


@pytest.mark.parametrize("case", params(NAMES))
def test_a_missing_customer_name_gives_the_greeting_without_a_name(
    case: Case, smtp: SmtpSettings, mail_sink: MailSink
) -> None:
    renderer = Renderer(BRANDING)
    for kind in KINDS:
        for language in LANGUAGES:
            notification = Notification(
                4711, kind, language, "ann@example.com", case.data["name"], T, long_lines("x", 2, 20), 3
            )
            item = send(smtp, mail_sink, renderer, notification)
            assert item.message["To"] == "ann@example.com"
            for body in bodies(item):
                assert GREETING[language] in body, f"{kind}/{language}"
                assert not re.search(r"\bnan\b", body, re.IGNORECASE), f"{kind}/{language}"
                assert "Dear ," not in body and "Guten Tag ," not in body


def run_day(shop: Any, state_db: DbConnection, smtp: SmtpSettings, **run_params: Any) -> int:
    """All stages in the DAG's order at T, with SQLite shop `shop`; the run's id."""
    extracted = pipeline.extract(
        shop.conn, state_db, RunContext(T, dag_run_id="test__content"), RunParams(**run_params)
    )
    pipeline.load_previous_snapshot(state_db, extracted.run_id)
    for kind, count in pipeline.classify_run(state_db, extracted.run_id).items():
        if count:
            pipeline.send(state_db, extracted.run_id, kind, smtp)
    pipeline.finish(state_db, extracted.run_id)
    return extracted.run_id


@pytest.mark.parametrize("case", params([c for c in CASES if c.id == "audit-keeps-every-line"]))
def test_the_audit_keeps_every_line_the_email_does_not_list(
    case: Case,
    shop: Any,
    state_db: DbConnection,
    smtp: SmtpSettings,
    mail_sink: MailSink,
) -> None:
    products = list(range(1, 1001))
    with shop.engine.begin() as c:
        c.execute(
            sa.insert(demo_shop.products),
            [
                {
                    "products_id": pid,
                    "products_quantity": 0,
                    "products_model": f"M-{pid}",
                    "products_price": 10,
                    "products_date_available": "2026-12-17 00:00:00",
                    "products_date_added": "2025-01-01 00:00:00",
                    "products_status": 1,
                }
                for pid in products
            ],
        )
    shop.order(4711, products, purchased=datetime(2026, 11, 20, 9))
    run_day(shop, state_db, smtp)
    (item,) = mail_sink.messages
    text, _ = bodies(item)
    assert listed_and_more(text, "en") == (MAX_LISTED_LINES, 1000 - MAX_LISTED_LINES, False)
    assert len(item.raw) < MAX_EMAIL_BYTES
    engine = sa.create_engine(state_db.url())
    try:
        with engine.connect() as conn:
            (row,) = conn.execute(sa.select(st.notifications.c.status, st.notifications.c.listed_lines)).all()
    finally:
        engine.dispose()
    assert row.status == "sent"
    assert sorted(line["products_id"] for line in json.loads(row.listed_lines)) == products


@pytest.fixture(scope="module")
def language_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Received]:
    """One order per language row, a run per default language (each row's default is the language it
    must not get, or the one it falls back to); the email each order received, by the row's id."""
    received: dict[str, Received] = {}
    for default in LANGUAGES:
        folder = tmp_path_factory.mktemp(f"languages-{default}")
        engine = sa.create_engine(f"sqlite:///{folder / 'shop.sqlite'}")
        demo_shop.create_schema(engine)
        shop = Shop(folder / "shop.sqlite", engine)
        shop.product(1, datetime(2026, 12, 17))
        rows = {4000 + i: case for i, case in enumerate(LANGUAGE_CASES) if case.data["default"] == default}
        for oid, case in rows.items():
            shop.order(
                oid, [1], purchased=datetime(2026, 11, 20, 9), language=case.data["language"], name="Ann Example"
            )
        state_db = DbConnection(conn_id="backorder_state_db", conn_type="sqlite", host=str(folder / "state.sqlite"))
        with MailSink() as sink:
            settings = SmtpSettings(
                host="127.0.0.1", port=sink.port, from_email="shop@example.com", use_ssl=False, use_starttls=False
            )
            run_day(shop, state_db, settings, default_language=default)
        engine.dispose()
        for item in sink.messages:
            received[rows[int(item.message["X-Backorder-Order-Id"])].id] = item
    return received


@pytest.mark.parametrize("case", params(LANGUAGE_CASES))
def test_the_language_a_shop_stores_picks_the_email_language(case: Case, language_runs: dict[str, Received]) -> None:
    item = language_runs[case.id]
    assert_well_formed(item)
    language = case.data["expected"]
    assert item.message["Content-Language"] == language
    assert item.message["Subject"].startswith({"en": "Your order", "de": "Ihre Bestellung"}[language])
    text, html = bodies(item)
    greeting = {"en": "Dear Ann Example,", "de": "Guten Tag Ann Example,"}[language]
    assert greeting in text and greeting in html and f'<html lang="{language}">' in html
