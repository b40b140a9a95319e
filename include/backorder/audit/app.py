"""The audit page as a FastAPI app: runs, a run's emails with previews, an order's history, search, CSV.

Server-side HTML from the Jinja2 templates in `include/backorder/audit/templates/` (autoescaped), small
charts as inline SVG, no JavaScript. The app knows nothing of Airflow: whoever builds it passes
a callable that gives the state database's engine and the dependencies that guard every route
(the Airflow plugin passes Airflow's access checks). Customer addresses are personal data, so
every response, errors included, says `Cache-Control: private, no-store`.

Every query and path parameter is bounded (ids and offsets fit the state database's integers, texts
hold no control character): a bad one is a 422 page naming it, never a database error. Before the
first run the state database has no tables: every page then shows "no runs yet" with 200. Anything
else that goes wrong is a 500 page without details (they are in the server's log).
"""

from __future__ import annotations

import csv
import io
import pathlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy.engine import Connection, Engine
from starlette.exceptions import HTTPException as StarletteHTTPException

from include.backorder import KINDS
from include.backorder import state as st
from include.backorder.audit import queries as q
from include.backorder.config import Branding, ConfigError, RunParams
from include.backorder.render import ListedLine, Notification, Renderer

TEMPLATES = pathlib.Path(__file__).resolve().parent / "templates"  # the page's own, apart from the emails'

NO_STORE = {
    "Cache-Control": "private, no-store",
    "Pragma": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
# An email preview is the shop's HTML: shown sandboxed, without scripts, forms or plugins.
PREVIEW_CSP = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src https: data:"


class NoRunsYet(Exception):
    """The state database has no tables yet: the DAG has not run against it."""


def connect(request: Request) -> Iterator[Connection]:
    """A connection to the state database for one request; NoRunsYet before the first run made the tables."""
    app = request.app.state
    with app.engine().connect() as conn:
        if not app.tables_seen:  # checked until they exist; tables do not go away
            if not sa.inspect(conn).has_table(st.runs.name):
                raise NoRunsYet
            app.tables_seen = True
        yield conn


Conn = Annotated[Connection, Depends(connect)]
Offset = Annotated[int, Query(ge=0, le=q.MAX_ID)]
Limit = Annotated[int, Query(ge=1, le=q.MAX_PAGE_SIZE)]
Id = Annotated[int, Path(ge=0, le=q.MAX_ID)]
# A text parameter: no control character (PostgreSQL refuses NUL in a string), a sane length.
_TEXT = r"^[^\x00-\x1f\x7f]*$"
Text = Annotated[str, Query(max_length=255, pattern=_TEXT)]


@dataclass(frozen=True)
class Bar:
    """One bar of a day chart, in SVG user units."""

    x: float
    y: float
    width: float
    height: float
    label: str


def bars(values: Sequence[tuple[str, int]], width: float = 600, height: float = 80) -> list[Bar]:
    """Bars for (label, value) pairs side by side, scaled to the largest value."""
    if not values:
        return []
    top = max(value for _, value in values) or 1
    step = width / len(values)
    return [
        Bar(i * step + 1, height - value / top * height, max(step - 2, 1), value / top * height, f"{label}: {value}")
        for i, (label, value) in enumerate(values)
    ]


@lru_cache(maxsize=32)
def _renderer(branding: Branding) -> Renderer:
    return Renderer(branding)


def preview(email: q.NotificationRecord, params: dict[str, Any]) -> tuple[str, str, str]:
    """(subject, text, html) of a notification as its run rendered it (without the unsubscribe link,
    whose secret the page does not have)."""
    run_params = _recorded_params(params)
    lines = tuple(
        ListedLine(
            products_name=item.get("products_name") or "",
            products_model=item.get("products_model"),
            products_quantity=float(item.get("products_quantity") or 0),
            date_available=_datetime(item.get("date_available")),
            previous_date=_datetime(item.get("previous_date")),
        )
        for item in email.listed_lines
    )
    notification = Notification(
        orders_id=email.orders_id,
        kind=email.kind,
        language=email.language,
        customers_email_address=email.customers_email_address or "",
        customers_name=email.customers_name or "",
        reference_time=email.reference_time.replace(tzinfo=UTC),
        lines=lines,
        reminder_interval_days=run_params.reminder_interval_days,
        customers_id=email.customers_id,
    )
    return _renderer(run_params.branding()).render_parts(notification)


def _recorded_params(params: dict[str, Any]) -> RunParams:
    """A run's recorded params; a value that today's validation refuses (an older run, before a pattern got
    stricter) is left out, so that the page still shows the email, with that param's default."""
    try:
        return RunParams.from_mapping(params)
    except ConfigError:
        kept: dict[str, Any] = {}
        for key, value in params.items():
            try:
                RunParams.from_mapping({**kept, key: value})
            except ConfigError:
                continue
            kept[key] = value
        return RunParams.from_mapping(kept)


def _datetime(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def csv_safe(value: Any) -> Any:
    """A cell a spreadsheet shows as text: a leading =, +, -, @ would make it a formula."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _url(request: Request) -> Callable[..., str]:
    """`url(name, query=..., **path_params)` for the templates: a path under the app's mount point."""

    def url(name: str, **params: Any) -> str:
        query = params.pop("query", None)
        path = request.url_for(name, **params).path
        return f"{path}?{query}" if query else path

    return url


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A template of `audit/templates/` rendered for this request."""
    state = request.app.state
    html = state.templates.get_template(template).render(title=state.title, url=_url(request), **context)
    return HTMLResponse(html, status_code=status_code)


async def http_error(request: Request, exc: Exception) -> Response:
    """Errors as a page of the app (the guard's 401/403 keep their headers)."""
    assert isinstance(exc, StarletteHTTPException)
    response = page(request, "error.html", exc.status_code, status_code_=exc.status_code, detail=exc.detail)
    response.headers.update(getattr(exc, "headers", None) or {})
    return response


async def invalid_request(request: Request, exc: Exception) -> Response:
    """A parameter out of its bounds: a 422 page naming it (not FastAPI's JSON)."""
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(f"{err['loc'][-1]}: {err['msg']}" for err in exc.errors())
    return page(request, "error.html", 422, status_code_=422, detail=f"Bad request: {problems}")


async def no_runs_yet(request: Request, exc: Exception) -> Response:
    """Before the first run: an empty state on every page, 200."""
    return page(request, "empty.html")


async def server_error(request: Request, exc: Exception) -> Response:
    """Anything unexpected: a 500 page without details (they are in the server's log), not cached.
    Starlette answers this outside the app's middleware, so it sets the headers itself."""
    response = page(request, "error.html", 500, status_code_=500, detail="Internal error: see the server's log.")
    response.headers.update(NO_STORE)
    return response


async def no_store(request: Request, call_next: Callable[[Request], Any]) -> Any:
    response = await call_next(request)
    response.headers.update(NO_STORE)
    return response


router = APIRouter()


@router.get("/", response_class=HTMLResponse, name="index")
def index(request: Request, conn: Conn, offset: Offset = 0, products_offset: Offset = 0) -> HTMLResponse:
    runs = q.runs_page(conn, q.Page(offset))
    series = q.daily_series(conn)
    return page(
        request,
        "index.html",
        runs=runs,
        series=series,
        email_bars=bars([(f"{p.day:%Y-%m-%d}", p.emails) for p in series]),
        line_bars=bars([(f"{p.day:%Y-%m-%d}", p.lines) for p in series]),
        open_lines=q.open_lines(conn, q.Page(products_offset)),
    )


@router.get("/runs/{run_id}", response_class=HTMLResponse, name="run")
def run(request: Request, conn: Conn, run_id: Id, offset: Offset = 0, limit: Limit = q.PAGE_SIZE) -> HTMLResponse:
    detail = q.run_detail(conn, run_id, q.Page(offset, limit))
    if detail is None:
        raise HTTPException(404, f"No run record {run_id} in the state database")
    others = [i for i in q.runs_of_dag_run(conn, detail.run.dag_id, detail.run.dag_run_id) if i != run_id]
    return page(request, "run.html", detail=detail, others=others)


@router.get("/dag-run", name="dag_run")
def dag_run(conn: Conn, request: Request, dag_id: Text, run_id: Text) -> RedirectResponse:
    """The link from a DAG run in Airflow's UI: its newest run record."""
    records = q.runs_of_dag_run(conn, dag_id, run_id)
    if not records:
        raise HTTPException(404, f"No run record for DAG run {run_id!r} of {dag_id!r} (it may not have run yet)")
    return RedirectResponse(request.url_for("run", run_id=records[0]).path, status_code=303)


@router.get("/runs/{run_id}/emails.csv", name="run_csv")
def run_csv(conn: Conn, run_id: Id) -> StreamingResponse:
    if q.run_params(conn, run_id) is None:
        raise HTTPException(404, f"No run record {run_id} in the state database")
    rows = [[csv_safe(value) for value in row] for row in q.csv_rows(conn, run_id)]

    def lines() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for row in rows:
            writer.writerow(row)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()

    disposition = f'attachment; filename="backorder-run-{run_id}-emails.csv"'
    return StreamingResponse(
        lines(), media_type="text/csv; charset=utf-8", headers={"Content-Disposition": disposition}
    )


@router.get("/emails/{notification_id}", response_class=HTMLResponse, name="email")
def email(request: Request, conn: Conn, notification_id: Id) -> HTMLResponse:
    found = q.email(conn, notification_id)
    if found is None:
        raise HTTPException(404, f"No notification {notification_id} in the state database")
    subject, text, _ = preview(found, q.run_params(conn, found.run_id) or {})
    return page(request, "email.html", email=found, subject=subject, text=text)


@router.get("/emails/{notification_id}/preview.html", response_class=HTMLResponse, name="email_preview")
def email_preview(conn: Conn, notification_id: Id) -> HTMLResponse:
    found = q.email(conn, notification_id)
    if found is None:
        raise HTTPException(404, f"No notification {notification_id} in the state database")
    _, _, html = preview(found, q.run_params(conn, found.run_id) or {})
    return HTMLResponse(html, headers={"Content-Security-Policy": PREVIEW_CSP})


@router.get("/orders/{orders_id}", response_class=HTMLResponse, name="order")
def order(request: Request, conn: Conn, orders_id: Id) -> HTMLResponse:
    history = q.order_history(conn, orders_id)
    if not history:
        raise HTTPException(404, f"No notification for order {orders_id} in the state database")
    return page(request, "order.html", orders_id=orders_id, history=history)


@router.get("/search", response_class=HTMLResponse, name="search")
def search(
    request: Request,
    conn: Conn,
    q_: Annotated[str, Query(alias="q", max_length=255, pattern=_TEXT)] = "",
    offset: Offset = 0,
) -> HTMLResponse:
    return page(request, "search.html", query=q_, result=q.search(conn, q_, q.Page(offset)))


def create_app(
    engine: Callable[[], Engine],
    dependencies: Sequence[Callable[..., Any]] = (),
    title: str = "Backorder notifications",
) -> FastAPI:
    """The audit app. `engine` gives the state database's engine (called per request; cache it);
    `dependencies` guard every route."""
    app = FastAPI(
        title=title, dependencies=[Depends(d) for d in dependencies], docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.engine = engine
    app.state.tables_seen = False
    app.state.title = title
    app.state.templates = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    app.state.templates.globals["kinds"] = KINDS  # the overview's columns: one per kind, as the library has them
    app.middleware("http")(no_store)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(NoRunsYet, no_runs_yet)
    app.add_exception_handler(Exception, server_error)
    app.include_router(router)
    return app
