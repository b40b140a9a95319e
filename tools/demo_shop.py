"""The demo shop: osCommerce 2.3 tables with realistic English and German orders, some on backorder.

Used by `make demo` and by the tests. The tables follow osCommerce 2.3.4.1's install SQL for the
columns the pipeline reads (and a few around them). osCommerce stores no order language, so the
demo's `orders` table adds Zen Cart's `language_code char(2)` column: that is how the demo shows
both languages; a real osCommerce shop gets `default_language` for every order.

`DEMO_CHANGES` are the availability dates the demo changes between its days, so that every kind
of email appears.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

md = sa.MetaData()

languages = sa.Table(
    "languages",
    md,
    sa.Column("languages_id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(32), nullable=False),
    sa.Column("code", sa.String(2), nullable=False),
    sa.Column("image", sa.String(64)),
    sa.Column("directory", sa.String(32)),
    sa.Column("sort_order", sa.Integer),
)
orders_status = sa.Table(
    "orders_status",
    md,
    sa.Column("orders_status_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("language_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("orders_status_name", sa.String(32), nullable=False),
    sa.Column("public_flag", sa.Integer, server_default="1"),
    sa.Column("downloads_flag", sa.Integer, server_default="0"),
)
products = sa.Table(
    "products",
    md,
    sa.Column("products_id", sa.Integer, primary_key=True),
    sa.Column("products_quantity", sa.Integer, nullable=False),
    sa.Column("products_model", sa.String(12)),
    sa.Column("products_price", sa.Numeric(15, 4), nullable=False),
    # Text, not DateTime: the demo stores zero dates the way MySQL shops hold them.
    sa.Column("products_date_available", sa.String(19)),
    sa.Column("products_date_added", sa.String(19), nullable=False),
    sa.Column("products_last_modified", sa.String(19)),
    sa.Column("products_status", sa.Integer, nullable=False),
)
products_description = sa.Table(
    "products_description",
    md,
    sa.Column("products_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("language_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("products_name", sa.String(64), nullable=False, server_default=""),
)
orders = sa.Table(
    "orders",
    md,
    sa.Column("orders_id", sa.Integer, primary_key=True),
    sa.Column("customers_id", sa.Integer, nullable=False),
    sa.Column("customers_name", sa.String(255), nullable=False),
    sa.Column("customers_email_address", sa.String(255), nullable=False),
    sa.Column("date_purchased", sa.String(19)),
    sa.Column("last_modified", sa.String(19)),
    sa.Column("orders_status", sa.Integer, nullable=False),
    sa.Column("currency", sa.String(3)),
    sa.Column("language_code", sa.String(2), nullable=False, server_default=""),
)
orders_products = sa.Table(
    "orders_products",
    md,
    sa.Column("orders_products_id", sa.Integer, primary_key=True),
    sa.Column("orders_id", sa.Integer, nullable=False, index=True),
    sa.Column("products_id", sa.Integer, nullable=False),
    sa.Column("products_model", sa.String(12)),
    sa.Column("products_name", sa.String(64), nullable=False),
    sa.Column("products_price", sa.Numeric(15, 4), nullable=False),
    sa.Column("products_quantity", sa.Integer, nullable=False),
)

# (model, English name, German name, price)
CATALOGUE: list[tuple[str, str, str, float]] = [
    ("TENT-2P", "Trekking tent for two", "Trekkingzelt für zwei", 249.0),
    ("TENT-4P", "Family tent Lakeside", "Familienzelt Seeblick", 429.0),
    ("BAG-800", "Down sleeping bag -10 °C", "Daunenschlafsack -10 °C", 319.0),
    ("MAT-UL", "Ultralight sleeping mat", "Ultraleichte Isomatte", 89.9),
    ("STOVE-G", "Gas stove Mini", "Gaskocher Mini", 39.9),
    ("POT-SET", "Titanium pot set", "Titan-Topfset", 74.5),
    ("PACK-45", "Backpack 45 l", "Rucksack 45 l", 159.0),
    ("PACK-65", "Backpack 65 l Expedition", "Rucksack 65 l Expedition", 229.0),
    ("BOOT-M", "Hiking boots Alpine, men", "Wanderschuhe Alpin, Herren", 189.0),
    ("BOOT-W", "Hiking boots Alpine, women", "Wanderschuhe Alpin, Damen", 189.0),
    ("JKT-RAIN", "Rain jacket Storm", "Regenjacke Sturm", 139.0),
    ("JKT-DOWN", "Down jacket Glacier", "Daunenjacke Gletscher", 259.0),
    ("LAMP-400", "Head torch 400 lm", "Stirnlampe 400 lm", 44.9),
    ("POLE-CF", "Carbon trekking poles", "Carbon-Trekkingstöcke", 99.0),
    ("FILT-W", "Water filter Pure", "Wasserfilter Pure", 54.0),
    ("GPS-66", "Handheld GPS 66", "Outdoor-GPS 66", 399.0),
    ("KNIFE-F", "Folding knife", "Klappmesser", 29.9),
    ("CHAIR-L", "Camping chair Light", "Campingstuhl Leicht", 64.0),
    ("HAMM-1", "Hammock with mosquito net", "Hängematte mit Moskitonetz", 79.0),
    ("BOTT-1L", "Insulated bottle 1 l", "Isolierflasche 1 l", 34.9),
    ("GLOVE-W", "Winter gloves", "Winterhandschuhe", 49.0),
    ("SOCK-M", "Merino socks, 3 pairs", "Merinosocken, 3 Paar", 27.5),
    ("MAP-ALP", "Map set Alps", "Kartenset Alpen", 19.9),
    ("COMP-P", "Compass Pro", "Kompass Pro", 36.0),
    ("TARP-3", "Tarp 3 x 3 m", "Tarp 3 x 3 m", 69.0),
    ("GAIT-1", "Gaiters", "Gamaschen", 32.0),
    ("SNOW-S", "Snowshoes Trail", "Schneeschuhe Trail", 179.0),
    ("CRAMP-1", "Crampons", "Steigeisen", 129.0),
    ("BIVY-1", "Bivy bag", "Biwaksack", 59.0),
    ("SOLAR-P", "Solar panel 21 W", "Solarpanel 21 W", 119.0),
]

FIRST_NAMES_EN = ["Emma", "Oliver", "Amelia", "Harry", "Isla", "Jack", "Grace", "George", "Sophie", "Noah"]
LAST_NAMES_EN = ["Smith", "Jones", "Taylor", "Brown", "O'Neill", "Wilson", "Evans", "Walker", "Hughes", "Wright"]
FIRST_NAMES_DE = ["Jürgen", "Anna", "Lukas", "Sophie", "Maximilian", "Marie", "Jörg", "Lea", "Björn", "Käthe"]
LAST_NAMES_DE = ["Müller", "Schmidt", "Schäfer", "Weiß", "Hoffmann", "Bäcker", "Groß", "Köhler", "Krüger", "Fuchs"]

PLACEHOLDERS = ("0000-00-00 00:00:00", "0001-01-01 00:00:00", "1000-01-01 00:00:00")


@dataclass(frozen=True)
class DateChange:
    """Before the demo's day `before_day` (0 = first run), product `products_id` gets `days` (None clears it)."""

    before_day: int
    products_id: int
    days: int | None
    why: str


# Backordered products and their dates, in days after the demo's first day (D0).
BACKORDERED: dict[int, int] = {3: 4, 7: 10, 11: 14, 15: 20, 19: 30, 27: 8}
DEMO_CHANGES: tuple[DateChange, ...] = (
    DateChange(2, 11, 21, "the rain jacket (11) is postponed by a week"),
    DateChange(3, 23, 12, "the map set (23) had no date; now it is expected in 12 days"),
    DateChange(4, 19, 25, "the hammock (19) comes five days earlier"),
    DateChange(5, 27, None, "the snowshoes (27) arrived: their date is cleared"),
)


def ascii_mail_name(name: str) -> str:
    """How German shops' customers usually spell their names in addresses: 'Jürgen' -> 'juergen'."""
    table = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss", "'": ""})
    return name.lower().translate(table)


def fmt(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def create_schema(engine: Engine) -> None:
    md.create_all(engine)


def create_demo_shop(engine: Engine, first_day: datetime, orders_count: int = 300, seed: int = 7) -> None:
    """Fill an empty database with the demo shop; `first_day` is the demo's first reference time (naive)."""
    rng = random.Random(seed)
    create_schema(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(languages),
            [
                {"languages_id": 1, "name": "English", "code": "en", "directory": "english", "sort_order": 1},
                {"languages_id": 2, "name": "Deutsch", "code": "de", "directory": "german", "sort_order": 2},
            ],
        )
        conn.execute(
            sa.insert(orders_status),
            [
                {"orders_status_id": sid, "language_id": lid, "orders_status_name": name}
                for sid, en, de in (
                    (1, "Pending", "Offen"),
                    (2, "Processing", "In Bearbeitung"),
                    (3, "Delivered", "Versendet"),
                )
                for lid, name in ((1, en), (2, de))
            ],
        )
        product_rows = []
        for pid, (model, _en, _de, price) in enumerate(CATALOGUE, start=1):
            if pid in BACKORDERED:
                available: str | None = fmt(first_day + timedelta(days=BACKORDERED[pid]))
            elif pid in (2, 4, 6):
                available = PLACEHOLDERS[(pid // 2) - 1]
            elif pid == 8:
                available = fmt(first_day - timedelta(days=10))
            else:
                available = None
            product_rows.append(
                {
                    "products_id": pid,
                    "products_quantity": -rng.randint(1, 5) if pid in BACKORDERED else rng.randint(0, 40),
                    "products_model": model,
                    "products_price": price,
                    "products_date_available": available,
                    "products_date_added": fmt(first_day - timedelta(days=400)),
                    "products_status": 1,
                }
            )
        conn.execute(sa.insert(products), product_rows)
        conn.execute(
            sa.insert(products_description),
            [
                {"products_id": pid, "language_id": lid, "products_name": name}
                for pid, (_m, en, de, _p) in enumerate(CATALOGUE, start=1)
                for lid, name in ((1, en), (2, de))
            ],
        )
        order_rows, line_rows = [], []
        backordered_ids = [*sorted(BACKORDERED), 23]
        for oid in range(1, orders_count + 1):
            german = rng.random() < 0.6
            first = rng.choice(FIRST_NAMES_DE if german else FIRST_NAMES_EN)
            last = rng.choice(LAST_NAMES_DE if german else LAST_NAMES_EN)
            # Orders come in over the 30 days before D0 and the first five demo days.
            purchased = first_day - timedelta(days=30) + timedelta(minutes=oid * (35 * 24 * 60) // orders_count)
            email = f"{ascii_mail_name(first)}.{ascii_mail_name(last)}{oid}@example.{'de' if german else 'com'}"
            if oid % 97 == 0:
                email = ""  # an order taken by phone, without an address
            order_rows.append(
                {
                    "orders_id": oid,
                    "customers_id": 1000 + oid,
                    "customers_name": f"{first} {last}",
                    "customers_email_address": email,
                    "date_purchased": fmt(purchased),
                    "orders_status": rng.choices((1, 2, 3), weights=(5, 3, 2))[0],
                    "currency": "EUR" if german else "GBP",
                    "language_code": "de" if german else "en",
                }
            )
            picks = rng.sample(range(1, len(CATALOGUE) + 1), rng.randint(1, 4))
            if rng.random() < 0.3 or not email:
                picks[0] = rng.choice(backordered_ids)
            for pid in dict.fromkeys(picks):
                model, en, de, price = CATALOGUE[pid - 1]
                line_rows.append(
                    {
                        "orders_id": oid,
                        "products_id": pid,
                        "products_model": model,
                        "products_name": de if german else en,
                        "products_price": price,
                        "products_quantity": rng.choice((1, 1, 1, 2, 3)),
                    }
                )
        conn.execute(sa.insert(orders), order_rows)
        conn.execute(sa.insert(orders_products), line_rows)


def apply_changes(engine: Engine, first_day: datetime, day: int) -> list[DateChange]:
    """Apply the date changes due before demo day `day`; return them."""
    due = [c for c in DEMO_CHANGES if c.before_day == day]
    with engine.begin() as conn:
        for change in due:
            value = None if change.days is None else fmt(first_day + timedelta(days=change.days))
            conn.execute(
                sa.update(products)
                .where(products.c.products_id == change.products_id)
                .values(products_date_available=value)
            )
    return due


def main(argv: list[str] | None = None) -> int:
    """`python -m tools.demo_shop --url URL`: the demo shop in any database SQLAlchemy
    reaches (the compose stack's MariaDB `shop-db` is loaded this way); a database that already
    holds an `orders` table is left as it is."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--url", required=True, help="SQLAlchemy URL, e.g. mysql+pymysql://shop:shop@shop-db/shop")
    parser.add_argument("--first-day", default=None, help="the demo's first reference date (default: today, UTC)")
    args = parser.parse_args(argv)
    first_day = datetime.fromisoformat(args.first_day) if args.first_day else datetime.now(UTC)
    first_day = first_day.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    engine = sa.create_engine(args.url)
    try:
        if sa.inspect(engine).has_table("orders"):
            print(f"demo shop: {engine.url.render_as_string(hide_password=True)} already holds a shop; left as it is")
            return 0
        create_demo_shop(engine, first_day)
        with engine.connect() as conn:
            counts = {
                t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one() for t in md.sorted_tables
            }
    finally:
        engine.dispose()
    print(
        f"demo shop: created in {engine.url.render_as_string(hide_password=True)}, first day {first_day:%Y-%m-%d}: "
        + ", ".join(f"{n} {name}" for name, n in counts.items())
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
