"""Mappings are validated before any write; each error names file, line and key."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

from schemahub_core.engine.raw import cast_records
from schemahub_core.framework.mapping import (
    MappingError,
    check_mapping,
    collect_mappings,
    left_null,
    load_mapping,
    parse_mapping,
    resolve,
)
from schemahub_core.framework.registry import get_registry

BINANCE = ROOT / "plugins/schemahub-binance/src/schemahub_binance/mappings/trades_unified.yaml"


def _broken(tmp_path: Path, old: str, new: str) -> Path:
    text = BINANCE.read_text()
    assert old in text
    path = tmp_path / "broken.yaml"
    path.write_text(text.replace(old, new))
    return path


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


@pytest.mark.parametrize(
    ("old", "new", "needle", "key", "message"),
    [
        ("side: taker_side_from_maker_flag", "side: taker_side_from_maker_flg", "side: taker_side_from_maker_flg",
         "transforms.side", "unknown transform 'taker_side_from_maker_flg'"),
        ("  qty: quantity", "  q: quantity", "q: quantity", "mappings.q", "no raw column 'q'"),
        ("  price: price", "  price: prise", "price: prise", "mappings.price", "no column 'prise' in trades_unified"),
        ("exchange: BINANCE", "exchange: [BINANCE]", "exchange: [BINANCE]", "constants.exchange", "is not of type"),
        ("source: binance.trades", "source: binance.candles", "source: binance.candles", "source",
         "has no stream 'candles'"),
        ("target_table: trades_unified", "target_table: trades_unifed", "target_table: trades_unifed",
         "target_table", "unknown target table"),
    ],
)
def test_broken_mapping_names_file_line_and_key(tmp_path, old, new, needle, key, message) -> None:
    path = _broken(tmp_path, old, new)
    with pytest.raises(MappingError) as info:
        check_mapping(load_mapping(path), get_registry())
    err = info.value
    assert (err.path, err.line, err.key) == (str(path), _line_of(path, needle), key)
    assert message in str(err)
    assert str(err).startswith(f"{path}:{err.line}: {key}: ")


def test_unknown_top_level_key_and_missing_columns(tmp_path: Path) -> None:
    path = _broken(tmp_path, "constants:", "extras: 1\nconstants:")
    with pytest.raises(MappingError) as info:
        load_mapping(path)
    assert info.value.key == "extras" and info.value.line == _line_of(path, "extras: 1")

    path = _broken(tmp_path, "  time: trade_ts\n", "")
    with pytest.raises(MappingError, match="does not produce trades_unified column.*trade_ts, which may not be null"):
        check_mapping(load_mapping(path), get_registry())

    path = _broken(tmp_path, "  base_asset: {name: base_asset, from: symbol}\n", "")  # nullable: stays null
    check_mapping(load_mapping(path), get_registry())
    assert left_null(load_mapping(path), get_registry()) == ["base_asset"]


def test_invalid_yaml_reports_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("source: binance.trades\nmappings:\n  a: [trade_id\n")
    with pytest.raises(MappingError) as info:
        load_mapping(path)
    assert info.value.path == str(path) and info.value.line is not None and "invalid YAML" in str(info.value)


def test_validate_command_checks_config_and_plugin_mappings(tmp_path: Path) -> None:
    ok = run_cli("mappings", "validate", "--json", cwd=tmp_path)
    assert '"source": "kraken.trades"' in ok.stdout and '"ok": false' not in ok.stdout

    mdir = tmp_path / "config" / "mappings"
    mdir.mkdir(parents=True)
    bad = _broken(mdir, "side: taker_side_from_maker_flag", "side: nope")
    proc = run_cli("mappings", "validate", cwd=tmp_path, check=False, env={"COLUMNS": "300"})
    assert proc.returncode == 1
    failures = [line for line in proc.stderr.splitlines() if line.startswith("fail")]
    assert failures == [f"fail config/mappings/broken.yaml:{_line_of(bad, 'side: nope')}: "
                        "transforms.side: unknown transform 'nope' (known: " + failures[0].split("(known: ")[1]]


def test_config_mapping_overrides_the_plugin_default(tmp_path: Path) -> None:
    mdir = tmp_path / "mappings"
    mdir.mkdir()
    (mdir / "binance.yaml").write_text(BINANCE.read_text().replace("exchange: BINANCE", "exchange: BNB_SPOT"))
    found = [m for m in collect_mappings(get_registry(), mdir) if m.source == "binance.trades"]
    assert len(found) == 1 and found[0].constants["exchange"] == "BNB_SPOT"


def test_mapping_apply_produces_unified_rows() -> None:
    registry = get_registry()
    mapping = load_mapping(BINANCE)
    stream = registry.connectors["binance"].streams["trades"]
    records = [{"symbol": "BTCUSDT", "id": 7, "price": "43210.50", "qty": "0.5", "quoteQty": "21605.25",
                "time": 1707405124123, "isBuyerMaker": True, "isBestMatch": True}]
    raw, rejected = cast_records(stream, records, registry.transforms, "binance")
    assert rejected == []
    row = mapping.apply(raw, registry, registry.targets["trades_unified"].schema).to_pylist()[0]
    assert row["exchange"] == "BINANCE" and row["symbol"] == "BTC-USDT" and row["native_symbol"] == "BTCUSDT"
    assert row["trade_id"] == "7" and row["side"] == "SELL" and row["price"] == 43210.5
    assert (row["base_asset"], row["quote_asset"]) == ("BTC", "USDT")
    assert row["trade_ts"].isoformat() == "2024-02-08T15:12:04.123000+00:00"


def test_parse_mapping_from_text() -> None:
    mapping = parse_mapping(textwrap.dedent("""
        source: okx.trades
        target_table: trades_unified
        mappings: {tradeId: trade_id}
    """))
    assert mapping.raw_table == "raw_okx_trades" and mapping.columns == {"tradeId": ("trade_id",)}


def test_source_by_raw_table_name_resolves_to_the_same_stream(tmp_path: Path) -> None:
    registry = get_registry()
    by_raw = _broken(tmp_path, "source: binance.trades", "source: raw_binance_trades")
    check_mapping(load_mapping(by_raw), registry)
    plugin = resolve(load_mapping(BINANCE), registry)
    assert resolve(load_mapping(by_raw), registry) == dataclasses.replace(plugin, path=str(by_raw))
    mdir = tmp_path / "config"
    mdir.mkdir()
    by_raw.rename(mdir / "binance.yaml")
    found = [m for m in collect_mappings(registry, mdir) if m.connector == "binance" and m.target_table ==
             "trades_unified"]
    assert [(m.source, m.path) for m in found] == [("binance.trades", str(mdir / "binance.yaml"))]  # replaces


def test_unknown_stream_errors_list_the_streams_that_exist(tmp_path: Path) -> None:
    for written in ("raw_binance_candles", "binance.candles"):
        path = _broken(tmp_path, "source: binance.trades", f"source: {written}")
        with pytest.raises(MappingError) as info:
            check_mapping(load_mapping(path), get_registry())
        assert info.value.key == "source" and info.value.line == _line_of(path, written)
        assert "binance.trades (raw_binance_trades)" in str(info.value)
        assert "kraken.trades (raw_kraken_trades)" in str(info.value)


def test_a_transform_may_be_keyed_by_the_raw_column_it_casts() -> None:
    registry = get_registry()
    text = BINANCE.read_text().replace("  side: taker_side_from_maker_flag\n",
                                       "  isBuyerMaker: taker_side_from_maker_flag\n  qty: to_double\n")
    mapping = parse_mapping(text)
    check_mapping(mapping, registry)
    assert resolve(mapping, registry).transforms == resolve(parse_mapping(BINANCE.read_text().replace(
        "  side: taker_side_from_maker_flag\n", "  side: taker_side_from_maker_flag\n  quantity: to_double\n")),
        registry).transforms


def test_pattern_errors_print_with_their_brackets(tmp_path: Path) -> None:
    mdir = tmp_path / "config" / "mappings"
    mdir.mkdir(parents=True)
    bad = _broken(mdir, "source: binance.trades", "source: Binance.Trades")
    proc = run_cli("mappings", "validate", cwd=tmp_path, check=False, env={"COLUMNS": "400"})
    assert proc.returncode == 1
    line = next(line for line in proc.stderr.splitlines() if line.startswith("fail"))
    line_no = _line_of(bad, "Binance.Trades")
    assert line.startswith(f"fail config/mappings/broken.yaml:{line_no}: source: 'Binance.Trades' does not match ")
    assert "'^([a-z][a-z0-9_]*\\\\.[a-z][a-z0-9_]*|raw_[a-z][a-z0-9_]*_[a-z][a-z0-9_]*)$'" in line


def test_values_from_files_print_literally_in_tables(tmp_path: Path) -> None:
    records = tmp_path / "records.json"
    records.write_text('[{"symbol": "BTCUSDT", "id": 1, "price": "[bold]1[/bold]", "qty": "1", "quoteQty": "1", '
                       '"time": 1707405124123, "isBuyerMaker": true, "isBestMatch": true}]')
    proc = run_cli("mappings", "dry-run", "raw_binance_trades", str(records), cwd=tmp_path, env={"COLUMNS": "400"})
    assert "quarantined record 0:" in proc.stdout and "'[bold]1[/bold]'" in proc.stdout
