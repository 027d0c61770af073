"""Unify: incremental (new raw files only), idempotent, one commit for all sources, any page split."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from scripted_support import NS, expected_rows, registry, restrict, settings_for, unified_rows

from schemahub_core.apps.pipeline import run_pipeline
from schemahub_core.engine import faults
from schemahub_core.engine.catalog import open_catalog
from schemahub_core.engine.ingest import ingest
from schemahub_core.engine.sink import IcebergSink, day_filter
from schemahub_core.engine.unify import unify
from schemahub_core.testing.scripted import START_MS, land_backlog


def _mappings(reg):
    return [m for _, m in reg.mappings]


def _snapshot_ids(catalog, name: str) -> list[int]:
    return [s.snapshot_id for s in catalog.load_table((NS, name)).snapshots()]


def test_rerun_with_no_new_raw_data_makes_no_snapshot_and_changes_nothing(tmp_path) -> None:
    options = {"scripted": {"trades": 12}, "scripted_b": {"trades": 12}}
    settings = settings_for(tmp_path, options)
    run_pipeline(settings, registry(), "trades_unified")
    catalog = open_catalog(settings)
    before, rows = _snapshot_ids(catalog, "trades_unified"), unified_rows(settings)
    assert len(before) == 1 and rows == expected_rows(options)

    again = unify(catalog, NS, registry(), "trades_unified", _mappings(registry()))
    assert (again.commits, again.unified, again.fetched, again.scanned_files) == (0, 0, 0, [])
    assert _snapshot_ids(catalog, "trades_unified") == before and unified_rows(settings) == rows


def test_second_unify_scans_only_the_newly_appended_raw_files(tmp_path) -> None:
    settings = settings_for(tmp_path, {})
    catalog, reg = open_catalog(settings), registry()
    until = datetime.fromtimestamp(START_MS / 1000, UTC) + timedelta(seconds=8)
    ingest(catalog, NS, reg, "scripted", options={"trades": 30, "page_size": 6}, symbols=["BTC-USD"], until=until)
    first = unify(catalog, NS, reg, "trades_unified", _mappings(reg))
    raw = catalog.load_table((NS, "raw_scripted_trades"))
    old_files = set(raw.inspect.files().column("file_path").to_pylist())
    assert set(first.scanned_files) == old_files and 0 < first.unified < 30

    ingest(catalog, NS, reg, "scripted", options={"trades": 30, "page_size": 6}, symbols=["BTC-USD"])
    raw = catalog.load_table((NS, "raw_scripted_trades"))
    new_files = set(raw.inspect.files().column("file_path").to_pylist()) - old_files
    second = unify(catalog, NS, reg, "trades_unified", _mappings(reg))
    assert new_files and set(second.scanned_files) == new_files  # none of the first run's files again
    assert (second.fetched, second.unified, second.deduplicated) == (30 - first.unified, 30 - first.unified, 0)
    want = restrict(expected_rows({"scripted": {"trades": 30}}), 0, "SCRIPTED")
    assert unified_rows(settings) == restrict(want, 1, "BTC-USD")


def test_one_commit_covers_every_source_and_stamps_its_commit_time(tmp_path) -> None:
    options = {"scripted": {"trades": 8}, "scripted_b": {"trades": 5}}
    settings = settings_for(tmp_path, options)
    (*_, stats) = run_pipeline(settings, registry(), "trades_unified")
    catalog = open_catalog(settings)
    (snapshot,) = catalog.load_table((NS, "trades_unified")).snapshots()
    summary = snapshot.summary.additional_properties
    for source in ("raw_scripted_trades", "raw_scripted_b_trades"):
        assert summary[f"schemahub.source.{source}"] == str(catalog.load_table((NS, source)).current_snapshot()
                                                            .snapshot_id)
    stamp = datetime.fromisoformat(summary["schemahub.ingest-ts"])
    ingest_ts = set(catalog.load_table((NS, "trades_unified")).scan(selected_fields=("ingest_ts",)).to_arrow()
                    .column("ingest_ts").to_pylist())
    assert ingest_ts == {stamp} and abs(stamp.timestamp() * 1000 - snapshot.timestamp_ms) < 5_000
    assert stats.snapshot_id == snapshot.snapshot_id and stats.unified == 8 * 2 + 5


def test_a_unify_overtaken_by_another_replans_instead_of_appending_twice(tmp_path, monkeypatch) -> None:
    options = {"scripted": {"trades": 10}, "scripted_b": {"trades": 10}}
    settings = settings_for(tmp_path, options)
    reg = registry()
    for source in ("scripted", "scripted_b"):
        ingest(open_catalog(settings), NS, reg, source, options=options[source])
    gate = tmp_path / "fast-committed"
    monkeypatch.setenv(faults.ENV, f"unify.before-commit:1:wait={gate}")  # the first to get there stalls...
    faults.reset()
    results = {}

    def run(name: str) -> None:
        results[name] = unify(open_catalog(settings), NS, reg, "trades_unified", _mappings(reg))

    slow = threading.Thread(target=run, args=("slow",))
    slow.start()
    while faults._reached["unify.before-commit"] < 1:
        threading.Event().wait(0.01)
    run("fast")
    gate.touch()  # ...until the other has committed, however long that takes
    slow.join()
    assert results["fast"].commits == 1 and results["slow"].commits == 0 and not results["slow"].error
    assert len(_snapshot_ids(open_catalog(settings), "trades_unified")) == 1
    assert unified_rows(settings) == expected_rows(options)


# any set of overlapping windows, in any order, with unify in between: tests/test_coverage.py


def test_the_anti_join_reads_only_the_affected_day_partitions_of_the_target(tmp_path) -> None:
    options = {"scripted": {"trades": 40}, "scripted_b": {"trades": 40}}
    settings = settings_for(tmp_path, options)
    run_pipeline(settings, registry(), "trades_unified")  # trades from 23:59:50 on, across midnight
    table = open_catalog(settings).load_table((NS, "trades_unified"))
    all_files = {t.file.file_path: t.file.partition[0] for t in table.scan().plan_files()}
    day_two = datetime(2024, 2, 9, tzinfo=UTC)
    assert len(set(all_files.values())) == 2  # two day partitions
    read = [t.file.file_path for t in table.scan(row_filter=day_filter("trade_ts", [day_two])).plan_files()]
    assert read and {all_files[f] for f in read} == {(day_two.date() - datetime(1970, 1, 1).date()).days}
    sink = IcebergSink(open_catalog(settings), NS)
    keys = sink.existing_keys("trades_unified", ("exchange", "symbol", "trade_id"), "trade_ts", [day_two])
    assert keys.column_names == ["exchange", "symbol", "trade_id"]
    assert keys.num_rows == sum(1 for r in unified_rows(settings) if r[6] >= day_two)


# --- bounded memory: a backlog larger than the bound, unified in staged parts, one commit --------------------

BACKLOG_CHILD = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from scripted_support import NS, registry, settings_for
from schemahub_core.engine.catalog import open_catalog
from schemahub_core.engine.unify import unify
reg = registry()
stats = unify(open_catalog(settings_for(Path(sys.argv[1]), {})), NS, reg, "trades_unified",
              [m for _, m in reg.mappings], memory_mb=int(sys.argv[2]))
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"peak_kib": peak, **{k: v for k, v in stats.as_dict().items() if k != "scanned_files"}}))
"""


def test_unify_of_a_backlog_stays_under_its_memory_bound_and_is_exact(tmp_path) -> None:
    """1M raw rows (3 % landed twice) over ten days; unifying them all in memory at once peaked at 575 MiB.

    The child starts at about 190 MiB (Python, Arrow, pyiceberg, the catalog) and unify at its smallest
    parts peaks near 280 (docs/exactly-once.md): 320 MiB leaves unify's gauge about 100 MiB to work in.
    """
    trades, bound_mb = 1_000_000, 320
    settings = settings_for(tmp_path, {})
    land_backlog(open_catalog(settings), NS, trades, days=10, first_id=1_000)
    child = subprocess.run([sys.executable, "-c", BACKLOG_CHILD, str(tmp_path), str(bound_mb),
                            str(Path(__file__).parent)], capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout)
    assert result["peak_kib"] < bound_mb * 1024, result
    assert (result["fetched"], result["unified"], result["deduplicated"]) == (1_030_000, trades, 30_000)
    table = open_catalog(settings).load_table((NS, "trades_unified"))
    (snapshot,) = table.snapshots()  # one commit ...
    assert int(snapshot.summary["added-data-files"]) > 10  # ... of several staged parts per day partition
    got = table.scan(selected_fields=("exchange", "trade_id")).to_arrow()
    assert set(got.column("exchange").unique().to_pylist()) == {"SCRIPTED"}
    ids = np.sort(got.column("trade_id").to_numpy(zero_copy_only=False).astype(np.int64))
    assert np.array_equal(ids, np.arange(1_000, 1_000 + trades))  # every trade once: none lost, none doubled


def test_a_raw_file_whose_every_row_lacks_a_required_column_is_quarantined_and_unify_goes_on(tmp_path) -> None:
    """A whole record batch set aside leaves nothing to map: the run still commits its progress, once."""
    import pyarrow as pa

    from schemahub_core.engine.tables import QUARANTINE, raw_schema
    from schemahub_core.testing.scripted import TRADES

    settings = settings_for(tmp_path, {})
    catalog, reg = open_catalog(settings), registry()
    bad = {"symbol": ["BTCUSD", "ETHUSD"], "id": [7, 8], "price": [None, None], "qty": [0.5, 1.0],
           "time": [START_MS * 1000] * 2, "is_buyer_maker": [True, False], "_source": ["scripted"] * 2,
           "_source_ingest_ts": [START_MS * 1000] * 2, "_raw_payload": ['{"id":7}', '{"id":8}']}
    ingest(catalog, NS, reg, "scripted", options={"trades": 3}, symbols=["BTC-USD"])
    assert unify(catalog, NS, reg, "trades_unified", _mappings(reg)).unified == 3
    IcebergSink(catalog, NS).publish("raw_scripted_trades", pa.table(bad).cast(raw_schema(TRADES)), {}, stage="ingest")
    first = unify(catalog, NS, reg, "trades_unified", _mappings(reg))
    assert (first.error, first.fetched, first.quarantined, first.unified, first.commits) == (None, 2, 2, 0, 1)
    again = unify(catalog, NS, reg, "trades_unified", _mappings(reg))
    assert (again.commits, again.quarantined) == (0, 0)  # progress was committed: the batch is not read again
    quarantined = catalog.load_table((NS, QUARANTINE)).scan().to_arrow()
    assert sorted(json.loads(p)["id"] for p in quarantined.column("payload").to_pylist()) == [7, 8]
