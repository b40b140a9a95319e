"""`make preview`: render the emails without sending them, as `.eml` and `.html` files.

From sample data (the default) or from one order of a shop, in any language and kind, so a shop
owner can look at the emails before going live.

Usage:
  python -m tools.preview [--kind initial|changed|periodic|available|all] [--language en|de|all]
                                      [--order ID [--shop-url URL] [--at 2026-11-23T00:00]]
                                      [--conf JSON|@FILE] [--shop-name NAME] [--sender ADDRESS] [--out DIR]
  URL is a SQLAlchemy URL of the shop, e.g. sqlite:////path/shop.sqlite or
  mysql+pymysql://user:password@host/shop?charset=utf8mb4; without it, --order reads the shop of the
  `shop_db` connection as the DAG does when it is given as AIRFLOW_CONN_SHOP_DB (JSON).
  --conf takes the DAG's params as you trigger it (branding, reminder_interval_days, order_status_ids,
  table_prefix, ...), as JSON or as @path of a JSON file; the preview looks as the run's emails will.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime
from email.utils import parseaddr
from pathlib import Path

import sqlalchemy as sa

from include.backorder import KINDS, LANGUAGES
from include.backorder.config import ConfigError, DbConnection, RunParams, check_conf_keys
from include.backorder.render import ListedLine, Notification, Renderer
from include.backorder.shop import backorder_lines_query, inspect_shop
from include.backorder.unsubscribe import Unsubscribe

SAMPLE_LINES = (
    ListedLine("Trekking tent for two", "TENT-2P", 1, datetime(2026, 12, 17), datetime(2026, 12, 3)),
    ListedLine("Down sleeping bag -10\u00a0°C", "BAG-800", 2, datetime(2027, 1, 8), None),
)


def configured_shop_url() -> str | None:
    """The shop of the `shop_db` connection, when it is given as AIRFLOW_CONN_SHOP_DB in JSON."""
    raw = os.environ.get("AIRFLOW_CONN_SHOP_DB")
    if not raw:
        return None
    c = json.loads(raw)
    db = DbConnection(
        "shop_db",
        c.get("conn_type", ""),
        host=c.get("host") or "",
        port=c.get("port"),
        login=c.get("login") or "",
        password=c.get("password") or "",
        schema=c.get("schema") or "",
        extra=c.get("extra") or {},
    )
    return str(db.url(read_only=True).render_as_string(hide_password=False))


def shop_lines(url: str, order_id: int, at: datetime, params: RunParams) -> tuple[str, str, list[ListedLine]]:
    """(customer name, address, backorder lines) of one order at `at`, read from the shop."""
    engine = sa.create_engine(url)
    try:
        tables = inspect_shop(engine, params.table_prefix)
        query = (
            backorder_lines_query(tables, params, at)
            .where(tables.orders.c.orders_id == order_id)
            .order_by(tables.orders_products.c.orders_products_id)  # the query orders the orders only
        )
        with engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
    finally:
        engine.dispose()
    if not rows:
        raise SystemExit(
            f"order {order_id} has no backorder lines at {at:%Y-%m-%d %H:%M}"
            f" (or is not in statuses {', '.join(map(str, params.order_status_ids))})"
        )
    lines = [
        ListedLine(r["products_name"], r["products_model"], r["products_quantity"], r["date_available"], None)
        for r in rows
    ]
    return rows[0]["customers_name"] or "", rows[0]["customers_email_address"] or "", lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", default="all", choices=[*KINDS, "all"])
    parser.add_argument("--language", default="all", choices=[*LANGUAGES, "all"])
    parser.add_argument("--shop-url", help="SQLAlchemy URL of the shop (default: AIRFLOW_CONN_SHOP_DB)")
    parser.add_argument("--order", type=int, help="orders_id to preview, read from the shop")
    parser.add_argument("--at", default=None, help="reference time (default: now)")
    parser.add_argument("--conf", default="{}", help="the DAG params as JSON, or @path of a JSON file")
    parser.add_argument("--shop-name", default=None, help="shortcut for the shop_name param")
    parser.add_argument("--sender", default="Shop <shop@example.com>")
    parser.add_argument("--interval", type=int, default=None, help="shortcut for reminder_interval_days")
    parser.add_argument("--out", type=Path, default=Path("previews"))
    args = parser.parse_args(argv)
    conf = json.loads(Path(args.conf[1:]).read_text() if args.conf.startswith("@") else args.conf)
    if args.shop_name is not None:
        conf["shop_name"] = args.shop_name
    if args.interval is not None:
        conf["reminder_interval_days"] = args.interval
    try:  # the DAG's params are RunParams' fields; a typo is an error, as in a run
        check_conf_keys(conf, RunParams.__dataclass_fields__)
        params = RunParams.from_mapping(conf)
    except ConfigError as exc:
        parser.error(str(exc))

    at = datetime.fromisoformat(args.at) if args.at else datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    if args.shop_url or args.order is not None:
        if args.order is None:
            parser.error("--shop-url needs --order")
        url = args.shop_url or configured_shop_url()
        if url is None:
            parser.error("--order needs --shop-url, or the shop_db connection as AIRFLOW_CONN_SHOP_DB (JSON)")
        name, address, lines = shop_lines(str(url), args.order, at, params)
        order_id = args.order
    else:
        name, address, lines, order_id = "Jürgen Müller", "juergen.mueller@example.com", list(SAMPLE_LINES), 4711
    kinds = KINDS if args.kind == "all" else (args.kind,)
    languages = LANGUAGES if args.language == "all" else (args.language,)
    renderer = Renderer(params.branding())
    sender = parseaddr(args.sender)[1]
    args.out.mkdir(parents=True, exist_ok=True)
    for kind in kinds:
        for language in languages:
            notification = Notification(
                order_id,
                kind,
                language,
                address,
                name,
                at.replace(tzinfo=UTC),
                tuple(lines),
                params.reminder_interval_days,
            )
            unsubscribe = Unsubscribe(mailto=params.unsubscribe_mailto or sender)
            msg = renderer.render(notification, args.sender, sender.rsplit("@", 1)[-1], None, unsubscribe)
            stem = args.out / f"{kind}-{language}"
            stem.with_suffix(".eml").write_bytes(msg.data)
            parsed = msg.parsed()
            html = parsed.get_body(("html",))
            assert html is not None
            stem.with_suffix(".html").write_text(html.get_content(), encoding="utf-8")
            print(f"{stem}.eml  {stem}.html  Subject: {parsed['Subject']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
