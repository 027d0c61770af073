"""Partition planning: skewed tables get bucket or hour, apply evolves the spec, replay and unify stay exact."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa
from conftest import run_cli
from scripted_support import NS, expected_rows, registry, settings_for, unified_rows

from schemahub_core.apps.partitions import apply, suggest
from schemahub_core.apps.pipeline import run_pipeline
from schemahub_core.apps.replay import read_scan, window_scan
from schemahub_core.engine.catalog import open_catalog
from schemahub_core.engine.maintenance import compact
from schemahub_core.engine.tables import init_tables

DAY_US = 86_400_000_000
DAY0 = 19_761 * DAY_US  # 2024-02-08


def _table(tmp_path, commits: int, rows_per_commit: int, symbols: list[str], seed: int = 1, first_id: int = 0):
    settings = settings_for(tmp_path, {})
    catalog = open_catalog(settings)
    init_tables(catalog, NS, registry())
    table = catalog.load_table((NS, "trades_unified"))
    rng = np.random.default_rng(seed)
    schema = table.schema().as_arrow()
    next_id = first_id
    for _ in range(commits):
        n = rows_per_commit
        ts = pa.array(DAY0 + rng.integers(0, DAY_US, n), pa.int64()).cast(pa.timestamp("us", tz="UTC"))
        sym = pa.array(rng.choice(symbols, n))
        data = pa.table({
            "exchange": pa.array(["SIMULATED"] * n), "symbol": sym,
            "trade_id": pa.array([str(i) for i in range(next_id, next_id + n)]),
            "side": pa.array(rng.choice(["BUY", "SELL"], n)), "price": pa.array(rng.uniform(1, 2, n)),
            "quantity": pa.array(rng.uniform(0, 1, n)), "trade_ts": ts, "ingest_ts": ts,
            "base_asset": sym, "quote_asset": pa.array(["USD"] * n), "native_symbol": sym,
        }).cast(schema)
        next_id += n
        table.append(data)
    return settings, catalog


def _window(table, suggestion):
    start = suggestion.window["start"]
    from schemahub_core.apps.replay import parse_instant

    us = int(parse_instant(start).timestamp() * 1_000_000)
    rows, files = read_scan(window_scan(table, [suggestion.window["symbol"]], us, us + 12_000_000))
    return Counter(rows.column("trade_id").to_pylist()), files


def test_many_symbols_in_large_days_get_a_symbol_bucket_and_the_window_scans_what_was_predicted(tmp_path):
    symbols = [f"S{i:02d}-USD" for i in range(20)]
    settings, catalog = _table(tmp_path, commits=12, rows_per_commit=3000, symbols=symbols)
    table = catalog.load_table((NS, "trades_unified"))
    s = suggest(table, target_file_bytes=128 * 1024)
    assert s.buckets == 16 and not s.hourly
    assert s.proposed_spec == "day(trade_ts), bucket(16, symbol)"
    assert s.now.files == 12  # every commit's file holds every symbol at every hour of the day
    before_rows, before_files = _window(table, s)
    assert before_files == s.now.files and before_rows

    assert apply(table, s) == "day(trade_ts), bucket(16, symbol)"
    compact(catalog, (NS, "trades_unified"))
    table = catalog.load_table((NS, "trades_unified"))
    after_rows, after_files = _window(table, s)
    assert after_rows == before_rows  # exact: same trades in the window
    assert after_files == s.proposed.files == 1
    scanned = list(window_scan(table, [s.window["symbol"]], 0, 2**62).plan_files())
    assert sum(t.file.file_size_in_bytes for t in scanned) < s.now.bytes / 4  # its bucket only
    assert sum(f.record_count for f in (t.file for t in table.scan().plan_files())) == 12 * 3000


def test_one_busy_symbol_gets_hour_partitions(tmp_path):
    settings, catalog = _table(tmp_path, commits=4, rows_per_commit=20_000, symbols=["BTC-USD"])
    table = catalog.load_table((NS, "trades_unified"))
    s = suggest(table, target_file_bytes=64 * 1024)
    assert s.hourly and s.buckets is None and s.proposed_spec == "hour(trade_ts)"
    before_rows, _ = _window(table, s)
    assert apply(table, s) == "hour(trade_ts)"
    compact(catalog, (NS, "trades_unified"))
    table = catalog.load_table((NS, "trades_unified"))
    after_rows, after_files = _window(table, s)
    assert after_rows == before_rows and after_files == s.proposed.files == 1
    assert s.proposed.bytes < s.compacted.bytes / 10  # one hour of 24


def test_a_small_table_keeps_day_partitions(tmp_path):
    settings, catalog = _table(tmp_path, commits=2, rows_per_commit=500, symbols=["BTC-USD", "ETH-USD"])
    s = suggest(catalog.load_table((NS, "trades_unified")))
    assert not s.changed and s.proposed_spec == s.current_spec == "day(trade_ts)"
    assert s.reasons and "cheapest" in s.reasons[0]


def test_unify_stays_exact_after_partition_evolution(tmp_path):
    options = {"scripted": {"trades": 40, "page_size": 7}, "scripted_b": {"trades": 40, "page_size": 7}}
    settings = settings_for(tmp_path, {"scripted": {"trades": 20}, "scripted_b": {"trades": 20}})
    run_pipeline(settings, registry(), "trades_unified")
    catalog = open_catalog(settings)
    table = catalog.load_table((NS, "trades_unified"))
    s = suggest(table, target_file_bytes=1)  # force a change on a tiny table
    s.buckets, s.hourly, s.changes = 4, False, ["add bucket(4, symbol)"]
    assert apply(table, s) == "day(trade_ts), bucket(4, symbol)"
    settings.connectors = options
    run_pipeline(settings, registry(), "trades_unified")
    assert unified_rows(settings) == expected_rows(options)
    run_pipeline(settings, registry(), "trades_unified")  # rerun: nothing doubles
    assert unified_rows(settings) == expected_rows(options)


def test_cli_suggest_json_and_apply(tmp_path, home):
    missing = json.loads(run_cli("partitions", "suggest", "--json").stdout)
    assert missing["exists"] is False and missing["changed"] is False and "does not exist yet" in missing["reasons"][0]
    run_cli("init")
    out = json.loads(run_cli("partitions", "suggest", "--json").stdout)
    assert out["changed"] is False and out["rows"] == 0 and out["applied"] is None
    bad = run_cli("partitions", "suggest", "--target-file-size", "lots", check=False)
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        "error: --target-file-size 'lots': expected a size such as 128MB or 1GiB"]


def test_compaction_after_evolution_keeps_every_row_where_old_and_new_spec_files_share_a_partition(tmp_path):
    """Old-spec files of a day and new-spec small files of its buckets are rewritten in one compaction: the
    rewrites land in the same bucket directories, and none may overwrite another's file."""
    from pyiceberg.transforms import BucketTransform

    symbols = [f"S{i:02d}-USD" for i in range(8)]
    settings, catalog = _table(tmp_path, commits=2, rows_per_commit=400, symbols=symbols)
    table = catalog.load_table((NS, "trades_unified"))
    with table.update_spec() as update:
        update.add_field("symbol", BucketTransform(4), "symbol_bucket")
    _table(tmp_path, commits=2, rows_per_commit=400, symbols=symbols, seed=2, first_id=800)  # new spec, same day
    table = catalog.load_table((NS, "trades_unified"))
    before = Counter(table.scan(selected_fields=("trade_id",)).to_arrow()["trade_id"].to_pylist())
    assert len(before) == 1600 and set(before.values()) == {1}
    assert compact(catalog, (NS, "trades_unified")) > 1  # the old spec's day and the new spec's buckets
    after = catalog.load_table((NS, "trades_unified"))
    assert Counter(after.scan(selected_fields=("trade_id",)).to_arrow()["trade_id"].to_pylist()) == before
    assert {t.file.spec_id for t in after.scan().plan_files()} == {after.spec().spec_id}
