"""A real Airflow for integration tests: `airflow standalone` (api-server, scheduler, dag-processor,
triggerer; LocalExecutor) in its own home, started and stopped by the test. Its metadata database
is a fresh PostgreSQL database: with SQLite, `airflow backfill create` beside a running scheduler
fails with "database is locked".
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from include.backorder.config import DbConnection
from tests.conftest import ROOT
from tools.local_airflow import stop_session

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def airflow_env(home: Path, port: int, metadata_db: str, connections: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))}
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db,
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "PYTHONPATH": str(ROOT),
            # standalone starts its components as `airflow ...` from PATH
            "PATH": f"{Path(AIRFLOW).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    env.update({f"AIRFLOW_CONN_{name.upper()}": value for name, value in connections.items()})
    return env


def postgres_url(db: DbConnection) -> str:
    """A PostgreSQL database (tests.conftest.server_database) as Airflow's metadata database URL."""
    return f"postgresql+psycopg2://{db.login}@{db.host}:{db.port}/{db.schema}"


def pipeline_connections(shop: Path, state: str, smtp_port: int) -> dict[str, str]:
    """The DAG's three connections: a SQLite shop, the state database (JSON), the SMTP sink on loopback."""
    smtp = {"disable_ssl": True, "disable_tls": True, "from_email": "shop@example.com"}
    return {
        "shop_db": json.dumps({"conn_type": "sqlite", "host": str(shop)}),
        "backorder_state_db": state,
        "smtp_default": json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": smtp_port, "extra": smtp}),
    }


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> str:
    result = subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise AssertionError(f"airflow {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def wait_for(what: str, check: Callable[[], T | None], timeout: float, every: float = 2.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@contextmanager
def standalone(env: dict[str, str], log_file: Path) -> Iterator[None]:
    """Start `airflow standalone`, wait until its API answers, stop it and all its children after."""
    port = env["AIRFLOW__API__PORT"]
    with log_file.open("w") as log:
        proc = subprocess.Popen(
            [AIRFLOW, "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"airflow standalone exited with {proc.returncode}; see {log_file}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2) as r:
                return bool(json.load(r)["scheduler"]["status"] == "healthy")
        except (OSError, ValueError, KeyError):
            return False

    try:
        wait_for("airflow standalone to answer", healthy, timeout=180)
        yield
    finally:
        left = stop_session(proc)
        assert left == 0, f"{left} processes of airflow standalone had to be killed; see {log_file}"


class RestApi:
    """Airflow's REST API (/api/v2) as the simple auth manager's admin: a bearer token from /auth/token."""

    def __init__(self, home: Path, port: int | str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        passwords = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())
        body = json.dumps({"username": "admin", "password": passwords["admin"]}).encode()
        request = urllib.request.Request(f"{self.base}/auth/token", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as r:
            self.token = json.load(r)["access_token"]

    def call(self, method: str, path: str, body: object = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {
            "Authorization": f"Bearer {self.token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        request = urllib.request.Request(f"{self.base}{path}", data, headers, method=method)
        with urllib.request.urlopen(request, timeout=60) as r:
            return json.load(r)

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: object) -> Any:
        return self.call("POST", path, body)
