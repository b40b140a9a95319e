"""The Airflow UI page "Backorder notifications": the audit app (include/backorder/audit/app.py) behind the login.

A nav entry opens the runs overview; a tab on each DAG run of `backorder_notifications` opens that
run's emails. The app is served by the api-server under /backorder. Every route requires a logged-in
Airflow user who may read the DAG's runs (`requires_access_dag`), by the UI's cookie or a bearer
token. The page reads the state database of the `backorder_state_db` connection (else `shop_db`),
as the DAG does, and never Airflow's metadata database.

Airflow imports this file in every component that loads plugins; the app (FastAPI, SQLAlchemy,
the library under include/, with its Airflow adapter include/backorder/airflow.py for the DAG id and
the connections) is built only when the api-server asks for `fastapi_apps`. If include/
is not importable (the project root not on PYTHONPATH), the page is left out with an error in the log.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)

URL_PREFIX = "/backorder"
NAME = "Backorder notifications"


def state_db() -> Any:
    """The state database as the DAG finds it (`backorder_state_db`, else `shop_db`), read by the api-server."""
    from airflow.exceptions import AirflowNotFoundException

    from include.backorder.airflow import server_connection
    from include.backorder.airflow import state_db as find_state_db

    try:
        return find_state_db(server_connection)
    except AirflowNotFoundException as exc:
        from fastapi import HTTPException

        raise HTTPException(503, str(exc)) from None


@cache
def state_engine() -> Any:
    """One engine (connection pool) for the api-server process, made at the first request."""
    from include.backorder import db

    return db.engine(state_db(), pool_recycle=3600)  # errors never show row values (hide_parameters)


def access_checks() -> list[Any]:
    """What every route requires: an authenticated user allowed to read the DAG's runs."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    from include.backorder.airflow import DAG_ID

    return [requires_access_dag(method="GET", access_entity=DagAccessEntity.RUN, param_dag_id=DAG_ID)]


@cache
def audit_app() -> Any | None:
    """The FastAPI app, or None (logged) when the library cannot be imported."""
    try:
        from include.backorder.audit.app import create_app
    except ImportError as exc:
        log.error(
            "%s: the page is not served: cannot import include.backorder.audit.app (%s). Put the project root "
            "on PYTHONPATH of the api-server.",
            NAME,
            exc,
        )
        return None
    return create_app(state_engine, access_checks(), title=NAME)


class BackorderAuditPlugin(AirflowPlugin):
    """The audit page in Airflow's UI. Its app and views are properties, so that only the process that
    asks for them (the api-server) builds the app."""

    name = "backorder_audit"

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        app = audit_app()
        return [] if app is None else [{"app": app, "url_prefix": URL_PREFIX, "name": NAME}]

    @property
    def external_views(self) -> list[dict[str, Any]]:  # type: ignore[override]
        if audit_app() is None:
            return []
        return [
            {"name": NAME, "href": f"{URL_PREFIX}/", "destination": "nav", "url_route": "backorder-notifications"},
            {
                "name": NAME,
                # The UI fills in {DAG_ID} and {RUN_ID} (URL-encoded) for a dag_run destination.
                "href": f"{URL_PREFIX}/dag-run?dag_id={{DAG_ID}}&run_id={{RUN_ID}}",
                "destination": "dag_run",
                "url_route": "backorder-notifications-run",
            },
        ]
