"""DAG-level fixtures: a fresh Airflow metadata database (SQLite, in the session's AIRFLOW_HOME)."""

from __future__ import annotations

import copy

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="session", autouse=True)
def airflow_db() -> None:
    from airflow.utils import db

    db.resetdb()


@pytest.fixture(scope="session")
def dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    dag = bag.dags["backorder_notifications"]
    # dag.test() runs tasks in this process, and Airflow writes a run's conf into the DAG's shared
    # Param objects: a later run would inherit it. Runs in the tests therefore pass every param.
    dag.default_conf = copy.deepcopy(dag.params.dump())  # type: ignore[attr-defined]
    return dag
