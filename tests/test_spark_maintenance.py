"""`schemahub maintain --engine spark`: Iceberg's Spark procedures, under the engine's retention rules.

After the most aggressive maintenance on Spark (compact everything, expire everything older than now,
delete orphans), every table holds exactly the same rows, each symbol's coverage and unify's source
positions read the same, and ingest and unify resume exactly once. Runs on the suite's one Spark session:
the CLI, run in process, finds it already active.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from click.testing import CliRunner
from conftest import doc_commands, run_cli
from test_maintenance import NS, RAW, VENUES, configure, engine_position, expected_keys, unified_keys

from schemahub_core.apps.cli import cli
from schemahub_core.apps.pipeline import run_ingest, run_pipeline, run_unify
from schemahub_core.engine.catalog import open_catalog
from schemahub_core.engine.coverage import read_state
from schemahub_core.engine.maintenance import TableReport
from schemahub_core.framework.config import load_settings
from schemahub_core.testing.scripted import scripted_registry


def maintain_on_spark(*extra: str) -> dict[str, dict[str, Any]]:
    """The command docs/cluster.md shows, at the most aggressive expiry, in process (on the suite's session)."""
    (shown,) = doc_commands("cluster.md", "maintain --engine spark")
    out = CliRunner().invoke(cli, [*shown, "--expire-older-than", "0s", "--json", *extra])
    assert out.exit_code == 0, out.output
    reports = json.loads(out.stdout)
    assert all(set(r) == {f.name for f in fields(TableReport)} for r in reports), "not the embedded report shape"
    assert not any(r["error"] for r in reports), reports
    return {r["table"]: r for r in reports}


def coverage(settings: Any) -> dict[str, Any]:
    catalog = open_catalog(settings)
    return {f"{venue} {symbol}": read_state(catalog.load_table((NS, f"raw_{venue}_trades")), "trades", symbol)
            for venue, symbols in VENUES.items() for symbol in symbols}


def files_on_disk(table: Any) -> set[str]:
    root = Path(urlparse(table.location()).path) / "data"
    return {str(p) for p in root.rglob("*.parquet")}


def referenced(table: Any) -> set[str]:
    """Data files any remaining snapshot reads (what expiry and orphan removal must leave on disk)."""
    return {urlparse(task.file.file_path).path for s in table.snapshots()  # Spark writes file:/..., pyiceberg file:///...
            for task in table.scan(snapshot_id=s.snapshot_id).plan_files()}


def test_maintain_on_spark_keeps_rows_and_progress_and_ingest_and_unify_resume_exactly(home: Path,
                                                                                        spark_base: Any) -> None:
    registry = scripted_registry()
    settings = configure(load_settings(), trades=30)
    run_pipeline(settings, registry, "trades_unified", pages_per_commit=1)
    catalog = open_catalog(settings)
    position, covered = engine_position(settings), coverage(settings)
    rows_before = {n: catalog.load_table((NS, n)).scan().to_arrow().sort_by("_raw_payload") for n in RAW}
    raw = catalog.load_table((NS, "raw_scripted_trades"))
    files_before = len(list(raw.scan().plan_files()))
    # two files no snapshot references: one written 4 days ago (an orphan), one just now (maybe a writer's)
    data_dir = Path(urlparse(raw.location()).path) / "data"
    old, fresh = data_dir / "orphan-old.parquet", data_dir / "orphan-fresh.parquet"
    for path in (old, fresh):
        path.write_bytes(b"not referenced")
    four_days_ago = time.time() - 4 * 86400
    os.utime(old, (four_days_ago, four_days_ago))

    reports = maintain_on_spark()
    report = reports["raw_scripted_trades"]
    assert report["files_before"] == files_before >= 12 and report["files_after"] == 2  # one file per day
    assert report["partitions_compacted"] == 2 and report["snapshots_expired"] > 0
    assert report["orphan_files_removed"] == 1 and not old.exists() and fresh.exists()
    assert reports["raw_scripted_b_trades"]["files_after"] == 2
    assert engine_position(settings) == position, "maintenance moved a cursor or unify's source position"
    assert coverage(settings) == covered, "maintenance changed a symbol's coverage"
    for name, rows in rows_before.items():
        assert catalog.load_table((NS, name)).scan().to_arrow().sort_by("_raw_payload").equals(rows), name
    raw = catalog.load_table((NS, "raw_scripted_trades"))
    assert files_on_disk(raw) - {str(fresh)} == referenced(raw), "expired files left behind, or a live one deleted"
    assert sorted(unified_keys(settings)) == sorted(expected_keys(30))

    # more trades: ingest resumes from the coverage (fetches only the new ones) ...
    configure(settings, trades=60)
    ingested = run_ingest(settings, registry, list(VENUES), pages_per_commit=1)
    assert [(s.fetched, s.landed, s.deduplicated) for s in ingested] == [(30, 30, 0)] * 3
    # ... Spark maintenance runs again before those raw rows are unified: their lineage must survive ...
    again = maintain_on_spark("--remove-orphans-older-than", "never")
    assert again["raw_scripted_trades"]["snapshots_kept_for_engine"] >= 12  # unify's unread lineage
    assert again["raw_scripted_trades"]["files_after"] == 2 and again["raw_scripted_trades"]["orphan_files_removed"] \
        is None
    # ... and unify picks up exactly the new rows: none lost, none doubled
    unified = run_unify(settings, registry, "trades_unified")
    assert (unified.unified, unified.deduplicated, unified.error) == (90, 0, None)
    keys = unified_keys(settings)
    assert len(keys) == len(set(keys)) and set(keys) == expected_keys(60)
    assert not run_unify(settings, registry, "trades_unified").commits


def test_bad_spark_maintenance_options_fail_in_one_line_before_spark_starts(home: Path) -> None:
    for args, why in [(["--engine", "spark", "--remove-orphans-older-than", "2h"], "less than 24 hours"),
                      (["--remove-orphans-older-than", "3d"], "needs --engine spark")]:
        out = CliRunner().invoke(cli, ["maintain", *args])
        assert out.exit_code == 1 and why in out.stderr and out.stderr.count("\n") == 1, out.stderr
    # an empty namespace has nothing to maintain: no JVM is started for it
    started = time.monotonic()
    out = run_cli("maintain", "--engine", "spark", "--json", env={"SCHEMAHUB_HOME": str(home)}, cwd=home.parent)
    assert json.loads(out.stdout) == [] and time.monotonic() - started < 10
