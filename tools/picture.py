"""Pictures of the emails in headless Chromium: overflow checks at phone and desktop widths, and screenshots.

`python -m tools.picture` (`make screenshots`) renders every kind from sample data with
`tools.preview` and writes `docs/screenshots/<kind>-desktop.png` (700 px wide) and
`<kind>-phone.png` (375 px), each as tall as the whole email.

Chromium is Debian's `chromium` package, run once per measurement or screenshot as
`chromium --headless --no-sandbox --disable-gpu ...` with a throw-away profile. Why the email sits in
an iframe instead of being opened on its own: in this Chromium (156, new headless mode) a window is
never narrower than 500 px, so `--window-size=375,H` lays a page out at `window.innerWidth == 500` (and
`--screenshot` then crops that 500 px layout to 375 px). Widths of 500 px and more map one to one
(`--window-size=1024,H` gives `innerWidth == 1024`). An iframe's document, though, is laid out at the
iframe's width exactly, media queries included, so each email is shown in `<iframe srcdoc>` of the
width asked for, inside a host page that measures it (the email itself is not changed). The host page
writes what it measured as JSON into an attribute of its `<html>`, which `--dump-dom` prints.
`--hide-scrollbars`: under `--dump-dom` a page taller than the window otherwise gets a classic 15 px
scrollbar that narrows the layout (and innerHeight is the window's height less 143 px there, while a
`--screenshot` is exactly `--window-size` big).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from include.backorder import KINDS, LANGUAGES

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS_DIR = ROOT / "docs" / "screenshots"
PHONE_WIDTH = 375
DESKTOP_WIDTH = 700
WINDOW_HEIGHT = 800  # of the frame while measuring; a screenshot is as tall as the email
TIMEOUT = 60.0  # seconds for one Chromium run; a warm start takes about 1.5 s
SAMPLE_AT = "2026-11-23T00:00"  # reference time of the sample emails, so that screenshots repeat
CHROMIUM_ENV = "BACKORDER_CHROMIUM"  # another browser binary than `chromium` on PATH
INSTALL_HINT = "install Debian's package: apt-get install -y --no-install-recommends chromium"

# Runs in the host page after every frame has loaded. Per frame: its viewport width, the document's
# scroll width and height, the elements whose right edge lies beyond the viewport (culprits), and, when
# it overflows, what forces the width: laid out in a 1 px frame, from <body> down each time the child
# that needs the most width on its own (its siblings hidden), the deepest table on that way (with its
# first row's cells and their least widths), else the last element.
_MEASURE_JS = """
addEventListener("load", () => {
  const path = (el) => {
    const parts = [];
    for (; el && el.tagName !== "HTML"; el = el.parentElement) {
      const same = Array.from(el.parentElement.children).filter((c) => c.tagName === el.tagName);
      const tag = el.tagName.toLowerCase();
      parts.unshift(same.length > 1 ? `${tag}:nth-of-type(${same.indexOf(el) + 1})` : tag);
    }
    return parts.join(" > ");
  };
  const text = (el) => (el.textContent || "").trim().replace(/\\s+/g, " ").slice(0, 60);
  const forcing = (frame) => {  // lays the email out 1 px wide: everything takes the least width it can
    const width = frame.style.width;
    frame.style.width = "1px";
    frame.getBoundingClientRect();
    const alone = (kid) => {  // how wide its parent's content is with only this child shown
      const others = Array.from(kid.parentElement.children).filter((k) => k !== kid);
      const displays = others.map((k) => k.style.display);
      others.forEach((k) => { k.style.display = "none"; });
      const width = kid.parentElement.scrollWidth;
      others.forEach((k, i) => { k.style.display = displays[i]; });
      return width;
    };
    let el = frame.contentDocument.body, table = null;
    for (;;) {
      const kids = Array.from(el.children).filter((k) => k.getClientRects().length);
      if (!kids.length) break;
      el = kids.map((k) => [k, alone(k)]).reduce((a, b) => (b[1] > a[1] ? b : a))[0];
      if (el.tagName === "TABLE") table = el;
    }
    const pick = table || el;
    const cells = pick.tagName === "TABLE" && pick.rows.length
      ? Array.from(pick.rows[0].cells)
          .map((c) => `${text(c).slice(0, 24)} ${Math.round(c.getBoundingClientRect().width)}`)
      : null;
    const result = {path: path(pick), width: pick.getBoundingClientRect().width, right: 0,
                    text: cells ? cells.join(" | ") : text(pick)};
    frame.style.width = width;
    return result;
  };
  const frames = Array.from(document.querySelectorAll("iframe")).map((frame) => {
    const win = frame.contentWindow, root = frame.contentDocument.documentElement;
    const culprits = Array.from(root.querySelectorAll("*"))
      .map((el) => [el, el.getBoundingClientRect()])
      .filter(([el, r]) => r.right > win.innerWidth + 0.5)
      .map(([el, r]) => ({path: path(el), width: r.width, right: r.right, text: text(el)}));
    return {viewport_width: win.innerWidth, scroll_width: root.scrollWidth,
            content_height: Math.ceil(root.getBoundingClientRect().height), culprits: culprits,
            needs: root.scrollWidth > win.innerWidth ? forcing(frame) : null};
  });
  document.documentElement.setAttribute("data-picture", JSON.stringify(frames));
});
"""
_RESULT_RE = re.compile(r'data-picture="([^"]*)"')

# The templates ask for Arial, Helvetica. Without either (or Liberation Sans, which has their metrics and
# which fontconfig puts in their place), Chromium falls back to DejaVu Sans, 15 % wider: measurements then
# overflow where a recipient's Arial would not. Helvetica's widths of a to z sum to 12.726 em.
ARIAL_ALPHABET_EM = 12.726
FONT_HINT = "install Arial's metric twin: apt-get install -y --no-install-recommends fonts-liberation"
_FONT_JS = """
const ctx = document.createElement("canvas").getContext("2d");
ctx.font = "100px Arial, Helvetica, sans-serif";
const em = ctx.measureText("abcdefghijklmnopqrstuvwxyz").width / 100;
document.documentElement.setAttribute("data-picture", JSON.stringify(em));
"""


class ChromiumError(RuntimeError):
    """Chromium failed, timed out or printed nothing usable."""


class ChromiumMissing(ChromiumError):
    """No Chromium to run."""


@dataclass(frozen=True)
class Element:
    """An element of an email and its width (CSS pixels)."""

    path: str  # from <body>, e.g. "body > table > tbody > tr > td"
    width: float
    right: float  # its right edge (0 for a min-content width)
    text: str  # the start of its text; for a table, its first row's cells and their widths


@dataclass(frozen=True)
class Measurement:
    """One email laid out at one viewport width (CSS pixels)."""

    page: Path
    width: int  # asked for
    viewport_width: int  # window.innerWidth of the email's document
    scroll_width: int  # document.documentElement.scrollWidth
    content_height: int  # how tall the email is at this width
    culprits: tuple[Element, ...]  # reaching beyond the viewport's right edge, outermost first
    needs: Element | None = None  # when it overflows: what forces the width, at its min-content width

    @property
    def overflows(self) -> bool:
        return self.scroll_width > self.viewport_width

    def describe(self) -> str:
        head = f"{self.page.name} at {self.width} px: scrollWidth {self.scroll_width}, innerWidth {self.viewport_width}"
        if not self.overflows:
            return f"{head}, no overflow"
        text = f"{head}, overflows by {self.scroll_width - self.viewport_width} px"
        if self.culprits:
            text += f"; {self.culprits[0].path} is {self.culprits[0].width:.0f} px wide"
        if self.needs is not None:
            text += f"; what forces it: {self.needs.path} needs {self.needs.width:.0f} px ({self.needs.text})"
        return text


def chromium_path() -> str:
    """The Chromium binary: $BACKORDER_CHROMIUM, else `chromium` on PATH."""
    name = os.environ.get(CHROMIUM_ENV) or "chromium"
    found = shutil.which(name)
    if found is None:
        raise ChromiumMissing(f"{name} not found on PATH; {INSTALL_HINT}")
    return found


def run_chromium(args: Sequence[str], host_page: str, *, timeout: float = TIMEOUT) -> str:
    """Runs headless Chromium on `host_page` (HTML) with a temporary profile; returns its stdout."""
    binary = chromium_path()
    with tempfile.TemporaryDirectory(prefix="backorder-chromium-", ignore_cleanup_errors=True) as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(host_page, encoding="utf-8")
        cmd = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            f"--user-data-dir={Path(tmp) / 'profile'}",
            *args,
            page.as_uri(),
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise ChromiumError(f"chromium took more than {timeout:g} s: {' '.join(cmd)}") from None
    if proc.returncode != 0:
        noise = ("dbus", "unexpected operator")  # D-Bus is absent in containers; a bug of Debian's launcher
        tail = [line for line in err.splitlines() if not any(n in line for n in noise)][-5:]
        raise ChromiumError(f"chromium exited with {proc.returncode}: {' '.join(cmd)}\n" + "\n".join(tail))
    return out


def _host_page(frames: Iterable[tuple[str, int, int]], script: str = "") -> str:
    """A page showing each (html, width, height) in an iframe at its top left, one below the other."""
    tags = "".join(
        f'<iframe srcdoc="{html.escape(doc, quote=True)}" width="{width}" height="{height}"'
        f' style="display:block;border:0;width:{width}px;height:{height}px"></iframe>\n'
        for doc, width, height in frames
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head>\n'
        f'<body style="margin:0;padding:0">\n{tags}<script>{script}</script>\n</body></html>\n'
    )


def _dumped(out: str) -> object:
    """What the host page wrote into <html data-picture>, from chromium's --dump-dom output."""
    match = _RESULT_RE.search(out)
    if match is None:
        raise ChromiumError(f"no data-picture in chromium's --dump-dom output ({len(out)} characters)")
    return json.loads(html.unescape(match.group(1)))


def arial_alphabet_em(*, timeout: float = TIMEOUT) -> float:
    """How wide a to z is, in em, in the font Chromium picks for "Arial, Helvetica, sans-serif"."""
    out = run_chromium(["--dump-dom"], _host_page([], _FONT_JS), timeout=timeout)
    width = _dumped(out)
    if not isinstance(width, int | float):
        raise ChromiumError(f"no text width measured: {width!r}")
    return float(width)


def has_arial_metrics(*, timeout: float = TIMEOUT) -> bool:
    """Whether Chromium lays out the templates' Arial text as wide as Arial (within 1 %)."""
    return abs(arial_alphabet_em(timeout=timeout) / ARIAL_ALPHABET_EM - 1) < 0.01


def measure(pages: Sequence[Path], widths: Sequence[int], *, timeout: float = TIMEOUT) -> list[Measurement]:
    """Every page at every width (page by page, width by width), in one Chromium run."""
    docs = [p.read_text(encoding="utf-8") for p in pages]
    frames = [(doc, width, WINDOW_HEIGHT) for doc in docs for width in widths]
    out = run_chromium(
        [f"--window-size={max(1024, *widths)},{WINDOW_HEIGHT}", "--dump-dom"],
        _host_page(frames, _MEASURE_JS),
        timeout=timeout,
    )
    results = _dumped(out)
    if not isinstance(results, list):
        raise ChromiumError(f"measurements are not a list: {results!r:.200}")
    keys = [(page, width) for page in pages for width in widths]
    if len(results) != len(keys):
        raise ChromiumError(f"{len(results)} measurements for {len(keys)} frames")
    return [
        Measurement(
            page=page,
            width=width,
            viewport_width=r["viewport_width"],
            scroll_width=r["scroll_width"],
            content_height=r["content_height"],
            culprits=tuple(Element(**c) for c in r["culprits"]),
            needs=None if r["needs"] is None else Element(**r["needs"]),
        )
        for (page, width), r in zip(keys, results, strict=True)
    ]


def screenshot(page: Path, out: Path, width: int, height: int, *, timeout: float = TIMEOUT) -> None:
    """A PNG of `page` laid out at `width`, `height` pixels tall (use a Measurement's content_height)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    host = _host_page([(page.read_text(encoding="utf-8"), width, height)])
    # The window is cropped to the iframe, also below 500 px where the layout is 500 px wide.
    run_chromium([f"--window-size={width},{height}", f"--screenshot={out.resolve()}"], host, timeout=timeout)
    if not out.is_file():
        raise ChromiumError(f"chromium wrote no screenshot to {out}")


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) of a PNG, from its IHDR chunk."""
    head = path.read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


# A shop with every branding param set, so the pictures show the whole layout (footer included).
SAMPLE_CONF = {
    "shop_name": "Trailhead Outdoor",
    "support_email": "help@trailhead.example",
    "postal_address": "Trailhead Outdoor GmbH\nBergstraße 5\n79098 Freiburg",
    "order_url": "https://trailhead.example/account_history_info.php?order_id={order_id}",
    "brand_color": "#2f6b3a",
}


def render_previews(out: Path, language: str = "all", at: str = SAMPLE_AT) -> dict[tuple[str, str], Path]:
    """The sample emails as HTML, written by `python -m tools.preview`; by (kind, language)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cmd = [
        sys.executable,
        "-m",
        "tools.preview",
        "--language",
        language,
        "--at",
        at,
        "--out",
        str(out),
        "--conf",
        json.dumps(SAMPLE_CONF),
    ]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return preview_pages(out)


def preview_pages(out: Path) -> dict[tuple[str, str], Path]:
    """The `<kind>-<language>.html` files the preview wrote to `out`, by (kind, language), kinds in KINDS order."""
    pages = {}
    for path in out.glob("*.html"):
        kind, _, lang = path.stem.rpartition("-")
        pages[kind, lang] = path
    order = {kind: i for i, kind in enumerate(KINDS)}
    return dict(sorted(pages.items(), key=lambda item: (order.get(item[0][0], len(order)), item[0])))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--language", default="en", choices=LANGUAGES)
    parser.add_argument("--out", type=Path, default=SCREENSHOTS_DIR)
    args = parser.parse_args(argv)
    try:
        chromium_path()
    except ChromiumMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    if not has_arial_metrics():
        print(f"warning: Arial is laid out in a wider font here, widths are pessimistic; {FONT_HINT}", file=sys.stderr)
    widths = {"desktop": DESKTOP_WIDTH, "phone": PHONE_WIDTH}
    with tempfile.TemporaryDirectory(prefix="backorder-previews-") as tmp:
        pages = [path for (_, lang), path in render_previews(Path(tmp), args.language).items() if lang == args.language]
        started = time.monotonic()
        measured = measure(pages, list(widths.values()))
        jobs = [
            (m, args.out / f"{m.page.stem.rpartition('-')[0]}-{name}.png")
            for m in measured
            for name, width in widths.items()
            if m.width == width
        ]
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(lambda job: screenshot(job[0].page, job[1], job[0].width, job[0].content_height), jobs))
        for m, png in jobs:
            w, h = png_size(png)
            verdict = "OVERFLOWS: " + m.describe() if m.overflows else "no overflow"
            print(
                f"{png.relative_to(ROOT) if png.is_relative_to(ROOT) else png}  {w}x{h}  "
                f"{png.stat().st_size / 1024:.0f} KiB  {verdict}"
            )
    print(f"{len(jobs)} screenshots in {time.monotonic() - started:.1f} s")
    overflowing = [m for m in measured if m.overflows]
    if overflowing:
        print(f"{len(overflowing)} of {len(measured)} overflow their width", file=sys.stderr)
    return 1 if overflowing else 0


if __name__ == "__main__":
    raise SystemExit(main())
