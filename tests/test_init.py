"""`schemahub init` creates every table with the specified schema and partitioning, and is idempotent."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from pyiceberg.transforms import DayTransform

from schemahub_core.apps.cli import cli
from schemahub_core.engine.catalog import open_catalog
from schemahub_core.framework.config import ConfigError, load_settings

TRADES_COLUMNS = ["exchange", "symbol", "trade_id", "side", "price", "quantity", "trade_ts", "ingest_ts",
                  "base_asset", "quote_asset", "native_symbol"]


def test_init_twice_creates_then_finds_every_table(home) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["init", "--json"])
    assert first.exit_code == 0, first.output
    created = {t["name"]: t["created"] for t in json.loads(first.output)["tables"]}
    assert set(created) >= {"raw_binance_trades", "raw_coinbase_trades", "raw_kraken_trades", "raw_okx_trades",
                            "trades_unified", "quotes_unified", "schemahub_watermarks", "schemahub_quarantine"}
    assert all(created.values())
    second = runner.invoke(cli, ["init", "--json"])
    assert second.exit_code == 0, second.output
    assert not any(t["created"] for t in json.loads(second.output)["tables"])

    catalog = open_catalog(load_settings())
    assert (home / "catalog.db").is_file() and (home / "warehouse").is_dir()
    trades = catalog.load_table("schemahub.trades_unified")
    schema = trades.schema()
    assert [f.name for f in schema.fields] == TRADES_COLUMNS
    assert [str(schema.find_type(c)) for c in ("price", "trade_ts", "trade_id")] == ["double", "timestamptz",
                                                                                     "string"]
    assert all(schema.find_field(c).required for c in ("exchange", "symbol", "trade_id", "trade_ts"))
    (field,) = trades.spec().fields
    assert isinstance(field.transform, DayTransform) and schema.find_column_name(field.source_id) == "trade_ts"
    assert trades.properties["commit.retry.num-retries"] == "0"

    raw = catalog.load_table("schemahub.raw_kraken_trades")
    assert [f.name for f in raw.schema().fields][-3:] == ["_source", "_source_ingest_ts", "_raw_payload"]
    assert raw.schema().find_column_name(raw.spec().fields[0].source_id) == "time"
    assert catalog.load_table("schemahub.schemahub_watermarks").spec().is_unpartitioned()


def test_settings_file_and_env(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SCHEMAHUB_HOME", raising=False)
    assert load_settings().home.as_posix() == ".schemahub"
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "schemahub.yaml").write_text(
        "home: data/sh\nnamespace: md\nconnectors:\n  binance: {base_url: 'http://x'}\n")
    settings = load_settings()
    assert settings.home.as_posix() == "data/sh" and settings.namespace == "md"
    assert settings.catalog["uri"].endswith("data/sh/catalog.db")
    monkeypatch.setenv("SCHEMAHUB_BINANCE_BASE_URL", "http://127.0.0.1:9")
    assert settings.connector_options("binance") == {"base_url": "http://127.0.0.1:9"}
    monkeypatch.setenv("SCHEMAHUB_HOME", str(tmp_path / "elsewhere"))
    assert load_settings().home == tmp_path / "elsewhere"
    (tmp_path / "config" / "schemahub.yaml").write_text("catalgo: {}\n")
    with pytest.raises(ConfigError, match="unknown setting 'catalgo'"):
        load_settings()


def test_bad_config_fails_with_one_line(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("catalog: [1, 2]\n")
    result = CliRunner().invoke(cli, ["--config", "bad.yaml", "init"])
    assert result.exit_code == 1
    assert "'catalog' must be a mapping" in result.output
