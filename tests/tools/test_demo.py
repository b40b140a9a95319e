"""`make demo`'s runner, end to end: `airflow dags test` in fresh processes, emails as .eml files, the table."""

from __future__ import annotations

import subprocess
import sys
from email import message_from_bytes, policy

from tests.conftest import ROOT


def test_demo_runs_the_dag_for_several_days_and_prints_the_table(tmp_path) -> None:
    work = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "tools.demo", "--days", "3", "--work-dir", str(work)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("run date"))
    table = [line.split() for line in lines[header + 2 : header + 5]]
    assert [row[0] for row in table] == ["2026-11-02", "2026-11-03", "2026-11-04"]

    # Each row's counts match the .eml files the SMTP sink kept for that day, kind and language.
    columns = lines[header].split("  ")
    kinds = [c.strip() for c in columns if c.strip() and c.strip()[0:2] in ("in", "ch", "pe", "av")]
    for row in table:
        day = row[0]
        files = list((work / "mail" / day).glob("*.eml"))
        for kind_lang, count in zip(kinds, row[1:9], strict=True):
            kind, lang = kind_lang.split()
            assert len([f for f in files if f.name.startswith(f"{kind}-") and f.name.endswith(f"-{lang}.eml")]) == int(
                count
            )
    first_day = {f.name.split("-")[0] for f in (work / "mail" / "2026-11-02").glob("*.eml")}
    assert first_day == {"initial"}
    third_day = {f.name.split("-")[0] for f in (work / "mail" / "2026-11-04").glob("*.eml")}
    assert {"changed", "periodic"} <= third_day

    sample = next((work / "mail" / "2026-11-02").glob("initial-*-de.eml"))
    msg = message_from_bytes(sample.read_bytes(), policy=policy.default)
    assert msg["From"] == "Trailhead Outdoor <shop@trailhead.example>"
    assert msg["X-Backorder-Notification"] == "initial"
    body = msg.get_body(("plain",))
    assert body is not None
    text = body.get_content().replace("\r\n", "\n")
    assert "Diese Artikel kommen später:" in text
    assert "Mit freundlichen Grüßen\nTrailhead Outdoor\n" in text  # shop_name given with `-c` conf
