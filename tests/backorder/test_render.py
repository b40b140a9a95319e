"""The emails as a customer sees them: both languages, every kind, dates in the customer's locale, safety."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

import pytest
from jinja2 import Environment

from include.backorder import KINDS, LANGUAGES
from include.backorder.config import Branding
from include.backorder.render import TEMPLATES_DIR, ListedLine, Notification, Renderer, message_id

T = datetime(2013, 12, 1, tzinfo=UTC)
LINES = (
    ListedLine("Trekking tent", "TENT-2P", 2.0, datetime(2013, 12, 17), datetime(2013, 12, 10)),
    ListedLine("Head torch", None, 1.0, datetime(2014, 1, 3), None),
)
renderer = Renderer()


def notification(kind: str, language: str, **changes) -> Notification:
    values: dict[str, Any] = {
        "orders_id": 4711,
        "kind": kind,
        "language": language,
        "customers_email_address": "ann@example.com",
        "customers_name": "Ann Example",
        "reference_time": T,
        "lines": LINES,
        "reminder_interval_days": 3,
    } | changes
    return Notification(**values)


def parsed(n: Notification):
    raw = renderer.render(n, "Shop <shop@example.com>", "example.com").as_bytes()
    return message_from_bytes(raw, policy=policy.default)


EXPECTED = {
    ("en", "initial"): (
        "Your order 4711: some items will arrive later",
        ["every 3 days", "at once if an expected date changes"],
    ),
    ("en", "periodic"): ("Your order 4711: still on backorder", ["thank you for your patience"]),
    ("en", "changed"): (
        "Your order 4711: new expected date",
        ["has changed", "expected Dec 17, 2013 (before: Dec 10, 2013)", "(before: no date)"],
    ),
    ("en", "available"): ("Your order 4711: your items are on their way", ["no longer on backorder", "the last email"]),
    ("de", "initial"): (
        "Ihre Bestellung 4711: einige Artikel kommen später",
        ["alle 3 Tage", "sofort, wenn sich ein voraussichtlicher Liefertermin ändert"],
    ),
    ("de", "periodic"): ("Ihre Bestellung 4711: noch im Rückstand", ["danken Ihnen für Ihre Geduld"]),
    ("de", "changed"): (
        "Ihre Bestellung 4711: neuer Liefertermin",
        ["hat sich geändert", "voraussichtlich 17.12.2013 (bisher: 10.12.2013)", "(bisher: kein Termin)"],
    ),
    ("de", "available"): (
        "Ihre Bestellung 4711: Ihre Artikel sind unterwegs",
        ["nicht mehr im Rückstand", "letzte E-Mail"],
    ),
}
DATES = {"en": ("Dec 17, 2013", "Jan 3, 2014"), "de": ("17.12.2013", "03.01.2014")}
GREETING = {"en": "Dear Ann Example,", "de": "Guten Tag Ann Example,"}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_in_each_language(kind: str, language: str) -> None:
    msg = parsed(notification(kind, language))
    subject, phrases = EXPECTED[(language, kind)]
    assert msg["Subject"] == subject
    assert msg["To"] == "Ann Example <ann@example.com>"
    assert msg["From"] == "Shop <shop@example.com>"
    assert msg["X-Backorder-Notification"] == kind
    assert msg["X-Backorder-Order-Id"] == "4711"
    assert msg["Message-ID"] == f"<backorder.4711.{kind}.20131201T000000Z@example.com>"
    assert msg["Content-Language"] == language
    assert msg.get_content_type() == "multipart/alternative"
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    assert [p.get_content_charset() for p in msg.iter_parts()] == ["utf-8", "utf-8"]
    for body in (text, html):
        assert GREETING[language] in body
        assert "4711" in body
        assert "Trekking tent" in body and "Head torch" in body
        for date in DATES[language]:
            assert (date in body) is (kind != "available")  # `available` lists the items, not their dates
    for phrase in phrases:
        assert phrase in text
    assert f'<html lang="{language}">' in html


def test_every_template_exists_and_compiles() -> None:
    for language in LANGUAGES:
        for kind in KINDS:
            for suffix in ("subject.txt", "txt", "html"):
                assert (TEMPLATES_DIR / language / f"{kind}.{suffix}").is_file()
                renderer.env.get_template(f"{language}/{kind}.{suffix}")


def test_interval_of_one_day_reads_naturally() -> None:
    en = parsed(notification("initial", "en", reminder_interval_days=1)).get_body(("plain",)).get_content()
    de = parsed(notification("initial", "de", reminder_interval_days=1)).get_body(("plain",)).get_content()
    assert "every day" in en and "every 1 days" not in en
    assert "täglich" in de


def test_no_name_falls_back_to_a_polite_greeting() -> None:
    assert (
        "Dear customer," in parsed(notification("periodic", "en", customers_name="")).get_body(("plain",)).get_content()
    )
    de = parsed(notification("periodic", "de", customers_name="")).get_body(("plain",)).get_content()
    assert "Sehr geehrte Kundin, sehr geehrter Kunde," in de


def test_shop_name_signs_the_email() -> None:
    branded = Renderer(Branding(shop_name="Trailhead Outdoor"))
    msg: Any = message_from_bytes(
        branded.render(notification("periodic", "en"), "s@example.com", "example.com").as_bytes(), policy=policy.default
    )
    assert "Kind regards,\nTrailhead Outdoor\n" in msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "Kind regards,<br>Trailhead Outdoor</p>" in msg.get_body(("html",)).get_content()
    unbranded = parsed(notification("periodic", "en")).get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "Kind regards,\nYour shop team\n" in unbranded


def test_html_is_escaped_and_headers_cannot_be_injected() -> None:
    evil = ListedLine('<script>alert("x")</script> & Co', "M<1>", 1.0, datetime(2013, 12, 17))
    msg = parsed(notification("initial", "en", customers_name="Eve\r\nBcc: victim@example.com <b>", lines=(evil,)))
    assert msg["Bcc"] is None
    assert "\n" not in msg["To"] and "victim@example.com" not in msg["To"].addresses[0].addr_spec
    html = msg.get_body(("html",)).get_content()
    assert "<script>" not in html and "&lt;script&gt;" in html and "&amp; Co" in html
    assert "<b>" not in html.split("<body", 1)[1].replace("<br>", "")
    text = msg.get_body(("plain",)).get_content()
    assert '<script>alert("x")</script> & Co' in text  # plain text is not escaped


def test_umlauts_and_emoji_survive_encoding() -> None:
    line = ListedLine("Daunenschlafsack für -10 °C 🏕️", None, 1.0, datetime(2013, 12, 17))
    msg = parsed(notification("initial", "de", customers_name="Jürgen Müller", lines=(line,)))
    assert msg["To"].addresses[0].display_name == "Jürgen Müller"
    assert "Daunenschlafsack für -10 °C 🏕️" in msg.get_body(("html",)).get_content()
    raw = renderer.render(notification("initial", "de", customers_name="Jürgen Müller"), "s@example.com", "example.com")
    assert raw.as_bytes().isascii()  # 7-bit clean on the wire: any SMTP server takes it


def test_message_id_is_stable_per_order_kind_and_reference_time() -> None:
    a = message_id(1, "initial", datetime(2026, 3, 2, 1, tzinfo=UTC), "shop.example")
    assert a == message_id(1, "initial", datetime(2026, 3, 2, 1, tzinfo=UTC), "shop.example")
    assert a != message_id(1, "periodic", datetime(2026, 3, 2, 1, tzinfo=UTC), "shop.example")
    assert a != message_id(1, "initial", datetime(2026, 3, 3, 1, tzinfo=UTC), "shop.example")
    assert a != message_id(2, "initial", datetime(2026, 3, 2, 1, tzinfo=UTC), "shop.example")


def test_strict_undefined_catches_template_mistakes(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "_email.css").write_text("p { margin: 0; }")
    for suffix, text in (("subject.txt", "Order {{ order_id }}"), ("txt", "{{ no_such_value }}"), ("html", "x")):
        (tmp_path / "en" / f"initial.{suffix}").write_text(text)
    with pytest.raises(Exception, match="no_such_value"):
        Renderer(templates_dir=tmp_path).render_parts(notification("initial", "en"))


def test_css_is_inlined_into_the_elements_and_only_media_rules_stay_in_a_style_sheet() -> None:
    raw = Renderer(Branding(shop_name="Trailhead")).render(
        notification("changed", "en"), "s@example.com", "example.com"
    )
    html = raw.parsed().get_body(("html",)).get_content()  # type: ignore[union-attr]
    sheet = html.split("<style>", 1)[1].split("</style>", 1)[0]
    assert sheet.strip().startswith("@media") and sheet.count("@media") == 1
    for needle in (
        '<h1 style="',
        '<p style="',
        '<th style="',
        '<td class="masthead" style="',
        '<span class="date" style="',
    ):
        assert needle in html
    assert "background-color: #1f4e79" in html  # the default brand colour, from var(--brand)
    assert "var(--brand)" not in html


def test_css_is_inlined_once_per_renderer_not_per_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from include.backorder import layout

    calls: list[str] = []
    real = layout.inline_template

    def counting(source: str, css: str, name: str) -> str:
        calls.append(name)
        return real(source, css, name)

    monkeypatch.setattr(layout, "inline_template", counting)
    fresh = Renderer()
    for _ in range(3):
        for kind in KINDS:
            for language in LANGUAGES:
                fresh.render(notification(kind, language), "s@example.com", "example.com")
    assert sorted(calls) == sorted(set(calls)), "each template inlined once"
    # The layout; per language the kinds (the lines put in place as they load) and the footer,
    # which the layout includes by a name made of the language.
    assert len(calls) == 1 + len(LANGUAGES) * (len(KINDS) + 1)
    assert not [name for name in calls if name.endswith("_lines.html")]


def test_an_include_of_a_fixed_name_is_put_in_place_when_the_template_loads(tmp_path: Path) -> None:
    from jinja2 import TemplateError

    for name, text in {
        "a.txt": 'A\n{% include "b.txt" %}\nC\n',
        "b.txt": "{% for x in xs %}\n- {{ x }}\n{% endfor %}\n",
        "loop.txt": '{% include "loop.txt" %}\n',
    }.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    from include.backorder.config import Branding
    from include.backorder.layout import InliningLoader

    (tmp_path / "_email.css").write_text("p { color: red; }\n", encoding="utf-8")
    loader = InliningLoader(tmp_path, Branding())
    env = Environment(loader=loader, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    source, _, _ = loader.get_source(env, "a.txt")
    assert "include" not in source
    assert env.get_template("a.txt").render(xs=[1, 2]) == "A\n- 1\n- 2\nC\n"
    with pytest.raises(TemplateError, match="includes itself"):
        loader.get_source(env, "loop.txt")


def test_a_jinja_tag_inside_a_tag_is_refused_when_the_template_loads(tmp_path: Path) -> None:
    from jinja2 import TemplateError

    (tmp_path / "_email.css").write_text("td { color: red; }")
    (tmp_path / "bad.html").write_text(
        '<table><tbody><tr><td {% if x %}class="x"{% endif %}>a</td></tr></tbody></table>'
    )
    with pytest.raises(TemplateError, match=r"bad.html: \d+ Jinja2 tag\(s\) lost"):
        Renderer(templates_dir=tmp_path).env.get_template("bad.html")


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("brand_color", "red;background:url(x)", "brand_color must be a hex colour"),
        ("logo_url", "http://shop.example/logo.png", "logo_url must be an https:// URL"),
        ("order_url", "https://shop.example/orders", "with {order_id}"),
        ("support_email", "help at shop", "support_email must be an email address"),
    ],
)
def test_bad_branding_is_refused_with_a_message_that_names_it(field: str, value: str, error: str) -> None:
    from include.backorder.config import ConfigError, RunParams

    with pytest.raises(ConfigError, match=error):
        RunParams.from_mapping({field: value})


def test_branding_shows_logo_colour_support_address_and_order_link() -> None:
    brand = Branding(
        shop_name="Trailhead",
        logo_url="https://t.example/logo.png",
        brand_color="#2f6b3a",
        support_email="help@t.example",
        postal_address="Trailhead GmbH\n  \nBergstraße 5",
        order_url="https://t.example/account_history_info.php?order_id={order_id}",
    )
    raw = Renderer(brand).render(notification("periodic", "de"), "s@t.example", "t.example").as_bytes()
    msg: Any = message_from_bytes(raw, policy=policy.default)
    html = msg.get_body(("html",)).get_content()
    (img,) = re.findall(r"<img [^>]*>", html)
    assert 'src="https://t.example/logo.png"' in img and 'alt="Trailhead"' in img
    assert "background-color: #2f6b3a" in html
    assert 'href="mailto:help@t.example"' in html
    assert "Trailhead<br>Trailhead GmbH<br>Bergstraße 5</p>" in html  # blank address lines dropped
    (button,) = re.findall(r'<a class="button" [^>]*>[^<]*</a>', html)
    assert 'href="https://t.example/account_history_info.php?order_id=4711"' in button
    assert button.endswith(">Zu Ihrer Bestellung</a>")
    text = msg.get_body(("plain",)).get_content()
    assert "Ihre Bestellung: https://t.example/account_history_info.php?order_id=4711" in text


def test_mojibake_from_a_latin1_shop_is_repaired() -> None:
    line = ListedLine("Schlafsack fÃ¼r â€“10 Â°C", None, 1.0, datetime(2013, 12, 17))
    msg = parsed(notification("initial", "de", customers_name="JÃ¼rgen MÃ¼ller", lines=(line,)))
    assert msg["To"].addresses[0].display_name == "Jürgen Müller"
    for part in ("plain", "html"):
        body = msg.get_body((part,)).get_content()
        assert "Schlafsack für –10 °C" in body and "Guten Tag Jürgen Müller" in body and "Ã" not in body


def test_very_long_names_are_folded_and_kept_whole() -> None:
    name = "Maximiliane Müller-Lüdenscheidt " * 12
    product = "Ultraleichtzeltgestänge" * 20  # 460 characters without a space
    raw = renderer.render(
        notification(
            "initial", "de", customers_name=name, lines=(ListedLine(product, None, 1.0, datetime(2013, 12, 17)),)
        ),
        "s@example.com",
        "example.com",
    ).as_bytes()
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78, "headers folded"
    # RFC 2047 decoding, where the space between two encoded words is not text. (The address parser of
    # policy.default keeps that space, a known CPython limit; mail clients decode as decode_header does.)
    to = message_from_bytes(raw, policy=policy.compat32)["To"]
    assert str(make_header(decode_header(to))) == f"{name.strip()} <ann@example.com>"
    msg: Any = message_from_bytes(raw, policy=policy.default)
    assert product in msg.get_body(("html",)).get_content()
    assert product in msg.get_body(("plain",)).get_content()


def test_the_check_every_received_email_gets_refuses_an_extra_header_and_passes_ours() -> None:
    from tests.conftest import assert_well_formed
    from tools.smtp_sink import Received

    def received(raw: bytes) -> Received:
        msg: Any = message_from_bytes(raw, policy=policy.default)
        return Received("s@example.com", ("ann@example.com",), msg, raw)

    raw = renderer.render(notification("changed", "de"), "s@example.com", "example.com").as_bytes()
    assert_well_formed(received(raw))
    with pytest.raises(AssertionError, match=re.escape("unexpected headers: {'bcc'}")):
        assert_well_formed(received(b"Bcc: victim@example.com\r\n" + raw))
    with pytest.raises(AssertionError, match="a header appears twice"):
        assert_well_formed(received(b"Subject: again\r\n" + raw))


def test_an_email_lists_at_most_max_listed_lines_and_counts_the_rest() -> None:
    from include.backorder.render import MAX_LISTED_LINES

    many = tuple(ListedLine(f"Tent {i}", f"T-{i}", 1.0, datetime(2013, 12, 17)) for i in range(1000))
    branded = Renderer(Branding(order_url="https://t.example/order?id={order_id}"))
    for language, more in (
        ("en", "and 975 more items, all listed on"),
        ("de", "und 975 weitere Artikel, alle auf der"),
    ):
        _, text, html = branded.render_parts(
            notification("periodic", language, lines=many)
        )  # as the audit page shows it
        assert f"Tent {MAX_LISTED_LINES - 1} " in text and f"Tent {MAX_LISTED_LINES} " not in text
        assert more in text and more in html
        assert "https://t.example/order?id=4711" in html.split('class="more"', 1)[1]
    _, text, html = renderer.render_parts(notification("periodic", "en", lines=many))  # no order page
    assert "  ... and 975 more items.\n" in text and "and 975 more items." in html


def test_a_line_too_long_for_any_email_is_counted_not_listed() -> None:
    """The size bound holds whatever the lines: one of 300,000 characters is not listed at all."""
    from include.backorder.render import MAX_EMAIL_BYTES

    huge = ListedLine("&" * 300_000, None, 1.0, datetime(2013, 12, 17))
    raw = renderer.render(
        notification("initial", "de", lines=(huge, *LINES)), "s@example.com", "example.com"
    ).as_bytes()
    assert len(raw) < MAX_EMAIL_BYTES
    msg: Any = message_from_bytes(raw, policy=policy.default)
    text = msg.get_body(("plain",)).get_content()
    assert "und 3 weitere Artikel." in text and "&&&" not in text


def test_values_that_are_not_text_show_as_nothing() -> None:
    """A NaN (a NULL that went through a data frame) is no name and no model, never "nan"."""
    line = ListedLine("Head torch", float("nan"), 1.0, datetime(2013, 12, 17))  # type: ignore[arg-type]
    msg = parsed(notification("initial", "en", customers_name=float("nan"), lines=(line,)))
    assert msg["To"] == "ann@example.com"
    for part in ("plain", "html"):
        body = msg.get_body((part,)).get_content()
        assert "Dear customer," in body and not re.search(r"\bnan\b", body, re.IGNORECASE)
