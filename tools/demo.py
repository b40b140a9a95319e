"""`make demo`: the real DAG, run day after day by `airflow dags test`, against the demo shop.

It starts from scratch in `.demo/` each time (shop, state database, Airflow home, emails), starts
an SMTP sink on loopback that keeps every email as an `.eml` file, runs the DAG for each demo day
while changing some availability dates in between, and prints what each day sent.

Usage: python -m tools.demo [--days 7] [--first-day 2026-11-02]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from include.backorder import KINDS, LANGUAGES
from include.backorder import state as st
from tools.demo_shop import apply_changes, create_demo_shop
from tools.smtp_sink import MailSink

ROOT = Path(__file__).resolve().parents[1]
# The adapter's DAG_ID (tests/test_architecture.py checks): importing the adapter would import Airflow, whose
# logging set-up would print every line of the SMTP sink's log into the demo's output.
DAG_ID = "backorder_notifications"
SHOP_NAME = "Trailhead Outdoor"
# The conf every demo day is triggered with: the shop's branding, and the optional `available` kind.
DEMO_CONF = {
    "shop_name": SHOP_NAME,
    "send_available": True,
    "brand_color": "#2f6b3a",
    "support_email": "help@trailhead.example",
    "postal_address": "Trailhead Outdoor GmbH\nBergstraße 5\n79098 Freiburg",
    "order_url": "https://trailhead.example/account_history_info.php?order_id={order_id}",
}


def airflow_env(root: Path, work: Path, smtp_port: int) -> dict[str, str]:
    """Environment for the Airflow CLI: its own home, this project's DAGs, connections as JSON."""
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(work / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "PYTHONPATH": str(root),
            "AIRFLOW_CONN_SHOP_DB": json.dumps({"conn_type": "sqlite", "host": str(work / "shop.sqlite")}),
            "AIRFLOW_CONN_BACKORDER_STATE_DB": json.dumps({"conn_type": "sqlite", "host": str(work / "state.sqlite")}),
            "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(
                {
                    "conn_type": "smtp",
                    "host": "127.0.0.1",
                    "port": smtp_port,
                    "extra": {
                        "disable_ssl": True,
                        "disable_tls": True,
                        "from_email": f"{SHOP_NAME} <shop@trailhead.example>",
                    },
                }
            ),
        }
    )
    return env


def _airflow(args: list[str], env: dict[str, str], log_file: Path) -> None:
    airflow = str(Path(sys.executable).with_name("airflow"))
    with log_file.open("w") as out:
        try:
            proc = subprocess.run(
                [airflow, *args], env=env, stdout=out, stderr=subprocess.STDOUT, check=False, timeout=900
            )
        except subprocess.TimeoutExpired as exc:
            raise SystemExit(f"`airflow {' '.join(args)}` did not finish in 15 minutes; log: {log_file}") from exc
    if proc.returncode != 0:
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-40:])
        raise SystemExit(f"`airflow {' '.join(args)}` failed (exit {proc.returncode}); log: {log_file}\n{tail}")


def summary_table(state_db: Path, mail_dir: Path, root: Path) -> str:
    """One line per run: run date, emails sent by kind and language, skipped, where the files are."""
    engine = sa.create_engine(f"sqlite:///{state_db}")
    header = ["run date"] + [f"{k} {lang}" for k in KINDS for lang in LANGUAGES] + ["skipped", "failed", "emails in"]
    rows = [header]
    with engine.connect() as conn:
        for run in conn.execute(sa.select(st.runs).order_by(st.runs.c.reference_time, st.runs.c.id)).mappings():
            counts = json.loads(run["counts"] or "{}")
            sent = counts.get("sent", {})
            day = run["reference_time"].date().isoformat()
            folder = mail_dir / day
            rows.append(
                [day]
                + [str(sent.get(k, {}).get(lang, 0)) for k in KINDS for lang in LANGUAGES]
                + [
                    str(sum(sum(v.values()) for v in counts.get("skipped", {}).values())),
                    str(sum(sum(v.values()) for v in counts.get("failed", {}).values())),
                    str(folder.relative_to(root)) + "/" if folder.exists() else "-",
                ]
            )
    engine.dispose()
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=7, help="how many daily runs (default 7)")
    parser.add_argument("--first-day", default="2026-11-02", help="reference date of the first run (UTC)")
    parser.add_argument("--work-dir", type=Path, default=ROOT / ".demo", help="where everything goes (wiped first)")
    args = parser.parse_args(argv)

    work: Path = args.work_dir.resolve()
    first_day = datetime.fromisoformat(args.first_day)
    shutil.rmtree(work, ignore_errors=True)
    (work / "logs").mkdir(parents=True)
    mail_dir = work / "mail"

    shop = sa.create_engine(f"sqlite:///{work / 'shop.sqlite'}")
    create_demo_shop(shop, first_day)
    print(f"demo shop: {work / 'shop.sqlite'} (osCommerce 2.3 tables, 300 orders in English and German)")

    with MailSink(mail_dir) as sink:
        env = airflow_env(ROOT, work, sink.port)
        print(f"SMTP sink: 127.0.0.1:{sink.port}, emails kept in {mail_dir}")
        started = time.perf_counter()
        _airflow(["db", "migrate"], env, work / "logs" / "db-migrate.log")
        print(f"Airflow metadata database ready in {time.perf_counter() - started:.1f} s")
        for day in range(args.days):
            when = first_day + timedelta(days=day)
            for change in apply_changes(shop, first_day, day):
                print(f"  shop change before {when.date()}: {change.why}")
            before = len(sink.messages)
            started = time.perf_counter()
            log_file = work / "logs" / f"dags-test-{when.date()}.log"
            conf = json.dumps(DEMO_CONF)
            _airflow(["dags", "test", DAG_ID, when.strftime("%Y-%m-%dT%H:%M:%S+00:00"), "-c", conf], env, log_file)
            shown = log_file.relative_to(ROOT) if log_file.is_relative_to(ROOT) else log_file
            print(
                f"run {when.date()}: airflow dags test ok in {time.perf_counter() - started:.1f} s, "
                f"{len(sink.messages) - before} emails received (log: {shown})"
            )
    shop.dispose()
    print()
    print(summary_table(work / "state.sqlite", mail_dir, ROOT if work.is_relative_to(ROOT) else work.parent))
    print()
    print(
        f"{len(sink.messages)} emails in {mail_dir}; audit in {work / 'state.sqlite'} (tables bo_run, bo_notification)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
