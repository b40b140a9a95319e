"""`make airflow`: a local Airflow running this project's DAG on the demo shop, emails caught on loopback.

It runs `airflow standalone` (api-server, scheduler, dag-processor, triggerer; LocalExecutor) from
this venv as a subprocess in a session and process group of its own, with everything in one home folder (default
`.airflow/`): the metadata database (SQLite, unless `--db` names another, e.g. PostgreSQL), the
demo shop (`shop.sqlite`, created once), the pipeline's state database (`state.sqlite`), the emails
(`mail/`, as `.eml` files from an SMTP sink running in this process) and standalone's output
(`standalone.log`). The connections `shop_db`, `backorder_state_db` and `smtp_default` are given as
`AIRFLOW_CONN_*` JSON. Every setting standalone is started with (AIRFLOW_HOME, the AIRFLOW__* options, the
connections, PYTHONPATH) is also written to `env` in the home, so that the `airflow` CLI in another shell
sees the same Airflow: `source .airflow/env && airflow dags list-runs backorder_notifications`. It waits
until the scheduler is healthy and the DAG is parsed and unpaused, prints the URL and the login, and stops
everything on Ctrl-C (SIGINT) or SIGTERM. The home is kept between starts (runs, state and emails survive a
restart); `--fresh` wipes it first.

`--preview T` (`make preview-run T=2026-12-01`) starts no Airflow: it shows what the run at T would send,
as a dry run of the DAG on the home's shop and state (see `preview`).

It does not import Airflow: it runs the `airflow` command line next to this Python.

Usage: python -m tools.local_airflow [--port 8080] [--db URL] [--smtp-port 1025]
                                                 [--home .airflow] [--fresh]
       python -m tools.local_airflow --preview [T] [--conf JSON] [--home .airflow]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import sqlalchemy as sa

from include.backorder import state as st
from tools import demo
from tools.demo_shop import create_demo_shop
from tools.smtp_sink import MailSink

ROOT = Path(__file__).resolve().parents[1]
DAG_ID = demo.DAG_ID
DEFAULT_HOME = ROOT / ".airflow"
AIRFLOW = Path(sys.executable).with_name("airflow")
PASSWORD_FILE = "simple_auth_manager_passwords.json.generated"
POSTGRES_EXAMPLE = "postgresql+psycopg2://postgres@127.0.0.1:5432/airflow_local"
READY_TIMEOUT = 300.0  # seconds for standalone to become healthy and parse the DAG
STOP_TIMEOUT = 30.0  # seconds for standalone's processes to end after SIGTERM, before SIGKILL
# Every `airflow dags ...` command imports airflow.utils.dot_renderer, which warns at import when the graphviz
# package is missing; only `airflow dags show` renders graphs, and nothing here needs it.
QUIET_GRAPHVIZ = "ignore:Could not import graphviz:UserWarning"
T = TypeVar("T")


@dataclass(frozen=True)
class Home:
    """Where everything of the local Airflow lives."""

    path: Path

    @property
    def shop(self) -> Path:
        return self.path / "shop.sqlite"

    @property
    def state(self) -> Path:
        return self.path / "state.sqlite"

    @property
    def mail(self) -> Path:
        return self.path / "mail"

    @property
    def log(self) -> Path:
        return self.path / "standalone.log"

    @property
    def passwords(self) -> Path:
        return self.path / PASSWORD_FILE

    @property
    def env(self) -> Path:
        return self.path / "env"


def say(line: str) -> None:
    print(line, flush=True)


def shown(path: Path) -> str:
    """A path as the user best reads it: relative to the current folder when inside it."""
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8080, help="the UI and REST API's port (default 8080)")
    parser.add_argument(
        "--db",
        default="",
        help=f"SQLAlchemy URL of Airflow's metadata database, e.g. "
        f"{POSTGRES_EXAMPLE} (created if missing); default: SQLite in the home",
    )
    parser.add_argument("--smtp-port", type=int, default=1025, help="the SMTP sink's port (default 1025)")
    parser.add_argument(
        "--home",
        type=Path,
        default=DEFAULT_HOME,
        help="AIRFLOW_HOME and everything else (default .airflow/ in the project); kept between starts",
    )
    parser.add_argument("--fresh", action="store_true", help="wipe the home first (and reset --db's Airflow tables)")
    parser.add_argument(
        "--preview",
        metavar="T",
        nargs="?",
        const="",
        help="instead of starting Airflow: what the run at T (a date, or an ISO date and time; default: tomorrow "
        "00:00 UTC) would send, as a dry run on the home's shop and state",
    )
    parser.add_argument(
        "--conf",
        default="",
        help="with --preview: params for the run as JSON, e.g. '{\"send_available\": true}' (default: the DAG's "
        "defaults, as a scheduled run has them)",
    )
    args = parser.parse_args(argv)
    if args.conf and args.preview is None:
        parser.error("--conf goes with --preview")
    if args.preview is not None and (args.fresh or args.db):
        parser.error("--preview takes no --fresh or --db: it uses the home's shop and state, and a database of its own")
    return args


def check_port_free(port: int, what: str) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: a TIME_WAIT is no obstacle
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise SystemExit(f"port {port} is in use (another local Airflow?); pick another with {what}") from None


def wipe_home(home: Home) -> None:
    """--fresh: remove the home, but only one that this tool made (or an empty folder)."""
    if not home.path.exists():
        return
    if any(home.path.iterdir()) and not home.shop.exists():
        raise SystemExit(f"--fresh: {home.path} holds no shop.sqlite, so it is not a home made by this tool; not wiped")
    shutil.rmtree(home.path)
    say(f"home: {shown(home.path)} wiped (--fresh)")


def ensure_demo_shop(home: Home) -> None:
    """The demo shop, created once; its first day is today (UTC), so that today's run finds backorders."""
    if home.shop.exists():
        say(f"demo shop: {shown(home.shop)} kept from an earlier start")
        return
    first_day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    engine = sa.create_engine(f"sqlite:///{home.shop}")
    try:
        create_demo_shop(engine, first_day)
    finally:
        engine.dispose()
    say(f"demo shop: {shown(home.shop)} created (300 orders in English and German, first day {first_day:%Y-%m-%d})")


def ensure_state_db(home: Home) -> None:
    """The pipeline's state database, its tables brought up to date (every run does this too)."""
    engine = sa.create_engine(f"sqlite:///{home.state}")
    try:
        st.migrate(engine)
    finally:
        engine.dispose()
    say(f"state database: {shown(home.state)} (tables bo_run, bo_notification, ...)")


def metadata_db(url: str, home: Home) -> str:
    """The metadata database's URL; a PostgreSQL database is created when missing."""
    if not url:
        url = f"sqlite:///{home.path / 'airflow.db'}"
        say(f"metadata database: {url}")
        return url
    parsed = sa.engine.make_url(url)
    found = ""
    if parsed.get_backend_name() == "postgresql":
        if importlib.util.find_spec("asyncpg") is None:
            raise SystemExit(
                "--db: Airflow needs the asyncpg package for a PostgreSQL metadata database; it is in "
                "requirements-dev.txt: run `make install-dev` first"
            )
        found = " (created)" if create_postgres_database(parsed) else " (exists)"
    say(f"metadata database: {parsed.render_as_string(hide_password=True)}{found}")
    return url


def create_postgres_database(url: sa.URL) -> bool:
    """Create the URL's database unless it exists; True if it was created."""
    name = url.database
    if not name:
        raise SystemExit(f"--db {url.render_as_string()}: the URL names no database, e.g. {POSTGRES_EXAMPLE}")
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first():
                return False
            conn.exec_driver_sql(f"CREATE DATABASE {admin.dialect.identifier_preparer.quote(name)}")
            return True
    except sa.exc.OperationalError as exc:
        raise SystemExit(f"--db: PostgreSQL not reachable: {str(exc.orig).strip().splitlines()[0]}") from None
    finally:
        admin.dispose()


def airflow_env(home: Home, port: int, smtp_port: int, db_url: str) -> dict[str, str]:
    """The demo's environment (this project's DAGs, the three connections as JSON) for standalone."""
    env = demo.airflow_env(ROOT, home.path, smtp_port)
    env.update(
        {
            "AIRFLOW_HOME": str(home.path),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),  # the audit page (plugins/backorder_audit.py)
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__PARALLELISM": "4",  # about 1 GB in all instead of 1.3 GB with 32 slots
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "PYTHONWARNINGS": ",".join(filter(None, [QUIET_GRAPHVIZ, os.environ.get("PYTHONWARNINGS")])),
            # standalone starts its components as `airflow ...` from PATH
            "PATH": f"{AIRFLOW.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    return env


def cli_settings(env: dict[str, str]) -> dict[str, str]:
    """What the `airflow` CLI needs of standalone's environment to see the same Airflow: AIRFLOW_HOME, every
    AIRFLOW__* option and AIRFLOW_CONN_* / AIRFLOW_VAR_* (also those inherited from the caller), PYTHONPATH
    (the DAG imports include/) and PYTHONWARNINGS."""
    return {k: v for k, v in sorted(env.items()) if k.startswith("AIRFLOW") or k in ("PYTHONPATH", "PYTHONWARNINGS")}


def write_env_file(home: Home, env: dict[str, str]) -> None:
    """<home>/env: standalone's settings as a shell file to source, with this venv's bin first on PATH.

    An env file, not settings written into the home's airflow.cfg: the connections (AIRFLOW_CONN_*) and
    PYTHONPATH (the DAG imports include/) have no place in airflow.cfg, Airflow writes that file itself on
    the first start, and environment variables override it; this file is written from the very dict
    standalone is started with, so the CLI sees what the scheduler and the tasks see, --port and --db
    included. Readable by its owner only: AIRFLOW_CONN_* values may hold passwords.
    """
    written = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    lines = [
        f"# The local Airflow's settings, written by `make airflow` at each start (this one: {written}).",
        "# Source it, then use the airflow CLI on that Airflow, e.g.:",
        f"#   source {shown(home.env)} && airflow dags list-runs {DAG_ID}",
        *(f"export {name}={shlex.quote(value)}" for name, value in cli_settings(env).items()),
        f'export PATH={shlex.quote(str(AIRFLOW.parent))}:"$PATH"',
    ]
    home.env.touch(mode=0o600)
    home.env.chmod(0o600)
    home.env.write_text("\n".join(lines) + "\n")
    say(f"CLI settings: {shown(home.env)} (source it to use the airflow CLI on this Airflow)")


def reset_metadata_db(env: dict[str, str], home: Home) -> None:
    """--fresh with --db: Airflow's tables in that database are dropped and created again."""
    with home.log.open("a") as log:
        done = subprocess.run(
            [str(AIRFLOW), "db", "reset", "--yes"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
            timeout=600,
        )
    if done.returncode != 0:
        raise SystemExit(f"`airflow db reset` failed (exit {done.returncode}); see {home.log}")
    say("metadata database: reset (--fresh)")


def start_standalone(env: dict[str, str], home: Home) -> subprocess.Popen[bytes]:
    with home.log.open("a") as log:
        log.write(f"\n===== make airflow: airflow standalone started {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC\n")
        log.flush()
        proc = subprocess.Popen(
            [str(AIRFLOW), "standalone"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    say(f"airflow standalone: started (process group {proc.pid}), its output goes to {shown(home.log)}")
    return proc


def stop_standalone(proc: subprocess.Popen[bytes]) -> None:
    """Stop standalone and everything it started (see stop_session), ignoring further Ctrl-C meanwhile."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
    if not session_pids(proc.pid):
        return
    say("stopping airflow standalone ...")
    left = stop_session(proc)
    if left:
        say(f"airflow standalone: {left} processes still running after {STOP_TIMEOUT:.0f} s; killed them")


def stop_session(proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM to the process group of `proc` (started with start_new_session), then SIGKILL to whatever
    is left in its session after `timeout` (task processes run in process groups of their own); returns
    how many had to be killed.

    SIGTERM, not SIGINT: once the LocalExecutor had run tasks, SIGINT to the group mostly left the
    scheduler waiting forever for its idle workers (py-spy: they sat in their queue's lock) until killed;
    SIGINT to standalone alone did the same while a task ran. SIGTERM ended everything in 5 to 9 s in
    every try, with and without a running task.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader, so that it no longer counts
        if not session_pids(proc.pid):
            return 0
        time.sleep(0.2)
    left = session_pids(proc.pid)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    return len(left)


def session_pids(sid: int) -> list[int]:
    """The processes (zombies included) of session `sid`: standalone started in a session of its own, and
    every process it starts stays in it, also those in process groups of their own (Linux: /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if int(fields[3]) == sid:  # state, ppid, pgrp, session
            found.append(int(stat.parent.name))
    return found


class Api:
    """The REST API as the simple auth manager's admin (a bearer token from POST /auth/token)."""

    def __init__(self, port: int, password: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        body = {"username": "admin", "password": password}
        self.token = self.call("POST", "/auth/token", body, auth=False)["access_token"]

    def call(self, method: str, path: str, body: object = None, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.base}{path}", data, headers, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)


def wait_for(what: str, check: Callable[[], T | None], proc: subprocess.Popen[bytes], log: Path) -> T:
    """Poll `check` until it gives a value; fail if standalone exits or READY_TIMEOUT passes."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"airflow standalone exited with {proc.returncode} while waiting for {what}; see {log}")
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {READY_TIMEOUT:.0f} s waiting for {what}; see {log}")
        time.sleep(1)


def scheduler_healthy(port: int, since: datetime) -> bool | None:
    """True once the health check reports a healthy scheduler that beat after `since` (not one from before a
    restart)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=5) as r:
            scheduler = json.load(r)["scheduler"]
        beat = datetime.fromisoformat(scheduler["latest_scheduler_heartbeat"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return True if scheduler["status"] == "healthy" and beat > since else None


def read_password(home: Home) -> str | None:
    try:
        return str(json.loads(home.passwords.read_text())["admin"])
    except (OSError, ValueError, KeyError):
        return None


def dag_state(api: Api) -> dict[str, Any] | None:
    """The DAG as the API lists it, once parsed; a DAG file that fails to import stops the start."""
    try:
        return dict(api.call("GET", f"/api/v2/dags/{DAG_ID}"))
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise
    for error in api.call("GET", "/api/v2/importErrors")["import_errors"]:
        if "backorder_notifications" in error["filename"]:
            raise SystemExit(f"the DAG file does not import:\n{error['stack_trace']}")
    return None


def wait_until_ready(proc: subprocess.Popen[bytes], home: Home, port: int, started: float) -> str:
    """Wait for a healthy scheduler and the parsed DAG, unpause it if needed; return the admin's password."""
    since = datetime.now(UTC)
    wait_for("the scheduler to be healthy", lambda: scheduler_healthy(port, since), proc, home.log)
    say(f"scheduler: healthy after {time.monotonic() - started:.0f} s")
    password = wait_for(f"the admin's password in {home.passwords}", lambda: read_password(home), proc, home.log)
    api = Api(port, password)
    dag = wait_for(f"the DAG {DAG_ID} to be parsed", lambda: dag_state(api), proc, home.log)
    if dag["is_paused"]:  # paused in the UI before a restart, or created paused in an existing --db
        dag = api.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    if dag["is_paused"]:
        raise SystemExit(f"the DAG {DAG_ID} stays paused; see {home.log}")
    say(f"DAG {DAG_ID}: parsed and unpaused after {time.monotonic() - started:.0f} s")
    return password


def cli_prefix(home: Home) -> str:
    """How to run the `airflow` CLI against this Airflow from a shell (see write_env_file)."""
    return f"source {shlex.quote(shown(home.env))} && airflow"


def ready_block(home: Home, port: int, smtp_port: int, password: str) -> str:
    cli = cli_prefix(home)
    home_arg = "" if home.path == DEFAULT_HOME else f" ARGS={shlex.quote('--home ' + shown(home.path))}"
    lines = [
        f"URL:       http://localhost:{port}/",
        f"login:     admin / {password}",
        f"           (the password is kept in {shown(home.passwords)})",
        f"DAG:       {DAG_ID}, unpaused (@daily: the scheduler creates today's run if there is none)",
        f"audit:     http://localhost:{port}/backorder/ (also under Backorder notifications in the UI's menu)",
        f"emails:    {shown(home.mail)}/<date>/*.eml (SMTP sink on 127.0.0.1:{smtp_port})",
        f"log:       {shown(home.log)} (airflow standalone's output)",
        f"CLI:       {cli} dags list-runs {DAG_ID}",
        f"preview:   make preview-run T=<date>{home_arg} (what the run at that date would send, as a dry run)",
        "Ctrl-C stops everything.",
    ]
    rule = "=" * max(len(line) for line in lines)
    return "\n".join([rule, "Airflow is ready", *lines, rule])


def preview_time(text: str, now: datetime) -> datetime:
    """--preview's T in UTC: a date is 00:00 UTC that day, like the @daily runs; nothing given is tomorrow."""
    if not text:
        return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"--preview {text!r}: not a date or an ISO date and time, e.g. 2026-12-01") from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def preview_metadata_db(env: dict[str, str], work: Path) -> None:
    """The preview's own metadata database, brought up to date when missing or made by another Airflow version."""
    stamp = work / "airflow-version"
    version = importlib.metadata.version("apache-airflow")
    if (work / "airflow.db").exists() and stamp.exists() and stamp.read_text().strip() == version:
        return
    say(f"preview: creating its metadata database in {shown(work)} (airflow db migrate, once) ...")
    with (work / "db-migrate.log").open("w") as log:
        migrate = [str(AIRFLOW), "db", "migrate"]
        done = subprocess.run(migrate, env=env, stdout=log, stderr=subprocess.STDOUT, check=False, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"`airflow db migrate` failed (exit {done.returncode}); see {work / 'db-migrate.log'}")
    stamp.write_text(version + "\n")


# A line of the pipeline's own log in `airflow dags test`'s output: "<time> [info     ] <message> [include....]"
PIPELINE_LINE = re.compile(r"^\S+ \[\w+\s*\] (?P<message>.*?)\s+\[include\.backorder[\w.]*\]")


def preview_conf(text: str) -> str:
    """--conf's params with dry_run set: a JSON object for `airflow dags test -c`."""
    try:
        conf = json.loads(text or "{}")
    except ValueError as exc:
        raise SystemExit(f"--conf {text!r}: not JSON ({exc})") from None
    if not isinstance(conf, dict):
        raise SystemExit(f"--conf {text!r}: not a JSON object of params, e.g. '{{\"send_available\": true}}'")
    if conf.get("dry_run", True) is not True:
        raise SystemExit("--conf: a preview is a dry run; leave dry_run out")
    return json.dumps(conf | {"dry_run": True})


def preview(args: argparse.Namespace) -> int:
    """`make preview-run T=...`: a dry run of the DAG at T on the home's shop and state; prints the pipeline's log.

    `airflow dags test` runs the whole DAG at the logical date T in its own process, here with
    {"dry_run": true} (and the params of --conf): every due notification is classified, rendered and
    recorded in the state database as `dry_run`; nothing is sent and no snapshot is written, so later runs
    are unaffected. The trigger form cannot do this (a run at a future logical date does not start).

    It uses an Airflow metadata database of its own (<home>/preview/), never the running Airflow's: there,
    the scheduler takes up the run `dags test` creates and runs its tasks too, and both fail on each other
    ("TI was not in a state where it could be marked as running"); `dags test` also deletes any run at the
    same logical date, and the scheduler skips a day that has a run already ("run already exists; skipping
    dagrun creation"), so a preview of tomorrow would take the place of tomorrow's scheduled run. Airflow
    need not be running.
    """
    home = Home(args.home.resolve())
    t = preview_time(args.preview, datetime.now(UTC))
    conf = preview_conf(args.conf)
    if not home.shop.exists():
        raise SystemExit(f"--preview: no demo shop in {shown(home.path)}: start `make airflow` once first")
    work = home.path / "preview"
    work.mkdir(exist_ok=True)
    env = airflow_env(home, args.port, args.smtp_port, f"sqlite:///{work / 'airflow.db'}")
    env["AIRFLOW_HOME"] = str(work)
    preview_metadata_db(env, work)
    log = work / f"dags-test-{t:%Y-%m-%dT%H%M%S}.log"
    when = t.isoformat()
    say(f"preview: airflow dags test {DAG_ID} {when} -c '{conf}' (shop and state in {shown(home.path)}) ...")
    started = time.monotonic()
    with log.open("w") as out:
        cmd = [str(AIRFLOW), "dags", "test", DAG_ID, when, "-c", conf]
        done = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False, timeout=900)
    text = log.read_text(errors="replace")
    if done.returncode != 0:
        tail = "\n".join(text.splitlines()[-40:])
        raise SystemExit(f"`airflow dags test` failed (exit {done.returncode}); log: {shown(log)}\n{tail}")
    say(
        f"preview of the run at T={when}, a dry run in {time.monotonic() - started:.0f} s (`dry_run`: would be sent;"
        f" full log: {shown(log)}):"
    )
    for line in text.splitlines():
        if found := PIPELINE_LINE.match(line):
            say(f"  {found['message']}")
    say(would_send(home, t))
    return 0


def would_send(home: Home, t: datetime) -> str:
    """Every email the state database holds as a dry run at T, by kind and language, in one line.

    Not only this preview's: a notification is recorded once per order, kind and T (dry runs apart from real
    ones), so a second preview of the same T finds the first one's records and logs them as "handled by an
    earlier run"; the answer to "what would T send" is the union, each as recorded when first previewed.
    """
    n = st.notifications
    engine = sa.create_engine(f"sqlite:///{home.state}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(n.c.kind, n.c.language, sa.func.count())
                .where(n.c.reference_time == t.replace(tzinfo=None), n.c.dry_run.is_(True))
                .where(n.c.status == st.STATUS_DRY_RUN)
                .group_by(n.c.kind, n.c.language)
            ).all()
    finally:
        engine.dispose()
    by_kind: dict[str, list[str]] = {}
    for kind, language, count in sorted(rows):
        by_kind.setdefault(kind, []).append(f"{language} {count}")
    said = "; ".join(f"{kind} {', '.join(langs)}" for kind, langs in by_kind.items()) or "nothing"
    return f"would be sent at T={t.isoformat()}: {said} (as recorded by this and any earlier preview of T)"


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def prepare(args: argparse.Namespace, home: Home) -> str:
    """Everything before standalone starts: ports, home, databases; returns the metadata database's URL."""
    check_port_free(args.port, "--port")
    check_port_free(args.smtp_port, "--smtp-port")
    if args.fresh:
        wipe_home(home)
    home.path.mkdir(parents=True, exist_ok=True)
    say(f"home: {shown(home.path)} (AIRFLOW_HOME; kept between starts, --fresh wipes it)")
    db_url = metadata_db(args.db, home)
    ensure_demo_shop(home)
    ensure_state_db(home)
    return db_url


def run(args: argparse.Namespace) -> int:
    home = Home(args.home.resolve())
    db_url = prepare(args, home)
    with MailSink(home.mail, port=args.smtp_port) as sink:
        say(f"SMTP sink: 127.0.0.1:{sink.port}, emails kept as .eml files in {shown(home.mail)}/")
        env = airflow_env(home, args.port, sink.port, db_url)
        write_env_file(home, env)
        if args.fresh and args.db:
            reset_metadata_db(env, home)
        started = time.monotonic()
        proc = start_standalone(env, home)
        try:
            password = wait_until_ready(proc, home, args.port, started)
            say(ready_block(home, args.port, sink.port, password))
            proc.wait()
            say(f"airflow standalone exited by itself with {proc.returncode}; see {home.log}")
            code = 1
        except KeyboardInterrupt:
            code = 0
        finally:
            stop_standalone(proc)
    say("stopped: airflow standalone (every process it started) and the SMTP sink")
    return code


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.preview is not None:
        return preview(args)
    # Also when started with SIGINT ignored (a background job of a script): standalone would inherit that.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    try:
        return run(args)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
