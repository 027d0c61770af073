"""The seed's own examples, run as written: its two mapping files, CLI lines, "Typical Local / Dev Flow" and DDL.

The seed document is not in this repository; ``tests/seed/`` holds its mapping files (see the README there).
Every CLI line runs verbatim in a child process against the simulated venues (``SCHEMAHUB_<VENUE>_BASE_URL``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from pyiceberg.transforms import DayTransform
from pyiceberg.types import DoubleType, StringType, TimestamptzType

from schemahub_core.engine.catalog import open_catalog
from schemahub_core.framework.config import load_settings
from schemahub_core.sandbox import Sandbox, SandboxConfig

SEED = ROOT / "tests" / "seed"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SEED_CREDENTIALS = {  # step 1 of the seed's flow: exported, and not needed for public market data
    "AWS_ACCESS_KEY_ID": "...", "AWS_SECRET_ACCESS_KEY": "...", "AWS_DEFAULT_REGION": "...",
    "BINANCE_API_KEY": "...", "BINANCE_API_SECRET": "...", "COINBASE_API_KEY": "...", "KRAKEN_API_KEY": "...",
}


@pytest.fixture(scope="module")
def venues() -> Iterator[dict[str, str]]:
    """One simulated Binance, Coinbase and Kraken for the module; the environment that points SchemaHub at them."""
    with Sandbox(SandboxConfig.fast()) as server:
        yield server.env()


def _cli(env: dict[str, str], line: str, cwd: Path) -> str:
    """Run one seed line (``schemahub ...``) exactly as written; its stdout."""
    words = line.split()
    assert words[0] == "schemahub"
    return run_cli(*words[1:], env=env, cwd=cwd).stdout


def _rows(name: str) -> list[dict]:
    catalog = open_catalog(load_settings())
    return catalog.load_table((load_settings().namespace, name)).scan().to_arrow().to_pylist()


def _ids(rows: list[dict], column: str) -> list:
    return [r[column] for r in rows]


def test_seed_cli_lines_land_what_they_say(home: Path, tmp_path: Path, venues: dict[str, str]) -> None:
    env = {"SCHEMAHUB_HOME": str(home), **venues}
    _cli(env, "schemahub run ingest binance", tmp_path)  # "Ingest the latest trades from Binance"
    binance = _rows("raw_binance_trades")
    assert binance and {r["symbol"] for r in binance} == {"BTCUSDT", "ETHUSDT"}
    assert len(set(_ids(binance, "id"))) == len(binance)
    catalog = open_catalog(load_settings())  # aggregates are their own stream, landed only when named:
    assert not catalog.table_exists((load_settings().namespace, "raw_binance_agg_trades"))

    _cli(env, "schemahub run ingest binance coinbase kraken", tmp_path)  # "Ingest from multiple sources"
    raw = {v: _rows(f"raw_{v}_trades") for v in ("binance", "coinbase", "kraken")}
    assert all(raw.values())
    assert {r["id"] for r in binance} <= {r["id"] for r in raw["binance"]}  # resumed, nothing landed twice
    assert len({(r["symbol"], r["id"]) for r in raw["binance"]}) == len(raw["binance"])

    _cli(env, "schemahub run unify trades_unified", tmp_path)  # "Unify all new data into trades_unified"
    unified = _rows("trades_unified")
    assert len(unified) == sum(len(rows) for rows in raw.values())
    assert {r["exchange"] for r in unified} == {"BINANCE", "COINBASE", "KRAKEN"}
    binance_ids = sorted(int(r["trade_id"]) for r in unified if r["exchange"] == "BINANCE")
    assert binance_ids == sorted(int(r["id"]) for r in raw["binance"])  # Binance's own trade ids

    _cli(env, "schemahub run pipeline trades_unified", tmp_path)  # "Or a combined pipeline step"
    catalog = open_catalog(load_settings())  # every source mapped into trades_unified (the OKX example too)
    raw_after = sum(len(_rows(t)) for _, t in catalog.list_tables(load_settings().namespace)
                    if t.startswith("raw_") and t.endswith("_trades") and t != "raw_binance_agg_trades")
    unified = _rows("trades_unified")
    keys = [(r["exchange"], r["symbol"], r["trade_id"]) for r in unified]
    assert len(keys) == len(set(keys)) == raw_after >= sum(len(rows) for rows in raw.values())


def test_typical_local_dev_flow_with_the_seeds_mapping_files(home: Path, tmp_path: Path,
                                                             venues: dict[str, str]) -> None:
    env = {"SCHEMAHUB_HOME": str(home), **venues, **SEED_CREDENTIALS}  # 1. credentials
    # 2. the catalog: none configured, so the embedded SQLite catalog and local warehouse under SCHEMAHUB_HOME
    mappings = tmp_path / "config" / "mappings"  # 3. one mapping file per source under config/mappings/
    mappings.mkdir(parents=True)
    for name in ("binance_trades.yaml", "coinbase_trades.yaml"):
        shutil.copyfile(SEED / name, mappings / name)
    checked = json.loads(run_cli("mappings", "validate", "--json", env=env, cwd=tmp_path).stdout)
    seed_checks = {r["file"]: r for r in checked if r["origin"] == "config"}
    assert {Path(f).name: (r["ok"], r["source"]) for f, r in seed_checks.items()} == {
        "binance_trades.yaml": (True, "binance.trades"), "coinbase_trades.yaml": (True, "coinbase.trades")}
    assert all(r["left_null"] == ["side", "base_asset", "quote_asset", "native_symbol"]
               for r in seed_checks.values())  # the seed maps no side and no symbol split

    run_cli("init", env=env, cwd=tmp_path)  # 4. initialize the Iceberg tables
    _cli(env, "schemahub run ingest binance coinbase", tmp_path)  # 5. ingestion + unification
    _cli(env, "schemahub run unify trades_unified", tmp_path)

    unified = _rows("trades_unified")
    for venue, exchange, id_col, qty_col in (("binance", "BINANCE", "id", "qty"),
                                             ("coinbase", "COINBASE", "trade_id", "size")):
        raw = _rows(f"raw_{venue}_trades")
        symbol_col = "symbol" if venue == "binance" else "product_id"
        expected = sorted((r[symbol_col], str(r[id_col]), r["price"], r[qty_col], r["time"]) for r in raw)
        got = sorted((r["symbol"], r["trade_id"], r["price"], r["quantity"], r["trade_ts"])
                     for r in unified if r["exchange"] == exchange)
        assert raw and got == expected  # exchange, symbol, trade_id, price, quantity, trade_ts: every row
    assert all(r["side"] is None for r in unified if r["exchange"] in ("BINANCE", "COINBASE"))

    # 6. query the unified table: the seed's query, as written
    query = ("SELECT exchange, symbol, price, quantity, trade_ts FROM schemahub.schemahub.trades_unified "
             "WHERE symbol = 'BTCUSDT' ORDER BY trade_ts DESC LIMIT 100;")
    answer = json.loads(run_cli("sql", query, "--json", env=env, cwd=tmp_path).stdout)
    newest = sorted((r for r in unified if r["symbol"] == "BTCUSDT"), key=lambda r: r["trade_ts"], reverse=True)
    assert len(answer) == min(100, len(newest)) > 0
    assert [(r["exchange"], r["price"]) for r in answer] == [("BINANCE", r["price"]) for r in newest[:100]]


def test_init_creates_the_seeds_ddl(home: Path) -> None:
    """The seed's CREATE TABLEs for raw_binance_trades and trades_unified (Spark's STRING/DOUBLE/TIMESTAMP are
    Iceberg string/double/timestamptz), format version 2, trades_unified PARTITIONED BY date(trade_ts)."""
    from schemahub_core.engine.tables import init_tables
    from schemahub_core.framework.registry import get_registry

    settings = load_settings()
    catalog = open_catalog(settings)
    init_tables(catalog, settings.namespace, get_registry())
    S, D, T = StringType(), DoubleType(), TimestamptzType()
    seed_ddl = {
        "raw_binance_trades": [("id", S), ("symbol", S), ("price", D), ("qty", D), ("time", T), ("_source", S),
                               ("_source_ingest_ts", T), ("_raw_payload", S)],
        "trades_unified": [("exchange", S), ("symbol", S), ("trade_id", S), ("side", S), ("price", D),
                           ("quantity", D), ("trade_ts", T), ("ingest_ts", T)],
    }
    for name, columns in seed_ddl.items():
        table = catalog.load_table((settings.namespace, name))
        fields = [(f.name, f.field_type) for f in table.schema().fields]
        assert [c for c in fields if c[0] in dict(columns)] == columns  # the seed's columns, its order and types
        assert table.metadata.format_version == 2
    unified = catalog.load_table((settings.namespace, "trades_unified"))
    assert [c[0] for c in seed_ddl["trades_unified"]] == unified.schema().column_names[:8]  # first, in order
    (spec_field,) = unified.spec().fields
    assert isinstance(spec_field.transform, DayTransform)
    assert unified.schema().find_field(spec_field.source_id).name == "trade_ts"


RECORDED_TRADES = ROOT.parent / "shared/recorded/binance/historicalTrades.json"


@pytest.mark.skipif(not RECORDED_TRADES.is_file(), reason=f"the recorded venue answers are not beside the repo "
                                                         f"({RECORDED_TRADES})")
def test_seed_mapping_files_run_on_the_recorded_binance_trades() -> None:
    """The seed's Binance mapping on real /api/v3/historicalTrades rows: the rows it gives, field by field."""
    from schemahub_core.framework.mapping import load_mapping
    from schemahub_core.framework.registry import get_registry
    from schemahub_core.testing.conformance import map_records

    recorded = json.loads(RECORDED_TRADES.read_text())
    stream = get_registry().connectors["binance"].streams["trades"]
    rows, rejected = map_records(stream, load_mapping(SEED / "binance_trades.yaml"),
                                 [{**r, "symbol": "BTCUSDT"} for r in recorded])
    assert not rejected
    assert [(r["exchange"], r["symbol"], r["trade_id"], r["price"], r["quantity"], r["trade_ts"]) for r in rows] == [
        ("BINANCE", "BTCUSDT", str(r["id"]), float(r["price"]), float(r["qty"]),
         EPOCH + timedelta(milliseconds=r["time"])) for r in recorded]
    assert all(r["side"] is None for r in rows)
