"""``run unify --engine spark``: the same mappings on Spark executors, the same exactly-once publish."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pytest
from scripted_support import NS, SCHEMAHUB, child_env, expected_rows, registry, settings_for, unified_rows

from schemahub_core.apps.pipeline import run_pipeline, run_unify
from schemahub_core.engine.catalog import open_catalog
from schemahub_core.engine.faults import ENV as FAULT_ENV
from schemahub_core.engine.faults import reset as reset_faults
from schemahub_core.engine.sink import progress_of
from schemahub_core.engine.spark_unify import spark_unify
from schemahub_core.engine.unify import unify
from schemahub_core.framework.config import ConfigError, Settings, default_catalog, load_settings
from schemahub_core.framework.registry import get_registry
from schemahub_core.testing.scripted import land_backlog


def test_spark_settings_come_from_the_environment_and_are_checked_before_any_write(home, monkeypatch) -> None:
    settings = load_settings()
    assert (settings.spark_master, settings.spark_conf) == ("local[2]", {})
    monkeypatch.setenv("SCHEMAHUB_SPARK_MASTER", "local[*]")
    monkeypatch.setenv("SCHEMAHUB_SPARK_CONF", "spark.executor.memory=2g, spark.sql.shuffle.partitions=4")
    settings = load_settings()
    assert settings.spark_master == "local[*]"
    assert settings.spark_conf == {"spark.executor.memory": "2g", "spark.sql.shuffle.partitions": "4"}
    for bad, why in [("spark.executor.memory", "not key=value"), ("executor.memory=2g", "not a Spark setting"),
                     ("spark.x=", "has no value")]:
        monkeypatch.setenv("SCHEMAHUB_SPARK_CONF", bad)
        with pytest.raises(ConfigError, match=why):
            load_settings()
    monkeypatch.delenv("SCHEMAHUB_SPARK_CONF")
    monkeypatch.setenv("SCHEMAHUB_SPARK_MASTER", "localhost:7077")
    with pytest.raises(ConfigError, match="not a Spark master URL"):
        load_settings()


# --- the engine on the suite's one Spark session ---------------------------------------------------------------

VALUES = ["exchange", "symbol", "trade_id", "side", "price", "quantity", "trade_ts", "base_asset", "quote_asset",
          "native_symbol"]


def rows_of(catalog, target: str = "trades_unified", columns: list[str] | None = None) -> pa.Table:
    """A target's rows without ``ingest_ts`` (each run's own time), sorted by every column: comparable."""
    table = catalog.load_table((NS, target)).scan().to_arrow()
    names = columns or [c for c in table.column_names if c != "ingest_ts"]
    return table.select(names).sort_by([(c, "ascending") for c in names])


def exact(catalog, twin) -> None:
    """``catalog``'s target holds exactly ``twin``'s rows (the embedded engine's), each key once."""
    ours, theirs = rows_of(catalog, columns=VALUES), rows_of(twin, columns=VALUES)
    keys = ours.select(["exchange", "symbol", "trade_id"])
    assert keys.group_by(keys.column_names).aggregate([]).num_rows == ours.num_rows, "a key landed twice"
    assert ours.num_rows == theirs.num_rows and ours.equals(theirs)


def test_spark_unify_produces_exactly_the_embedded_engines_rows(venue_lake, tmp_path, spark_base) -> None:
    """The venue lake's unified tables were built by the embedded engine (trades in two runs); Spark
    unifies the same raw tables from scratch into a copy of its catalog: the same rows, the same progress."""
    home = tmp_path / "copy"
    home.mkdir()
    shutil.copyfile(venue_lake.settings.home / "catalog.db", home / "catalog.db")
    settings = Settings(home=home, catalog=default_catalog(home), mappings_dir=home / "no-mapping-files")
    copy, lake = open_catalog(settings), open_catalog(venue_lake.settings)
    for name in ("trades_unified", "quotes_unified", "schemahub_quarantine"):
        copy.drop_table((NS, name))  # the catalog row only: the lake's files stay the lake's
    for target in ("trades_unified", "quotes_unified"):
        stats = run_unify(settings, get_registry(), target, engine="spark", spark=spark_base)
        assert stats.error is None and stats.commits == 1, stats
        table = copy.load_table((NS, target))
        assert table.location().startswith(default_catalog(home)["warehouse"])
        ours, theirs = rows_of(copy, target), rows_of(lake, target)
        assert ours.num_rows >= (100 if target == "trades_unified" else 3) and ours.equals(theirs), target
        summary = table.current_snapshot().summary.additional_properties
        embedded = lake.load_table((NS, target)).current_snapshot().summary.additional_properties
        sources = {k for k in embedded if k.startswith("schemahub.source.")}
        assert len(sources) >= 3 and {k: summary[k] for k in sources} == {k: embedded[k] for k in sources}
        stamp = table.scan(selected_fields=("ingest_ts",)).to_arrow().column(0)
        assert set(stamp.to_pylist()) == {datetime.fromisoformat(summary["schemahub.ingest-ts"])}
        again = run_unify(settings, get_registry(), target, engine="spark", spark=spark_base)
        assert (again.commits, again.error) == (0, None)


def test_pipeline_on_spark_ingests_embedded_and_unifies_on_spark(tmp_path, spark_base) -> None:
    options = {"scripted": {"trades": 30}, "scripted_b": {"trades": 20}}
    spark_home, twin_home = settings_for(tmp_path / "spark", options), settings_for(tmp_path / "twin", options)
    stats = run_pipeline(spark_home, registry(), "trades_unified", engine="spark", spark=spark_base)
    assert [s.step for s in stats] == ["ingest"] * (len(stats) - 1) + ["unify"] and not any(s.error for s in stats)
    run_pipeline(twin_home, registry(), "trades_unified")
    exact(open_catalog(spark_home), open_catalog(twin_home))
    assert unified_rows(spark_home) == expected_rows(options)


# --- crashes and races: the exactly-once contract --------------------------------------------------------------

# A child's JVM with the client compiler only and a serial GC starts in a third of the time: these runs are short
CHILD_SPARK_CONF = ("spark.sql.shuffle.partitions=2,"
                    "spark.driver.extraJavaOptions=-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
POINTS = ("spark.mapped", "spark.task", "unify.staged", "unify.before-commit", "unify.after-commit")
# A killed child costs a JVM start and a Spark run (9 s on the 2-core test machine when quiet, 30 s at load 20):
# the default suite kills ten seeds, twice at each of the five points (113 s when quiet, 525 s at load ~20)
SEEDS = range(10)


def scripted_mappings() -> list:
    return [m for _, m in registry().mappings]


def backlog(catalog, seed: int) -> None:
    rng = random.Random(seed)
    land_backlog(catalog, NS, rng.randint(200, 400), days=rng.randint(1, 3), commit_rows=rng.randint(80, 160),
                 first_id=1_000 + seed * 1_000, seed=seed)


def land(catalogs, seed: int) -> None:
    """The same raw rows into every catalog: new trades (some twice), and the previous seed's trades again
    (fetched twice by overlapping runs: already unified, the anti-join against the target drops them)."""
    for catalog in catalogs:
        backlog(catalog, seed)
        if seed:
            backlog(catalog, seed - 1)


def twins(tmp_path):
    home, twin = tmp_path / "home", tmp_path / "twin"
    return home, open_catalog(settings_for(home, {})), open_catalog(settings_for(twin, {}))


@pytest.mark.timeout(1200)
def test_killing_the_spark_driver_at_random_points_then_rerunning_leaves_the_target_exact(tmp_path, spark_base) -> None:
    """Each seed lands new raw rows (some already unified), kills a real ``run unify --engine spark`` child at
    one of the engine's points (an executor for ``spark.task``), reruns, and compares the target with the
    embedded engine's on the same raw data: no row lost, none twice."""
    home, catalog, twin = twins(tmp_path)
    outcomes: Counter = Counter()
    for seed in SEEDS:
        land([catalog, twin], seed)
        point = POINTS[seed % len(POINTS)]
        env = {**child_env(tmp_path, home, {}, fault=f"{point}:1:kill"), "SCHEMAHUB_SPARK_CONF": CHILD_SPARK_CONF}
        child = subprocess.run([*SCHEMAHUB, "run", "unify", "trades_unified", "--engine", "spark"], env=env,
                               cwd=tmp_path, capture_output=True, text=True, timeout=300)
        if point == "spark.task":  # a lost executor fails the job: one line, nothing committed
            assert child.returncode == 1, child.stderr
            assert "error: trades_unified: the Spark job failed, nothing was committed" in child.stderr
            assert "Traceback" not in child.stderr
        else:
            assert child.returncode == -signal.SIGKILL, (point, child.stderr[-2000:])
        outcomes[point] += 1
        # the rerun: on Spark, or (every other seed, to keep the suite fast) embedded, which shares the contract
        rerun = spark_unify(spark_base, catalog, NS, registry(), "trades_unified", scripted_mappings()) \
            if seed % 2 == 0 else unify(catalog, NS, registry(), "trades_unified", scripted_mappings())
        assert rerun.error is None
        assert rerun.commits == (0 if point == "unify.after-commit" else 1), (seed, point)
        assert unify(twin, NS, registry(), "trades_unified", scripted_mappings()).commits == 1
        exact(catalog, twin)
    assert outcomes == Counter(POINTS[seed % len(POINTS)] for seed in SEEDS)


def test_spark_unify_racing_embedded_unify_leaves_the_target_exact(tmp_path, spark_base, monkeypatch) -> None:
    """Both orders, made deterministic by a gate at the commit: the one held there finds the progress moved,
    its commit is refused, and it replans from the other's commit (and unifies what landed meanwhile)."""
    home, catalog, twin = twins(tmp_path)
    mappings = scripted_mappings()
    seed = iter(range(100))
    for held in ("embedded", "spark"):
        gate = tmp_path / f"gate-{held}"
        monkeypatch.setenv(FAULT_ENV, f"unify.before-commit:1:wait={gate}")
        reset_faults()
        land([catalog, twin], next(seed))
        runs = {"embedded": lambda: unify(catalog, NS, registry(), "trades_unified", mappings),
                "spark": lambda: spark_unify(spark_base, catalog, NS, registry(), "trades_unified", mappings)}
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(runs[held])
            while not Path(f"{gate}.reached").exists():  # it has planned, staged its files, and waits to commit
                assert not waiting.done(), waiting.result()
                time.sleep(0.05)
            land([catalog, twin], next(seed))
            other = runs["spark" if held == "embedded" else "embedded"]()  # the gate fires once: it commits
            assert (other.commits, other.error) == (1, None)
            land([catalog, twin], next(seed))  # what only the replan of the held run can see
            gate.touch()
            late = waiting.result(timeout=300)
        assert (late.commits, late.error) == (1, None), held
        assert unify(twin, NS, registry(), "trades_unified", mappings).commits == 1
        exact(catalog, twin)
        table = catalog.load_table((NS, "trades_unified"))
        raw = catalog.load_table((NS, "raw_scripted_trades"))
        assert table.current_snapshot().snapshot_id == late.snapshot_id
        assert progress_of(table)["schemahub.source.raw_scripted_trades"] == str(raw.current_snapshot().snapshot_id)


def test_no_java_is_one_line_before_anything_is_written(tmp_path) -> None:
    home = tmp_path / "home"
    bare = tmp_path / "bin"  # a PATH with no java on it
    bare.mkdir()
    env = {**child_env(tmp_path, home, {"scripted": {"trades": 5}}), "PATH": str(bare), "JAVA_HOME": ""}
    for command in (["run", "pipeline", "trades_unified"], ["run", "unify", "trades_unified"]):
        proc = subprocess.run([*SCHEMAHUB, *command, "--engine", "spark"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.strip() == "error: no java on PATH and no JAVA_HOME: apt-get install -y " \
                                      "openjdk-17-jre-headless", proc.stderr
    catalog = open_catalog(settings_for(home, {}))
    assert not catalog.namespace_exists(NS) or catalog.list_tables(NS) == []  # the pipeline did not ingest first


def test_rows_missing_a_required_column_are_quarantined_once_as_the_embedded_engine_does(tmp_path,
                                                                                        spark_base) -> None:
    """The executors find the rejects with the embedded engine's function; the driver quarantines them."""
    from schemahub_core.engine.sink import IcebergSink
    from schemahub_core.engine.tables import raw_schema
    from schemahub_core.testing.scripted import START_MS, TRADES

    home, catalog, twin = twins(tmp_path)
    bad = {"symbol": ["BTCUSD", "ETHUSD"], "id": [7, 8], "price": [None, 42_000.5], "qty": [0.5, None],
           "time": [START_MS * 1000] * 2, "is_buyer_maker": [True, False], "_source": ["scripted"] * 2,
           "_source_ingest_ts": [START_MS * 1000] * 2, "_raw_payload": ['{"id":7}', '{"id":8}']}
    for c in (catalog, twin):
        backlog(c, 0)
        IcebergSink(c, NS).publish("raw_scripted_trades", pa.table(bad).cast(raw_schema(TRADES)), {}, stage="ingest")
    stats = spark_unify(spark_base, catalog, NS, registry(), "trades_unified", scripted_mappings())
    embedded = unify(twin, NS, registry(), "trades_unified", scripted_mappings())
    assert (stats.quarantined, stats.error) == (2, None) and embedded.quarantined == 2
    assert (stats.fetched, stats.unified, stats.deduplicated) == \
        (embedded.fetched, embedded.unified, embedded.deduplicated)
    exact(catalog, twin)
    columns = ["source", "stream", "symbol", "reason", "payload"]
    assert rows_of(catalog, "schemahub_quarantine", columns).equals(rows_of(twin, "schemahub_quarantine", columns))
    reasons = rows_of(catalog, "schemahub_quarantine", ["reason"]).column(0).to_pylist()
    assert [r.split(": ", 1)[1] for r in reasons] == ["required column(s) price missing after mapping",
                                                      "required column(s) quantity missing after mapping"]
