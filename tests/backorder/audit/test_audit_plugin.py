"""The plugin as the api-server serves it: loaded by Airflow's plugin loader from plugins/, mounted by
`airflow.api_fastapi.app.create_app`, guarded by Airflow's auth (simple auth manager, real JWTs)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.backorder.audit.conftest import DAG_ID, History, dag_run_id
from tests.conftest import ROOT, airflow_conn_json


@pytest.fixture(scope="module")
def metadata_db() -> None:
    """Airflow's own database (the access check looks up the DAG's team there); idempotent."""
    from airflow.utils import db

    db.initdb()


def _clear_plugin_caches() -> None:
    from airflow import plugins_manager

    for name in ("_get_plugins", "_get_ui_plugins", "get_fastapi_plugins", "get_flask_plugins"):
        getattr(plugins_manager, name).cache_clear()
    plugin = sys.modules.get("backorder_audit")
    if plugin is not None:
        plugin.audit_app.cache_clear()
        plugin.state_engine.cache_clear()


@pytest.fixture(scope="module")
def api_server(sqlite_history: History, metadata_db: None) -> Iterator[tuple[TestClient, Any]]:
    """Airflow's api-server app (core), with this project's plugins folder, and its auth manager."""
    from airflow import settings
    from airflow.api_fastapi.app import create_app, get_auth_manager, purge_cached_app

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "audit-page-test-secret-" + "0123456789abcdef" * 3)
        mp.setenv("AIRFLOW_CONN_BACKORDER_STATE_DB", airflow_conn_json(sqlite_history.state_db))
        mp.setattr(settings, "PLUGINS_FOLDER", str(ROOT / "plugins"))
        _clear_plugin_caches()
        try:
            app = create_app(apps="core")
            with TestClient(app) as client:
                yield client, get_auth_manager()
        finally:
            _clear_plugin_caches()
            purge_cached_app()


def token(auth_manager: Any, role: str | None) -> str:
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return str(auth_manager.generate_jwt(SimpleAuthManagerUser(username=f"u-{role}", role=role)))


def test_airflow_loads_the_plugin_with_its_app_and_views(api_server: tuple[TestClient, Any]) -> None:
    from airflow import plugins_manager

    assert plugins_manager.get_import_errors() == {}
    (plugin,) = [p for p in plugins_manager._get_plugins()[0] if p.name == "backorder_audit"]
    assert [(a["url_prefix"], a["name"]) for a in plugin.fastapi_apps] == [("/backorder", "Backorder notifications")]
    assert [(v["destination"], v["href"]) for v in plugin.external_views] == [
        ("nav", "/backorder/"),
        ("dag_run", "/backorder/dag-run?dag_id={DAG_ID}&run_id={RUN_ID}"),
    ]


PATHS = [
    "/backorder/",
    "/backorder/runs/1",
    "/backorder/runs/1/emails.csv",
    "/backorder/orders/1",
    "/backorder/search?q=ann@example.com",
    "/backorder/emails/1",
    "/backorder/emails/1/preview.html",
]


@pytest.mark.parametrize("path", PATHS)
def test_anonymous_and_unauthorised_requests_see_nothing(api_server: tuple[TestClient, Any], path: str) -> None:
    client, auth_manager = api_server
    client.cookies.clear()
    anonymous = client.get(path)
    assert anonymous.status_code == 401 and "customer" not in anonymous.text
    assert anonymous.headers["cache-control"] == "private, no-store"
    forged = client.get(path, headers={"Authorization": "Bearer not-a-token"})
    assert forged.status_code == 403 and "customer" not in forged.text
    no_role = client.get(path, headers={"Authorization": f"Bearer {token(auth_manager, None)}"})
    assert no_role.status_code == 403 and "customer" not in no_role.text


@pytest.mark.parametrize("path", PATHS)
def test_a_viewer_sees_the_pages_by_token_or_by_the_ui_cookie(api_server: tuple[TestClient, Any], path: str) -> None:
    client, auth_manager = api_server
    viewer = token(auth_manager, "viewer")
    client.cookies.clear()
    by_header = client.get(path, headers={"Authorization": f"Bearer {viewer}"})
    assert by_header.status_code == 200, by_header.text
    assert by_header.headers["cache-control"] == "private, no-store"
    client.cookies.set("_token", viewer)  # the UI's login cookie: pages in the UI's iframe
    try:
        assert client.get(path).status_code == 200
    finally:
        client.cookies.clear()


def test_the_dag_run_tab_opens_that_runs_emails(api_server: tuple[TestClient, Any], sqlite_history: History) -> None:
    client, auth_manager = api_server
    headers = {"Authorization": f"Bearer {token(auth_manager, 'viewer')}"}
    response = client.get("/backorder/dag-run", params={"dag_id": DAG_ID, "run_id": dag_run_id(2)}, headers=headers)
    assert response.status_code == 200 and str(response.url).endswith(f"/backorder/runs/{sqlite_history.run_ids[2]}")
    assert "customer5@example.com" in response.text and "periodic" in response.text


def test_without_include_on_the_path_the_plugin_logs_why_and_serves_nothing(tmp_path) -> None:
    """Airflow imports plugins/ in every component; without the project root on sys.path the page is
    left out with an error in the log, and nothing crashes."""
    import os
    import subprocess

    script = (
        "import importlib.util, logging, sys\n"
        "logging.basicConfig(level=logging.ERROR)\n"
        f"spec = importlib.util.spec_from_file_location('backorder_audit', {str(ROOT / 'plugins' / 'backorder_audit.py')!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "assert 'include' not in sys.modules and 'fastapi' not in sys.modules, 'imports cheaply'\n"
        "plugin = module.BackorderAuditPlugin()\n"
        "print(plugin.fastapi_apps, plugin.external_views)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[] []"
    logged = done.stdout + done.stderr  # Airflow's log goes to stdout
    assert "the page is not served: cannot import include.backorder.audit.app" in logged and "PYTHONPATH" in logged
