"""`schemahub maintain`: compaction and snapshot expiry never cost the engine its place.

After the most aggressive maintenance (expire everything older than now, compact everything), ingest
resumes from its cursors and unify picks up exactly the rows appended since its last commit.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from conftest import run_cli

from schemahub_core.apps.pipeline import run_ingest, run_pipeline, run_unify
from schemahub_core.engine.catalog import open_catalog
from schemahub_core.engine.maintenance import maintain, needed_snapshots
from schemahub_core.engine.sink import progress_of
from schemahub_core.engine.state import read_cursor
from schemahub_core.framework.config import Settings, load_settings
from schemahub_core.testing.scripted import scripted_registry, trades_for

NS = "schemahub"
VENUES = {"scripted": ("BTC-USD", "ETH-USD"), "scripted_b": ("BTC-USD",)}
RAW = ("raw_scripted_trades", "raw_scripted_b_trades")


def configure(settings: Settings, trades: int) -> Settings:
    """The scripted venues serve their first ``trades`` trades per symbol, five per page (= per commit)."""
    settings.connectors = {name: {"trades": trades, "page_size": 5} for name in VENUES}
    return settings


def unified_keys(settings: Settings) -> list[tuple[str, str, str]]:
    data = open_catalog(settings).load_table((NS, "trades_unified")).scan(
        selected_fields=("exchange", "symbol", "trade_id")).to_arrow()
    return list(zip(*(data[c].to_pylist() for c in ("exchange", "symbol", "trade_id")), strict=True))


def expected_keys(trades: int) -> set[tuple[str, str, str]]:
    return {(venue.upper(), symbol, str(t["id"])) for venue, symbols in VENUES.items() for symbol in symbols
            for t in trades_for(venue, 0, symbol, trades)}


def engine_position(settings: Settings) -> dict[str, object]:
    catalog = open_catalog(settings)
    position: dict[str, object] = {"unified": progress_of(catalog.load_table((NS, "trades_unified")))}
    for venue, symbols in VENUES.items():
        raw = catalog.load_table((NS, f"raw_{venue}_trades"))
        position.update({f"{venue} {s}": read_cursor(raw, "trades", s) for s in symbols})
    return position


def test_ingest_and_unify_resume_exactly_after_maintain(home: Path) -> None:
    registry = scripted_registry()
    settings = configure(load_settings(), trades=30)
    run_pipeline(settings, registry, "trades_unified", pages_per_commit=1)
    catalog = open_catalog(settings)
    position = engine_position(settings)
    rows_before = {n: catalog.load_table((NS, n)).scan().to_arrow().sort_by("_raw_payload") for n in RAW}
    raw_files_before = len(list(catalog.load_table((NS, "raw_scripted_trades")).scan().plan_files()))

    reports = {r.table: r for r in maintain(catalog, NS, older_than=datetime.now(UTC), do_compact=True)}
    assert not any(r.error for r in reports.values())
    raw = reports["raw_scripted_trades"]
    assert raw.snapshots_expired > 0 and raw.partitions_compacted == 2  # the trades cross midnight: two days
    assert raw.files_before == raw_files_before >= 12 and raw.files_after == 2  # one file per day partition
    assert len(catalog.load_table((NS, "raw_scripted_trades")).metadata.snapshots) < 12 / 2
    assert len(catalog.load_table((NS, "schemahub_watermarks")).metadata.snapshots) == 1  # no progress: current only
    assert engine_position(settings) == position, "maintenance moved a cursor or unify's source position"
    for name, rows in rows_before.items():
        assert catalog.load_table((NS, name)).scan().to_arrow().sort_by("_raw_payload").equals(rows)
    assert sorted(unified_keys(settings)) == sorted(expected_keys(30))

    # more trades: ingest resumes from the cursors (fetches only the new ones) ...
    configure(settings, trades=60)
    ingested = run_ingest(settings, registry, list(VENUES), pages_per_commit=1)
    assert [(s.fetched, s.landed, s.deduplicated) for s in ingested] == [(30, 30, 0)] * 3

    # ... maintenance runs again while those raw rows are not unified yet, through the CLI ...
    out = run_cli("maintain", "--expire-older-than", "0s", "--compact", "--json")
    cli_reports = {r["table"]: r for r in json.loads(out.stdout)}
    assert cli_reports["raw_scripted_trades"]["snapshots_kept_for_engine"] >= 12  # unify's unread lineage
    assert cli_reports["raw_scripted_trades"]["files_after"] == 2

    # ... and unify picks up exactly the new rows: none lost, none doubled
    unified = run_unify(settings, registry, "trades_unified")
    assert (unified.unified, unified.deduplicated, unified.error) == (90, 0, None)
    keys = unified_keys(settings)
    assert len(keys) == len(set(keys)) and set(keys) == expected_keys(60)
    again = run_unify(settings, registry, "trades_unified")
    assert again.unified == 0 and not again.commits


def test_needed_snapshots_keep_each_symbols_coverage_and_unread_lineage(home: Path) -> None:
    """Which snapshots expiry must spare, on a raw table with one symbol that stopped trading."""
    registry = scripted_registry()
    settings = load_settings()
    settings.connectors = {"scripted": {"trades": 10, "page_size": 5}}
    # ETH-USD's coverage is set by its second commit, then it idles
    run_ingest(settings, registry, ["scripted"], symbols=["ETH-USD"], pages_per_commit=1)
    settings.connectors = {"scripted": {"trades": 20, "page_size": 5}}
    run_ingest(settings, registry, ["scripted"], symbols=["BTC-USD"], pages_per_commit=1)
    raw = open_catalog(settings).load_table((NS, "raw_scripted_trades"))
    lineage = [s.snapshot_id for s in raw.snapshots()]  # oldest first: 2 ETH commits, then 4 BTC commits
    assert len(lineage) == 6

    keep = needed_snapshots(raw)
    assert lineage[1] in keep, "the commit that carries ETH-USD's current coverage"
    assert lineage[-1] in keep and lineage[0] not in keep and lineage[2] not in keep
    assert needed_snapshots(raw, consumed=[lineage[2]]) >= set(lineage[2:]), "unify's unread lineage"
