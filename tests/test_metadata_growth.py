"""Metadata stays small without anyone running maintain: 2,000 engine commits, flat metadata.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scripted_support import NS, registry, settings_for

from schemahub_core.apps.pipeline import run_ingest
from schemahub_core.engine.catalog import open_catalog
from schemahub_core.engine.tables import METADATA_VERSIONS_MAX


def _metadata(settings) -> tuple[int, int, dict]:
    """(current metadata.json bytes, metadata files on disk, the table's properties)."""
    table = open_catalog(settings).load_table((NS, "raw_scripted_trades"))
    path = Path(table.metadata_location.removeprefix("file://"))
    return path.stat().st_size, len(list(path.parent.glob("*.metadata.json"))), dict(table.properties)


@pytest.mark.slow  # about 85 ms of CPU per pyiceberg commit: 2-3 minutes on a free core
@pytest.mark.timeout(1800)
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
    assert after_2000 <= 2 * after_100, (after_100, after_2000)
    assert files <= METADATA_VERSIONS_MAX + 1  # the previous versions kept, plus the current one
    table = open_catalog(settings).load_table((NS, "raw_scripted_trades"))
    summary = table.current_snapshot().summary.additional_properties
    assert json.loads(summary["schemahub.rows.trades.BTC-USD"]) == 2000
    assert table.scan().to_arrow().num_rows == 2000
