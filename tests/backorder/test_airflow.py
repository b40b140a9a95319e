"""include/backorder/airflow.py, the adapter: Airflow's connections, config and errors as the library's values.

Connections are real `airflow.models.Connection` objects (from a URI, or with their extras as JSON, as the UI
and AIRFLOW_CONN_* write them) or real AIRFLOW_CONN_* variables; the SMTP extras are read beside the SMTP
provider's own SmtpHook, and the mailer is run against the sink to show that `retry_limit` is what it obeys.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from include.backorder import airflow as adapter
from include.backorder.config import ConfigError, DbConnection, SmtpSettings, param_specs
from include.backorder.mailer import Mailer, SMTPAuthenticationRefused, SMTPUnavailable
from include.backorder.mime import Email
from tools.smtp_sink import Faults

# Every field of the SMTP provider's connection form (SmtpHook.get_connection_form_widgets), at its default or
# empty: what a connection made in the Airflow UI may hold.
UI_FORM: dict[str, Any] = {
    "from_email": "shop@example.com",
    "timeout": 30,
    "retry_limit": 5,
    "disable_tls": False,
    "disable_ssl": False,
    "subject_template": "",
    "html_content_template": "",
    "auth_type": "basic",
    "access_token": "",
    "client_id": "",
    "client_secret": "",
    "tenant_id": "",
    "scope": "",
}


def smtp_connection(uri: str | None = None, **extra: Any) -> Any:
    from airflow.models.connection import Connection

    if uri is not None:
        return Connection(conn_id="smtp_default", uri=uri)
    return Connection(conn_id="smtp_default", conn_type="smtp", host="mail.example.com", extra=json.dumps(extra))


def smtp_hook(conn: Any) -> Any:
    """The provider's SmtpHook over the same connection, without connecting (its properties read the extras)."""
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    hook = SmtpHook()
    hook.smtp_connection = conn
    return hook


@pytest.mark.parametrize(
    ("conn", "expected"),
    [
        pytest.param(
            smtp_connection(from_email="shop@example.com"),
            {
                "host": "mail.example.com",
                "port": 465,
                "use_ssl": True,
                "use_starttls": True,
                "timeout": 30.0,
                "max_reconnects": 3,
            },
            id="defaults: SSL on 465",
        ),
        pytest.param(
            smtp_connection(from_email="shop@example.com", disable_ssl=True),
            {"port": 25, "use_ssl": False, "use_starttls": True},
            id="disable_ssl: 25 and STARTTLS",
        ),
        pytest.param(
            smtp_connection(
                from_email="Shop <shop@example.com>", disable_ssl=True, disable_tls=True, timeout=2, retry_limit=0
            ),
            {
                "from_email": "Shop <shop@example.com>",
                "use_ssl": False,
                "use_starttls": False,
                "timeout": 2.0,
                "max_reconnects": 0,
            },
            id="plain text, short timeout, no reconnect",
        ),
        pytest.param(
            smtp_connection(**UI_FORM),
            {"use_ssl": True, "timeout": 30.0, "max_reconnects": 5},
            id="every field of the UI's form",
        ),
        pytest.param(
            smtp_connection(
                "smtp://bo%40example.com:s3cret@mail.example.com:587?disable_ssl=true"
                "&from_email=shop%40example.com&timeout=12.5&retry_limit=4&ssl_context=default"
            ),
            {
                "port": 587,
                "login": "bo@example.com",
                "password": "s3cret",
                "use_ssl": False,
                "use_starttls": True,
                "timeout": 12.5,
                "max_reconnects": 4,
            },
            id="a URI: extras as text",
        ),
        pytest.param(
            smtp_connection("smtp://mail.example.com?from_email=shop%40example.com&disable_ssl=false&disable_tls=no"),
            {"port": 465, "use_ssl": True, "use_starttls": True},
            id="the text false is false",
        ),
    ],
)
def test_smtp_settings_from_a_connection(conn: Any, expected: dict[str, Any]) -> None:
    settings = SmtpSettings.from_airflow(conn)
    assert {name: getattr(settings, name) for name in expected} == expected
    assert settings.conn_id == "smtp_default"


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param({"disable_ssl": True, "disable_tls": True, "timeout": 7, "retry_limit": 2}, id="flags set"),
        pytest.param({"disable_ssl": False, "disable_tls": False}, id="flags clear"),
        pytest.param(UI_FORM, id="the UI's form"),
    ],
)
def test_where_smtp_hook_reads_an_extra_we_read_the_same(extra: dict[str, Any]) -> None:
    conn = smtp_connection(**({"from_email": "shop@example.com"} | extra))
    ours, hook = SmtpSettings.from_airflow(conn), smtp_hook(conn)
    assert (ours.use_ssl, ours.timeout, ours.from_email) == (hook.use_ssl, hook.timeout, hook.from_email)
    assert ours.use_starttls == hook.smtp_starttls or ours.use_ssl  # over SSL, we never ask for STARTTLS
    assert ours.max_reconnects == (hook.smtp_retry_limit if "retry_limit" in extra else 3)


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        pytest.param({"ssl_context": "none"}, "extra ssl_context may only be 'default'", id="ssl_context none"),
        pytest.param({"ssl_context": "strict"}, "extra ssl_context may only be 'default'", id="ssl_context other"),
        pytest.param({"auth_type": "oauth2"}, "extra auth_type may only be 'basic'", id="oauth2"),
        pytest.param({"timeout": "soon"}, "extra timeout must be a number, got 'soon'", id="timeout text"),
        pytest.param({"timeout": 0}, "extra timeout must be more than 0 seconds", id="timeout 0"),
        pytest.param({"retry_limit": -1}, "extra retry_limit must be a whole number, 0 or more", id="retry -1"),
        pytest.param({"retry_limit": "2.5"}, "extra retry_limit must be a whole number", id="retry 2.5"),
        pytest.param({"disable_ssl": "maybe"}, "extra disable_ssl must be true or false, got 'maybe'", id="flag"),
        pytest.param({"disable_tls": 2}, "extra disable_tls must be true or false", id="flag 2"),
    ],
)
def test_an_smtp_extra_the_mailer_cannot_honour_is_a_config_error_naming_it(extra: dict, error: str) -> None:
    with pytest.raises(ConfigError, match=f"^connection 'smtp_default': {error}"):
        SmtpSettings.from_airflow(smtp_connection(from_email="shop@example.com", **extra))


def test_an_smtp_connection_without_a_sender_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"needs a sender address in extra\.from_email"):
        SmtpSettings.from_airflow(smtp_connection())


def message(n: int) -> Email:
    return Email(
        f"<m{n}@example.com>", f"customer{n}@example.com", f"Message-ID: <m{n}@example.com>\r\n\r\nhi\r\n".encode()
    )


@pytest.mark.parametrize(("retry_limit", "delivered"), [(3, True), (2, False)])
def test_the_mailer_reconnects_as_often_as_retry_limit_says(mail_sink, no_waits, retry_limit, delivered) -> None:
    """The server answers 421 and closes three times in a row: three reconnects, or the batch gives up."""
    from airflow.models.connection import Connection

    extra = {"from_email": "shop@example.com", "disable_ssl": True, "disable_tls": True, "retry_limit": retry_limit}
    conn = Connection(
        conn_id="smtp_default", conn_type="smtp", host="127.0.0.1", port=mail_sink.port, extra=json.dumps(extra)
    )
    mail_sink.faults = Faults(busy=3)
    with Mailer(SmtpSettings.from_airflow(conn)) as mailer:
        if delivered:
            assert mailer.send(message(1)).startswith("250")
            assert mailer.reconnects == 3
        else:
            with pytest.raises(SMTPUnavailable, match="3 connection attempts in a row failed"):
                mailer.send(message(1))
    assert len(mail_sink.messages) == int(delivered)


def test_the_state_database_is_backorder_state_db_else_shop_db(monkeypatch) -> None:
    state = {"conn_type": "sqlite", "host": "/srv/state.sqlite"}
    shop = {"conn_type": "mysql", "host": "shop.example", "login": "bo", "schema": "shop"}
    monkeypatch.setenv("AIRFLOW_CONN_SHOP_DB", json.dumps(shop))
    monkeypatch.delenv("AIRFLOW_CONN_BACKORDER_STATE_DB", raising=False)
    assert adapter.state_db() == DbConnection("shop_db", "mysql", host="shop.example", login="bo", schema="shop")
    assert adapter.shop_db() == adapter.state_db()
    monkeypatch.setenv("AIRFLOW_CONN_BACKORDER_STATE_DB", json.dumps(state))
    for get_connection in (adapter.task_connection, adapter.server_connection):
        assert adapter.state_db(get_connection) == DbConnection("backorder_state_db", "sqlite", "/srv/state.sqlite")
    monkeypatch.delenv("AIRFLOW_CONN_SHOP_DB")
    monkeypatch.delenv("AIRFLOW_CONN_BACKORDER_STATE_DB")
    from airflow.sdk.exceptions import AirflowNotFoundException

    with pytest.raises(AirflowNotFoundException, match="Neither the 'backorder_state_db' nor the 'shop_db'"):
        adapter.state_db()


def test_the_smtp_connection_is_smtp_default(monkeypatch) -> None:
    extra = {"from_email": "shop@example.com", "disable_ssl": "true", "timeout": "5"}
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps({"conn_type": "smtp", "host": "mx", "extra": extra}))
    assert adapter.smtp() == SmtpSettings("mx", 25, "shop@example.com", use_ssl=False, timeout=5.0)


def test_the_backorder_settings(monkeypatch) -> None:
    assert adapter.read_settings() == adapter.Settings()
    for key, value in {
        "schedule": "none",
        "start_date": "2026-05-01T06:00",
        "catchup": "true",
        "ops_email": "ops@shop.example",
        "run_deadline_minutes": "45",
    }.items():
        monkeypatch.setenv(f"AIRFLOW__BACKORDER__{key.upper()}", value)
    settings = adapter.read_settings()
    assert (settings.schedule, settings.start_date.isoformat(), settings.catchup) == (
        None,
        "2026-05-01T06:00:00+00:00",
        True,
    )
    assert (settings.ops_email, settings.ops_smtp_conn_id, settings.run_deadline.total_seconds()) == (
        "ops@shop.example",
        "smtp_default",
        45 * 60,
    )
    assert set(adapter.ops_alerts(settings)) == {"on_failure_callback", "deadline"}
    assert adapter.ops_alerts(adapter.Settings()) == {}


@pytest.mark.parametrize(("value", "keep_days"), [("", None), ("30", 30), (" 7 ", 7), ("1", 1), ("36500", 36500)])
def test_keep_days_unset_keeps_everything(monkeypatch, value: str, keep_days: int | None) -> None:
    monkeypatch.setenv("AIRFLOW__BACKORDER__KEEP_DAYS", value)
    assert adapter.read_settings().keep_days == keep_days


@pytest.mark.parametrize("value", ["0", "-5", "30d", "1.5", "ten", "36501", "\u0663"])
def test_a_bad_keep_days_names_the_setting(monkeypatch, value: str) -> None:
    monkeypatch.setenv("AIRFLOW__BACKORDER__KEEP_DAYS", value)
    with pytest.raises(ValueError, match=r"^\[backorder\] keep_days: .* is not a whole number of days from 1 to 36500"):
        adapter.read_settings()


@pytest.mark.parametrize(
    ("error", "fails_at_once"),
    [
        pytest.param(ConfigError("bad param"), True, id="ConfigError"),
        pytest.param(SMTPAuthenticationRefused("535"), True, id="SMTP login refused"),
        pytest.param(SMTPUnavailable("down"), False, id="SMTP server down"),
        pytest.param(RuntimeError("anything else"), False, id="other"),
    ],
)
def test_permanent_errors_fail_at_once_others_are_retried(error: Exception, fails_at_once: bool) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from include.backorder.db import LoginRefusedError

    assert issubclass(LoginRefusedError, ConfigError)  # a refused database login fails at once too
    expected = AirflowFailException if fails_at_once else type(error)
    with pytest.raises(expected, match=str(error)), adapter.permanent_errors_fail_at_once():
        raise error


def test_the_dag_params_are_the_librarys_in_order() -> None:
    params = adapter.dag_params()
    assert list(params) == [spec.name for spec in param_specs()]
    for spec in param_specs():
        assert params[spec.name].resolve(None if spec.default is None else spec.default) == spec.default
