"""Languages: the template folders are the languages; adding one is adding a folder named by a Babel locale."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from include.backorder import KINDS, LANGUAGES
from include.backorder.classify import template_language
from tests.conftest import ROOT


def test_the_languages_are_the_template_folders() -> None:
    folders = sorted(p.name for p in (ROOT / "include" / "templates").iterdir() if p.is_dir() and p.name[0] != "_")
    assert list(LANGUAGES) == folders and {"de", "en"} <= set(folders)


@pytest.mark.parametrize(
    ("stored", "language"),
    [
        ("de", "de"),
        ("DE", "de"),
        ("german", "de"),
        ("Deutsch", "de"),
        ("en", "en"),
        ("english", "en"),
        ("English ", "en"),
        ("fr", "en"),
        ("", "en"),
        (None, "en"),
        ("zz", "en"),
        ("C", "en"),
        ("1", "en"),
    ],
)
def test_what_shops_store_maps_to_a_template_language(stored: object, language: str) -> None:
    assert template_language(stored, "en") == language


@pytest.mark.parametrize(
    ("stored", "language"),
    [
        ("de-AT", "de"),
        ("de_DE", "de"),
        ("de-CH", "de"),
        ("de-DE", "de"),
        ("en-GB", "en"),
        ("en_US.UTF-8", "en"),
        ("de_DE.ISO-8859-1", "de"),
        ("de_DE@euro", "de"),
        ("de-Latn-DE", "de"),
        ("ger", "de"),
        ("deu", "de"),
        ("de-XX", "de"),
        ("EN-us", "en"),
        ("fr-CH", None),
        ("zz-DE", None),
        ("de__DE", None),
    ],
)
def test_regional_locales_map_to_their_language_by_babel(stored: str, language: str | None) -> None:
    """Finding 11: 'de-AT' or 'en-GB' got the default language. Asked with either default, a locale
    of a language with templates gives that language, any other value the default."""
    for default in LANGUAGES:
        assert template_language(stored, default) == (language or default)


def test_adding_a_language_is_adding_a_template_folder(tmp_path: Path) -> None:
    """A copy of the project with include/templates/fr/ (copied from en/, one subject translated)."""
    shutil.copytree(ROOT / "include", tmp_path / "include", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "dags", tmp_path / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    french = tmp_path / "include" / "templates" / "fr"
    shutil.copytree(tmp_path / "include" / "templates" / "en", french)
    (french / "initial.subject.txt").write_text(
        "Votre commande {{ order_id }} : certains articles arrivent plus tard\n"
    )
    probe = """
import json
from datetime import UTC, datetime
from include.backorder import LANGUAGES
from include.backorder.classify import template_language
from include.backorder.config import RunParams
from include.backorder.render import ListedLine, Notification, Renderer
line = ListedLine("Tente", None, 1.0, datetime(2026, 12, 17))
notification = Notification(1, "initial", "fr", "a@example.com", "Anne", datetime(2026, 11, 23, tzinfo=UTC), (line,), 2)
subject, text, html = Renderer().render_parts(notification)
print(json.dumps({"languages": LANGUAGES, "french": template_language("Français", "en"),
                  "default_ok": RunParams(default_language="fr").default_language, "subject": subject,
                  "date_in_text": "17 déc. 2026" in text}))
"""
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {
        "languages": ["de", "en", "fr"],
        "french": "fr",
        "default_ok": "fr",
        "subject": "Votre commande 1 : certains articles arrivent plus tard",
        "date_in_text": True,
    }
    # The DAG's trigger form offers them (its params are the library's).
    form = (
        "from airflow.dag_processing.dagbag import DagBag\n"
        "dag = DagBag('dags').dags['backorder_notifications']\n"
        "print(dag.params.get_param('default_language').schema['enum'])\n"
    )
    dag_languages = subprocess.run(
        [sys.executable, "-c", form], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert dag_languages.strip().splitlines()[-1] == "['de', 'en', 'fr']"


def test_every_language_has_every_template() -> None:
    for language in LANGUAGES:
        names = {p.name for p in (ROOT / "include" / "templates" / language).iterdir()}
        for kind in KINDS:
            assert {f"{kind}.subject.txt", f"{kind}.txt", f"{kind}.html"} <= names, language
        assert {"_lines.txt", "_lines.html", "_footer.txt", "_footer.html"} <= names, language


def test_a_regional_template_folder_wins_over_its_language(monkeypatch: pytest.MonkeyPatch) -> None:
    """With folders `pt` and `pt_BR`, 'pt-BR' gets pt_BR and 'pt-PT' gets pt (no list of regions)."""
    from babel import Locale

    from include.backorder import classify

    monkeypatch.setattr(classify, "_TEMPLATE_LOCALES", {c: Locale.parse(c) for c in ("en", "pt", "pt_BR")})
    assert [template_language(v, "en") for v in ("pt-BR", "pt_BR.UTF-8", "pt-PT", "pt", "PT")] == [
        "pt_BR",
        "pt_BR",
        "pt",
        "pt",
        "pt",
    ]
