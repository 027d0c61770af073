"""Issue 21's stream rename on an old warehouse: ``raw_binance_trades`` holding aggTrades (a, p, q, f, l, T, m, M).

The old warehouse is built through the public engine API with the old stream: Binance's aggregate trades under
the name ``trades`` and ``M`` under its native name, as before both renames. With today's plugins, ingest, unify,
status, init and backfill refuse it with one line naming ``schemahub maintain --migrate``, writing nothing;
the migration (killed once between its rename and its progress commit, then rerun) moves the table to
``raw_binance_agg_trades`` with its snapshots and coverage, so the next run lands only what was never landed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import run_cli
from schemahub_binance import MAPPINGS
from schemahub_binance.connector import AGG_TRADES, BinanceConnector
from test_robustness import files_of, one_line_error

from schemahub_core.engine.catalog import open_catalog
from schemahub_core.engine.coverage import read_state
from schemahub_core.engine.ingest import ingest
from schemahub_core.engine.sink import progress_of
from schemahub_core.engine.unify import unify
from schemahub_core.framework.config import Settings, default_catalog
from schemahub_core.framework.connector import Column
from schemahub_core.framework.mapping import load_mapping
from schemahub_core.framework.registry import get_registry
from schemahub_core.sandbox import Sandbox, SandboxConfig

NS = "schemahub"
OLD_STREAM = replace(AGG_TRADES, name="trades", default=True, formerly=(),
                     columns=tuple(Column("M", c.type) if c.name == "M_best_match" else c for c in AGG_TRADES.columns))


class OldBinance(BinanceConnector):
    """The Binance connector before issue 21: aggregate trades were its stream ``trades``."""

    streams = {"trades": OLD_STREAM, "quotes": BinanceConnector.streams["quotes"]}

    def fetch_trades(self, symbol, cursor, since=None, until=None):  # type: ignore[no-untyped-def,override]
        return self.fetch_agg_trades(symbol, cursor, since, until)


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


A, B, C, D = t("2024-02-08T15:12:00"), t("2024-02-08T15:12:20"), t("2024-02-08T15:12:40"), t("2024-02-08T15:13:00")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig.fast()) as server:
        yield server


def test_an_old_layout_is_refused_in_one_line_then_migrated_keeping_its_coverage(home: Path,
                                                                                 sandbox: Sandbox) -> None:
    settings = Settings(home=home, catalog=default_catalog(home))
    catalog = open_catalog(settings)
    registry = get_registry()
    old = replace(registry, connectors={**registry.connectors, "binance": OldBinance})
    options = sandbox.connector_options("binance")
    for symbol, since, until in (("BTC-USDT", A, B), ("BTC-USDT", C, D), ("ETH-USDT", A, B)):  # BTC: a hole B..C
        [stats] = ingest(catalog, NS, old, "binance", options=options, streams=["trades"], symbols=[symbol],
                         since=since, until=until)
        assert stats.landed > 0 and not stats.error, stats
    agg_mapping = replace(load_mapping(MAPPINGS / "optional" / "agg_trades_unified.yaml"), source="binance.trades")
    unified = unify(catalog, NS, old, "trades_unified", [agg_mapping])
    assert unified.unified > 0
    before = catalog.load_table((NS, "raw_binance_trades"))
    assert {"a", "M", "T"} <= set(before.schema().column_names)
    old_rows = before.scan().to_arrow()
    old_states = {s: read_state(before, "trades", s) for s in ("BTC-USDT", "ETH-USDT")}
    assert len(old_states["BTC-USDT"].spans) == 2  # the hole is part of the coverage to keep
    old_snapshots = {s.snapshot_id for s in before.metadata.snapshots}
    position = progress_of(catalog.load_table((NS, "trades_unified")))["schemahub.source.raw_binance_trades"]

    env = {**sandbox.env(), "SCHEMAHUB_HOME": str(home)}
    written = files_of(home)
    window = ("--since", A.isoformat(), "--until", D.isoformat())
    for args in (("run", "ingest", "binance", "--symbols", "BTC-USDT", *window), ("run", "unify", "trades_unified"),
                 ("run", "pipeline", "trades_unified", *window), ("status",), ("init",),
                 ("backfill", "binance", "--since", "2024-02-07", "--until", "2024-02-08")):
        line = one_line_error(run_cli(*args, env=env, check=False))
        assert "raw_binance_trades holds binance.agg_trades rows" in line and "schemahub maintain --migrate" in line, \
            (args, line)
    assert files_of(home) == written  # refused before anything was written

    killed = run_cli("maintain", "--migrate", env={**env, "SCHEMAHUB_TEST_FAULT": "migrate.after-rename:1"},
                     check=False)
    assert killed.returncode == -9, killed.stderr  # renamed, progress not yet rewritten
    assert "raw_binance_trades holds" in one_line_error(run_cli("status", env=env, check=False))  # still pending
    done = json.loads(run_cli("maintain", "--migrate", "--json", env=env).stdout)
    assert any("coverage and progress of binance.trades now under agg_trades" in d for d in done), done
    assert any("M -> M_best_match" in d for d in done), done
    assert json.loads(run_cli("maintain", "--migrate", "--json", env=env).stdout) == []  # nothing left to do

    catalog = open_catalog(settings)
    moved = catalog.load_table((NS, "raw_binance_agg_trades"))
    assert not catalog.table_exists((NS, "raw_binance_trades"))
    assert old_snapshots <= {s.snapshot_id for s in moved.metadata.snapshots}  # its history moved with it
    assert moved.scan().to_arrow().num_rows == old_rows.num_rows and "M_best_match" in moved.schema().column_names
    for symbol, state in old_states.items():
        now = read_state(moved, "agg_trades", symbol)
        assert (now.spans, now.rows, now.last_ts) == (state.spans, state.rows, state.last_ts)
    assert progress_of(catalog.load_table((NS, "trades_unified")))["schemahub.source.raw_binance_agg_trades"] \
        == position

    # the next run lands only the hole: nothing refetched, nothing doubled
    [stats] = json.loads(run_cli("run", "ingest", "binance.agg_trades", "--symbols", "BTC-USDT", *window, "--json",
                                 env=env).stdout)
    hole = sandbox.venues["binance"].expected_keys("agg_trades", "BTC-USDT", B, C)
    assert stats["landed"] == len(hole) > 0, stats
    rows = catalog.load_table((NS, "raw_binance_agg_trades")).scan().to_arrow()
    btc = [a for s, a in zip(rows["symbol"].to_pylist(), rows["a"].to_pylist(), strict=True) if s == "BTCUSDT"]
    assert sorted(btc) == [a for _, a in sandbox.venues["binance"].expected_keys("agg_trades", "BTC-USDT", A, D)]
    # and today's stream `trades` (individual trades) gets a table of its own
    [trades] = [s for s in json.loads(run_cli("run", "ingest", "binance.trades", "--symbols", "BTC-USDT", *window,
                                              "--json", env=env).stdout)]
    assert trades["landed"] > 0 and "id" in catalog.load_table((NS, "raw_binance_trades")).schema().column_names
    assert run_cli("status", env=env).returncode == 0


def test_both_tables_holding_data_is_refused_without_changing_anything(home: Path, sandbox: Sandbox) -> None:
    settings = Settings(home=home, catalog=default_catalog(home))
    catalog = open_catalog(settings)
    registry = get_registry()
    old = replace(registry, connectors={**registry.connectors, "binance": OldBinance})
    options = sandbox.connector_options("binance")
    ingest(catalog, NS, old, "binance", options=options, streams=["trades"], symbols=["ETH-USDT"], since=A, until=B)
    ingest(catalog, NS, registry, "binance", options=options, streams=["agg_trades"], symbols=["ETH-USDT"], since=A,
           until=B)
    written = files_of(home)
    line = one_line_error(run_cli("maintain", "--migrate", env={"SCHEMAHUB_HOME": str(home)}, check=False))
    assert "holds rows too" in line and "nothing was changed" in line, line
    assert files_of(home) == written
