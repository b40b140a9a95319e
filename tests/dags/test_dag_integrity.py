"""The DAG file loads cleanly, has the promised shape, and keeps heavy imports out of its top level."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT

DAG_FILE = ROOT / "dags" / "backorder_notifications.py"
HEAVY = ("pandas", "numpy", "sqlalchemy", "jinja2", "babel", "pymysql", "css_inline", "psycopg2", "alembic")
# What of the library parsing the DAG may load: the adapter and the params' definitions (stdlib only).
LIGHT = {
    "include",
    "include.backorder",
    "include.backorder.airflow",
    "include.backorder.config",
    "include.backorder.mime",
}


@pytest.fixture(scope="module")
def dag():
    """The DAG as its file defines it, parsed afresh: other tests change the shared one's retries."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.dags["backorder_notifications"]


def test_dag_is_found_with_its_tasks_in_order(dag) -> None:
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    ids = {t.task_id for t in dag.tasks}
    assert ids == {
        "extract_backorder_lines",
        "load_previous_snapshot",
        "classify",
        "choose_sends",
        "plan_initial",
        "plan_changed",
        "plan_periodic",
        "plan_available",
        "send_initial",
        "send_changed",
        "send_periodic",
        "send_available",
        "write_snapshot_and_audit",
        "prune_state",
    }
    assert dag.get_task("load_previous_snapshot").upstream_task_ids == {"extract_backorder_lines"}
    assert dag.get_task("classify").upstream_task_ids == {"extract_backorder_lines", "load_previous_snapshot"}
    assert dag.get_task("choose_sends").upstream_task_ids == {"classify"}
    for kind in ("initial", "changed", "periodic", "available"):
        assert {"choose_sends", f"plan_{kind}"} <= dag.get_task(f"send_{kind}").upstream_task_ids
        assert dag.get_task(f"send_{kind}").max_active_tis_per_dag == 4
    final = dag.get_task("write_snapshot_and_audit")
    assert {"send_initial", "send_changed", "send_periodic", "send_available"} <= final.upstream_task_ids
    assert final.trigger_rule == "none_failed"
    prune = dag.get_task("prune_state")  # only after the snapshot and the audit were written
    assert prune.upstream_task_ids == {"write_snapshot_and_audit"} and not prune.downstream_task_ids
    assert prune.trigger_rule == "all_success"


def test_params_and_retries(dag) -> None:
    assert dag.params.dump() == {
        "order_status_ids": [1, 2],
        "reminder_interval_days": 2,
        "max_reminders": None,
        "max_order_age_days": None,
        "table_prefix": "",
        "default_language": "en",
        "dry_run": False,
        "catch_up_silently": False,
        "shop_timezone": "UTC",
        "shop_name": "",
        "unsubscribe_mailto": "",
        "unsubscribe_url": "",
        "send_available": False,
        "send_parallelism": 1,
        "logo_url": "",
        "brand_color": "#1f4e79",
        "support_email": "",
        "postal_address": "",
        "order_url": "",
    }
    for task_id in ("extract_backorder_lines", "classify", "send_initial", "write_snapshot_and_audit"):
        task = dag.get_task(task_id)
        assert task.retries >= 1 and task.retry_exponential_backoff


@pytest.mark.parametrize(
    ("conf", "error"),
    [
        ({"table_prefix": "zen; DROP TABLE orders"}, "does not match"),
        ({"reminder_interval_days": 0}, "less than the minimum"),
        ({"default_language": "fr"}, "is not one of"),
        ({"order_status_ids": []}, "should be non-empty"),
        ({"brand_color": "red; background:url(x)"}, "does not match"),
        ({"order_url": "https://shop.example/order"}, "does not match"),
        ({"logo_url": "http://shop.example/logo.png"}, "does not match"),
        ({"unsubscribe_mailto": "optout@shop.example\r\nBcc: victim@evil.example"}, "does not match"),
        ({"support_email": "help@shop.example\n"}, "does not match"),
        ({"max_order_age_days": 1_000_000}, "greater than the maximum"),
    ],
)
def test_bad_params_are_refused(dag, conf: dict, error: str) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    ((key, value),) = conf.items()
    with pytest.raises(ParamValidationError, match=error):
        dag.params.get_param(key).resolve(value)


# The params in the trigger form's order, and the form's sections: the DAG's contract.
ORDER = [
    "order_status_ids",
    "reminder_interval_days",
    "max_reminders",
    "max_order_age_days",
    "table_prefix",
    "default_language",
    "dry_run",
    "catch_up_silently",
    "shop_timezone",
    "shop_name",
    "unsubscribe_mailto",
    "unsubscribe_url",
    "send_parallelism",
    "send_available",
    "logo_url",
    "brand_color",
    "support_email",
    "postal_address",
    "order_url",
]
BRANDING = {"logo_url", "brand_color", "support_email", "postal_address", "order_url"}


def _form(dag) -> dict[str, dict]:
    """Each param as the trigger form gets it: the DAG serialized as the dag-processor stores it, read back."""
    from airflow.serialization.serialized_objects import DagSerialization

    served = DagSerialization.from_dict(json.loads(json.dumps(DagSerialization.to_dict(dag))))
    return {name: served.params.get_param(name).dump() for name in served.params}


def test_the_form_gets_the_librarys_params_key_by_key(dag) -> None:
    """The DAG's Params are made from the library's (config.RunParams' fields, config.param_specs()): the form
    shows each with the library's default, description, JSON Schema and section, in RunParams' order."""
    from include.backorder.config import MAX_LENGTHS, PATTERNS, RunParams, param_specs

    form = _form(dag)
    specs = {s.name: s for s in param_specs()}
    assert list(form) == list(specs) == ORDER == list(RunParams.__dataclass_fields__)
    for name, shown in form.items():
        spec = specs[name]
        assert shown["value"] == spec.default, name
        assert shown["description"] == spec.description and shown["description"], name
        assert shown["schema"] == spec.json_schema(), name
        assert shown["schema"].get("pattern") == PATTERNS.get(name), name
        assert shown["schema"].get("maxLength") == MAX_LENGTHS.get(name), name
        assert shown["schema"].get("section") == ("Branding" if name in BRANDING else None), name
    assert json.loads(RunParams().to_json()) == {name: shown["value"] for name, shown in form.items()}


def test_a_runs_record_keeps_every_param_the_form_sent(dag) -> None:
    """Each param set away from its default, valid in the form: the run record (bo_run.params) has every one."""
    from include.backorder.config import RunParams

    sent = {
        "order_status_ids": [3, 5],
        "reminder_interval_days": 5,
        "max_reminders": 2,
        "max_order_age_days": 90,
        "table_prefix": "zen_",
        "default_language": "de",
        "dry_run": True,
        "catch_up_silently": False,
        "shop_timezone": "Europe/Berlin",
        "shop_name": "Trailhead",
        "unsubscribe_mailto": "optout@shop.example",
        "unsubscribe_url": "https://shop.example/u",
        "send_parallelism": 3,
        "send_available": True,
        "logo_url": "https://shop.example/logo.png",
        "brand_color": "#123456",
        "support_email": "help@shop.example",
        "postal_address": "Trailhead\nMain Street 1",
        "order_url": "https://shop.example/o?id={order_id}",
    }
    assert list(sent) == list(dag.params)
    form = copy.deepcopy(dag.params)  # resolving a value keeps it in the Param: not in the shared DAG's
    assert {name: form.get_param(name).resolve(value) for name, value in sent.items()} == sent
    assert json.loads(RunParams.from_mapping(sent).to_json()) == sent


def test_the_forms_bounds_and_choices_are_the_librarys(dag) -> None:
    from include.backorder import LANGUAGES
    from include.backorder.config import MAX_DAYS, MAX_ID, MAX_SEND_PARALLELISM, iana_zones

    schema = {name: dag.params.get_param(name).schema for name in dag.params}
    assert schema["reminder_interval_days"]["maximum"] == schema["max_order_age_days"]["maximum"] == MAX_DAYS
    assert schema["order_status_ids"]["items"]["maximum"] == MAX_ID
    assert schema["send_parallelism"]["maximum"] == MAX_SEND_PARALLELISM
    assert schema["default_language"]["enum"] == list(LANGUAGES)
    assert schema["shop_timezone"]["enum"] == list(iana_zones()) and "Europe/Berlin" in iana_zones()


def test_the_unsubscribe_url_names_the_adapters_variable(dag) -> None:
    from include.backorder.airflow import UNSUBSCRIBE_SECRET_VARIABLE

    assert UNSUBSCRIBE_SECRET_VARIABLE in dag.params.get_param("unsubscribe_url").description


# A RunParams field's annotation, and the JSON Schema type the DAG's Param of the same name must have.
JSON_TYPES = {
    "bool": "boolean",
    "int": "integer",
    "int | None": ["null", "integer"],
    "str": ["null", "string"],  # an optional text: the trigger form sends an empty field as null
    "tuple[int, ...]": "array",
}
REQUIRED_TEXTS = {"default_language", "shop_timezone", "brand_color"}  # never empty: a plain "string"


def test_the_dags_params_are_the_library_run_params_key_type_and_default(dag) -> None:
    """One set of params: the DAG's Params and config.RunParams name the same keys, with the same defaults
    and matching types, so that every param a run used reaches its run record (bo_run.params)."""
    import dataclasses

    from include.backorder.config import MAX_SEND_PARALLELISM, RunParams

    fields = {f.name: f for f in dataclasses.fields(RunParams)}
    assert sorted(dag.params.keys()) == sorted(fields)
    for name, f in fields.items():
        param = dag.params.get_param(name)
        default = list(f.default) if isinstance(f.default, tuple) else f.default
        assert param.value == default, name
        expected = "string" if name in REQUIRED_TEXTS else JSON_TYPES[str(f.type)]
        assert param.schema["type"] == expected, name
    assert dag.params.get_param("send_parallelism").schema["maximum"] == MAX_SEND_PARALLELISM
    assert json.loads(RunParams.from_mapping(dag.params.dump()).to_json()).keys() == fields.keys()


def test_the_form_offers_the_iana_zones_and_refuses_a_typo(dag) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    zone = dag.params.get_param("shop_timezone")
    assert zone.resolve("Europe/Berlin") == "Europe/Berlin" and "UTC" in zone.schema["enum"]
    with pytest.raises(ParamValidationError, match="is not one of"):
        zone.resolve("Europe/Berln")


def test_top_level_imports_only_airflow_sdk_and_the_adapter() -> None:
    """Importing the DAG file adds none of the heavy libraries to what airflow.sdk already loads: of the library,
    only the adapter and the params' definitions."""
    probe = (
        "import sys, time, json, importlib.util\n"
        "import airflow.sdk\n"
        "before = set(sys.modules)\n"
        "t = time.perf_counter()\n"
        f"spec = importlib.util.spec_from_file_location('dagfile', {str(DAG_FILE)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print(json.dumps({'seconds': time.perf_counter() - t, 'new': sorted(set(sys.modules) - before)}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    heavy = [m for m in result["new"] if m.split(".")[0] in HEAVY or (m.startswith("include") and m not in LIGHT)]
    assert heavy == [], f"the DAG file imports heavy modules at its top level: {heavy}"
    print(f"DAG file import beyond airflow.sdk: {result['seconds']:.3f} s")


def _parse(monkeypatch, **settings: str):
    from airflow.dag_processing.dagbag import DagBag

    for key, value in settings.items():
        monkeypatch.setenv(f"AIRFLOW__BACKORDER__{key.upper()}", value)
    return DagBag(dag_folder=str(ROOT / "dags"))


def test_operations_from_the_backorder_config_section(monkeypatch) -> None:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    bag = _parse(
        monkeypatch,
        schedule="30 6 * * *",
        start_date="2026-11-01",
        catchup="true",
        ops_email="ops@shop.example",
        ops_smtp_conn_id="ops_smtp",
        run_deadline_minutes="45",
    )
    assert bag.import_errors == {}
    dag = bag.dags["backorder_notifications"]
    assert dag.schedule == "30 6 * * *"
    assert dag.start_date.isoformat() == "2026-11-01T00:00:00+00:00"
    assert dag.catchup is True
    (notifier,) = dag.on_failure_callback if isinstance(dag.on_failure_callback, list) else [dag.on_failure_callback]
    assert isinstance(notifier, SmtpNotifier)
    assert (notifier.to, notifier.smtp_conn_id) == ("ops@shop.example", "ops_smtp")
    (deadline,) = dag.deadline
    assert deadline.interval.total_seconds() == 45 * 60
    assert deadline.callback.path == "airflow.providers.smtp.notifications.smtp.SmtpNotifier"
    assert deadline.callback.kwargs["to"] == "ops@shop.example"
    assert deadline.callback.kwargs["smtp_conn_id"] == "ops_smtp"
    (alias,) = dag.get_task("write_snapshot_and_audit").outlets  # the Asset's events go through it
    assert alias.name == "backorder_snapshot_written"


def test_without_an_ops_address_no_alerts(dag) -> None:
    assert not dag.on_failure_callback
    assert not dag.deadline
    assert dag.schedule == "@daily"


def test_schedule_none_means_triggered_runs_only(monkeypatch) -> None:
    assert _parse(monkeypatch, schedule="none").dags["backorder_notifications"].schedule is None


def test_a_bad_start_date_is_an_import_error_that_says_so(monkeypatch) -> None:
    bag = _parse(monkeypatch, start_date="first of May")
    (error,) = bag.import_errors.values()
    assert "[backorder] start_date: 'first of May' is not an ISO date such as 2026-01-01" in error


def test_a_bad_keep_days_is_an_import_error_that_says_so(monkeypatch) -> None:
    bag = _parse(monkeypatch, keep_days="30d")
    (error,) = bag.import_errors.values()
    assert "[backorder] keep_days: '30d' is not a whole number of days from 1 to 36500" in error


def test_the_trigger_forms_empty_text_fields_are_valid(dag) -> None:
    """The UI's form sends an empty optional text as null: the params take it, the run reads it as ''."""
    from include.backorder.config import RunParams

    texts = [
        "table_prefix",
        "shop_name",
        "unsubscribe_mailto",
        "unsubscribe_url",
        "logo_url",
        "support_email",
        "postal_address",
        "order_url",
    ]
    resolved = {name: dag.params.get_param(name).resolve(None) for name in texts}
    assert all(value is None for value in resolved.values())
    params = RunParams.from_mapping(resolved)
    assert all(getattr(params, name) == "" for name in texts)
    assert params.brand_color == "#1f4e79"
