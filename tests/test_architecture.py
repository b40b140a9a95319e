"""The rooms of the house, read from the source (AST, no imports): what may import what, and what production needs.

- What a production Airflow image runs (include/, dags/, plugins/) imports nothing of tools/ (run from a checkout).
- Of include/, only the adapter include/backorder/airflow.py imports Airflow, and no other module of include/
  imports the adapter: the library imports and tests without Airflow.
- The DAG file and the plugin name no DAG id, connection id or Variable of their own: they take them from the
  adapter, so that each is written once.
- requirements.txt (the production image) holds no package only tests, lint, profiling or the demo need.
- No Python file opts out of ruff format (`# fmt: skip`, `# fmt: off`): its output is the style.
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_testing_doc import _imports, _strings

ADAPTER = "include/backorder/airflow.py"
DAG = "dags/backorder_notifications.py"
PLUGIN = "plugins/backorder_audit.py"
DEV_ONLY = {"aiosmtpd", "pytest", "ruff", "mypy", "pandas-stubs", "py-spy", "asyncpg"}


def _modules(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


@functools.cache
def _imported(path: Path) -> frozenset[str]:
    """The modules a file imports, anywhere in it (inside functions too): `from a.b import c` gives a.b."""
    return frozenset(_imports(ast.parse(path.read_text(encoding="utf-8"))))


def _under(name: str, package: str) -> bool:
    return name == package or name.startswith(f"{package}.")


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_what_production_runs_imports_nothing_of_tools() -> None:
    found = {
        _relative(p): sorted(n for n in _imported(p) if _under(n, "tools"))
        for p in _modules("include", "dags", "plugins")
    }
    assert {path: names for path, names in found.items() if names} == {}


def test_of_include_only_the_adapter_imports_airflow() -> None:
    found = {_relative(p): sorted(n for n in _imported(p) if _under(n, "airflow")) for p in _modules("include")}
    importers = {path for path, names in found.items() if names}
    assert importers == {ADAPTER}, "import Airflow in include/backorder/airflow.py only (the library's one adapter)"


def test_no_module_of_include_imports_the_adapter() -> None:
    found = [_relative(p) for p in _modules("include") if "include.backorder.airflow" in _imported(p)]
    assert found == [], "the adapter is for dags/ and plugins/; the library takes plain values"


def _text_constants(path: Path) -> dict[str, str]:
    """A module's top-level text constants (`NAME = "text"`), read from its source."""
    return {
        target.id: node.value.value
        for node in ast.parse(path.read_text(encoding="utf-8")).body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def _adapter_names() -> dict[str, str]:
    """The names of the DAG's contract the adapter defines (its module-level text constants), read from its source."""
    wanted = {"DAG_ID", "SHOP_CONN_ID", "STATE_CONN_ID", "SMTP_CONN_ID", "UNSUBSCRIBE_SECRET_VARIABLE"}
    found = {name: text for name, text in _text_constants(ROOT / ADAPTER).items() if name in wanted}
    assert set(found) == wanted
    return found


def test_the_adapter_holds_the_dags_contract() -> None:
    assert _adapter_names() == {
        "DAG_ID": "backorder_notifications",
        "SHOP_CONN_ID": "shop_db",
        "STATE_CONN_ID": "backorder_state_db",
        "SMTP_CONN_ID": "smtp_default",
        "UNSUBSCRIBE_SECRET_VARIABLE": "backorder_unsubscribe_secret",
    }


@pytest.mark.parametrize("path", [DAG, PLUGIN])
def test_the_dag_and_the_plugin_take_their_names_from_the_adapter(path: str) -> None:
    names = _adapter_names().values()
    own = [
        text
        for text in _strings(ast.parse((ROOT / path).read_text(encoding="utf-8")))
        for name in names
        if re.search(rf"\b{name}\b", text)
    ]
    assert own == [], f"{path} names these itself; import them from {ADAPTER}"
    assert "include.backorder.airflow" in _imported(ROOT / path)


def _requirements(name: str) -> set[str]:
    """The package names of a requirements file (lower case, as pip compares them)."""
    lines = (line.split("#")[0].strip() for line in (ROOT / name).read_text(encoding="utf-8").splitlines())
    return {re.split(r"[\s<>=!~;\[]", line)[0].lower().replace("_", "-") for line in lines if line}


def test_requirements_hold_no_dev_only_package() -> None:
    assert _requirements("requirements.txt") & DEV_ONLY == set()
    assert _requirements("requirements-dev.txt") >= DEV_ONLY


def test_no_file_opts_out_of_the_formatter() -> None:
    """ruff format's output is the style: no `# fmt: skip` / `# fmt: off` in the project's Python."""
    marker = re.compile(r"#\s*fmt:\s*(?:skip|off)\b")
    folders = ("include", "dags", "plugins", "tools", "tests", "bench", "docs")
    found = [
        f"{_relative(p)}:{n}"
        for p in _modules(*folders)
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if marker.search(line) and p.name != "test_architecture.py"
    ]
    assert found == []


def test_the_tools_name_the_adapters_dag_id() -> None:
    """tools/demo.py keeps a copy of the DAG id (importing the adapter would set up Airflow's logging in the demo)."""
    assert (
        _text_constants(ROOT / "tools" / "demo.py")["DAG_ID"] == _adapter_names()["DAG_ID"] == "backorder_notifications"
    )
