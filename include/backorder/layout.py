"""The HTML layout's CSS, inlined once into the templates as they load, with the shop's branding.

Mail clients ignore most `<style>` sheets, so every rule of `include/templates/_email.css`
must end up in `style=""` attributes. css-inline does that to the template *sources* when
Jinja2 loads them (once per Renderer, not per message): Jinja2 tags are swapped for placeholders
the HTML parser leaves alone (`{% ... %}` becomes a comment, `{{ ... }}` a bare word), the sheet is
inlined, and the tags are put back. The branding colour enters the sheet as the CSS variable
`--brand`, resolved by css-inline. `@media` rules (the phone layout) stay in a `<style>` in the
layout's head, where the clients that honour them find them.

Rules for templates that this relies on: no Jinja2 inside a `style` attribute or inside a tag's
attribute list (a tag inside an attribute *value* is fine), and tables say `<thead>`/`<tbody>`
themselves so a loop never straddles one the parser adds. A template that breaks them fails
to load with a TemplateError naming it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import css_inline
from jinja2 import BaseLoader, Environment, FileSystemLoader, TemplateError

from include.backorder.config import Branding

STYLESHEET = "_email.css"

_STATIC_INCLUDE_RE = re.compile(r"\{%\s*include\s+\"([^\"]+)\"\s*%\}")
_JINJA_RE = re.compile(r"\{%.*?%\}|\{\{.*?\}\}|\{#.*?#\}", re.DOTALL)


def stylesheet(templates_dir: Path, branding: Branding) -> str:
    """The layout's CSS with the branding colour as `--brand`."""
    sheet = (templates_dir / STYLESHEET).read_text(encoding="utf-8")
    return f":root {{ --brand: {branding.brand_color}; }}\n{sheet}"


def inline_template(source: str, css: str, name: str) -> str:
    """`source` (a Jinja2 HTML template) with `css` inlined into its style attributes."""
    tags: list[str] = []

    def hide(match: re.Match[str]) -> str:
        tags.append(match.group(0))
        n = len(tags) - 1
        return f"<!--JINJA{n}-->" if match.group(0).startswith("{%") else f"JINJA{n}X"

    hidden = _JINJA_RE.sub(hide, source)
    if "<html" in hidden:
        inlined = css_inline.inline(hidden, extra_css=css, keep_at_rules=True, resolve_css_variables=True)
    else:
        inlined = css_inline.inline_fragment(hidden, css, resolve_css_variables=True)
    restored = {"n": 0}

    def show(match: re.Match[str]) -> str:
        restored["n"] += 1
        return tags[int(match.group(1) or match.group(2))]

    result = re.sub(r"<!--JINJA(\d+)-->|JINJA(\d+)X", show, inlined)
    if restored["n"] != len(tags):
        raise TemplateError(
            f"{name}: {len(tags) - restored['n']} Jinja2 tag(s) lost while inlining CSS; keep tags out of"
            " attribute lists and style attributes, and write <thead>/<tbody> in tables"
        )
    return result


class InliningLoader(BaseLoader):
    """A FileSystemLoader whose `.html` templates come with the layout's CSS inlined, and whose
    includes of a fixed name (`{% include "en/_lines.txt" %}`) are put in place as the template
    loads: rendered, such an include costs a new context per message, a fifth of Jinja2's time."""

    def __init__(self, templates_dir: Path, branding: Branding) -> None:
        self.files = FileSystemLoader(templates_dir)
        self.css = stylesheet(templates_dir, branding)

    def get_source(self, environment: Environment, template: str) -> tuple[str, str | None, Callable[[], bool] | None]:
        source, filename, uptodate = self.files.get_source(environment, template)
        source = self._with_includes(environment, source, (template,))
        if template.endswith(".html"):
            source = inline_template(source, self.css, template)
        return source, filename, uptodate

    def _with_includes(self, environment: Environment, source: str, chain: tuple[str, ...]) -> str:
        def include(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in chain:
                raise TemplateError(f"{' -> '.join(chain)} -> {name}: a template includes itself")
            inner, _, _ = self.files.get_source(environment, name)
            # Without its last newline: the one after the include tag takes its place, and
            # trim_blocks treats it as it treated the include's output.
            return self._with_includes(environment, inner.removesuffix("\n"), (*chain, name))

        return _STATIC_INCLUDE_RE.sub(include, source)
