"""The last lines of a test run say what was skipped and why (tests/conftest.py's `pytest_terminal_summary`).

A pytest of its own, in a subprocess, on a small generated test file whose tests skip with the reasons the
real tests give (the same calls make them: `picture.chromium_path()` on a PATH without Chromium, `_unavailable`
on a server port where nothing listens) and with one reason the summary does not know. The browser's absence
is made, not found, so the test passes the same with and without Chromium on the machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

GENERATED = """
import socket
from dataclasses import replace

import pytest
import sqlalchemy as sa

from tests.conftest import MARIADB, _unavailable
from tools import picture as pic


def test_passes():
    pass


@pytest.mark.parametrize("width", [320, 375, 1024])
def test_layout(width):  # as tests/tools/test_picture.py's chromium fixture
    try:
        pic.chromium_path()
    except pic.ChromiumMissing as exc:
        pytest.skip(str(exc))


def test_audit_page():  # as tests/backorder/audit/test_audit_browser.py's chromium fixture
    try:
        pic.chromium_path()
    except pic.ChromiumMissing as exc:
        _unavailable("chromium", exc)


@pytest.mark.parametrize("case", ["a", "b"])
def test_on_mariadb(case):  # as tests/conftest.py's server_database
    engine = sa.create_engine(replace(MARIADB, port=1).url())
    try:
        engine.connect()
    except sa.exc.OperationalError as exc:
        _unavailable("mariadb on 127.0.0.1:1", exc)
    finally:
        engine.dispose()


def test_on_redis():  # as tests/integration/test_celery.py
    try:
        socket.create_connection(("127.0.0.1", 1), timeout=2).close()
    except OSError as exc:
        _unavailable("Redis on 127.0.0.1:1", exc)


def test_local_infile():
    pytest.skip("the server's local_infile is off: LOAD DATA LOCAL cannot be compared with INSERTs")
"""


def run_pytest(folder: Path, test_file: str) -> list[str]:
    """pytest -ra on the file with the project's summary hook, without Chromium on PATH; its output's lines."""
    (folder / "conftest.py").write_text("from tests.conftest import pytest_terminal_summary  # noqa: F401\n")
    (folder / "test_generated.py").write_text(test_file)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKORDER_")}  # no REQUIRE_SERVERS, no CHROMIUM
    env |= {"PYTHONPATH": str(ROOT), "PATH": str(Path(sys.executable).parent)}  # the venv's bin: no chromium there
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-ra",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(folder),
        "test_generated.py",
    ]
    done = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def test_the_last_lines_say_what_was_skipped_why_and_how_to_run_it(tmp_path: Path) -> None:
    lines = run_pytest(tmp_path, GENERATED)
    assert lines[-1].startswith("=") and " 1 passed, 8 skipped in " in lines[-1], lines
    header = next(i for i, line in enumerate(lines) if "skipped, and how to run them" in line)
    assert lines[header].startswith("=") and lines[header].endswith("=")
    assert lines[header + 1 : -1] == [
        "4 browser tests skipped: chromium not found on PATH; to run them: apt-get install -y "
        "--no-install-recommends chromium fonts-liberation (as .ci/run does)",
        "2 MariaDB tests skipped: 127.0.0.1:1 not reachable; to run them: start it there (.ci/run starts the "
        "machine's MariaDB, PostgreSQL and Redis)",
        "1 Redis test skipped: 127.0.0.1:1 not reachable; to run them: start it there (.ci/run starts the "
        "machine's MariaDB, PostgreSQL and Redis)",
        "1 test skipped: the server's local_infile is off: LOAD DATA LOCAL cannot be compared with INSERTs",
    ]
    short_summary = next(i for i, line in enumerate(lines) if "short test summary info" in line)
    assert short_summary < header, "after -ra's list of skips, not before it"


def test_nothing_skipped_nothing_said(tmp_path: Path) -> None:
    lines = run_pytest(tmp_path, "def test_passes():\n    pass\n")
    assert " 1 passed in " in lines[-1]
    assert not [line for line in lines if "how to run them" in line or " skipped:" in line], lines
