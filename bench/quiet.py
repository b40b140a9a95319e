"""The quiet day at full size against the honest L_read, on MariaDB and PostgreSQL state, side by side.

A quiet day is the most common one: nothing changed in the shop since yesterday's run but the
passing of time (bench/shop.py's shop: 1,514 of its 80,000 lines reach their date), nothing is due.
For each state backend, in one run: a fresh state database; the first day (T0) run silently
(`catch_up_silently`: every order told, nothing sent); then the quiet day (T0 + 1 day) run stage by
stage as the DAG runs it, in a fresh process, `repeats` times (each on a copy of the first day's
state: a run of T again would compare with the same snapshot, but it would find its own notifications
at T); and, between them, L_read: the raw fetch, with the plain driver, of what a quiet run must read:

- the shop's backorder lines: the fastest of bench/read.py's formulations;
- the previous snapshot: the history rows valid at it (`state.lines_at`);
- the notification history of the previous snapshot's orders, which says who is due for a reminder
  (`state.history_query`, per order: emails told, the last one's T, reminders).

Also counted: the rows the quiet day wrote beyond its run record (history, staged rows, notifications,
snapshot row), against the target of 1 % of the backorder lines.

    python -m bench.quiet [--repeats 3] [--states mysql,postgresql]

Results: bench/results/quiet.md and quiet.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import shop as bench_shop
from bench.read import fastest_raw_fetch
from bench.run import RESULTS, ROOT, T0, _db, fresh_state, machine, say
from include.backorder import state as st

QUIET = T0 + timedelta(days=1)
STATES = {
    "mysql": f"{bench_shop.DEFAULT_URL}/bench_quiet_state?charset=utf8mb4",
    "postgresql": "postgresql+psycopg2://postgres@127.0.0.1:5432/bench_quiet_state",
}
TARGET = 1.1  # quiet day total / L_read
ROWS_TARGET = 0.01  # rows written beyond the run record / backorder lines
COUNTED = (
    "bo_line_history",
    "bo_staged_line",
    "bo_staged_change",
    "bo_staged_arrival",
    "bo_notification",
    "bo_snapshot",
)


def _day(shop_url: str, state_url: str, at: str, silent: bool) -> dict[str, Any]:
    """One day's stages in a fresh process (bench.quiet --day): seconds per stage and in all."""
    cmd = [sys.executable, "-m", "bench.quiet", "--day", at, "--shop-url", shop_url, "--state-url", state_url]
    out = subprocess.run([*cmd, *(["--silent"] if silent else [])], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"the day {at} failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run_day(shop_url: str, state_url: str, at: str, silent: bool) -> dict[str, Any]:
    from datetime import datetime

    from include.backorder import pipeline
    from include.backorder.config import RunContext, RunParams

    shop, state = _db(shop_url, "shop_db"), _db(state_url, "backorder_state_db")
    when = datetime.fromisoformat(at)
    started = time.perf_counter()
    extracted = pipeline.extract(
        shop, state, RunContext(when, dag_run_id=f"quiet__{time.time()}"), RunParams(catch_up_silently=silent)
    )
    pipeline.load_previous_snapshot(state, extracted.run_id)
    due = pipeline.classify_run(state, extracted.run_id)
    if any(due.values()):  # silently, every notification is recorded as silenced, none due
        raise RuntimeError(f"not a quiet day: due {due}")
    pipeline.finish(state, extracted.run_id)
    total = time.perf_counter() - started
    engine = sa.create_engine(state.url())
    with engine.connect() as conn:
        stages = json.loads(st.get_run(conn, extracted.run_id)["stage_seconds"])
    engine.dispose()
    return {"total": total, "stages": stages, "lines": extracted.lines, "changed": extracted.changed_lines}


def _counts(state_url: str) -> dict[str, int]:
    engine = sa.create_engine(state_url)
    with engine.connect() as conn:
        found = {t: int(conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()) for t in COUNTED}
    engine.dispose()
    return found


def _raw_seconds(state_url: str, query: sa.Executable) -> tuple[int, float]:
    engine = sa.create_engine(state_url)
    sql = str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))  # type: ignore[attr-defined]
    raw = engine.raw_connection()
    started = time.perf_counter()
    cur = raw.cursor()
    cur.execute(sql)
    rows = len(cur.fetchall())
    seconds = time.perf_counter() - started
    raw.close()
    engine.dispose()
    return rows, seconds


def l_read(shop_url: str, state_url: str) -> dict[str, Any]:
    at = QUIET.astimezone(UTC).replace(tzinfo=None)
    engine = sa.create_engine(state_url)
    with engine.connect() as conn:
        snap = st.previous_snapshot(conn, at)
    engine.dispose()
    assert snap is not None
    shop = fastest_raw_fetch(shop_url, QUIET)
    held = st.lines_at(snap["reference_time"], snap["shop_time"]).subquery("held")
    snapshot_rows, snapshot_seconds = _raw_seconds(state_url, st.lines_at(snap["reference_time"], snap["shop_time"]))
    history_rows, history_seconds = _raw_seconds(
        state_url, st.history_query(at, sa.select(held.c.orders_id).distinct())
    )
    return {
        "shop_query": shop["name"],
        "shop_rows": shop["rows"],
        "shop_seconds": shop["seconds"],
        "snapshot_rows": snapshot_rows,
        "snapshot_seconds": snapshot_seconds,
        "history_rows": history_rows,
        "history_seconds": history_seconds,
        "seconds": shop["seconds"] + snapshot_seconds + history_seconds,
    }


def _copy_state(kind: str, source: str, target: str) -> None:
    """The first day's state again in `target` (a fresh database each repeat)."""
    if kind == "postgresql":
        admin = sa.create_engine(sa.engine.make_url(source).set(database="postgres"), isolation_level="AUTOCOMMIT")
        src, dst = sa.engine.make_url(source).database, sa.engine.make_url(target).database
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {dst} WITH (FORCE)")
            conn.exec_driver_sql(f"CREATE DATABASE {dst} TEMPLATE {src}")
        admin.dispose()
        return
    fresh_state(target)
    src, dst = sa.engine.make_url(source).database, sa.engine.make_url(target).database
    engine = sa.create_engine(sa.engine.make_url(source).set(database="mysql"))
    with engine.begin() as conn:
        tables = [r[0] for r in conn.exec_driver_sql(f"SHOW TABLES FROM {src}")]
        conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS = 0")
        for table in tables:
            conn.exec_driver_sql(f"CREATE TABLE {dst}.{table} LIKE {src}.{table}")
            conn.exec_driver_sql(f"INSERT INTO {dst}.{table} SELECT * FROM {src}.{table}")
    engine.dispose()


def measure(kind: str, shop_url: str, repeats: int) -> dict[str, Any]:
    base = STATES[kind]
    work = base.replace("bench_quiet_state", "bench_quiet_work")
    fresh_state(base)
    first = _day(shop_url, base, T0.isoformat(), silent=True)
    say(f"{kind}: the first day (silently) in {first['total']:.1f} s, {first['lines']:,} lines")
    totals, stages, limits, written = [], [], [], {}
    for number in range(repeats):
        _copy_state(kind, base, work)
        before = _counts(work)
        limits.append(l_read(shop_url, work))
        day = _day(shop_url, work, QUIET.isoformat(), silent=False)
        after = _counts(work)
        written = {t: after[t] - before[t] for t in COUNTED}
        totals.append(day["total"])
        stages.append(day["stages"])
        say(
            f"  {kind} repeat {number + 1}: quiet day {day['total']:.2f} s ({day['changed']} lines changed);"
            f" L_read {limits[-1]['seconds']:.2f} s"
        )
    lread = [lim["seconds"] for lim in limits]
    ratios = [t / lim for t, lim in zip(totals, lread, strict=True)]
    return {
        "quiet_total": {"median": statistics.median(totals), "min": min(totals), "max": max(totals)},
        "stages": {k: statistics.median(s.get(k, 0.0) for s in stages) for k in stages[0]},
        "l_read": {
            "median": statistics.median(lread),
            "parts": {k: statistics.median(lim[k] for lim in limits) for k in limits[0] if k.endswith("_seconds")},
            "rows": {k: limits[0][k] for k in limits[0] if k.endswith("_rows")},
            "shop_query": limits[0]["shop_query"],
        },
        "ratio": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
        "lines": first["lines"],
        "rows_written": written,
        "rows_written_share": (
            written["bo_line_history"]
            + written["bo_staged_line"]
            + written["bo_staged_change"]
            + written["bo_staged_arrival"]
            + written["bo_notification"]
        )
        / first["lines"],
    }


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    out = [
        f"The quiet day at full size ({result['repeats']} repeats, median (min–max)): {m['cpu']}, {m['cores']} cores,"
        f" {m['memory_gib']} GiB, Python {m['python']}; {result['measured_at']}.",
        "",
        "| state | quiet day s | L_read s (shop + snapshot + history) | ratio (target <= 1.1) | extract | classify"
        " | finish | rows written beyond the run record (target <= 1 % of the lines) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for kind, r in result["states"].items():
        p, s = r["l_read"]["parts"], r["stages"]
        verdict = "met" if r["ratio"]["median"] <= TARGET else "NOT met"
        rows = ", ".join(f"{t} {n}" for t, n in r["rows_written"].items() if n)
        rows_verdict = "met" if r["rows_written_share"] <= ROWS_TARGET else "NOT met"
        out.append(
            f"| {kind} | {r['quiet_total']['median']:.2f} ({r['quiet_total']['min']:.2f}–{r['quiet_total']['max']:.2f})"
            f" | {r['l_read']['median']:.2f} ({p['shop_seconds']:.2f} + {p['snapshot_seconds']:.2f} +"
            f" {p['history_seconds']:.2f}) | {r['ratio']['median']:.2f} ({verdict}) | {s.get('extract', 0):.2f}"
            f" | {s.get('classify', 0):.2f} | {s.get('finish', 0):.2f} | {rows or 'none'}:"
            f" {100 * r['rows_written_share']:.2f} % ({rows_verdict}) |"
        )
    first = next(iter(result["states"].values()))
    out += [
        "",
        f"L_read's shop part is the fastest of bench/read.py's formulations ({first['l_read']['shop_query']},"
        f" {first['l_read']['rows']['shop_rows']:,} rows); the snapshot part the history rows valid at the"
        f" previous snapshot ({first['l_read']['rows']['snapshot_rows']:,}); the history part the per-order"
        f" history of its orders ({first['l_read']['rows']['history_rows']:,} orders).",
    ]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--states", default="mysql,postgresql")
    parser.add_argument("--shop-url", default=f"{bench_shop.DEFAULT_URL}/{bench_shop.DEFAULT_DATABASE}")
    parser.add_argument("--state-url", help=argparse.SUPPRESS)
    parser.add_argument("--day", help=argparse.SUPPRESS)
    parser.add_argument("--silent", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.day:
        print(json.dumps(run_day(args.shop_url, args.state_url, args.day, args.silent)))
        return 0
    bench_shop.create_shop(
        bench_shop.as_server(args.shop_url), bench_shop.FULL, database=sa.engine.make_url(args.shop_url).database
    )
    bench_shop.restore_dates(args.shop_url)
    from datetime import datetime

    result: dict[str, Any] = {
        "repeats": args.repeats,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "states": {kind: measure(kind, args.shop_url, args.repeats) for kind in args.states.split(",")},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quiet.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (args.out / "quiet.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
