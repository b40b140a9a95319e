"""Backorder notifications: the library behind the `backorder_notifications` DAG.

It reads an osCommerce-family shop, works out which customers wait for backordered goods, and
tells them by email. It does not import Airflow: the DAG turns Airflow connections, params and
the run context into the plain values defined in `config` and calls the stages in `pipeline`.

The words used everywhere, from the SQL to the templates:

- *reference time* (T): the moment a run stands for (its logical date, else its `run_after`).
  Every comparison of a run uses reference times, never the wall clock.
- *backorder line*: a line of `orders_products` whose order is in one of the selected statuses
  and whose product's `products_date_available` is later than T.
- *snapshot*: the backorder lines a run saw, kept in the state database; the *previous snapshot*
  of a run is the latest one strictly before its T.
- *notification*: one email to one order in one run, of kind `initial`, `periodic`,
  `changed` or (optional, `send_available`) `available`; a row in the state database from the
  moment it is due (the outbox) to the moment it is sent, failed, skipped or recorded as a dry run.
- *arrival*: an order that waited at the previous snapshot and waits no more (every date reached
  or cleared) while it is still in the statuses; what an `available` email is about.
- *run record*: the audit row of one run: params, counts, skipped orders, stage durations.
"""

from pathlib import Path

KINDS: tuple[str, ...] = ("initial", "changed", "periodic", "available")
TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "templates"
# A language is a folder of templates named by its Babel locale (`en`, `de`, `fr`, `pt_BR`, ...).
LANGUAGES: tuple[str, ...] = tuple(sorted(p.name for p in TEMPLATES_DIR.iterdir() if p.is_dir()))
