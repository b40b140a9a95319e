"""Golden files: every kind in every language rendered from fixed data and compared with checked-in copies.

Any change to an email shows as a diff of `tests/backorder/golden/<language>/<kind>.{txt,html}`
in review. The text part (with the subject) must match exactly; the HTML part must match in
structure: the same elements, attributes (`style` ones too) and text, while the formatting of
inlined `style` attributes may differ (a css-inline upgrade reorders declarations or spaces them
differently; a changed colour or padding is a difference). To accept a change on purpose:

    BACKORDER_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/backorder/test_golden.py

That rewrites the files and FAILS every case it rewrote, so the mode can never pass (in CI or
anywhere): review the files with `git diff tests/backorder/golden`, then run again without it.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from email import message_from_bytes, policy
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, NoReturn

import pytest

from include.backorder import KINDS, LANGUAGES
from include.backorder.config import Branding
from include.backorder.render import ListedLine, Notification, Renderer
from include.backorder.unsubscribe import Unsubscribe

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("BACKORDER_UPDATE_GOLDEN") == "1"

BRANDING = Branding(
    shop_name="Trailhead Outdoor",
    logo_url="https://trailhead.example/logo.png",
    brand_color="#2f6b3a",
    support_email="help@trailhead.example",
    postal_address="Trailhead Outdoor GmbH\nBergstraße 5\n79098 Freiburg",
    order_url="https://trailhead.example/account_history_info.php?order_id={order_id}",
)
UNSUBSCRIBE = Unsubscribe(mailto="optout@trailhead.example", url="https://trailhead.example/optout", secret="s3cret")
LINES = (
    ListedLine("Zelt „Berg & Tal“ für 2 Personen", "TENT-2P", 1.0, datetime(2026, 12, 17), datetime(2026, 12, 3)),
    ListedLine("Daunenschlafsack -10 °C", "BAG-800", 2.0, datetime(2027, 1, 8), None),
)
# An order with more lines than an email lists (MAX_LISTED_LINES): `<kind>-many` shows the end of the
# list, "and 2 more items" with the order link.
MANY = tuple(
    ListedLine(f"Zelthering {i}", f"PEG-{i:02d}", 4.0, datetime(2026, 12, 17), datetime(2026, 12, 3)) for i in range(27)
)
VARIANTS = {"": LINES, "-many": MANY}


def render(kind: str, language: str, variant: str = "") -> Any:
    notification = Notification(
        orders_id=4711,
        kind=kind,
        language=language,
        customers_email_address="juergen.mueller@example.com",
        customers_name="Jürgen Müller",
        reference_time=datetime(2026, 11, 23, tzinfo=UTC),
        lines=VARIANTS[variant],
        reminder_interval_days=3,
        customers_id=815,
    )
    msg = Renderer(BRANDING).render(
        notification,
        "Trailhead Outdoor <shop@trailhead.example>",
        "trailhead.example",
        datetime(2026, 11, 23, 6, 0, tzinfo=UTC),
        UNSUBSCRIBE,
    )
    return message_from_bytes(msg.as_bytes(), policy=policy.default)


def text_of(msg: Any) -> str:
    body = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    return f"Subject: {msg['Subject']}\n\n{body}"


def style(value: str | None) -> str:
    """A `style` attribute in a canonical form: declarations sorted, property names lower-case,
    whitespace collapsed, no empty declaration ('a:1;b: 2;' and 'b:2; a: 1' are the same)."""
    declarations = []
    for item in (value or "").split(";"):
        name, colon, val = item.partition(":")
        if name.strip() or val.strip():
            declarations.append(f"{name.strip().lower()}{colon} {' '.join(val.split())}".rstrip())
    return "; ".join(sorted(declarations))


class _Structure(HTMLParser):
    """Elements (with attributes, `style` in canonical form) and text, whitespace collapsed."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.items: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        kept = " ".join(f"{k}={style(v) if k == 'style' else v!r}" for k, v in sorted(attrs))
        self.items.append(f"<{tag} {kept}>".replace(" >", ">"))

    def handle_endtag(self, tag: str) -> None:
        self.items.append(f"</{tag}>")

    def handle_data(self, data: str) -> None:
        text = " ".join(data.split())
        if text:
            self.items.append(text)


def structure(html: str) -> list[str]:
    parser = _Structure()
    parser.feed(html)
    return parser.items


def rewritten(path: Path, content: str) -> NoReturn:
    """Update mode: write the golden file, then fail, so that the mode never passes a run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = content.encode("utf-8")
    changed = not path.is_file() or path.read_bytes() != data
    path.write_bytes(data)
    name = path.relative_to(GOLDEN.parents[2]) if path.is_relative_to(GOLDEN) else path
    pytest.fail(
        f"BACKORDER_UPDATE_GOLDEN=1: {name} {'REWRITTEN' if changed else 'unchanged'};"
        " review `git diff tests/backorder/golden`, then run the tests again without BACKORDER_UPDATE_GOLDEN",
        pytrace=False,
    )


CASES = [
    pytest.param(kind, language, variant, id=f"{kind}{variant}-{language}")
    for language in LANGUAGES
    for kind, variant in [*((kind, "") for kind in KINDS), ("changed", "-many"), ("available", "-many")]
]


@pytest.mark.parametrize(("kind", "language", "variant"), CASES)
def test_text_part_matches_the_golden_file(kind: str, language: str, variant: str) -> None:
    path = GOLDEN / language / f"{kind}{variant}.txt"
    text = text_of(render(kind, language, variant))
    if UPDATE:
        rewritten(path, text)
    assert text == path.read_text(encoding="utf-8")


@pytest.mark.parametrize(("kind", "language", "variant"), CASES)
def test_html_part_matches_the_golden_file_in_structure(kind: str, language: str, variant: str) -> None:
    path = GOLDEN / language / f"{kind}{variant}.html"
    html = render(kind, language, variant).get_body(("html",)).get_content()
    if UPDATE:
        rewritten(path, html.rstrip("\r\n") + "\r\n")  # the file ends in a line end, as the part's lines do
    assert structure(html) == structure(path.read_text(encoding="utf-8"))


def test_the_structure_comparison_sees_a_changed_word_or_style_and_ignores_style_formatting() -> None:
    html = '<p class="a" style="margin: 0;color: red;">Hello <b>world</b></p>'
    assert structure(html) == structure('<p style="color:red; MARGIN:  0" class="a">Hello\n  <b>world</b></p>')
    assert structure(html) != structure('<p class="a" style="margin: 0;color: red;">Hello <b>World</b></p>')
    assert structure(html) != structure('<p class="a" style="margin: 0;color: red;">Hello <i>world</i></p>')
    assert structure(html) != structure('<p class="a" style="margin: 0;color: blue;">Hello <b>world</b></p>')
    assert structure(html) != structure('<p class="a" style="margin: 0">Hello <b>world</b></p>')
    assert structure(html) != structure('<p class="a">Hello <b>world</b></p>')


def test_update_mode_rewrites_a_file_and_fails(tmp_path: Path) -> None:
    """BACKORDER_UPDATE_GOLDEN=1 can never pass a run: each case it rewrites fails, naming the file."""
    path = tmp_path / "en" / "initial.txt"
    with pytest.raises(pytest.fail.Exception, match=r"en/initial.txt REWRITTEN; review `git diff"):
        rewritten(path, "new")
    assert path.read_text(encoding="utf-8") == "new"
    with pytest.raises(pytest.fail.Exception, match=r"en/initial.txt unchanged; review"):
        rewritten(path, "new")


def test_every_golden_file_belongs_to_a_case() -> None:
    expected = {
        f"{language}/{kind}{variant}.{ext}"
        for kind, language, variant in (c.values for c in CASES)
        for ext in ("txt", "html")
    }
    assert {str(p.relative_to(GOLDEN)) for p in GOLDEN.rglob("*.*")} == expected
