"""A state database with three days of a small shop's history, written by the real pipeline stages.

Day 0 (2026-03-02): initial emails to orders 1 (de), 3, 5 and 6; order 2 has no address, order 4's
customer opted out, the server refuses order 6's address (550). Day 1: product 2's date moves, so
orders 1 and 3 get `changed`. Day 2: order 5's reminder (`periodic`, every 2 days). Orders 2, 4 and 6 are
skipped (or refused) again each day.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from include.backorder import pipeline
from include.backorder import state as st
from include.backorder.config import DbConnection, RunContext, RunParams, SmtpSettings
from tests.conftest import Shop
from tools import demo_shop
from tools.smtp_sink import Faults, MailSink

T0 = datetime(2026, 3, 2, tzinfo=UTC)
DAG_ID = "backorder_notifications"


def dag_run_id(day: int) -> str:
    return f"scheduled__{T0 + timedelta(days=day):%Y-%m-%dT%H:%M:%S+00:00}"


@dataclass(frozen=True)
class History:
    state_db: DbConnection
    run_ids: list[int]  # day 0, 1, 2

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.state_db.url())


def _run_day(shop: Shop, state_db: DbConnection, smtp: SmtpSettings, day: int) -> int:
    t = T0 + timedelta(days=day)
    params = RunParams(reminder_interval_days=2, shop_name="Outdoor & Co")
    extracted = pipeline.extract(shop.conn, state_db, RunContext(t, DAG_ID, dag_run_id(day)), params)
    pipeline.load_previous_snapshot(state_db, extracted.run_id)
    for kind, count in pipeline.classify_run(state_db, extracted.run_id).items():
        if count:
            pipeline.send(state_db, extracted.run_id, kind, smtp)
    pipeline.finish(state_db, extracted.run_id)
    return extracted.run_id


def write_history(shop: Shop, state_db: DbConnection) -> History:
    """The three days above, sent to a real SMTP server on loopback."""
    shop.product(1, datetime(2026, 3, 20))
    shop.product(2, datetime(2026, 3, 25))
    shop.order(1, [1, 2], purchased=datetime(2026, 3, 1, 9), language="de", name="Jürgen Müller")
    shop.order(2, [1], purchased=datetime(2026, 3, 1, 10), email="")
    shop.order(3, [2], purchased=datetime(2026, 3, 1, 11), email="ann@example.com", name="Ann Example")
    shop.order(4, [1], purchased=datetime(2026, 3, 1, 12))
    shop.order(5, [1], purchased=datetime(2026, 3, 1, 13), name="<b>Eve</b> & Co")
    shop.order(6, [1], purchased=datetime(2026, 3, 1, 14), email="gone@example.com")
    engine = sa.create_engine(state_db.url())
    st.migrate(engine)
    with engine.begin() as c:
        c.execute(
            sa.insert(st.suppressions).values(
                email_address="customer4@example.com",
                reason="asked by phone",
                source="admin",
                created_at=datetime(2026, 3, 1),
            )
        )
    engine.dispose()
    sink = MailSink()
    sink.faults = Faults(refuse={"gone@example.com"})
    with sink:
        smtp = SmtpSettings("127.0.0.1", sink.port, "shop@example.com", use_ssl=False, use_starttls=False)
        run_ids = [_run_day(shop, state_db, smtp, 0)]
        shop.set_date(2, datetime(2026, 3, 27))
        run_ids.append(_run_day(shop, state_db, smtp, 1))
        run_ids.append(_run_day(shop, state_db, smtp, 2))
    return History(state_db, run_ids)


@pytest.fixture
def history(shop: Shop, state_db: DbConnection) -> History:
    """The history on each backend (see state_db)."""
    return write_history(shop, state_db)


@pytest.fixture(scope="module")
def sqlite_history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    """The history in one SQLite state database, shared by a module's tests (they only read it)."""
    tmp: Path = tmp_path_factory.mktemp("audit")
    engine = sa.create_engine(f"sqlite:///{tmp / 'shop.sqlite'}")
    demo_shop.create_schema(engine)
    state_db = DbConnection("backorder_state_db", "sqlite", host=str(tmp / "state.sqlite"))
    yield write_history(Shop(tmp / "shop.sqlite", engine), state_db)
    engine.dispose()
