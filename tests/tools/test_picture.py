"""The emails in headless Chromium: no horizontal overflow at phone and desktop widths, and screenshots.

Every kind in every language, from the sample data of `tools.preview`, laid out at 320 and
375 px (phones) and 1024 px (desktop), all in one Chromium run. Skipped without Chromium, or when Arial
is laid out in a wider stand-in font (no fonts-liberation), unless BACKORDER_REQUIRE_SERVERS=1, which
makes either a failure (see .ci/run, which installs both).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from include.backorder import KINDS, LANGUAGES
from tools import picture as pic
from tools import preview

WIDTHS = (375, 320, 1024)
LONG_NAME = "Ultralight" * 20  # 200 characters, no space to break at
Measured = dict[tuple[str, str, int], pic.Measurement]  # by (kind, language, width)


def _unavailable(reason: str) -> None:
    if os.environ.get("BACKORDER_REQUIRE_SERVERS") == "1":
        pytest.fail(f"{reason} (BACKORDER_REQUIRE_SERVERS=1)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def chromium() -> str:
    try:
        path = pic.chromium_path()
    except pic.ChromiumMissing as exc:
        _unavailable(str(exc))
    if not pic.has_arial_metrics():
        _unavailable(f"Arial is laid out in a wider stand-in font; {pic.FONT_HINT}")
    return path


@pytest.fixture(scope="module")
def measured(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Measured:
    """Every sample email the preview CLI writes, at every width, by (kind, language, width)."""
    pages = pic.render_previews(tmp_path_factory.mktemp("previews"))
    assert sorted(pages) == sorted((kind, lang) for kind in KINDS for lang in LANGUAGES)
    keys = {path: key for key, path in pages.items()}
    return {(*keys[m.page], m.width): m for m in pic.measure(list(pages.values()), WIDTHS)}


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_no_horizontal_overflow(measured, kind: str, language: str, width: int) -> None:
    m = measured[kind, language, width]
    assert m.viewport_width == width  # the frame has the width asked for, also below Chromium's 500 px windows
    assert not m.overflows, m.describe()
    assert m.content_height > 300  # the whole email was laid out, not an empty frame


def test_a_900_px_element_overflows_a_phone_but_not_a_desktop(chromium: str, tmp_path: Path) -> None:
    page = tmp_path / "wide.html"
    page.write_text('<!DOCTYPE html><html><body><p>Hello</p><div style="width:900px">wide</div></body></html>')
    phone, desktop = pic.measure([page], [375, 1024])
    assert phone.overflows
    assert (phone.viewport_width, phone.scroll_width) == (375, 908)  # 8 px of body margin to its left
    assert [(c.path, c.width) for c in phone.culprits] == [("body > div", 900)]
    assert phone.needs is not None and (phone.needs.path, phone.needs.width) == ("body > div", 900)
    assert "overflows by 533 px; body > div is 900 px wide" in phone.describe()
    assert not desktop.overflows
    assert desktop.culprits == ()


@pytest.fixture(scope="module")
def long_name_measured(chromium: str, tmp_path_factory: pytest.TempPathFactory) -> Measured:
    """Every kind and language with a 200-character product name without spaces, at phone widths."""
    out = tmp_path_factory.mktemp("long-name")
    lines = (replace(preview.SAMPLE_LINES[0], products_name=LONG_NAME), *preview.SAMPLE_LINES[1:])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(preview, "SAMPLE_LINES", lines)
        assert preview.main(["--out", str(out), "--at", pic.SAMPLE_AT]) == 0
    pages = pic.preview_pages(out)
    assert LONG_NAME in pages["changed", "en"].read_text(encoding="utf-8")
    keys = {path: key for key, path in pages.items()}
    return {(*keys[m.page], m.width): m for m in pic.measure(list(pages.values()), [375, 320])}


@pytest.mark.parametrize("width", [375, 320])
@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_long_unbroken_product_name_does_not_overflow_a_phone(
    long_name_measured, kind: str, language: str, width: int
) -> None:
    m = long_name_measured[kind, language, width]
    assert not m.overflows, m.describe()


def test_screenshot_is_as_wide_as_asked_and_as_tall_as_the_email(measured, tmp_path: Path) -> None:
    m = measured[KINDS[0], LANGUAGES[0], 375]
    png = tmp_path / "shot.png"
    pic.screenshot(m.page, png, 375, m.content_height)
    assert pic.png_size(png) == (375, m.content_height)
    assert png.stat().st_size > 10_000  # text and table drawn, not a blank image


def test_missing_chromium_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(pic.CHROMIUM_ENV, "no-such-chromium-binary")
    with pytest.raises(pic.ChromiumMissing, match="apt-get install -y --no-install-recommends chromium"):
        pic.chromium_path()
