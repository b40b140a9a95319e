"""`make preview`: every kind and language rendered to files, from sample data or from a shop's order."""

from __future__ import annotations

import json
from datetime import datetime
from email import message_from_bytes, policy

import pytest

from tools.preview import main


def test_sample_previews_of_every_kind_and_language(tmp_path) -> None:
    assert main(["--out", str(tmp_path), "--at", "2026-11-23T00:00"]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(
        f"{k}-{lang}.{ext}"
        for k in ("initial", "changed", "periodic", "available")
        for lang in ("en", "de")
        for ext in ("eml", "html")
    )
    msg = message_from_bytes((tmp_path / "changed-de.eml").read_bytes(), policy=policy.default)
    assert msg["Subject"] == "Ihre Bestellung 4711: neuer Liefertermin"
    assert "17.12.2026" in (tmp_path / "changed-de.html").read_text(encoding="utf-8")


def test_preview_takes_the_dag_conf_for_branding_and_texts(tmp_path) -> None:
    conf = tmp_path / "conf.json"
    conf.write_text('{"shop_name": "Trailhead", "reminder_interval_days": 5, "brand_color": "#2f6b3a"}')
    out = tmp_path / "out"
    assert main(["--out", str(out), "--kind", "initial", "--language", "en", "--conf", f"@{conf}"]) == 0
    html = (out / "initial-en.html").read_text(encoding="utf-8")
    assert "every 5 days" in html and "Trailhead</span>" in html and "#2f6b3a" in html


def test_preview_refuses_bad_conf_with_the_reason(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--conf", '{"brand_color": "red"}'])
    assert "brand_color must be a hex colour" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--conf", '{"dryrun": true}'])
    assert "unknown key: 'dryrun' (did you mean 'dry_run'?)" in capsys.readouterr().err


def test_preview_of_one_order_of_a_shop(shop, tmp_path) -> None:
    shop.product(1, datetime(2026, 12, 1))
    shop.order(7, [1], purchased=datetime(2026, 11, 1), name="Ann Smith")
    out = tmp_path / "out"
    argv = [
        "--shop-url",
        f"sqlite:///{shop.path}",
        "--order",
        "7",
        "--at",
        "2026-11-23T00:00",
        "--kind",
        "initial",
        "--language",
        "en",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    msg = message_from_bytes((out / "initial-en.eml").read_bytes(), policy=policy.default)
    assert msg["To"] == "Ann Smith <customer7@example.com>"
    body = msg.get_body(("plain",))
    assert body is not None
    assert "  - 1 x Product 1 (M-1)\n    expected Dec 1, 2026\n" in body.get_content().replace("\r\n", "\n")


def test_preview_reads_the_order_from_the_configured_shop_db_connection(shop, tmp_path, monkeypatch) -> None:
    shop.product(1, datetime(2026, 12, 1))
    shop.order(8, [1], purchased=datetime(2026, 11, 1), name="Bea Jones")
    monkeypatch.setenv("AIRFLOW_CONN_SHOP_DB", json.dumps({"conn_type": "sqlite", "host": str(shop.path)}))
    out = tmp_path / "out"
    argv = ["--order", "8", "--at", "2026-11-23T00:00", "--kind", "periodic", "--language", "en", "--out", str(out)]
    assert main(argv) == 0
    msg = message_from_bytes((out / "periodic-en.eml").read_bytes(), policy=policy.default)
    assert msg["To"] == "Bea Jones <customer8@example.com>"
