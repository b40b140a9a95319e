"""`make airflow`'s launcher end to end, as a user meets it.

`python -m tools.local_airflow` starts `airflow standalone` (SQLite metadata database),
the demo shop and the SMTP sink in a fresh home. The test waits for the block it prints, logs in
with the printed password through POST /auth/token, finds the DAG unpaused and today's scheduled
run successful, with every email the run records as sent kept as an .eml file. It then runs the
printed `CLI:` line as a user pastes it (bash, no AIRFLOW_* or PYTHONPATH of its own, the venv not on PATH):
it works on the running Airflow, sees the DAG's connections, and prints no graphviz warning. `--preview`
(`make preview-run`) shows what tomorrow's run would send, sends nothing, and leaves no run on the running
Airflow. Last it types Ctrl-C (SIGINT to the launcher) and checks that no process of it or of standalone's
session is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.airflow_stack import free_port, wait_for
from tests.conftest import ROOT

DAG_ID = "backorder_notifications"


class Launcher:
    """The launcher as a subprocess in a session of its own, its output collected line by line."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tools.local_airflow", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)  # its last lines
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def printed(self, pattern: str) -> re.Match[str] | None:
        if self.proc.poll() is not None and not re.search(pattern, self.output, re.M):
            raise AssertionError(f"the launcher exited with {self.proc.returncode}:\n{self.output}")
        return re.search(pattern, self.output, re.M)


def session(sid: int) -> list[str]:
    """`ps` lines of the processes in session `sid` (standalone's: it and all it started, tasks included)."""
    ps = subprocess.run(["ps", "-e", "-o", "sid=,pid=,stat=,args="], capture_output=True, text=True, check=True)
    return [line for line in ps.stdout.splitlines() if line.split()[0] == str(sid)]


def kill_session(sid: int | None) -> None:
    for line in session(sid) if sid is not None else []:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split()[1]), signal.SIGKILL)


class Api:
    """The REST API with a bearer token for the printed login."""

    def __init__(self, base: str, password: str) -> None:
        self.base = base
        self.token = self.call("POST", "/auth/token", {"username": "admin", "password": password})["access_token"]

    def call(self, method: str, path: str, body: object = None) -> Any:
        headers = {"Content-Type": "application/json"}
        if method != "POST" or path != "/auth/token":
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        with urllib.request.urlopen(urllib.request.Request(self.base + path, data, headers, method=method)) as r:
            return json.load(r)


def test_make_airflow_runs_the_dag_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    home, port, smtp_port = tmp_path / "home", free_port(), free_port()
    started = datetime.now(UTC)
    launcher = Launcher("--home", str(home), "--port", str(port), "--smtp-port", str(smtp_port))
    standalone_session: int | None = None
    try:
        wait_for(
            "the URL and login block", lambda: launcher.printed(r"^Ctrl-C stops everything\.$"), timeout=300, every=0.5
        )
        group = launcher.printed(r"process group (\d+)")
        assert group is not None, launcher.output
        standalone_session = int(group[1])  # standalone leads its own session, and its process group
        api, run = check_airflow(launcher, home, port, smtp_port, started)
        check_cli(launcher, home, run)
        check_preview(home, api, run)

        launcher.proc.send_signal(signal.SIGINT)  # what Ctrl-C in its terminal does
        assert launcher.wait(timeout=120) == 0, launcher.output
        assert "stopped: airflow standalone" in launcher.output
        assert "killing them" not in launcher.output, "standalone ended by itself, nothing had to be killed"
        assert session(launcher.proc.pid) == [], "nothing of the launcher's own session is left"
        # Processes that ended a moment ago may linger as zombies until init reaps them.
        wait_for("standalone's processes to be gone", lambda: session(standalone_session) == [], timeout=30, every=0.5)
        wait_for("the port to be closed", lambda: not answers(f"http://127.0.0.1:{port}/"), timeout=30, every=0.5)
    finally:
        kill_session(launcher.proc.pid)
        kill_session(standalone_session)
        launcher.proc.wait(timeout=30)


def midnight(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def check_airflow(
    launcher: Launcher, home: Path, port: int, smtp_port: int, started: datetime
) -> tuple[Api, dict[str, Any]]:
    """The printed block, the login, today's scheduled run and its emails, the audit page; returns the API and
    the run."""
    url = launcher.printed(r"^URL:\s+(\S+)$")
    login = launcher.printed(r"^login:\s+admin / (\S+)$")
    assert url is not None and login is not None, launcher.output
    assert url[1] == f"http://localhost:{port}/"
    assert f"SMTP sink on 127.0.0.1:{smtp_port}" in launcher.output
    # The UI's first page can take longer than one try's 5 s while the other components are still starting.
    wait_for("the UI's page", lambda: True if answers(f"http://127.0.0.1:{port}/") else None, timeout=60, every=1)
    api = Api(f"http://127.0.0.1:{port}", login[1])
    assert api.call("GET", f"/api/v2/dags/{DAG_ID}")["is_paused"] is False

    # Unpausing the @daily DAG (catchup off) creates a run for today, 00:00 UTC; it ends in success.
    runs = f"/api/v2/dags/{DAG_ID}/dagRuns"

    def scheduled_run_ended() -> dict[str, Any] | None:
        found = [r for r in api.call("GET", runs)["dag_runs"] if r["run_type"] == "scheduled"]
        return found[0] if found and found[0]["state"] in ("success", "failed") else None

    run = wait_for("the scheduled run to end", scheduled_run_ended, timeout=300, every=2)
    assert run["state"] == "success", run
    # Today's run: its T is 00:00 UTC of the day the DAG was unpaused, a day between the test's start and now
    # (the same day unless the test began before midnight: the test never depends on the hour it runs at).
    today = datetime.fromisoformat(run["logical_date"])
    assert today == midnight(today) and midnight(started) <= today <= datetime.now(UTC), (run, started)

    # Every email the run recorded as sent (its summary, write_snapshot_and_audit's XCom) is an .eml file in <home>/mail/.
    run_path = f"{runs}/{urllib.parse.quote(run['dag_run_id'])}"
    xcom = api.call("GET", f"{run_path}/taskInstances/write_snapshot_and_audit/xcomEntries/return_value")
    summary = xcom["value"] if isinstance(xcom["value"], dict) else json.loads(xcom["value"])
    sent = Counter(
        {(kind, lang): n for kind, by_lang in summary["counts"]["sent"].items() for lang, n in by_lang.items()}
    )
    files = Counter(
        (f.name.split("-")[0], f.stem.split("-")[-1]) for f in (home / "mail" / f"{today:%Y-%m-%d}").glob("*.eml")
    )
    assert sent and files == sent, (files, sent)
    assert {kind for kind, _ in files} == {"initial"}, "the first run tells every waiting order for the first time"

    # The audit page (plugins/backorder_audit.py) shows the run to the logged-in user, and to no one else.
    assert f"audit:     http://localhost:{port}/backorder/" in launcher.output
    status, html = fetch(f"http://127.0.0.1:{port}/backorder/", api.token)
    assert status == 200 and run["dag_run_id"] in html, html[:2000]
    assert fetch(f"http://127.0.0.1:{port}/backorder/", None)[0] == 401
    return api, run


def user_shell(command: str) -> subprocess.CompletedProcess[str]:
    """`command` in bash from the project's folder, as in a new terminal: nothing of Airflow's or this project's
    environment (the tests set AIRFLOW_HOME, AIRFLOW__*, PYTHONPATH), and the venv not on PATH."""
    env = {"HOME": os.environ.get("HOME", "/root"), "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    return subprocess.run(
        ["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )


def mail_files(home: Path) -> set[Path]:
    return set((home / "mail").rglob("*.eml"))


def check_cli(launcher: Launcher, home: Path, run: dict[str, Any]) -> None:
    """The printed CLI line works as printed, with the DAG's connections and without a graphviz warning."""
    cli = launcher.printed(r"^CLI:\s+(.+)$")
    assert cli is not None, launcher.output
    assert cli[1] == f"source {home / 'env'} && airflow dags list-runs {DAG_ID}", cli[1]
    listed = user_shell(cli[1])
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert run["dag_run_id"] in listed.stdout, listed.stdout
    assert "graphviz" not in listed.stdout + listed.stderr
    assert f"preview:   make preview-run T=<date> ARGS='--home {home}' (" in launcher.output
    source = cli[1].split(" && ")[0]
    got = user_shell(f"{source} && airflow connections get shop_db -o json")
    assert got.returncode == 0, got.stdout + got.stderr
    assert json.loads(got.stdout)[0]["host"] == str(home / "shop.sqlite"), got.stdout


def check_preview(home: Path, api: Api, run: dict[str, Any]) -> None:
    """--preview (make preview-run) at the next day: what it would send, nothing sent, no run on this Airflow
    (`airflow dags test` on the running Airflow's database races its scheduler: see tools.local_airflow.preview)."""
    tomorrow = datetime.fromisoformat(run["logical_date"]) + timedelta(days=1)
    emails = mail_files(home)
    cmd = [sys.executable, "-m", "tools.local_airflow", "--home", str(home), "--preview", f"{tomorrow:%Y-%m-%d}"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert (
        lines[0]
        == "preview: creating its metadata database in " + str(home / "preview") + " (airflow db migrate, once) ..."
    )
    assert any(line.startswith(f"preview of the run at T={tomorrow.isoformat()}, a dry run in ") for line in lines)
    assert f"  finish: run 2 at T={tomorrow.isoformat()} (dry run: no snapshot written)" in lines, done.stdout
    assert any(line.startswith("  classify: ") and line.endswith("(dry run)") for line in lines), done.stdout
    assert lines[-1].startswith(f"would be sent at T={tomorrow.isoformat()}: "), done.stdout
    assert "graphviz" not in done.stdout + done.stderr
    # Again: the first preview's records count as handled, and the answer is the same.
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "creating its metadata database" not in again.stdout
    assert again.stdout.splitlines()[-1] == lines[-1], again.stdout
    assert mail_files(home) == emails, "a preview sends nothing"
    runs = api.call("GET", f"/api/v2/dags/{DAG_ID}/dagRuns")["dag_runs"]
    assert not [r for r in runs if datetime.fromisoformat(r["logical_date"]) == tomorrow], "not on this Airflow"


def fetch(url: str, token: str | None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return bool(r.status == 200)
    except OSError:
        return False
