"""docker-compose.yaml, validated by a real compose implementation (no Docker engine runs here).

Debian's `docker-compose` (installed by .ci/run) resolves the file with `.env.example` as its
environment: it must be valid, name every service docs/operations.md lists, give every Airflow container
the same JWT secret and execution API URL, mount `include/` and put it on PYTHONPATH, and pass
connections that are valid JSON after interpolation. Without the secrets it must refuse to start
and name what is missing. The demo shop that `shop-db-demo` loads is created on the machine's
real MariaDB the way that service does it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from include.backorder import pipeline
from include.backorder.config import DbConnection, RunContext, RunParams
from tests.conftest import server_database

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-init",
}
SERVICES = AIRFLOW_SERVICES | {"postgres", "redis", "shop-db", "shop-db-demo", "mailpit"}
LONG_RUNNING = SERVICES - {"airflow-init", "shop-db-demo"}


def _compose() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        reason = "docker-compose not installed: apt-get install -y --no-install-recommends docker-compose"
        if os.environ.get("BACKORDER_REQUIRE_SERVERS") == "1":
            pytest.fail(f"{reason} (BACKORDER_REQUIRE_SERVERS=1)")
        pytest.skip(reason)
    return found


def compose(*args: str, env_file: Path | None) -> subprocess.CompletedProcess[str]:
    """docker-compose on a copy of the project's compose files, so that a developer's .env never counts."""
    cmd = [_compose(), "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yaml")]
    if env_file is not None:
        cmd += ["--env-file", str(env_file)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "BACKORDER", "POSTGRES", "SHOP_DB"))}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=60, check=False)


@pytest.fixture(scope="module")
def resolved() -> dict:
    out = compose("config", env_file=ROOT / ".env.example")
    assert out.returncode == 0, out.stderr
    assert compose("config", "-q", env_file=ROOT / ".env.example").returncode == 0
    return yaml.safe_load(out.stdout)


def test_the_stack_has_every_service_and_the_docs_name_them(resolved) -> None:
    assert set(resolved["services"]) == SERVICES
    page = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    section = page[page.index("## The compose stack") :]
    missing = [name for name in sorted(SERVICES) if f"`{name}`" not in section]
    assert not missing, f"docs/operations.md's compose section does not name {missing}"


def test_every_airflow_container_shares_the_secret_the_api_url_and_the_project(resolved) -> None:
    services = resolved["services"]
    secrets = {services[s]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"] for s in AIRFLOW_SERVICES}
    urls = {services[s]["environment"]["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] for s in AIRFLOW_SERVICES}
    assert len(secrets) == 1 and len(urls) == 1
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["PYTHONPATH"] == "/opt/project"
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        mounts = {v["target"] if isinstance(v, dict) else v.split(":")[1] for v in services[name]["volumes"]}
        assert {"/opt/project/dags", "/opt/project/include", "/opt/project/plugins"} <= mounts
        kinds = {
            "AIRFLOW_CONN_SHOP_DB": "mysql",
            "AIRFLOW_CONN_SMTP_DEFAULT": "smtp",
            "AIRFLOW_CONN_BACKORDER_STATE_DB": "postgres",
        }
        for key, conn_type in kinds.items():
            assert json.loads(env[key])["conn_type"] == conn_type, key  # valid JSON after interpolation
    assert json.loads(services["airflow-worker"]["environment"]["AIRFLOW_CONN_SMTP_DEFAULT"])["host"] == "mailpit"


def test_long_running_services_have_health_checks_and_wait_for_what_they_need(resolved) -> None:
    services = resolved["services"]
    assert not [name for name in LONG_RUNNING if "healthcheck" not in services[name]]
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        needs = services[name]["depends_on"]
        assert needs["postgres"]["condition"] == needs["redis"]["condition"] == "service_healthy"
        assert needs["airflow-init"]["condition"] == "service_completed_successfully"
    assert services["shop-db-demo"]["depends_on"]["shop-db"]["condition"] == "service_healthy"


def test_without_the_secrets_the_stack_refuses_to_start_and_names_them(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("", encoding="utf-8")
    out = compose("config", "-q", env_file=empty)
    assert out.returncode != 0
    assert re.search(r"(POSTGRES_PASSWORD|AIRFLOW_JWT_SECRET|BACKORDER_SHOP_DB).*set it in \.env", out.stderr), (
        out.stderr
    )


def test_secrets_stay_out_of_git() -> None:
    assert ".env" in (ROOT / ".gitignore").read_text(encoding="utf-8").split()
    tracked = subprocess.run(["git", "ls-files", ".env", ".env.example"], cwd=ROOT, capture_output=True, text=True)
    assert tracked.stdout.split() == [".env.example"]


def test_the_demo_shop_loads_into_mariadb_as_shop_db_demo_does_and_only_once(tmp_path: Path) -> None:
    from tools import demo_shop

    with server_database("mariadb", "shop_db") as shop:
        url = shop.url()
        assert demo_shop.main(["--url", url, "--first-day", "2026-11-02"]) == 0
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            orders = conn.execute(sa.text("SELECT COUNT(*) FROM orders")).scalar_one()
        assert orders == 300
        assert demo_shop.main(["--url", url]) == 0  # a second start leaves the shop as it is
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT COUNT(*) FROM orders")).scalar_one() == orders
        engine.dispose()
        t = RunContext(datetime(2026, 11, 2, tzinfo=UTC))
        state = DbConnection("backorder_state_db", "sqlite", host=str(tmp_path / "state.sqlite"))
        run = pipeline.extract(shop, state, t, RunParams())
    # The pipeline reads it as it reads the same demo shop built in a SQLite file: the same lines and orders.
    sqlite_shop = DbConnection("shop_db", "sqlite", host=str(tmp_path / "shop.sqlite"))
    sqlite_engine = sa.create_engine(sqlite_shop.url())
    demo_shop.create_demo_shop(sqlite_engine, datetime(2026, 11, 2))
    sqlite_engine.dispose()
    other_state = DbConnection("backorder_state_db", "sqlite", host=str(tmp_path / "state-of-sqlite-shop.sqlite"))
    same = pipeline.extract(sqlite_shop, other_state, t, RunParams())
    assert (run.lines, run.orders) == (same.lines, same.orders)
    assert run.orders > 0, "the demo's first day has waiting orders"
