"""A synthetic osCommerce 2.3 shop in the machine's MariaDB, for the backorder benchmark (`make bench`).

`FULL` is the benchmark's shop: 1,000,000 order lines over 400,000 orders, of which 50,000 open
orders hold 80,000 backorder lines. `QUICK` is a twentieth of it, for a quick look; any `Sizes`
can be built (`python -m bench.shop --size quick|full [--orders N ...] [--force]`).

The tables are those of osCommerce 2.3.4.1's install SQL with all their columns, character set and
exactly its indexes: none on `orders.orders_status` nor on `products.products_date_available`, so
the benchmark measures a real shop's schema (tests/fixtures/shops/osc23.sql adds an index on
`orders.orders_status` for the tests; this shop does not). Like the demo shop, `orders` has Zen
Cart's `language_code` column, 'de' for about a third of the customers and 'en' for the others,
so the emails come in two languages.

The shop is built around `REFERENCE_TIME`: backordered products become available 1 to 60 days
after it; other products have no date, a MySQL zero date or a past one. Orders were placed over
the three years before it, open orders (status 1 or 2) in its last 60 days; the others are
delivered (status 3) and hold any product, backordered ones too. The counts are exact: the real
query (`include.backorder.shop.backorder_lines_query` for `RunParams()` at `REFERENCE_TIME`)
finds `backorder_lines` lines in `open_orders` orders; `create_shop` checks that after loading.

Rows come from `random.Random(seed)` (same seed, same shop) and are loaded in batches by
LOAD DATA LOCAL INFILE when the server allows it, by multi-row INSERTs otherwise; secondary
indexes are created after loading. `bench_meta` records the sizes, seed and generator of a build:
`create_shop` reuses such a shop rather than building it again (unless `force`), in about a second.
`change_dates` moves the availability dates of a fraction of the backordered products;
`restore_dates` puts back the originals, kept in `bench_original_dates`.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import pymysql
import sqlalchemy as sa

from include.backorder.config import DbConnection, RunParams
from include.backorder.shop import backorder_lines_query, inspect_shop
from tools import demo_shop

REFERENCE_TIME = datetime(2026, 11, 2)  # naive, as the shop writes its dates (shop_timezone UTC)
REFERENCE_TIME_UTC = REFERENCE_TIME.replace(tzinfo=UTC)  # the same instant, for a run's reference time
DEFAULT_URL = "mysql+pymysql://root@127.0.0.1:3306"
DEFAULT_DATABASE = "bench_shop"
GENERATOR = "2"  # change it when the generated rows change: a shop of another generator is rebuilt
OPEN_STATUSES = (1, 2)
DELIVERED = 3
ZERO_DATE = "0000-00-00 00:00:00"
PROGRESS_ROWS = 100_000  # a progress line (and a LOAD DATA statement) per that many order lines
INSERT_ROWS = 10_000  # rows per multi-row INSERT when LOAD DATA LOCAL is not allowed
HISTORY = timedelta(days=3 * 365)  # delivered orders were placed over this span before REFERENCE_TIME
OPEN_SPAN = timedelta(days=60)  # open orders in this one
AVAILABLE_IN_DAYS = (1, 60)  # backordered products arrive this many days after REFERENCE_TIME

Progress = Callable[[str], None]
LoadMethod = Literal["auto", "infile", "insert"]
Row = tuple[Any, ...]
T = TypeVar("T")


@dataclass(frozen=True)
class Sizes:
    """How big the shop is. Validated: every count is exact, so every combination must be possible."""

    orders: int
    order_lines: int
    open_orders: int
    backorder_lines: int
    products: int
    backordered_products: int

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{f.name} must be a whole number >= 1, got {value!r}")
        if self.open_orders > self.orders:
            raise ValueError(f"open_orders ({self.open_orders:,}) cannot exceed orders ({self.orders:,})")
        if self.order_lines < self.orders:
            raise ValueError(
                f"order_lines ({self.order_lines:,}) must be >= orders ({self.orders:,}): every order holds a line"
            )
        if self.backorder_lines < self.open_orders:
            raise ValueError(
                f"backorder_lines ({self.backorder_lines:,}) must be >= open_orders ({self.open_orders:,}):"
                " every open order holds at least one backorder line"
            )
        if self.order_lines < self.backorder_lines + self.closed_orders:
            raise ValueError(
                f"order_lines ({self.order_lines:,}) must be >= backorder_lines + closed orders"
                f" ({self.backorder_lines:,} + {self.closed_orders:,}): every closed order holds a line too"
            )
        if self.backordered_products >= self.products:
            raise ValueError(
                f"backordered_products ({self.backordered_products:,}) must be < products ({self.products:,}):"
                " open orders hold in-stock products too"
            )

    @property
    def closed_orders(self) -> int:
        return self.orders - self.open_orders

    @property
    def in_stock_lines_of_open_orders(self) -> int:
        """Lines of in-stock products in open orders: enough to give open orders the shop's average size."""
        target = round(self.open_orders * self.order_lines / self.orders) - self.backorder_lines
        spare = self.order_lines - self.orders - (self.backorder_lines - self.open_orders)
        return max(0, min(target, spare))


FULL = Sizes(
    orders=400_000,
    order_lines=1_000_000,
    open_orders=50_000,
    backorder_lines=80_000,
    products=20_000,
    backordered_products=2_000,
)
QUICK = Sizes(
    orders=20_000,
    order_lines=50_000,
    open_orders=2_500,
    backorder_lines=4_000,
    products=1_000,
    backordered_products=100,
)
SIZES: dict[str, Sizes] = {"quick": QUICK, "full": FULL}


@dataclass(frozen=True)
class ShopFigures:
    """The shop as found in the database, and what building it took."""

    database: str
    orders: int
    order_lines: int
    open_orders: int  # orders in status 1 or 2
    products: int
    backordered_products: int  # products available after REFERENCE_TIME
    backorder_lines: int  # rows of the real backorder query at REFERENCE_TIME
    backorder_orders: int  # distinct orders among them
    build_seconds: float = 0.0  # what building the shop took (when reused: what it took then)
    reused: bool = False  # an existing shop of the same sizes and seed was kept

    def matches(self, sizes: Sizes) -> bool:
        found = (self.orders, self.order_lines, self.open_orders, self.products, self.backordered_products)
        wanted = (sizes.orders, sizes.order_lines, sizes.open_orders, sizes.products, sizes.backordered_products)
        return found == wanted and (self.backorder_lines, self.backorder_orders) == (
            sizes.backorder_lines,
            sizes.open_orders,
        )


# osCommerce 2.3.4.1's tables (catalog/install/oscommerce.sql) with their primary keys; the secondary
# indexes are in INDEXES, added once the rows are in. `orders.language_code` is Zen Cart's.
_CHARSET = "CHARACTER SET utf8 COLLATE utf8_unicode_ci"
TABLES: dict[str, str] = {
    "languages": """(
  languages_id int NOT NULL auto_increment, name varchar(32) NOT NULL, code char(2) NOT NULL,
  image varchar(64), directory varchar(32), sort_order int(3),
  PRIMARY KEY (languages_id))""",
    "orders_status": """(
  orders_status_id int DEFAULT '0' NOT NULL, language_id int DEFAULT '1' NOT NULL,
  orders_status_name varchar(32) NOT NULL, public_flag int DEFAULT '1', downloads_flag int DEFAULT '0',
  PRIMARY KEY (orders_status_id, language_id))""",
    "products": """(
  products_id int NOT NULL auto_increment, products_quantity int(4) NOT NULL, products_model varchar(12),
  products_image varchar(64), products_price decimal(15,4) NOT NULL, products_date_added datetime NOT NULL,
  products_last_modified datetime, products_date_available datetime, products_weight decimal(5,2) NOT NULL,
  products_status tinyint(1) NOT NULL, products_tax_class_id int NOT NULL, manufacturers_id int NULL,
  products_ordered int NOT NULL default '0',
  PRIMARY KEY (products_id))""",
    "products_description": """(
  products_id int NOT NULL auto_increment, language_id int NOT NULL default '1',
  products_name varchar(64) NOT NULL default '', products_description text, products_url varchar(255) default NULL,
  products_viewed int(5) default '0',
  PRIMARY KEY (products_id, language_id))""",
    "orders": """(
  orders_id int NOT NULL auto_increment, customers_id int NOT NULL, customers_name varchar(255) NOT NULL,
  customers_company varchar(255), customers_street_address varchar(255) NOT NULL, customers_suburb varchar(255),
  customers_city varchar(255) NOT NULL, customers_postcode varchar(255) NOT NULL, customers_state varchar(255),
  customers_country varchar(255) NOT NULL, customers_telephone varchar(255) NOT NULL,
  customers_email_address varchar(255) NOT NULL, customers_address_format_id int(5) NOT NULL,
  delivery_name varchar(255) NOT NULL, delivery_company varchar(255), delivery_street_address varchar(255) NOT NULL,
  delivery_suburb varchar(255), delivery_city varchar(255) NOT NULL, delivery_postcode varchar(255) NOT NULL,
  delivery_state varchar(255), delivery_country varchar(255) NOT NULL, delivery_address_format_id int(5) NOT NULL,
  billing_name varchar(255) NOT NULL, billing_company varchar(255), billing_street_address varchar(255) NOT NULL,
  billing_suburb varchar(255), billing_city varchar(255) NOT NULL, billing_postcode varchar(255) NOT NULL,
  billing_state varchar(255), billing_country varchar(255) NOT NULL, billing_address_format_id int(5) NOT NULL,
  payment_method varchar(255) NOT NULL, cc_type varchar(20), cc_owner varchar(255), cc_number varchar(32),
  cc_expires varchar(4), last_modified datetime, date_purchased datetime, orders_status int(5) NOT NULL,
  orders_date_finished datetime, currency char(3), currency_value decimal(14,6),
  language_code char(2) NOT NULL default '',
  PRIMARY KEY (orders_id))""",
    "orders_products": """(
  orders_products_id int NOT NULL auto_increment, orders_id int NOT NULL, products_id int NOT NULL,
  products_model varchar(12), products_name varchar(64) NOT NULL, products_price decimal(15,4) NOT NULL,
  final_price decimal(15,4) NOT NULL, products_tax decimal(7,4) NOT NULL, products_quantity int(2) NOT NULL,
  PRIMARY KEY (orders_products_id))""",
}
INDEXES: dict[str, tuple[str, ...]] = {
    "languages": ("IDX_LANGUAGES_NAME (name)",),
    "orders_status": ("idx_orders_status_name (orders_status_name)",),
    "products": ("idx_products_model (products_model)", "idx_products_date_added (products_date_added)"),
    "products_description": ("products_name (products_name)",),
    "orders": ("idx_orders_customers_id (customers_id)",),
    "orders_products": (
        "idx_orders_products_orders_id (orders_id)",
        "idx_orders_products_products_id (products_id)",
    ),
}
PRODUCT_COLUMNS = (
    "products_id",
    "products_quantity",
    "products_model",
    "products_image",
    "products_price",
    "products_date_added",
    "products_last_modified",
    "products_date_available",
    "products_weight",
    "products_status",
    "products_tax_class_id",
    "manufacturers_id",
    "products_ordered",
)
DESCRIPTION_COLUMNS = ("products_id", "language_id", "products_name", "products_description", "products_viewed")
_ADDRESS = ("name", "company", "street_address", "suburb", "city", "postcode", "state", "country")
ORDER_COLUMNS = (
    "orders_id",
    "customers_id",
    *(f"customers_{c}" for c in _ADDRESS),
    "customers_telephone",
    "customers_email_address",
    "customers_address_format_id",
    *(f"delivery_{c}" for c in _ADDRESS),
    "delivery_address_format_id",
    *(f"billing_{c}" for c in _ADDRESS),
    "billing_address_format_id",
    "payment_method",
    "last_modified",
    "date_purchased",
    "orders_status",
    "currency",
    "currency_value",
    "language_code",
)
LINE_COLUMNS = (
    "orders_products_id",
    "orders_id",
    "products_id",
    "products_model",
    "products_name",
    "products_price",
    "final_price",
    "products_tax",
    "products_quantity",
)

# Words the rows are made of. None holds a tab, a newline or a backslash, so LOAD DATA needs no escaping.
COLOURS = [
    ("black", "schwarz"),
    ("olive", "oliv"),
    ("red", "rot"),
    ("blue", "blau"),
    ("grey", "grau"),
    ("sand", "sandfarben"),
    ("green", "grün"),
    ("orange", "orange"),
]
VERSIONS = [("S", "S"), ("M", "M"), ("L", "L"), ("XL", "XL"), ("regular", "normal"), ("long", "lang")]
PLACES = {
    "de": [
        ("Berlin", "10115"),
        ("München", "80331"),
        ("Köln", "50667"),
        ("Düsseldorf", "40213"),
        ("Nürnberg", "90402"),
        ("Freiburg im Breisgau", "79098"),
        ("Lübeck", "23552"),
        ("Göttingen", "37073"),
    ],
    "en": [
        ("London", "SW1A 1AA"),
        ("Manchester", "M1 1AE"),
        ("Leeds", "LS1 4DY"),
        ("Bristol", "BS1 4DJ"),
        ("Edinburgh", "EH1 1YZ"),
        ("York", "YO1 7HH"),
        ("Cardiff", "CF10 1EP"),
        ("Oxford", "OX1 1PT"),
    ],
}
STREETS = {
    "de": ["Hauptstraße", "Bahnhofstraße", "Schillerstraße", "Am Mühlbach", "Lindenallee", "Gartenweg"],
    "en": ["High Street", "Station Road", "Church Lane", "Queen's Road", "Mill Lane", "Park Avenue"],
}
NAMES = {
    "de": (demo_shop.FIRST_NAMES_DE, demo_shop.LAST_NAMES_DE),
    "en": (demo_shop.FIRST_NAMES_EN, demo_shop.LAST_NAMES_EN),
}
COUNTRY = {"de": ("Germany", 5, "EUR", "1.000000"), "en": ("United Kingdom", 1, "GBP", "0.860000")}
PAYMENT = {"de": ["Vorkasse", "PayPal", "Rechnung"], "en": ["PayPal", "Credit Card", "Bank Transfer"]}
QUANTITIES = (1, 1, 1, 2, 3)
_NULL = "\\N"
_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _quiet(message: str) -> None:
    pass


def _fmt(value: datetime) -> str:
    return str(value.replace(microsecond=0))


# --- connections ---------------------------------------------------------------------------------


def as_server(target: DbConnection | str) -> DbConnection:
    """A DbConnection from itself or from a SQLAlchemy URL such as DEFAULT_URL."""
    if isinstance(target, DbConnection):
        return target
    url = sa.engine.make_url(target)
    if url.get_backend_name() not in ("mysql", "mariadb"):
        raise ValueError(f"the bench shop needs a MySQL/MariaDB URL, got {target!r}")
    return DbConnection(
        "bench_shop",
        "mysql",
        host=url.host or "127.0.0.1",
        port=url.port,
        login=url.username or "",
        password=url.password or "",
        schema=url.database or "",
    )


def database_name(target: DbConnection | str, database: str | None = None) -> str:
    """The shop's database: `database`, else the connection's schema, else DEFAULT_DATABASE."""
    name = database or as_server(target).schema or DEFAULT_DATABASE
    if not _NAME_RE.match(name):
        raise ValueError(f"database name may only hold letters, digits and '_', got {name!r}")
    return name


def _connect(server: DbConnection, database: str | None = None, local_infile: bool = False) -> Any:
    return pymysql.connect(
        host=server.host or "127.0.0.1",
        port=server.port or 3306,
        user=server.login or None,
        password=server.password,
        database=database,
        charset="utf8mb4",
        autocommit=True,
        local_infile=local_infile,
        # Zero dates allowed (osCommerce writes them), and data errors are errors.
        init_command="SET SESSION sql_mode = 'STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION'",
    )


@contextmanager
def _cursor(server: DbConnection, database: str | None = None, local_infile: bool = False) -> Iterator[Any]:
    with closing(_connect(server, database, local_infile)) as conn, conn.cursor() as cur:
        yield cur


# --- what the shop is made of ----------------------------------------------------------------------


class _Dice:
    """random.Random(seed) with quick draws (its randrange, randint and choice are slow in Python)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.random = self.rng.random

    def below(self, n: int) -> int:
        return int(self.random() * n)

    def between(self, low: int, high: int) -> int:
        return low + int(self.random() * (high - low + 1))

    def pick(self, items: Sequence[T]) -> T:
        return items[int(self.random() * len(items))]

    def distinct(self, items: Sequence[int], k: int) -> list[int]:
        """k different items (k items, some twice, when there are fewer); for small k."""
        if k > len(items):
            return [self.pick(items) for _ in range(k)]
        picks: list[int] = []
        while len(picks) < k:
            item = items[int(self.random() * len(items))]
            if item not in picks:
                picks.append(item)
        return picks

    def spread(self, total: int, bins: int, floor: int) -> list[int]:
        """`total` items over `bins` bins at random, each bin holding at least `floor`."""
        counts = [floor] * bins
        for _ in range(total - floor * bins):
            counts[int(self.random() * bins)] += 1
        return counts


@dataclass(frozen=True)
class _Catalogue:
    """The products as order lines need them, indexed by products_id (index 0 unused)."""

    models: list[str]
    names: dict[str, list[str]]
    prices: list[str]
    backordered: list[int]
    in_stock: list[int]


def _product_date(dice: _Dice, backordered: bool) -> str | None:
    if backordered:
        return str(REFERENCE_TIME + timedelta(days=dice.between(*AVAILABLE_IN_DAYS)))
    kind = dice.random()
    if kind < 0.55:
        return None
    if kind < 0.85:
        return ZERO_DATE
    return str(REFERENCE_TIME - timedelta(days=dice.between(1, 700)))


def _products(dice: _Dice, sizes: Sizes) -> tuple[_Catalogue, list[Row], list[Row]]:
    """The catalogue, the `products` rows and the `products_description` rows (English 1, German 2)."""
    backordered = sorted(dice.rng.sample(range(1, sizes.products + 1), sizes.backordered_products))
    is_backordered = set(backordered)
    catalogue = _Catalogue([""], {"en": [""], "de": [""]}, [""], backordered, [])
    products: list[Row] = []
    descriptions: list[Row] = []
    for pid in range(1, sizes.products + 1):
        model, en, de, price = dice.pick(demo_shop.CATALOGUE)
        (colour_en, colour_de), (version_en, version_de) = dice.pick(COLOURS), dice.pick(VERSIONS)
        catalogue.models.append(f"{model.replace('-', '')[:6]}-{pid % 100_000:05d}")
        catalogue.names["en"].append(f"{en}, {colour_en}, {version_en}")
        catalogue.names["de"].append(f"{de}, {colour_de}, {version_de}")
        catalogue.prices.append(f"{price * dice.pick((0.8, 0.9, 1.0, 1.0, 1.1, 1.25)):.4f}")
        if pid in is_backordered:
            quantity = dice.between(-20, 0)
        else:
            catalogue.in_stock.append(pid)
            quantity = dice.between(1, 200)
        available = _product_date(dice, pid in is_backordered)
        added = REFERENCE_TIME - timedelta(days=dice.between(30, 6 * 365), seconds=dice.below(86_400))
        products.append(
            (
                pid,
                quantity,
                catalogue.models[pid],
                f"products/{model.lower()}.jpg",
                catalogue.prices[pid],
                str(added),
                None,
                available,
                "1.50",
                1,
                1,
                None,
                dice.between(0, 500),
            )
        )
        viewed = dice.between(0, 5000)
        descriptions.append((pid, 1, catalogue.names["en"][pid], None, viewed))
        descriptions.append((pid, 2, catalogue.names["de"][pid], None, viewed))
    return catalogue, products, descriptions


def _customers(dice: _Dice, count: int) -> list[tuple[str, Row, Row, list[str]]]:
    """Per customer (id = index + 1): language, the customers_* columns, an address, ways to pay."""
    customers = []
    for cid in range(1, count + 1):
        language = "de" if dice.random() < 1 / 3 else "en"
        first_names, last_names = NAMES[language]
        name = f"{dice.pick(first_names)} {dice.pick(last_names)}"
        city, postcode = dice.pick(PLACES[language])
        street = f"{dice.pick(STREETS[language])} {dice.between(1, 120)}"
        country, address_format, _currency, _value = COUNTRY[language]
        address = (name, None, street, None, city, postcode, None, country)
        phone = f"0{dice.between(30, 9999)} {dice.between(100_000, 9_999_999)}"
        customer = (*address, phone, f"customer{cid}@example.com", address_format)
        customers.append((language, customer, (*address, address_format), PAYMENT[language]))
    return customers


@dataclass
class _Plan:
    """Every order's age and kind, oldest first (orders_id = index + 1), and its lines' counts."""

    ages: list[int]  # seconds before REFERENCE_TIME
    open: list[bool]
    backorder_counts: list[int]  # per open order, in order
    in_stock_counts: list[int]  # per open order
    closed_counts: list[int]  # per closed order


def _plan(dice: _Dice, sizes: Sizes) -> _Plan:
    history, open_span = int(HISTORY.total_seconds()), int(OPEN_SPAN.total_seconds())
    # age * 2 + 1 for an open order: one sort of plain ints puts every order in its place.
    keys = [dice.between(1, history) * 2 for _ in range(sizes.closed_orders)]
    keys += [dice.between(1, open_span) * 2 + 1 for _ in range(sizes.open_orders)]
    keys.sort(reverse=True)
    in_stock = sizes.in_stock_lines_of_open_orders
    closed_lines = sizes.order_lines - sizes.backorder_lines - in_stock
    return _Plan(
        ages=[key >> 1 for key in keys],
        open=[bool(key & 1) for key in keys],
        backorder_counts=dice.spread(sizes.backorder_lines, sizes.open_orders, 1),
        in_stock_counts=dice.spread(in_stock, sizes.open_orders, 0),
        closed_counts=dice.spread(closed_lines, sizes.closed_orders, 1) if sizes.closed_orders else [],
    )


class _Orders:
    """Makes the `orders` and `orders_products` rows, a range of orders at a time, in orders_id order."""

    def __init__(self, dice: _Dice, sizes: Sizes, catalogue: _Catalogue) -> None:
        self.dice, self.sizes, self.catalogue = dice, sizes, catalogue
        self.all_products = range(1, sizes.products + 1)
        self.customers = _customers(dice, max(1, sizes.orders * 2 // 5))
        self.plan = _plan(dice, sizes)
        self.next_open = self.next_closed = 0
        self.next_line = 1

    def _products_of(self, is_open: bool) -> list[int]:
        dice, catalogue = self.dice, self.catalogue
        if not is_open:
            count = self.plan.closed_counts[self.next_closed]
            self.next_closed += 1
            return dice.distinct(self.all_products, count)
        k = self.next_open
        self.next_open += 1
        pids = dice.distinct(catalogue.backordered, self.plan.backorder_counts[k])
        if self.plan.in_stock_counts[k]:
            pids += dice.distinct(catalogue.in_stock, self.plan.in_stock_counts[k])
            dice.rng.shuffle(pids)
        return pids

    def _order(self, oid: int, is_open: bool, purchased: datetime) -> tuple[str, Row]:
        dice = self.dice
        cid = dice.below(len(self.customers))
        language, customer, address, payments = self.customers[cid]
        if is_open:
            status = OPEN_STATUSES[0] if dice.random() < 0.6 else OPEN_STATUSES[1]
            modified = None if status == OPEN_STATUSES[0] else min(purchased + timedelta(hours=20), REFERENCE_TIME)
        else:
            status = DELIVERED
            modified = min(purchased + timedelta(days=dice.between(1, 10)), REFERENCE_TIME)
        _country, _format, currency, currency_value = COUNTRY[language]
        return language, (
            oid,
            cid + 1,
            *customer,
            *address,
            *address,
            dice.pick(payments),
            None if modified is None else str(modified),
            str(purchased),
            status,
            currency,
            currency_value,
            language,
        )

    def rows(self, start: int, stop: int) -> tuple[list[Row], list[Row]]:
        """The rows of orders start+1 .. stop."""
        dice, catalogue = self.dice, self.catalogue
        orders: list[Row] = []
        lines: list[Row] = []
        for index in range(start, stop):
            oid, is_open = index + 1, self.plan.open[index]
            language, order = self._order(oid, is_open, REFERENCE_TIME - timedelta(seconds=self.plan.ages[index]))
            orders.append(order)
            names = catalogue.names[language]
            for pid in self._products_of(is_open):
                price = catalogue.prices[pid]
                lines.append(
                    (
                        self.next_line,
                        oid,
                        pid,
                        catalogue.models[pid],
                        names[pid],
                        price,
                        price,
                        "19.0000",
                        QUANTITIES[dice.below(len(QUANTITIES))],
                    )
                )
                self.next_line += 1
        return orders, lines


# --- loading ---------------------------------------------------------------------------------------


class _Loader:
    """Puts rows into a table: LOAD DATA LOCAL INFILE from a scratch file, or multi-row INSERTs."""

    def __init__(self, cursor: Any, method: Literal["infile", "insert"], scratch: Path) -> None:
        self.cursor, self.method, self.scratch = cursor, method, scratch

    def load(self, table: str, columns: Sequence[str], rows: list[Row]) -> None:
        if not rows:
            return
        if self.method == "insert":
            statement = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))})"
            for start in range(0, len(rows), INSERT_ROWS):
                self.cursor.executemany(statement, rows[start : start + INSERT_ROWS])
            return
        path = self.scratch / f"{table}.tsv"
        with path.open("w", encoding="utf-8", newline="\n") as out:
            out.writelines("\t".join([_NULL if v is None else str(v) for v in row]) + "\n" for row in rows)
        self.cursor.execute(
            f"LOAD DATA LOCAL INFILE {self.cursor.connection.escape(str(path))} INTO TABLE {table}"
            f" CHARACTER SET utf8mb4 ({', '.join(columns)})"
        )
        # LOAD DATA LOCAL turns data errors into warnings: any warning is an error here.
        if self.cursor.warning_count:
            self.cursor.execute("SHOW WARNINGS LIMIT 3")
            raise RuntimeError(f"loading {table}: {self.cursor.fetchall()}")


def _method(cursor: Any, load: LoadMethod) -> Literal["infile", "insert"]:
    if load != "auto":
        return load
    cursor.execute("SELECT @@GLOBAL.local_infile")
    return "infile" if int(cursor.fetchone()[0]) else "insert"


def _build(server: DbConnection, name: str, sizes: Sizes, seed: int, load: LoadMethod, say: Progress) -> None:
    started = time.perf_counter()
    dice = _Dice(seed)
    with _cursor(server, local_infile=load != "insert") as cur, tempfile.TemporaryDirectory() as scratch:
        method = _method(cur, load)
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
        cur.execute(f"CREATE DATABASE {name} {_CHARSET}")
        cur.execute(f"USE {name}")
        for table, columns in TABLES.items():
            cur.execute(f"CREATE TABLE {table} {columns} {_CHARSET}")
        cur.executemany(
            "INSERT INTO languages (languages_id, name, code, image, directory, sort_order)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [(1, "English", "en", "icon.gif", "english", 1), (2, "Deutsch", "de", "icon.gif", "german", 2)],
        )
        cur.executemany(
            "INSERT INTO orders_status (orders_status_id, language_id, orders_status_name) VALUES (%s, %s, %s)",
            [
                (1, 1, "Pending"),
                (1, 2, "Offen"),
                (2, 1, "Processing"),
                (2, 2, "In Bearbeitung"),
                (3, 1, "Delivered"),
                (3, 2, "Versendet"),
            ],
        )
        loader = _Loader(cur, method, Path(scratch))
        catalogue, products, descriptions = _products(dice, sizes)
        loader.load("products", PRODUCT_COLUMNS, products)
        loader.load("products_description", DESCRIPTION_COLUMNS, descriptions)
        say(f"{name}: {sizes.products:,} products loaded by {method} ({time.perf_counter() - started:.1f} s)")
        maker = _Orders(dice, sizes, catalogue)
        step = max(1, round(PROGRESS_ROWS * sizes.orders / sizes.order_lines))
        for start in range(0, sizes.orders, step):
            stop = min(start + step, sizes.orders)
            orders, lines = maker.rows(start, stop)
            loader.load("orders", ORDER_COLUMNS, orders)
            loader.load("orders_products", LINE_COLUMNS, lines)
            say(
                f"{name}: orders {stop:,}/{sizes.orders:,}, lines {maker.next_line - 1:,}/{sizes.order_lines:,}"
                f" ({time.perf_counter() - started:.1f} s)"
            )
        for table, keys in INDEXES.items():
            cur.execute(f"ALTER TABLE {table} " + ", ".join(f"ADD KEY {key}" for key in keys))
        cur.execute(f"ANALYZE TABLE {', '.join(TABLES)}")
        cur.fetchall()
        cur.execute(
            "CREATE TABLE bench_original_dates (products_id int NOT NULL PRIMARY KEY,"
            " products_date_available datetime) SELECT products_id, products_date_available FROM products"
        )
        cur.execute("CREATE TABLE bench_meta (name varchar(32) NOT NULL PRIMARY KEY, value varchar(255) NOT NULL)")
        say(f"{name}: indexes created ({time.perf_counter() - started:.1f} s)")


# --- the shop's figures, reuse ---------------------------------------------------------------------


_COUNTS = {
    "orders": "SELECT COUNT(*) FROM orders",
    "order_lines": "SELECT COUNT(*) FROM orders_products",
    "open_orders": "SELECT COUNT(*) FROM orders WHERE orders_status IN (1, 2)",
    "products": "SELECT COUNT(*) FROM products",
    "backordered_products": "SELECT COUNT(*) FROM products WHERE products_date_available > %(t)s",
}


def _plain_counts(server: DbConnection, name: str) -> dict[str, int]:
    with _cursor(server, name) as cur:
        counts = {}
        for key, query in _COUNTS.items():
            cur.execute(query, {"t": _fmt(REFERENCE_TIME)})
            counts[key] = int(cur.fetchone()[0])
        return counts


def _figures(name: str, counts: dict[str, int], backorder_lines: int, backorder_orders: int) -> ShopFigures:
    return ShopFigures(
        database=name,
        orders=counts["orders"],
        order_lines=counts["order_lines"],
        open_orders=counts["open_orders"],
        products=counts["products"],
        backordered_products=counts["backordered_products"],
        backorder_lines=backorder_lines,
        backorder_orders=backorder_orders,
    )


def shop_figures(target: DbConnection | str = DEFAULT_URL, *, database: str | None = None) -> ShopFigures:
    """Count the shop: plain counts, and the real backorder query for RunParams() at REFERENCE_TIME.

    The query's own FROM and WHERE are counted, not the query as a subquery: MariaDB merges a
    derived table into the outer query and drops its STRAIGHT_JOIN (25 s on the full shop, not 2 s).
    """
    server, name = as_server(target), database_name(target, database)
    counts = _plain_counts(server, name)
    engine = sa.create_engine(replace(server, schema=name).url())
    try:
        tables = inspect_shop(engine, "")
        query = backorder_lines_query(tables, RunParams(), REFERENCE_TIME)
        counting = query.with_only_columns(
            sa.func.count(), sa.func.count(sa.distinct(tables.orders.c.orders_id)), maintain_column_froms=False
        ).order_by(None)
        with engine.connect() as conn:
            lines, orders = conn.execute(counting).one()
    finally:
        engine.dispose()
    return _figures(name, counts, int(lines), int(orders))


def _wanted_meta(sizes: Sizes, seed: int) -> dict[str, str]:
    return {
        "generator": GENERATOR,
        "seed": str(seed),
        "reference_time": _fmt(REFERENCE_TIME),
        **{key: str(value) for key, value in asdict(sizes).items()},
    }


def _read_meta(server: DbConnection, name: str) -> dict[str, str]:
    with _cursor(server) as cur:
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = %s AND table_name = 'bench_meta'",
            (name,),
        )
        if not cur.fetchone()[0]:
            return {}
        cur.execute(f"SELECT name, value FROM {name}.bench_meta")
        return {str(key): str(value) for key, value in cur.fetchall()}


def _reusable(server: DbConnection, name: str, sizes: Sizes, seed: int, say: Progress) -> ShopFigures | None:
    """The figures of the shop already in `name` when it is one of these sizes and seed, else None."""
    meta = _read_meta(server, name)
    wanted = _wanted_meta(sizes, seed)
    if {key: meta.get(key) for key in wanted} != wanted:
        if meta:
            say(f"{name}: holds another bench shop ({meta.get('orders')} orders, seed {meta.get('seed')}): rebuilding")
        return None
    if not {"backorder_lines", "backorder_orders", "build_seconds"} <= meta.keys():
        return None
    # The backorder query's figures are those the build checked: running it again would cost a
    # good part of a build. The plain counts are checked again, and the dates put back.
    restore_dates(server, database=name)
    counts = _plain_counts(server, name)
    figures = _figures(name, counts, int(meta["backorder_lines"]), int(meta["backorder_orders"]))
    figures = replace(figures, build_seconds=float(meta["build_seconds"]), reused=True)
    if not figures.matches(sizes):
        say(f"{name}: its rows no longer match bench_meta: rebuilding")
        return None
    return figures


def create_shop(
    target: DbConnection | str = DEFAULT_URL,
    sizes: Sizes = QUICK,
    seed: int = 1,
    *,
    database: str | None = None,
    force: bool = False,
    load: LoadMethod = "auto",
    progress: Progress | None = _stderr,
) -> ShopFigures:
    """Build the bench shop in `database` (dropped and created again) and return its figures.

    `target` is the server (a DbConnection or a SQLAlchemy URL); `database` defaults to its schema,
    then to DEFAULT_DATABASE. A shop of the same sizes, seed and generator already there is reused
    unless `force`: its dates are restored and its plain counts checked, and the backorder figures
    are those the real query found when it was built. `load` picks LOAD DATA LOCAL INFILE
    ("infile") or multi-row INSERTs ("insert"); "auto" takes the first when the server's
    local_infile is on. `progress` gets a line every ~100,000 order lines (None: silent).
    """
    server, name = as_server(target), database_name(target, database)
    say = progress or _quiet
    started = time.perf_counter()
    if not force:
        reused = _reusable(server, name, sizes, seed, say)
        if reused is not None:
            say(
                f"{name}: reusing the shop built in {reused.build_seconds:.1f} s (checked in"
                f" {time.perf_counter() - started:.1f} s)"
            )
            return reused
    _build(server, name, sizes, seed, load, say)
    say(f"{name}: counting the backorder lines with the real query ({time.perf_counter() - started:.1f} s)")
    figures = shop_figures(server, database=name)
    if not figures.matches(sizes):
        raise RuntimeError(f"the shop built in {name} does not have the sizes asked for: {figures} for {sizes}")
    seconds = time.perf_counter() - started
    with _cursor(server, name) as cur:
        meta = _wanted_meta(sizes, seed) | {
            "backorder_lines": str(figures.backorder_lines),
            "backorder_orders": str(figures.backorder_orders),
            "build_seconds": f"{seconds:.1f}",
            "built_at": _fmt(datetime.now()),
        }
        cur.executemany("INSERT INTO bench_meta (name, value) VALUES (%s, %s)", list(meta.items()))
    say(f"{name}: built and checked in {seconds:.1f} s")
    return replace(figures, build_seconds=seconds)


# --- date changes ----------------------------------------------------------------------------------

_RESTORE = """UPDATE products p JOIN bench_original_dates o ON o.products_id = p.products_id
SET p.products_date_available = o.products_date_available
WHERE NOT (p.products_date_available <=> o.products_date_available)"""


def restore_dates(target: DbConnection | str = DEFAULT_URL, *, database: str | None = None) -> int:
    """Put every product's original availability date back; return how many were changed."""
    with _cursor(as_server(target), database_name(target, database)) as cur:
        return int(cur.execute(_RESTORE))


def change_dates(
    target: DbConnection | str = DEFAULT_URL, fraction: float = 0.01, seed: int = 1, *, database: str | None = None
) -> list[int]:
    """Move the dates of `fraction` of the backordered products (at least one) by 1 to 7 days.

    Dates are moved from the originals (other changes are undone first), and stay after
    REFERENCE_TIME: the same lines are on backorder, a few of them with a new date. Returns the
    products_id of the products changed, in order.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be > 0 and <= 1, got {fraction!r}")
    rng = random.Random(seed)
    with _cursor(as_server(target), database_name(target, database)) as cur:
        cur.execute("START TRANSACTION")
        cur.execute(_RESTORE)
        cur.execute(
            "SELECT products_id, products_date_available FROM bench_original_dates"
            " WHERE products_date_available > %s ORDER BY products_id",
            (_fmt(REFERENCE_TIME),),
        )
        backordered: list[tuple[int, datetime]] = list(cur.fetchall())
        chosen = sorted(rng.sample(backordered, max(1, round(fraction * len(backordered)))))
        changes = []
        for pid, date in chosen:
            moved = date + timedelta(days=rng.choice((-3, -2, -1, 1, 2, 3, 4, 5, 6, 7)))
            if moved <= REFERENCE_TIME:
                moved = date + (date - moved)
            changes.append((_fmt(moved), pid))
        cur.executemany("UPDATE products SET products_date_available = %s WHERE products_id = %s", changes)
        cur.execute("COMMIT")
    return [pid for pid, _ in chosen]


def database_size_mb(target: DbConnection | str = DEFAULT_URL, *, database: str | None = None) -> float:
    """Data and indexes of the shop's tables on disk, as information_schema reports them."""
    with _cursor(as_server(target)) as cur:
        cur.execute(
            "SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables"
            " WHERE table_schema = %s",
            (database_name(target, database),),
        )
        return int(cur.fetchone()[0]) / 2**20


# --- command line ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.shop", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="quick", help="the sizes to start from")
    for f in fields(Sizes):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=int, metavar="N", help=f"override {f.name}")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the MariaDB server (default {DEFAULT_URL})")
    parser.add_argument("--database", default=DEFAULT_DATABASE)
    parser.add_argument("--load", choices=("auto", "infile", "insert"), default="auto")
    parser.add_argument("--force", action="store_true", help="rebuild even when the same shop is there")
    return parser.parse_args(argv)


def _show(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in fields(Sizes) if getattr(args, f.name) is not None}
    try:
        sizes = replace(SIZES[args.size], **overrides)
    except ValueError as exc:
        print(f"bad sizes: {exc}", file=sys.stderr)
        return 2
    figures = create_shop(args.url, sizes, args.seed, database=args.database, force=args.force, load=args.load)
    for key, value in asdict(figures).items():
        print(f"{key:22} {_show(value)}")
    print(f"{'size_on_disk_mb':22} {_show(database_size_mb(args.url, database=args.database))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
