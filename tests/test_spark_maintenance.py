"""`schemahub maintain --engine spark`: Iceberg's Spark procedures, under the engine's retention rules.

After the most aggressive maintenance on Spark (compact everything, expire everything older than now,
delete orphans), every table holds exactly the same rows, each symbol's coverage and unify's source
positions read the same, and ingest and unify resume exactly once. Runs on the suite's one Spark session:
the CLI, run in process, finds it already active.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from click.testing import CliRunner
from conftest import SCHEMAHUB, doc_commands, run_cli
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


def test_spark_compaction_races_three_ingest_processes_on_postgres(tmp_path: Path, postgres_home: Any,
                                                                   spark_for: Any) -> None:
    """Spark's rewrite_data_files, looped on one raw table while three `run ingest` processes commit to it
    (two racing on BTC-USD, one owning ETH-USD): every page lands once, no writer loses a commit. The ETH-USD
    writer is held at its 3rd commit (data files written, catalog commit not made) until a Spark compaction has
    landed, so that commit deterministically lands on top of a compaction it did not plan from."""
    from test_storage import scripted_env

    from schemahub_core.engine.faults import ENV as FAULT
    from schemahub_core.engine.spark_maintenance import SparkMaintenance
    from schemahub_core.testing.scripted import trades_for

    env = scripted_env(tmp_path, postgres_home, trades=30, page_size=5, slow_ms=100)
    run_cli("init", env=env)
    settings = load_settings()
    catalog = open_catalog(settings)
    runner = SparkMaintenance(settings, catalog, spark_for(settings))
    go = tmp_path / "go"
    procs = [subprocess.Popen([*SCHEMAHUB, "run", "ingest", "scripted", "--symbols", symbol, "--json",
                               "--pages-per-commit", "1"], env={**os.environ, **env, **extra}, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for symbol, extra in (("BTC-USD", {}), ("BTC-USD", {}),
                                   ("ETH-USD", {FAULT: f"ingest.before-commit:3:wait={go}"}))]
    seen: dict[int, tuple[int, str]] = {}
    compactions = held = 0

    def observe() -> None:
        for s in catalog.load_table((NS, "raw_scripted_trades")).snapshots():
            seen.setdefault(s.snapshot_id, (s.timestamp_ms, s.summary.operation.value))

    while any(p.poll() is None for p in procs):
        done = runner.compact("raw_scripted_trades")
        compactions += done
        if done and not go.exists() and Path(f"{go}.reached").exists():
            held = compactions
            go.touch()  # a compaction landed while the ETH-USD commit was held: let it go on
        observe()
        time.sleep(0.05)
    observe()
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, f"{out}\n{err}"
    assert held, "no compaction landed while the ETH-USD commit was held"
    stats = [json.loads(out)[0] for out, _ in outputs]
    assert stats[2]["landed"] == 30 and stats[2]["commits"] == 6, "the ETH-USD writer lost a commit"
    assert stats[0]["landed"] + stats[1]["landed"] == 30, "the racing BTC-USD writers landed a page twice"
    operations = [op for _, op in sorted(seen.values())]
    assert "append" in operations[operations.index("replace"):]

    raw = catalog.load_table((NS, "raw_scripted_trades"))
    data = raw.scan(selected_fields=("symbol", "id")).to_arrow()
    for symbol in ("BTC-USD", "ETH-USD"):
        ids = [i for i, s in zip(data["id"].to_pylist(), data["symbol"].to_pylist(), strict=True)
               if s == symbol.replace("-", "")]
        assert sorted(ids) == sorted(t["id"] for t in trades_for("scripted", 0, symbol, 30)), symbol
        assert len(read_state(raw, "trades", symbol).spans) == 1, f"{symbol}: a hole in the coverage"
    unify = json.loads(run_cli("run", "unify", "trades_unified", "--json", env=env).stdout)
    assert unify[0]["unified"] == 60
