"""What the project's commands and tools write into the checkout stays out of git.

`.ci/run` fails when the tests changed the checkout; these are the places that are written on purpose
and must therefore be ignored: `make demo`, `make preview`, `make airflow`, the venv and the tools' caches.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import ROOT

WRITTEN = [
    ".demo/shop.sqlite",  # make demo (tools/demo.py --work-dir)
    "previews/initial-en.eml",  # make preview (tools/preview.py --out)
    ".airflow/airflow.cfg",  # make airflow (tools/local_airflow.py --home)
    ".airflow/env",  # its settings and connections for the CLI (passwords too)
    ".venv/bin/python",  # the Makefile's venv
    ".pytest_cache/README.md",
    ".mypy_cache/3.11/cache.db",
    ".ruff_cache/CACHEDIR.TAG",
    "include/backorder/__pycache__/state.cpython-311.pyc",
    ".env",  # the compose stack's secrets
]


@pytest.mark.parametrize("path", WRITTEN)
def test_what_the_tools_write_is_ignored_by_git(path: str) -> None:
    checked = subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=ROOT, check=False)
    assert checked.returncode == 0, f"{path} is not in .gitignore"


def test_the_project_s_own_files_are_not_ignored() -> None:
    """The ignore rules are not so wide that they hide sources, docs or the golden files."""
    kept = [
        "include/backorder/state/tables.py",
        "include/backorder/audit/templates/index.html",
        "tools/demo.py",
        "docs/testing.md",
        "tests/backorder/golden/en/initial.html",
        ".env.example",
        "docs/screenshots",
        "bench/results",
    ]
    checked = subprocess.run(["git", "check-ignore", "--no-index", *kept], cwd=ROOT, capture_output=True, text=True)
    assert checked.stdout.split() == []
