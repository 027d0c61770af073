"""``run unify --engine spark``: the same mappings on Spark executors, the same exactly-once publish."""

from __future__ import annotations

import shutil
from datetime import datetime

import pyarrow as pa
import pytest
from scripted_support import NS, expected_rows, registry, settings_for, unified_rows

from schemahub_core.apps.pipeline import run_pipeline, run_unify
from schemahub_core.engine.catalog import open_catalog
from schemahub_core.framework.config import ConfigError, Settings, default_catalog, load_settings
from schemahub_core.framework.registry import get_registry


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
