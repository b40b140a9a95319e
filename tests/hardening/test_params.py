"""Params and run conf: what an operator (or an attacker with trigger rights) can put in a run's conf.

Addresses and URLs reach the List-Unsubscribe header and the emails' links: each is refused twice, by
the DAG's JSON Schema (the run is not even created) and by the library (config.RunParams, for a caller
without Airflow). A value with CR/LF that reaches the header builder anyway is refused there. A key of
the run conf that is no param fails the run before anything is read or sent.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from include.backorder import pipeline
from include.backorder.config import ConfigError, DbConnection, RunContext, RunParams, SmtpSettings, check_conf_keys
from include.backorder.mime import HeaderError
from include.backorder.render import Notification, Renderer
from include.backorder.unsubscribe import Unsubscribe
from tests.dags.conftest import airflow_db, dag  # noqa: F401  (a real DAG and its metadata database)
from tests.hardening.matrix import Case, params

SURFACE = "Params and run conf"
T0 = datetime(2026, 3, 2, tzinfo=UTC)
INJECT = "\r\nBcc: victim@evil.example\r\n\r\nInjected body"


def _refused(param: str, value: Any, dag_error: str, library_error: str, **more: Any) -> dict[str, Any]:
    return {"param": param, "value": value, "dag_error": dag_error, "library_error": library_error, **more}


NO_MATCH = "does not match"
REFUSED = [
    Case(
        "unsubscribe-mailto-crlf",
        "run conf `unsubscribe_mailto` = `optout@shop.example` + CR LF `Bcc: victim@evil.example` CR LF CR LF"
        " `Injected body`",
        "the run is not created: `Invalid input for param unsubscribe_mailto: ... does not match ...`; without"
        " Airflow: `unsubscribe_mailto must be an email address (one local@domain, ...)`; no email",
        "1",
        _refused(
            "unsubscribe_mailto",
            f"optout@shop.example{INJECT}",
            NO_MATCH,
            "unsubscribe_mailto must be an email address",
            dag_run=True,
        ),
    ),
    Case(
        "unsubscribe-mailto-final-newline",
        "run conf `unsubscribe_mailto` = `optout@shop.example` + LF",
        "refused as above (a bare `$` in a pattern lets a final newline through; these are anchored)",
        "1",
        _refused(
            "unsubscribe_mailto", "optout@shop.example\n", NO_MATCH, "unsubscribe_mailto must be an email address"
        ),
    ),
    Case(
        "unsubscribe-mailto-two-addresses",
        "run conf `unsubscribe_mailto` = `a@shop.example, b@shop.example`",
        "refused: `unsubscribe_mailto must be an email address (one local@domain, ...)`",
        "1",
        _refused(
            "unsubscribe_mailto",
            "a@shop.example, b@shop.example",
            NO_MATCH,
            "unsubscribe_mailto must be an email address",
        ),
    ),
    Case(
        "unsubscribe-url-crlf",
        "run conf `unsubscribe_url` = `https://shop.example/u` + CR LF `Bcc: ...`",
        "refused: `Invalid input for param unsubscribe_url`; without Airflow: `unsubscribe_url must be an https://"
        " URL (printable ASCII, no spaces or line breaks ...)`",
        "1",
        _refused(
            "unsubscribe_url", f"https://shop.example/u{INJECT}", NO_MATCH, "unsubscribe_url must be an https:// URL"
        ),
    ),
    Case(
        "postal-address-too-long",
        "run conf `postal_address` of 1,001 characters",
        "refused: `Invalid input for param postal_address: ... is too long`; without Airflow: `postal_address may be"
        " at most 1000 characters long` (every branding text is bounded, so that no email can pass 100,000 bytes)",
        "13",
        _refused("postal_address", "x" * 1001, "is too long", "postal_address may be at most 1000 characters"),
    ),
    Case(
        "shop-name-too-long",
        "run conf `shop_name` of 201 characters",
        "refused as above (at most 200)",
        "13",
        _refused("shop_name", "x" * 201, "is too long", "shop_name may be at most 200 characters"),
    ),
    Case(
        "unsubscribe-url-too-long",
        "run conf `unsubscribe_url` = `https://shop.example/` + 480 more characters",
        "refused: `... is too long`; without Airflow: `unsubscribe_url may be at most 500 characters long` (with"
        " its token it must fit one header line of 998 characters, or the server refuses every email)",
        "1",
        _refused(
            "unsubscribe_url",
            "https://shop.example/" + "u" * 480,
            "is too long",
            "unsubscribe_url may be at most 500 characters",
        ),
    ),
    Case(
        "shop-timezone-typo",
        "run conf `shop_timezone` = `Europe/Berln`",
        "refused: the trigger form offers the IANA zones, and the run says `... is not one of ...`; without Airflow:"
        " `shop_timezone is not a known IANA time zone: 'Europe/Berln'` (before: the form took it, the run failed)",
        "",
        _refused("shop_timezone", "Europe/Berln", "is not one of", "shop_timezone is not a known IANA"),
    ),
    Case(
        "send-parallelism-too-high",
        "run conf `send_parallelism` = 17",
        "refused: `... greater than the maximum of 16`; without Airflow: `send_parallelism must be from 1 to 16`;"
        " the run record keeps the value a run used",
        "",
        _refused("send_parallelism", 17, "greater than the maximum of 16", "send_parallelism must be from 1 to 16"),
    ),
    Case(
        "unsubscribe-url-final-newline",
        "run conf `unsubscribe_url` = `https://shop.example/u` + CR LF",
        "refused as above",
        "1",
        _refused("unsubscribe_url", "https://shop.example/u\r\n", NO_MATCH, "unsubscribe_url must be an https://"),
    ),
    Case(
        "support-email-crlf",
        "run conf `support_email` = `help@shop.example` + CR LF `Bcc: ...`",
        "refused: `Invalid input for param support_email`; without Airflow: `support_email must be an email"
        " address ...`",
        "1",
        _refused("support_email", f"help@shop.example{INJECT}", NO_MATCH, "support_email must be an email address"),
    ),
    Case(
        "logo-url-crlf",
        "run conf `logo_url` = `https://shop.example/logo.png` + CR LF ...",
        "refused: `Invalid input for param logo_url`; without Airflow: `logo_url must be an https:// URL ...`",
        "1",
        _refused("logo_url", f"https://shop.example/logo.png{INJECT}", NO_MATCH, "logo_url must be an https:// URL"),
    ),
    Case(
        "logo-url-quote",
        'run conf `logo_url` = `https://shop.example/x.png" onerror="alert(1)`',
        "refused: `logo_url must be an https:// URL (printable ASCII, no spaces ...)`",
        "1",
        _refused("logo_url", 'https://shop.example/x.png" onerror="alert(1)', NO_MATCH, "logo_url must be an"),
    ),
    Case(
        "order-url-crlf",
        "run conf `order_url` = `https://shop.example/o?id={order_id}` + CR LF ...",
        "refused: `Invalid input for param order_url`; without Airflow: `order_url must be an https:// URL with"
        " {order_id} ...`",
        "1",
        _refused(
            "order_url",
            f"https://shop.example/o?id={{order_id}}{INJECT}",
            NO_MATCH,
            "order_url must be an https:// URL with",
        ),
    ),
    Case(
        "table-prefix-final-newline",
        "run conf `table_prefix` = `zen_` + LF",
        "refused: `Invalid input for param table_prefix`; without Airflow: `table_prefix may only hold letters,"
        " digits and '_'`",
        "1",
        _refused("table_prefix", "zen_\n", NO_MATCH, "table_prefix may only hold"),
    ),
    Case(
        "max-order-age-beyond-the-calendar",
        "run conf `max_order_age_days` = 1000000 (T minus that is before year 1)",
        "refused as a bad param: `... 1000000 is greater than the maximum of 36500`; without Airflow:"
        " `max_order_age_days must be from 1 to 36500 (a hundred years) or null`; before: OverflowError, retried",
        "11",
        _refused(
            "max_order_age_days",
            1_000_000,
            "greater than the maximum of 36500",
            "max_order_age_days must be from 1 to 36500",
            dag_run=True,
        ),
    ),
    Case(
        "order-status-beyond-32-bits",
        "run conf `order_status_ids` = [1, 10000000000000000000000]",
        "refused: `... is greater than the maximum of 2147483647`; without Airflow: `order_status_ids must be a"
        " non-empty list of integers from 0 to 2147483647`; before: OverflowError on SQLite, retried",
        "11",
        _refused(
            "order_status_ids",
            [1, 10**22],
            "greater than the maximum of 2147483647",
            "order_status_ids must be a non-empty list of integers from 0 to 2147483647",
        ),
    ),
    Case(
        "reminder-interval-beyond-the-calendar",
        "run conf `reminder_interval_days` = 1000000000",
        "refused: `... is greater than the maximum of 36500`; without Airflow: `reminder_interval_days must be"
        " from 1 to 36500`",
        "11",
        _refused(
            "reminder_interval_days",
            1_000_000_000,
            "greater than the maximum of 36500",
            "reminder_interval_days must be from 1 to 36500",
        ),
    ),
]

TAKEN = [
    Case(
        "good-addresses-and-urls",
        "run conf `unsubscribe_mailto` `opt-out+backorder@shop.example`,"
        " `unsubscribe_url` `https://shop.example/u?list=bo&x=%C3%A4`, `support_email` `help@mail.shop.example`,"
        " `logo_url` `https://cdn.shop.example/logo.png`, `order_url` `https://shop.example/o.php?order_id={order_id}`;"
        " empty or null for each",
        "the run takes them (both in the DAG and without Airflow)",
        "1",
        {
            "values": {
                "unsubscribe_mailto": "opt-out+backorder@shop.example",
                "unsubscribe_url": "https://shop.example/u?list=bo&x=%C3%A4",
                "support_email": "help@mail.shop.example",
                "logo_url": "https://cdn.shop.example/logo.png",
                "order_url": "https://shop.example/o.php?order_id={order_id}",
                "table_prefix": "zen_",
                "max_order_age_days": 36500,
                "reminder_interval_days": 36500,
            }
        },
    ),
]

SENDERS = [
    Case(
        "from-email-crlf",
        "`smtp_default` extra `from_email` = `Shop <shop@example.com>` + CR LF `Bcc: ...`",
        "the send task fails at once: `the SMTP connection needs a sender address in extra.from_email, ... (no line"
        " breaks or control characters)`; no email",
        "1",
        {"from_email": f"Shop <shop@example.com>{INJECT}", "ok": False},
    ),
    Case(
        "from-email-no-address",
        "`smtp_default` extra `from_email` = `Shop`",
        "fails as above, naming extra.from_email",
        "1",
        {"from_email": "Shop", "ok": False},
    ),
    Case(
        "from-email-with-name",
        "`smtp_default` extra `from_email` = `Outdoor & Co <shop@example.com>`",
        "taken: the From header shows the name",
        "1",
        {"from_email": "Outdoor & Co <shop@example.com>", "ok": True},
    ),
]

HEADERS = [
    Case(
        "name-with-crlf-from-the-shop",
        "a customer name `Ann` CR LF `Bcc: victim@evil.example` CR LF CR LF `Injected body` in the shop",
        "the email arrives to her alone, the name on one line (display name `Ann"
        " Bcc: victim@evil.example Injected body`), no Bcc header, no other part",
        "1",
        {"name": f"Ann{INJECT}"},
    ),
    Case(
        "crlf-reaching-the-header-builder",
        "a List-Unsubscribe address with CR LF `Bcc: ...` that skipped the"
        " params' validation (a caller of the library)",
        "the email is not built: `HeaderError: header"
        " List-Unsubscribe: the value holds a control character ('\\r': CR, LF, NUL and the like would inject"
        " headers or a body), refused`",
        "1",
        {"mailto": f"optout@shop.example{INJECT}"},
    ),
]

TYPOS = [
    Case(
        "conf-typo-dryrun",
        'run conf `{"dryrun": true}` (meant: dry_run)',
        "the run fails at `extract_backorder_lines`, without retries: `the run conf has an unknown key: 'dryrun'"
        " (did you mean 'dry_run'?); nothing was read or sent. The params are: ...`; no email, no state written",
        "10",
        {"conf": {"dryrun": True}, "says": ["'dryrun'", "did you mean 'dry_run'?"], "dag_run": True},
    ),
    Case(
        "conf-typo-remider",
        'run conf `{"remider_interval_days": 7}`',
        "fails as above: `... unknown key: 'remider_interval_days' (did you mean 'reminder_interval_days'?)`",
        "10",
        {
            "conf": {"remider_interval_days": 7},
            "says": ["'remider_interval_days'", "did you mean 'reminder_interval_days'?"],
            "dag_run": True,
        },
    ),
    Case(
        "conf-unknown-keys",
        'run conf `{"shop": "x", "zzz": 1}`',
        "fails: `the run conf has unknown keys: 'shop' (did you mean 'shop_name'?), 'zzz'; ...`",
        "10",
        {"conf": {"shop": "x", "zzz": 1}, "says": ["unknown keys: 'shop' (did you mean 'shop_name'?), 'zzz';"]},
    ),
]

CASES = REFUSED + TAKEN + SENDERS + HEADERS + TYPOS


@pytest.fixture(scope="module")
def dag_params(dag) -> Any:  # noqa: F811
    return dag.params


@pytest.mark.parametrize("case", params(REFUSED))
def test_a_bad_param_is_refused_by_the_dag_and_by_the_library(case: Case, dag_params) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    param, value = case.data["param"], case.data["value"]
    with pytest.raises(ParamValidationError, match=case.data["dag_error"]):
        dag_params.get_param(param).resolve(value)
    with pytest.raises(ConfigError, match=rf"^{case.data['library_error']}"):
        RunParams.from_mapping({param: value})


@pytest.mark.parametrize("case", params(TAKEN))
def test_good_values_are_taken(case: Case, dag_params) -> None:
    values = case.data["values"]
    texts = [name for name in values if not name.endswith("_days")]
    for name, value in values.items():
        assert dag_params.get_param(name).resolve(value) == value
    assert all(dag_params.get_param(name).resolve(None) is None for name in texts)  # the form's empty field
    assert RunParams.from_mapping(dict(values)).unsubscribe_mailto == values["unsubscribe_mailto"]
    assert RunParams.from_mapping(dict.fromkeys(texts, None)).order_url == ""


@pytest.mark.parametrize("case", params(SENDERS))
def test_the_smtp_sender_is_one_address(case: Case) -> None:
    make = lambda: SmtpSettings("127.0.0.1", 25, case.data["from_email"])  # noqa: E731
    if case.data["ok"]:
        assert make().sender_domain == "example.com"
    else:
        with pytest.raises(ConfigError, match=r"needs a sender address in extra\.from_email"):
            make()


def _notice(name: str) -> Notification:
    return Notification(1, "initial", "en", "customer1@example.com", name, T0, (), 2, customers_id=1)


@pytest.mark.parametrize("case", params(HEADERS))
def test_a_line_break_never_reaches_the_header_block(case: Case, shop, tmp_path, smtp, mail_sink) -> None:
    if "mailto" in case.data:
        unsubscribe = Unsubscribe(mailto=case.data["mailto"])
        with pytest.raises(HeaderError, match=r"header List-Unsubscribe: the value holds a control character"):
            Renderer().render(_notice("Ann"), "shop@example.com", "example.com", unsubscribe=unsubscribe)
        return
    shop.product(1, datetime(2026, 3, 20))
    shop.order(1, [1], purchased=datetime(2026, 3, 1), name=case.data["name"])
    state = RunContext(T0)
    state_db = DbConnection("backorder_state_db", "sqlite", host=str(tmp_path / "state.sqlite"))
    run = pipeline.extract(shop.conn, state_db, state, RunParams(unsubscribe_mailto="optout@shop.example"))
    pipeline.load_previous_snapshot(state_db, run.run_id)
    pipeline.classify_run(state_db, run.run_id)
    pipeline.send(state_db, run.run_id, "initial", smtp)
    (item,) = mail_sink.messages  # the mail_sink fixture checks the header set of every email (assert_well_formed)
    msg = item.message
    assert item.rcpt_tos == ("customer1@example.com",)
    assert msg["Bcc"] is None and len(list(msg.iter_parts())) == 2
    (to,) = msg["To"].addresses
    assert (to.display_name, to.addr_spec) == ("Ann Bcc: victim@evil.example Injected body", "customer1@example.com")
    assert msg["List-Unsubscribe"] == "<mailto:optout@shop.example?subject=unsubscribe>"


# Real runs of the DAG (dag.test) for the rows that say what the operator sees in Airflow.
@pytest.fixture
def airflow_env(shop, tmp_path, mail_sink, monkeypatch) -> Any:
    shop.product(1, datetime(2026, 3, 20))
    shop.order(1, [1], purchased=datetime(2026, 3, 1))
    state = tmp_path / "state.sqlite"
    smtp = {"disable_ssl": True, "disable_tls": True, "from_email": "shop@example.com"}
    monkeypatch.setenv("AIRFLOW_CONN_SHOP_DB", json.dumps({"conn_type": "sqlite", "host": str(shop.path)}))
    monkeypatch.setenv("AIRFLOW_CONN_BACKORDER_STATE_DB", json.dumps({"conn_type": "sqlite", "host": str(state)}))
    monkeypatch.setenv(
        "AIRFLOW_CONN_SMTP_DEFAULT",
        json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": mail_sink.port, "extra": smtp}),
    )
    return state


@pytest.mark.parametrize("case", params(c for c in REFUSED if c.data.get("dag_run")))
def test_a_bad_param_in_a_real_run_is_refused_before_it_starts(case: Case, dag, airflow_env, mail_sink) -> None:  # noqa: F811
    from airflow.sdk.exceptions import ParamValidationError

    conf = dag.default_conf | {case.data["param"]: case.data["value"]}
    with pytest.raises(
        ParamValidationError, match=rf"Invalid input for param {case.data['param']}: .*{case.data['dag_error']}"
    ):
        dag.test(logical_date=T0 + timedelta(days=CASES.index(case)), run_conf=conf)
    assert mail_sink.messages == [] and not airflow_env.exists()


@pytest.mark.parametrize("case", params(TYPOS))
def test_a_typo_in_the_run_conf_fails_the_run_before_anything_is_read_or_sent(
    case: Case,
    dag,  # noqa: F811
    airflow_env,
    mail_sink,
    capfd,
) -> None:
    with pytest.raises(ConfigError) as refused:
        check_conf_keys(dag.default_conf | case.data["conf"], dag.params.keys())
    assert all(words in str(refused.value) for words in case.data["says"]), refused.value
    if not case.data.get("dag_run"):
        return
    dag_run = dag.test(
        logical_date=T0 + timedelta(days=CASES.index(case)), run_conf=dag.default_conf | case.data["conf"]
    )
    states = {ti.task_id: (str(ti.state), ti.try_number) for ti in dag_run.get_task_instances()}
    assert dag_run.state == "failed"
    assert states["extract_backorder_lines"] == ("failed", 1), "failed at once, not retried"
    assert all(state == "upstream_failed" for task, (state, _) in states.items() if task != "extract_backorder_lines")
    log = capfd.readouterr()
    (line,) = {ln for ln in (log.out + log.err).splitlines() if "AirflowFailException: the run conf has" in ln}
    assert all(words in line for words in case.data["says"]), line
    assert mail_sink.messages == [] and not airflow_env.exists(), "nothing read, nothing sent, no state written"
