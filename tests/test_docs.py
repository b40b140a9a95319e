"""The README and docs/*.md hold together: every relative link leads somewhere, every `make` target they name exists.

A link (or image) to a file of the checkout must name one that exists; a link with a `#fragment` to a
Markdown page must name one of its headings as GitHub makes them into anchors (lower case, punctuation
dropped, spaces to hyphens, `-1`, `-2` for repeats) or an explicit `<a id>`. Links to other sites are not
followed (no network). `make <target>` in code (a fenced block or an inline code span) must be a rule of
the Makefile. Links and headings inside code are not links or headings.
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAKEFILE = ROOT / "Makefile"

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.M)
HTML_TARGET = re.compile(r"<(?:a|img)\b[^>]*?\b(?:href|src)=\"([^\"]+)\"", re.I)
HTML_ANCHOR = re.compile(r"<a\b[^>]*?\b(?:id|name)=\"([^\"]+)\"", re.I)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:|^//")
SHELL_PUNCTUATION = "&;|()"
RULE = re.compile(r"^([^\s:#=$][^:=]*?)\s*::?(?!=)")


def pages() -> list[Path]:
    """The pages checked: the README and every Markdown page directly under docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass(frozen=True)
class Page:
    """A Markdown page split into its prose (code removed) and its code (fenced blocks and inline spans)."""

    path: Path
    prose_lines: list[str]  # each line of the page, with fenced blocks blanked and code spans emptied
    code: list[str]  # the fenced blocks' lines and the inline code spans

    @classmethod
    def read(cls, path: Path) -> Page:
        prose: list[str] = []
        code: list[str] = []
        fence = ""
        for line in path.read_text(encoding="utf-8").splitlines():
            opening = FENCE.match(line)
            if fence:
                if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                    fence = ""
                else:
                    code.append(line)
                prose.append("")
            elif opening:
                fence = opening.group(1)
                prose.append("")
            else:
                prose.append(line)
        text = "\n".join(prose)
        code += [m.group(2) for m in CODE_SPAN.finditer(text)]
        # a code span keeps its place and its line breaks, so that line numbers stay the page's
        emptied = CODE_SPAN.sub(lambda m: m.group(1) + re.sub(r"[^\n]", "x", m.group(2)) + m.group(1), text)
        return cls(path, emptied.split("\n"), code)

    def targets(self) -> Iterator[str]:
        """Every link, image, reference definition and HTML href/src target in the prose."""
        text = "\n".join(self.prose_lines)
        for pattern in (LINK, REFERENCE, HTML_TARGET):
            yield from (m.group(1) for m in pattern.finditer(text))


def heading_text(raw: str) -> str:
    """A heading's text as GitHub renders it: code kept as written, links and images as their text, no markup."""
    spans: list[str] = []

    def keep(m: re.Match[str]) -> str:
        spans.append(m.group(2).strip())
        return f"\0{len(spans) - 1}\0"

    text = CODE_SPAN.sub(keep, raw)
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"<[^>]+>", "", text)
    text = re.sub(r"\*+|~~|(?<![^\W_])_+|_+(?![^\W_])", "", text)
    return re.sub(r"\0(\d+)\0", lambda m: spans[int(m.group(1))], text)


def slug(text: str) -> str:
    """GitHub's anchor for a heading's text (github-slugger): lower case, punctuation dropped, spaces to hyphens."""
    kept = "".join(
        ch for ch in text.strip().lower() if ch.isalnum() or ch in "-_ " or unicodedata.category(ch).startswith("M")
    )
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives a page: one per heading (repeats get -1, -2, ...) and each explicit <a id>."""
    page = Page.read(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    seen: dict[str, int] = {}
    found: set[str] = set()
    for number, line in enumerate(page.prose_lines):
        # a heading is found in the prose (no code blocks) and read from the page's own line (its code spans)
        heading = ATX_HEADING.match(line) and ATX_HEADING.match(lines[number])
        if not heading:
            continue
        base = slug(heading_text(heading.group(2)))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    found.update(m.group(1) for m in HTML_ANCHOR.finditer("\n".join(page.prose_lines)))
    return found


def broken_links(path: Path) -> list[str]:
    """What is wrong with the page's relative links, one line each (empty: nothing)."""
    problems = []
    for target in Page.read(path).targets():
        if SCHEME.match(target):
            continue
        file_part, _, fragment = target.partition("#")
        linked = (path.parent / unquote(file_part)).resolve() if file_part else path
        where = f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}: ({target})"
        if not linked.exists():
            problems.append(f"{where}: no such file {file_part}")
        elif fragment and linked.suffix == ".md" and unquote(fragment) not in anchors(linked):
            problems.append(f"{where}: no heading or anchor #{fragment} in {linked.name}")
    return problems


def make_targets(makefile: Path = MAKEFILE) -> set[str]:
    """The rules a Makefile defines (variable assignments and pattern rules left out)."""
    targets: set[str] = set()
    for line in makefile.read_text(encoding="utf-8").splitlines():
        rule = RULE.match(line)
        if rule and not line.startswith("\t"):
            targets.update(name for name in rule.group(1).split() if "$" not in name and "%" not in name)
    return targets


def named_make_targets(path: Path) -> set[str]:
    """The targets of every `make ...` command in the page's code."""
    named: set[str] = set()
    for code in Page.read(path).code:
        for line in code.splitlines():
            command: list[str] = []
            for word in [*_shell_words(line), ";"]:
                if word and set(word) <= set(SHELL_PUNCTUATION):  # `&&`, `;`, `|`, `(`: a command ends
                    if command[:1] == ["make"]:
                        named.update(w for w in command[1:] if "=" not in w and not w.startswith("-"))
                    command = []
                else:
                    command.append(word)
    return named


def _shell_words(line: str) -> list[str]:
    """A line's words as a shell splits them, comments dropped, `&&` `;` `|` `(` `)` as words of their own."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=SHELL_PUNCTUATION)
    lexer.whitespace_split = True
    try:
        return list(lexer)
    except ValueError:  # not shell (an unbalanced quote): plain words
        return line.split()


def test_every_relative_link_and_anchor_resolves() -> None:
    problems = [p for page in pages() for p in broken_links(page)]
    assert problems == [], "broken links:\n" + "\n".join(problems)


def test_every_make_target_the_docs_name_is_in_the_makefile() -> None:
    targets = make_targets()
    assert {"demo", "test", "airflow", "preview", "screenshots", "bench"} <= targets, "the Makefile is read"
    missing = [
        f"{page.relative_to(ROOT)}: make {name}"
        for page in pages()
        for name in sorted(named_make_targets(page))
        if name not in targets
    ]
    assert missing == [], "no such Makefile target:\n" + "\n".join(missing)


def test_the_pages_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in pages()}
    assert {"README.md", "docs/testing.md", "docs/architecture.md", "docs/backfills.md"} <= names


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        pytest.param("Airflow on this machine: make airflow", "airflow-on-this-machine-make-airflow", id="colon"),
        pytest.param("Settings: the [backorder] section", "settings-the-backorder-section", id="brackets"),
        pytest.param("Reading a run's log", "reading-a-runs-log", id="apostrophe"),
        pytest.param("CI: `.ci/run`", "ci-cirun", id="code-span"),
        pytest.param("The `catch_up_silently` param", "the-catch_up_silently-param", id="underscores-kept"),
        pytest.param("Limits (what is not built yet)", "limits-what-is-not-built-yet", id="parentheses"),
        pytest.param("**Bold** and _emphasis_", "bold-and-emphasis", id="emphasis"),
        pytest.param("See [the README](../README.md)", "see-the-readme", id="link"),
        pytest.param("a - b", "a---b", id="spaced-hyphen"),
        pytest.param("Straße für Ärger", "straße-für-ärger", id="non-ascii"),
    ],
)
def test_anchors_are_githubs(heading: str, anchor: str) -> None:
    assert slug(heading_text(heading)) == anchor


def test_the_checks_find_what_they_are_for(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text('# Other\n\n## Twice\n\n## Twice\n\n<a id="here"></a>\n', encoding="utf-8")
    (tmp_path / "Makefile").write_text(
        ".PHONY: real\nVAR := x\nSIZE ?= quick\n$(PY):\n\tpython -m venv x\nreal: $(PY)\n\techo a: b\n",
        encoding="utf-8",
    )
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[fine](other.md) [fine too](other.md#twice-1) [explicit](other.md#here) [self](#page) ![pic](other.md)\n"
        "[web](https://example.com/x#y) [mail](mailto:a@b.example)\n"
        "[gone](missing.md) [no anchor](other.md#nowhere) [no self anchor](#nowhere)\n\n"
        "`[in code](missing-too.md)` and `make real SIZE=full` and `make nonesuch`\n\n"
        '```sh\n[also code](missing-three.md)\nmake real ARGS="--db postgresql://u@h/db"   # a comment: make x\n'
        "make other && make -j2 third\n```\n",
        encoding="utf-8",
    )
    assert [p.split(": ", 2)[2] for p in broken_links(page)] == [
        "no such file missing.md",
        "no heading or anchor #nowhere in other.md",
        "no heading or anchor #nowhere in page.md",
    ]
    assert make_targets(tmp_path / "Makefile") == {".PHONY", "real"}
    assert named_make_targets(page) == {"real", "nonesuch", "other", "third"}
