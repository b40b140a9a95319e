"""`make bench`: the pipeline at shop scale, measured against the two physical limits in the same run.

The shop is bench/shop.py's synthetic osCommerce shop in the machine's MariaDB; the state
database is a database of its own on the same server (or any SQLAlchemy URL); the SMTP server is
bench/smtp.py's counting sink in a process of its own. Each repeat starts from an empty state and
runs four days, each stage as the DAG runs it (extract, previous snapshot, classify, send per
kind, finish), each day in a fresh process so that its peak memory is its own:

- `first`: T0, every waiting order gets `initial`;
- `quiet`: T0 + 1 day, nothing changed and nothing due;
- `reminder`: T0 + 2 days, every order is due for `periodic`;
- `changed`: T0 + 2.5 days, 1 % of the backordered products got a new date: `changed`.

Against them, in the same repeat: L_read, the raw fetch of exactly the rows a run must read
(the shop's backorder lines by the fastest of bench/read.py's formulations of the extract query,
and the previous snapshot) with PyMySQL and no pandas; L_send, the first day's messages, rendered
beforehand, sent with smtplib over one connection to the same sink; and the peer, the same
sending as Airflow's EmailOperator does it (a new connection per message, on a sample). Last,
the first day's sending split in 1, 2 and 4 parts sent at once by as many processes (the DAG's
mapped send tasks).

Results: `bench/results/<size>.json` and `bench/results/<size>.md` (min / median / max over the
repeats), and the table on stdout.

    python -m bench.run [--size quick|full] [--repeats 3] [--state-url URL] [--peer-sample 2000]
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench import shop as bench_shop
from bench import smtp as bench_smtp
from include.backorder import KINDS
from include.backorder.config import DbConnection, RunContext, RunParams, SmtpSettings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SENDER = "Trailhead Outdoor <shop@trailhead.example>"
T0 = bench_shop.REFERENCE_TIME_UTC
SCENARIOS: dict[str, timedelta] = {
    "first": timedelta(0),
    "quiet": timedelta(days=1),
    "reminder": timedelta(days=2),
    "changed": timedelta(days=2, hours=12),
}
PARTS = (1, 2, 4)
RENDER_TARGET = 2000  # finished messages per CPU second
RSS_TARGET_MB = 600
TARGETS = {
    "first run total / (L_read + L_send)": 1.25,
    "quiet run / L_read": 1.5,
}


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- one day, in a process of its own ------------------------------------------------------------


def _db(url: str, conn_id: str) -> DbConnection:
    u = sa.engine.make_url(url)
    kind = {"mysql": "mysql", "mariadb": "mysql", "postgresql": "postgres", "sqlite": "sqlite"}[u.get_backend_name()]
    if kind == "sqlite":
        return DbConnection(conn_id, "sqlite", host=u.database or "")
    return DbConnection(
        conn_id,
        kind,
        host=u.host or "127.0.0.1",
        port=u.port,
        login=u.username or "",
        password=u.password or "",
        schema=u.database or "",
    )


def _smtp(port: int) -> SmtpSettings:
    return SmtpSettings(host="127.0.0.1", port=port, from_email=SENDER, use_ssl=False, use_starttls=False)


def _send_part(state_url: str, run_id: int, kind: str, port: int, part: tuple[int, int]) -> None:
    from include.backorder import pipeline

    pipeline.send(_db(state_url, "backorder_state_db"), run_id, kind, _smtp(port), None, part)


def run_day(shop_url: str, state_url: str, port: int, at: datetime, parts: int = 1) -> dict[str, Any]:
    """One day's stages as the DAG runs them; `parts` > 1 sends each kind in that many processes at once."""
    from include.backorder import pipeline
    from include.backorder import state as st

    shop, state = _db(shop_url, "shop_db"), _db(state_url, "backorder_state_db")
    started = time.perf_counter()
    run_id = pipeline.extract(shop, state, RunContext(at, dag_run_id=f"bench__{at:%Y%m%dT%H%M}"), RunParams()).run_id
    pipeline.load_previous_snapshot(state, run_id)
    due = pipeline.classify_run(state, run_id)
    send_started = time.perf_counter()
    for kind in KINDS:
        if not due.get(kind):
            continue
        if parts == 1:
            pipeline.send(state, run_id, kind, _smtp(port))
            continue
        ctx = multiprocessing.get_context("spawn")
        workers = [
            ctx.Process(target=_send_part, args=(state_url, run_id, kind, port, (i, parts))) for i in range(parts)
        ]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        if any(w.exitcode for w in workers):
            raise RuntimeError(f"a send part failed: exit codes {[w.exitcode for w in workers]}")
    send_seconds = time.perf_counter() - send_started
    summary = pipeline.finish(state, run_id)
    total = time.perf_counter() - started
    engine = sa.create_engine(state.url())
    with engine.connect() as conn:
        run = st.get_run(conn, run_id)
    engine.dispose()
    sent = sum(sum(langs.values()) for langs in summary["counts"].get("sent", {}).values())
    return {
        "reference_time": at.isoformat(),
        "lines": run["line_count"],
        "orders": run["order_count"],
        "due": due,
        "sent": sent,
        "stage_seconds": json.loads(run["stage_seconds"]),
        "send_wall": send_seconds,
        "total": total,
        "peak_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM). Not ru_maxrss: Linux keeps that across execve, so
    a day started from a big parent would report the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_day_in_process(shop_url: str, state_url: str, port: int, at: datetime, parts: int = 1) -> dict[str, Any]:
    """`run_day` in a fresh interpreter, so that imports and peak memory are the day's own."""
    cmd = [
        sys.executable,
        "-m",
        "bench.run",
        "--day",
        at.isoformat(),
        "--shop-url",
        shop_url,
        "--state-url",
        state_url,
        "--port",
        str(port),
        "--parts",
        str(parts),
    ]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"the day {at} failed:\n{out.stderr[-4000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# --- the limits ----------------------------------------------------------------------------------


def l_read(shop_url: str, state_url: str, at: datetime) -> dict[str, Any]:
    """The raw fetch of what a run at `at` must read: the shop's backorder lines (the fastest of
    bench/read.py's formulations of the extract query, each fetched once) and the previous snapshot's
    lines (from the line history), with the plain driver and no pandas."""
    from bench.read import fastest_raw_fetch
    from include.backorder import state as st

    fastest = fastest_raw_fetch(shop_url, at)
    shop_rows, shop_seconds = fastest["rows"], fastest["seconds"]
    say(
        f"  L_read's shop part: {fastest['name']} the fastest of "
        + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in fastest["all"].items())
    )

    state_engine = sa.create_engine(_db(state_url, "backorder_state_db").url())
    with state_engine.connect() as c:
        snap = st.previous_snapshot(c, at.astimezone(UTC).replace(tzinfo=None))
    raw = state_engine.raw_connection()
    # The previous snapshot as extract reads it (state.held_at): its lines in the line history.
    snap_query = st.lines_at(snap["reference_time"], snap["shop_time"]) if snap else st.lines_at(T0, st.OPEN)
    snap_sql = str(snap_query.compile(dialect=state_engine.dialect, compile_kwargs={"literal_binds": True}))
    started = time.perf_counter()
    cur = raw.cursor()
    cur.execute(snap_sql)
    snapshot_rows = len(cur.fetchall())
    snapshot_seconds = time.perf_counter() - started
    raw.close()
    state_engine.dispose()
    return {
        "shop_query": fastest["name"],
        "shop_rows": shop_rows,
        "shop_seconds": shop_seconds,
        "snapshot_rows": snapshot_rows,
        "snapshot_seconds": snapshot_seconds,
        "seconds": shop_seconds + snapshot_seconds,
    }


def first_day_messages(state_url: str, run_at: datetime) -> tuple[list[bytes], list[tuple[str, str]], float]:
    """The first day's emails rendered again as bytes (for L_send) and as (subject, html) (for the peer),
    and the CPU seconds rendering the bytes took (one thread: one core's work)."""
    from include.backorder import state as st
    from include.backorder.render import Renderer
    from include.backorder.sending import notification_of

    engine = sa.create_engine(_db(state_url, "backorder_state_db").url())
    n = st.notifications
    with engine.connect() as conn:
        rows = (
            conn.execute(
                sa.select(n).where(
                    n.c.reference_time == run_at.astimezone(UTC).replace(tzinfo=None), n.c.status == st.STATUS_SENT
                )
            )
            .mappings()
            .all()
        )
    engine.dispose()
    renderer, params = Renderer(), RunParams()
    notifications = [notification_of(row, params) for row in rows]
    gc.freeze()  # as the render worker does; else every collection walks the 50,000 notifications held here
    started = time.process_time()
    whole = [renderer.render(notification, SENDER, "trailhead.example").data for notification in notifications]
    render_cpu = time.process_time() - started
    gc.unfreeze()
    parts = [(subject, html) for subject, _, html in map(renderer.render_parts, notifications)]
    return whole, parts, render_cpu


# --- a repeat ------------------------------------------------------------------------------------


def fresh_state(state_url: str) -> None:
    u = sa.engine.make_url(state_url)
    if u.get_backend_name() == "sqlite":
        Path(u.database or "").unlink(missing_ok=True)
        return
    server = sa.create_engine(
        u.set(database="mysql" if u.get_backend_name() in ("mysql", "mariadb") else "postgres"),
        isolation_level="AUTOCOMMIT",
    )
    with server.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {u.database}"))
        conn.execute(sa.text(f"CREATE DATABASE {u.database}"))
    server.dispose()


@dataclass
class Repeat:
    days: dict[str, dict[str, Any]] = field(default_factory=dict)
    l_read: dict[str, float] = field(default_factory=dict)
    l_send: float = 0.0
    l_send_messages: int = 0
    l_send_bytes: int = 0
    peer_seconds: float = 0.0
    peer_messages: int = 0
    render_cpu: float = 0.0  # CPU seconds to render the first day's messages (L_send's) in one thread


def one_repeat(number: int, shop_url: str, state_url: str, sink: bench_smtp.SinkProcess, peer_sample: int) -> Repeat:
    result = Repeat()
    fresh_state(state_url)
    bench_shop.restore_dates(shop_url)
    for name, offset in SCENARIOS.items():
        if name == "changed":
            changed = bench_shop.change_dates(shop_url, 0.01, seed=number)
            say(f"  {len(changed)} backordered products got a new date")
        if name == "quiet":
            result.l_read = l_read(shop_url, state_url, T0 + offset)
            lr = result.l_read
            say(
                f"  L_read: {lr['shop_rows']} shop rows in {lr['shop_seconds']:.2f} s,"
                f" {lr['snapshot_rows']} snapshot rows in {lr['snapshot_seconds']:.2f} s"
            )
        sink.reset()
        day = run_day_in_process(shop_url, state_url, sink.port, T0 + offset)
        if sink.messages != day["sent"]:
            raise RuntimeError(f"{name}: the sink got {sink.messages} messages, the run recorded {day['sent']} sent")
        result.days[name] = day
        say(
            f"  {name}: {day['lines']} lines, {day['sent']} sent in {day['total']:.2f} s"
            f" (peak RSS {day['peak_rss_mb']:.0f} MB)"
        )
        if name == "first":
            whole, parts, result.render_cpu = first_day_messages(state_url, T0)
            sink.reset()
            result.l_send = bench_smtp.send_one_connection("127.0.0.1", sink.port, whole, "shop@trailhead.example")
            result.l_send_messages, result.l_send_bytes = len(whole), sum(len(m) for m in whole)
            sample = parts[:peer_sample]
            sink.reset()
            result.peer_seconds = bench_smtp.send_like_email_operator(
                sample, host="127.0.0.1", port=sink.port, from_email="shop@trailhead.example"
            )
            result.peer_messages = len(sample)
            say(
                f"  L_send: {len(whole)} messages in {result.l_send:.2f} s; peer: {len(sample)} in"
                f" {result.peer_seconds:.2f} s"
            )
    bench_shop.restore_dates(shop_url)
    return result


def parallel_parts(shop_url: str, state_url: str, sink: bench_smtp.SinkProcess) -> dict[int, dict[str, Any]]:
    """The first day again, its sending split in 1, 2 and 4 parts sent at once."""
    out = {}
    for parts in PARTS:
        fresh_state(state_url)
        bench_shop.restore_dates(shop_url)
        sink.reset()
        day = run_day_in_process(shop_url, state_url, sink.port, T0, parts)
        out[parts] = {"sent": day["sent"], "send_wall": day["send_wall"], "rate": day["sent"] / day["send_wall"]}
        say(f"  {parts} part(s): {day['sent']} sent in {day['send_wall']:.2f} s ({out[parts]['rate']:.0f}/s)")
    return out


# --- the report ----------------------------------------------------------------------------------


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def stage_split(day: dict[str, Any]) -> dict[str, float]:
    """extract, classify, render, send, commit as the issue names them, from the run's stage seconds."""
    s = day["stage_seconds"]

    def total(suffix: str) -> float:
        return sum(v for k, v in s.items() if k.startswith("send_") and k.endswith(suffix))

    return {
        "extract": s.get("extract", 0.0) + s.get("previous_snapshot", 0.0),
        "classify": s.get("classify", 0.0),
        "render": total(".render"),
        "render_wait": total(".render_wait"),  # the SMTP session waiting for a rendered message
        "send": total(".smtp"),
        "commit": total(".commit") + s.get("finish", 0.0),
        "total": day["total"],
    }


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = int(
        next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem / 1024 / 1024, 1),
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def report(
    size: str, sizes: bench_shop.Sizes, repeats: list[Repeat], parts: dict[int, dict[str, Any]], server_version: str
) -> dict[str, Any]:
    days = {}
    for name in SCENARIOS:
        splits = [stage_split(r.days[name]) for r in repeats]
        days[name] = {key: spread([s[key] for s in splits]) for key in splits[0]}
        days[name]["peak_rss_mb"] = spread([r.days[name]["peak_rss_mb"] for r in repeats])
        days[name]["sent"] = repeats[0].days[name]["sent"]
        days[name]["lines"] = repeats[0].days[name]["lines"]
        days[name]["emails_per_s"] = spread([r.days[name]["sent"] / r.days[name]["total"] for r in repeats])
    lread = spread([r.l_read["seconds"] for r in repeats])
    lsend = spread([r.l_send for r in repeats])
    ours = [
        r.days["first"]["sent"]
        / sum(v for k, v in r.days["first"]["stage_seconds"].items() if k.startswith("send_") and "." not in k)
        for r in repeats
    ]
    peer = [r.peer_messages / r.peer_seconds for r in repeats]
    ratios = {
        "first run total / (L_read + L_send)": spread(
            [r.days["first"]["total"] / (r.l_read["seconds"] + r.l_send) for r in repeats]
        ),
        "quiet run / L_read": spread([r.days["quiet"]["total"] / r.l_read["seconds"] for r in repeats]),
        "our send rate / peer rate": spread([o / p for o, p in zip(ours, peer, strict=True)]),
    }
    rendering = spread([r.l_send_messages / r.render_cpu for r in repeats])
    peak_rss = max(d["peak_rss_mb"]["max"] for d in days.values())
    return {
        "size": size,
        "sizes": asdict(sizes),
        "repeats": len(repeats),
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine() | {"mariadb": server_version},
        "days": days,
        "limits": {
            "L_read_seconds": lread,
            "L_send_seconds": lsend,
            "L_send_messages": repeats[0].l_send_messages,
            "L_send_mean_message_bytes": repeats[0].l_send_bytes / max(1, repeats[0].l_send_messages),
            "L_send_rate": spread([r.l_send_messages / r.l_send for r in repeats]),
        },
        "peer": {"sample": repeats[0].peer_messages, "rate": spread(peer)},
        "our_send_rate": spread(ours),
        "ratios": ratios,
        "rendering_per_cpu_second": rendering,
        "peak_rss_mb": peak_rss,
        "targets": {
            name: {"target": limit, "median": ratios[name]["median"], "met": ratios[name]["median"] <= limit}
            for name, limit in TARGETS.items()
        }
        | {
            "rendering per CPU second": {
                "target": RENDER_TARGET,
                "median": rendering["median"],
                "met": rendering["median"] >= RENDER_TARGET,
            },
            "peak RSS MB": {"target": RSS_TARGET_MB, "median": peak_rss, "met": peak_rss <= RSS_TARGET_MB},
        },
        "parts": parts,
    }


def markdown(result: dict[str, Any]) -> str:
    def mmm(d: dict[str, float], fmt: str = "{:.2f}") -> str:
        return f"{fmt.format(d['median'])} ({fmt.format(d['min'])}–{fmt.format(d['max'])})"

    m, z = result["machine"], result["sizes"]
    lines = [
        f"Size `{result['size']}`: {z['order_lines']:,} order lines over {z['orders']:,} orders, {z['open_orders']:,}"
        f" open orders holding {z['backorder_lines']:,} backorder lines; {result['repeats']} repeats, median (min–max)"
        f" seconds. {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}, MariaDB"
        f" {m['mariadb']}; {result['measured_at']}.",
        "",
        "| day | lines | emails | extract | classify | render | render wait | send | commit | total | peak RSS MB"
        " | emails/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, d in result["days"].items():
        lines.append(
            f"| {name} | {d['lines']:,} | {d['sent']:,} | {d['extract']['median']:.2f} | {d['classify']['median']:.2f}"
            f" | {d['render']['median']:.2f} | {d['render_wait']['median']:.2f} | {d['send']['median']:.2f}"
            f" | {d['commit']['median']:.2f}"
            f" | {mmm(d['total'])} | {d['peak_rss_mb']['median']:.0f} | {d['emails_per_s']['median']:.0f} |"
        )
    lim = result["limits"]
    lines += [
        "",
        f"- L_read (raw fetch, {lim['L_send_messages'] and result['days']['quiet']['lines']:,} shop rows + the previous"
        f" snapshot): {mmm(lim['L_read_seconds'])} s",
        f"- L_send ({lim['L_send_messages']:,} messages of {lim['L_send_mean_message_bytes']:,.0f} bytes, one"
        f" connection): {mmm(lim['L_send_seconds'])} s, {mmm(lim['L_send_rate'], '{:.0f}')} messages/s",
        f"- our send stage: {mmm(result['our_send_rate'], '{:.0f}')} messages/s; EmailOperator-style, a connection"
        f" per message ({result['peer']['sample']:,} messages): {mmm(result['peer']['rate'], '{:.0f}')} messages/s",
    ]
    for name, r in result["ratios"].items():
        target = result["targets"].get(name)
        verdict = f" (target <= {target['target']}: {'met' if target['met'] else 'NOT met'})" if target else ""
        lines.append(f"- {name}: {mmm(r)}{verdict}")
    target = result["targets"]["rendering per CPU second"]
    lines.append(
        f"- rendering on one core: {mmm(result['rendering_per_cpu_second'], '{:,.0f}')} finished messages"
        f" per CPU second (target >= {target['target']:,}: {'met' if target['met'] else 'NOT met'})"
    )
    target = result["targets"]["peak RSS MB"]
    lines.append(
        f"- peak RSS, the most of any day: {result['peak_rss_mb']:.0f} MB (target <= {target['target']} MB:"
        f" {'met' if target['met'] else 'NOT met'})"
    )
    lines.append(
        "- first day's sending in parts sent at once: "
        + ", ".join(f"{k} part{'s' if k > 1 else ''} {v['rate']:.0f}/s" for k, v in result["parts"].items())
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(bench_shop.SIZES), default="quick")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shop-url", default=f"{bench_shop.DEFAULT_URL}/{bench_shop.DEFAULT_DATABASE}")
    parser.add_argument("--state-url", default=f"{bench_shop.DEFAULT_URL}/bench_state?charset=utf8mb4")
    parser.add_argument("--peer-sample", type=int, default=2000, help="messages sent the EmailOperator way")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--day", help=argparse.SUPPRESS)  # the child process: one day
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--parts", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.day:
        print(
            json.dumps(
                run_day(args.shop_url, args.state_url, args.port, datetime.fromisoformat(args.day), args.parts),
                default=str,
            )
        )
        return 0

    sizes = bench_shop.SIZES[args.size]
    started = time.perf_counter()
    say(f"bench: size {args.size}, {args.repeats} repeats; shop {args.shop_url}, state {args.state_url}")
    figures = bench_shop.create_shop(
        bench_shop.as_server(args.shop_url), sizes, database=sa.engine.make_url(args.shop_url).database
    )
    say(f"shop: {figures.backorder_lines:,} backorder lines in {figures.backorder_orders:,} orders")
    repeats = []
    with bench_smtp.SinkProcess() as sink:
        for number in range(1, args.repeats + 1):
            say(f"repeat {number}/{args.repeats}")
            repeats.append(one_repeat(number, args.shop_url, args.state_url, sink, args.peer_sample))
        say("sending in parts")
        parts = parallel_parts(args.shop_url, args.state_url, sink)
    engine = sa.create_engine(args.shop_url)
    with engine.connect() as conn:
        version = str(conn.execute(sa.text("SELECT VERSION()")).scalar_one())
    engine.dispose()
    result = report(args.size, sizes, repeats, parts, version)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.size}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    table = markdown(result)
    (args.out / f"{args.size}.md").write_text(table)
    print(table)
    say(f"bench: done in {time.perf_counter() - started:.0f} s; {args.out / (args.size + '.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
