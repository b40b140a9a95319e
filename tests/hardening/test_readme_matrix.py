"""docs/hardening.md ("What it withstands", once a README section) is the hardening tables, word for word."""

from __future__ import annotations

from tests.hardening import matrix


def test_docs_hardening_md_lists_every_case() -> None:
    expected = matrix.markdown()
    actual = matrix.doc_section(matrix.DOC.read_text())
    assert actual == expected, "docs/hardening.md is stale: run python -m tests.hardening.matrix --write"


def test_every_case_has_a_unique_id_and_words() -> None:
    for module in matrix.surfaces():
        ids = [case.id for case in module.CASES]
        assert len(ids) == len(set(ids)), f"{module.__name__}: duplicate case ids"
        for case in module.CASES:
            assert case.given.strip() and case.expect.strip(), f"{module.__name__}:{case.id} says nothing"
