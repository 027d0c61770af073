"""Real engines read every table SchemaHub writes: Apache Spark (Iceberg's Java runtime) and DuckDB.

Spark goes through Iceberg's JDBC catalog over the very SQLite file pyiceberg writes, so it sees the same
commits, and must return exactly the rows pyiceberg returns, table by table.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from conftest import ROOT
from scripted_support import NS, registry, settings_for

from schemahub_core.apps.pipeline import run_pipeline
from schemahub_core.apps.sql import Lake
from schemahub_core.engine.catalog import open_catalog
from schemahub_core.testing.scripted import trades_for

BAD = trades_for("scripted", 0, "BTC-USD", 40)[7]["id"]  # its price is garbage: one quarantine row
OPTIONS = {"scripted": {"trades": 40, "malformed": str(BAD)}, "scripted_b": {"trades": 25}}


def plain(table: pa.Table) -> Counter:
    """Rows as hashable tuples, timestamps as epoch microseconds (no time zone in the comparison)."""
    columns = []
    for col in table.columns:
        if pa.types.is_timestamp(col.type):
            col = pc.cast(col, pa.int64())
        columns.append(col.to_pylist())
    return Counter(zip(*columns, strict=True))


def spark_rows(spark: Any, identifier: str, names: list[str]) -> Counter:
    """The same tuples from Spark: timestamps through ``unix_micros``, columns in pyiceberg's order."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import TimestampNTZType, TimestampType

    df = spark.table(identifier)
    kinds = {f.name: f.dataType for f in df.schema.fields}
    timestamps = (TimestampType, TimestampNTZType)
    select = [F.unix_micros(F.col(n).cast("timestamp")).alias(n) if isinstance(kinds[n], timestamps) else F.col(n)
              for n in names]
    return Counter(tuple(r) for r in df.select(*select).collect())


def test_spark_reads_every_table_with_the_rows_pyiceberg_reads(tmp_path, spark_for) -> None:
    settings = settings_for(tmp_path, OPTIONS)
    run_pipeline(settings, registry(), "trades_unified")
    catalog = open_catalog(settings)
    spark = spark_for(settings)
    names = [ident[-1] for ident in catalog.list_tables(NS)]
    assert {"raw_scripted_trades", "trades_unified", "schemahub_watermarks", "schemahub_quarantine"} <= set(names)
    for name in names:
        ours = catalog.load_table((NS, name)).scan().to_arrow()
        theirs = spark_rows(spark, f"schemahub.{NS}.{name}", ours.column_names)
        assert theirs == plain(ours), name
    assert sum(plain(catalog.load_table((NS, "schemahub_quarantine")).scan().to_arrow()).values()) == 1


def test_spark_time_travels_and_reads_the_progress_in_the_snapshot_summaries(tmp_path, spark_for) -> None:
    first = {"scripted": {"trades": 10}, "scripted_b": {"trades": 5}}
    settings = settings_for(tmp_path, first)
    run_pipeline(settings, registry(), "trades_unified")
    settings.connectors = OPTIONS  # the venues have more trades now: a second unify commit
    run_pipeline(settings, registry(), "trades_unified")
    catalog = open_catalog(settings)
    unified = catalog.load_table((NS, "trades_unified"))
    old, new = unified.snapshots()[0], unified.current_snapshot()
    assert old.snapshot_id != new.snapshot_id
    spark = spark_for(settings)

    ident = f"schemahub.{NS}.trades_unified"
    ours = unified.scan(snapshot_id=old.snapshot_id).to_arrow()
    assert 0 < ours.num_rows < unified.scan().to_arrow().num_rows
    spark.sql(f"SELECT * FROM {ident} VERSION AS OF {old.snapshot_id}").createOrReplaceTempView("then")
    assert spark_rows(spark, "then", ours.column_names) == plain(ours)
    at = old.timestamp_ms
    as_of = spark.sql(f"SELECT count(*) FROM {ident} TIMESTAMP AS OF CAST({at} / 1000.0 AS TIMESTAMP)").first()[0]
    assert as_of == ours.num_rows

    summaries = {r["snapshot_id"]: r["progress"] for r in spark.sql(
        f"SELECT snapshot_id, summary['schemahub.source.raw_scripted_trades'] AS progress FROM {ident}.snapshots"
    ).collect()}
    raw = catalog.load_table((NS, "raw_scripted_trades"))
    assert summaries[new.snapshot_id] == str(raw.current_snapshot().snapshot_id)
    assert summaries == {s.snapshot_id: s.summary["schemahub.source.raw_scripted_trades"] for s in unified.snapshots()}


def doc_spark_snippet() -> str:
    """The Python block of docs/sql.md's Spark section: the test runs exactly what users read."""
    section = (ROOT / "docs" / "sql.md").read_text().split("## Spark", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_the_documented_spark_snippet_reads_every_venue_table_as_pyiceberg_does(venue_lake, spark_base,
                                                                                  monkeypatch) -> None:
    monkeypatch.setenv("SCHEMAHUB_HOME", str(venue_lake.settings.home))
    monkeypatch.delenv("SCHEMAHUB_CONFIG", raising=False)
    monkeypatch.chdir(venue_lake.settings.home)
    scope: dict[str, Any] = {}
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown):
        exec(compile(doc_spark_snippet(), "docs/sql.md", "exec"), scope)
    spark = scope["spark"]
    assert re.search(r"\|\s*BINANCE\s*\|\s*BTC-USDT\s*\|", shown.getvalue()), shown.getvalue()

    catalog = open_catalog(venue_lake.settings)
    names = [ident[-1] for ident in catalog.list_tables(NS)]
    assert {"raw_binance_trades", "raw_coinbase_trades", "raw_kraken_trades", "raw_binance_quotes",
            "trades_unified", "quotes_unified", "schemahub_watermarks", "schemahub_quarantine"} <= set(names)
    for name in names:
        ours = catalog.load_table((NS, name)).scan().to_arrow()
        assert spark_rows(spark, f"schemahub.{NS}.{name}", ours.column_names) == plain(ours), name
    # the columns a case-insensitive engine used to reject as ambiguous (`m` and `M`)
    # (Binance's aggregate-trades stream; its individual trades have no such pair)
    sides = spark.sql("SELECT m, M_best_match, COUNT(*) AS n FROM schemahub.schemahub.raw_binance_agg_trades "
                      "GROUP BY m, M_best_match").collect()
    assert sum(r["n"] for r in sides) == catalog.load_table((NS, "raw_binance_agg_trades")).scan().count()

    unified = catalog.load_table((NS, "trades_unified"))
    then = unified.scan(snapshot_id=venue_lake.first_unify).to_arrow()
    spark.sql(f"SELECT * FROM schemahub.{NS}.trades_unified VERSION AS OF {venue_lake.first_unify}") \
        .createOrReplaceTempView("unified_then")
    assert spark_rows(spark, "unified_then", then.column_names) == plain(then)
    progress = spark.sql(f"SELECT summary FROM schemahub.{NS}.trades_unified.snapshots "
                         f"WHERE snapshot_id = {unified.current_snapshot().snapshot_id}").first()["summary"]
    for source in ("raw_binance_trades", "raw_coinbase_trades", "raw_kraken_trades"):
        raw = catalog.load_table((NS, source))
        assert progress[f"schemahub.source.{source}"] == str(raw.current_snapshot().snapshot_id)


@pytest.mark.parametrize("as_of", [None, "first"])
def test_duckdb_reads_every_venue_table_as_pyiceberg_does(venue_lake, as_of) -> None:
    catalog = open_catalog(venue_lake.settings)
    snapshot = venue_lake.first_unify if as_of else None
    lake = Lake(venue_lake.settings, catalog, str(snapshot) if snapshot else None)
    try:
        by_name = {v.name: v for v in lake.views}
        assert set(by_name) == {ident[-1] for ident in catalog.list_tables(NS)}
        for name, view in by_name.items():
            table = catalog.load_table((NS, name))
            if view.snapshot_id is None:
                ours = table.schema().as_arrow().empty_table()
            else:
                ours = table.scan(snapshot_id=view.snapshot_id).to_arrow()
            theirs = lake.query(f"SELECT * FROM {name}")
            assert theirs.column_names == ours.column_names, name
            assert plain(theirs) == plain(ours), name
    finally:
        lake.close()
    if as_of:
        assert by_name["trades_unified"].snapshot_id == venue_lake.first_unify


def test_spark_reads_a_postgresql_catalog_through_the_settings_mapping(postgres_home, spark_for) -> None:
    from schemahub_core.framework.config import load_settings

    settings = load_settings()
    settings.connectors = {"scripted": {"trades": 15}, "scripted_b": {"trades": 10}}
    run_pipeline(settings, registry(), "trades_unified")
    catalog = open_catalog(settings)
    spark = spark_for(settings)
    for name in ("raw_scripted_trades", "trades_unified", "schemahub_watermarks"):
        ours = catalog.load_table((NS, name)).scan().to_arrow()
        assert ours.num_rows > 0
        assert spark_rows(spark, f"pg.{NS}.{name}", ours.column_names) == plain(ours), name


def test_the_spark_catalog_mapping_refuses_what_the_jar_set_cannot_read(tmp_path) -> None:
    from schemahub_core.engine.spark import SparkSetupError, spark_catalog_conf
    from schemahub_core.framework.config import Settings

    pg = Settings(home=tmp_path, catalog={"name": "pg", "type": "sql", "warehouse": "file:///w",
                                          "uri": "postgresql+psycopg2://sh:p%40ss@db:5433/iceberg"})
    assert spark_catalog_conf(pg) == {
        "spark.sql.catalog.pg": "org.apache.iceberg.spark.SparkCatalog", "spark.sql.catalog.pg.type": "jdbc",
        "spark.sql.catalog.pg.cache-enabled": "false",
        "spark.sql.catalog.pg.uri": "jdbc:postgresql://db:5433/iceberg", "spark.sql.catalog.pg.jdbc.user": "sh",
        "spark.sql.catalog.pg.jdbc.password": "p@ss", "spark.sql.catalog.pg.warehouse": "file:///w"}
    with pytest.raises(SparkSetupError, match="AWS bundle"):
        spark_catalog_conf(Settings(home=tmp_path, catalog={"name": "glue", "type": "glue"}))
    with pytest.raises(SparkSetupError, match="AWS bundle"):
        spark_catalog_conf(Settings(home=tmp_path, catalog={**pg.catalog, "warehouse": "s3://lake/w"}))
