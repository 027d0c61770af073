"""Metadata stays small without anyone running maintain: 2,000 engine commits, flat metadata.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scripted_support import NS, expected_rows, registry, restrict, settings_for, unified_rows

from schemahub_core.apps.pipeline import run_ingest
from schemahub_core.engine.catalog import open_catalog
from schemahub_core.engine.tables import METADATA_VERSIONS_MAX
from schemahub_core.engine.unify import unify


def _metadata(settings) -> tuple[int, int, dict]:
    """(current metadata.json bytes, metadata files on disk, the table's properties)."""
    table = open_catalog(settings).load_table((NS, "raw_scripted_trades"))
    path = Path(table.metadata_location.removeprefix("file://"))
    return path.stat().st_size, len(list(path.parent.glob("*.metadata.json"))), dict(table.properties)


@pytest.mark.timeout(900)  # about 25 ms of CPU per engine commit (append_snapshot): under a minute on a free core
def test_two_thousand_commits_keep_metadata_json_flat_and_few_metadata_files(tmp_path) -> None:
    """One trade per commit (the cheapest engine commit there is), resumed forward like a long-running ingest."""
    def land(trades: int):
        settings = settings_for(tmp_path, {"scripted": {"trades": trades, "page_size": 1}})
        (stats,) = run_ingest(settings, registry(), ["scripted"], symbols=["BTC-USD"], commit_rows=1)
        assert stats.error is None
        return settings, stats

    settings, stats = land(100)
    assert stats.commits == 100
    after_100, _, props = _metadata(settings)
    assert props["write.metadata.delete-after-commit.enabled"] == "true"
    settings, stats = land(2000)
    assert stats.commits == 1900
    after_2000, files, _ = _metadata(settings)
    print(f"metadata.json {after_100:,} B after 100 commits, {after_2000:,} B after 2,000; {files} metadata files "
          f"(previous-versions-max {METADATA_VERSIONS_MAX})")  # figures for the docs (pytest -s)
    assert after_2000 <= 2 * after_100, (after_100, after_2000)
    assert files <= METADATA_VERSIONS_MAX + 1  # the previous versions kept, plus the current one
    table = open_catalog(settings).load_table((NS, "raw_scripted_trades"))
    summary = table.current_snapshot().summary.additional_properties
    assert json.loads(summary["schemahub.rows.trades.BTC-USD"]) == 2000
    assert table.scan().to_arrow().num_rows == 2000


def _summary_bytes(snapshot) -> int:
    return len(json.dumps(snapshot.summary.model_dump(), separators=(",", ":")))


def test_one_commit_summary_grows_with_what_it_covers_not_with_the_symbols_the_table_has(tmp_path) -> None:
    """50 symbols, one commit each: the 50th commit's summary is the size of the first's (its own symbol's
    coverage and counters only); only the table's index properties have one entry per symbol."""
    symbols = [f"S{i:02d}-USD" for i in range(50)]
    settings = settings_for(tmp_path, {"scripted": {"trades": 5, "page_size": 5}})
    results = run_ingest(settings, registry(), ["scripted"], symbols=symbols)
    assert [r.error for r in results] == [None] * 50 and sum(r.commits for r in results) == 50
    table = open_catalog(settings).load_table((NS, "raw_scripted_trades"))
    snapshots = sorted(table.snapshots(), key=lambda s: s.sequence_number)
    first, last = _summary_bytes(snapshots[0]), _summary_bytes(snapshots[-1])
    assert f"schemahub.coverage.trades.{symbols[-1]}" in snapshots[-1].summary.additional_properties
    assert not any(symbols[0] in k for k in snapshots[-1].summary.additional_properties)
    assert last <= first * 1.1, (first, last)  # the totals' digits may grow a little, the symbols do not
    assert sum(k.startswith("schemahub.index.trades.") for k in table.properties) == 50


def test_merged_manifests_keep_unify_incremental_and_exact(tmp_path) -> None:
    """Past ``commit.manifest.min-count-to-merge`` (100) live manifests an engine commit merges them: the manifest
    list stops growing with history, and unify still reads exactly the files appended since it last ran."""
    def land(trades: int):
        settings = settings_for(tmp_path, {"scripted": {"trades": trades, "page_size": 1}})
        (stats,) = run_ingest(settings, registry(), ["scripted"], symbols=["BTC-USD"], commit_rows=1)
        assert stats.error is None
        return settings, open_catalog(settings)

    reg = registry()
    mappings = [m for _, m in reg.mappings]
    settings, catalog = land(60)
    assert unify(catalog, NS, reg, "trades_unified", mappings).unified == 60
    old_files = set(catalog.load_table((NS, "raw_scripted_trades")).inspect.files().column("file_path").to_pylist())
    settings, catalog = land(150)
    raw = catalog.load_table((NS, "raw_scripted_trades"))
    manifests = raw.current_snapshot().manifests(raw.io)
    assert len(manifests) < 100 and any(m.existing_files_count for m in manifests)  # merged, not 150 manifests
    new_files = set(raw.inspect.files().column("file_path").to_pylist()) - old_files
    assert len(new_files) == 90 and raw.scan().to_arrow().num_rows == 150
    second = unify(catalog, NS, reg, "trades_unified", mappings)
    assert set(second.scanned_files) == new_files  # incremental: none of the first run's files, none missed
    assert (second.fetched, second.unified, second.deduplicated) == (90, 90, 0)
    want = restrict(expected_rows({"scripted": {"trades": 150}}), 0, "SCRIPTED")
    assert unified_rows(settings) == restrict(want, 1, "BTC-USD")
