"""Production storage: the whole pipeline on S3 + Glue (moto's server) and on a PostgreSQL SQL catalog.

Each run goes through the real CLI in child processes, exactly as a user would, with the scripted test
venue installed through a real entry point. The assertions look past pyiceberg: the data files are
listed in the bucket with boto3, the catalog rows are read from PostgreSQL with psycopg2.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pyarrow.compute as pc
import pytest
from conftest import SCHEMAHUB, run_cli
from storage_fixtures import MotoServer, PostgresServer, StorageHome

from schemahub_core.engine.catalog import open_catalog
from schemahub_core.engine.maintenance import maintain
from schemahub_core.framework.config import load_settings
from schemahub_core.testing.entry_points import write_distribution
from schemahub_core.testing.scripted import trades_for

NS = "schemahub"
VENUES = {"scripted": ("BTC-USD", "ETH-USD"), "scripted_b": ("BTC-USD",)}


def scripted_env(tmp_path: Path, home: StorageHome, **options: str) -> dict[str, str]:
    """Child-process env: the backend's config, and only the scripted venues installed (via an entry point)."""
    site = write_distribution(tmp_path / "site", "schemahub-scripted", "1.0",
                              {"scripted": "schemahub_core.testing.scripted"})
    env = {**home.env, "PYTHONPATH": str(site), "SCHEMAHUB_LOAD_PLUGINS": "scripted"}
    for name in VENUES:
        env.update({f"SCHEMAHUB_{name.upper()}_{k.upper()}": str(v) for k, v in options.items()})
    return env


def expected_keys(trades: int) -> set[tuple[str, str, str]]:
    return {(venue.upper(), symbol, str(t["id"]))
            for venue, symbols in VENUES.items() for symbol in symbols
            for t in trades_for(venue, 0, symbol, trades)}


def unified_keys() -> list[tuple[str, str, str]]:
    data = open_catalog(load_settings()).load_table((NS, "trades_unified")).scan(
        selected_fields=("exchange", "symbol", "trade_id")).to_arrow()
    return list(zip(*(data[c].to_pylist() for c in ("exchange", "symbol", "trade_id")), strict=True))


def run_pipeline_twice(env: dict[str, str]) -> None:
    """The pipeline lands every trade once; a second run lands nothing and adds no unified snapshot."""
    first = json.loads(run_cli("run", "pipeline", "trades_unified", "--json", env=env).stdout)
    assert sum(s["landed"] for s in first if s["step"] == "ingest") == 40 * 3
    assert [s["unified"] for s in first if s["step"] == "unify"] == [40 * 3]
    table = open_catalog(load_settings()).load_table((NS, "trades_unified"))
    snapshot = table.current_snapshot()
    second = json.loads(run_cli("run", "pipeline", "trades_unified", "--json", env=env).stdout)
    assert sum(s["landed"] + s["unified"] for s in second) == 0
    assert table.refresh().current_snapshot() == snapshot
    keys = unified_keys()
    assert len(keys) == len(set(keys)) and set(keys) == expected_keys(40)


def test_pipeline_on_s3_with_glue(tmp_path: Path, s3_glue_home: StorageHome, moto_server: MotoServer) -> None:
    env = scripted_env(tmp_path, s3_glue_home, trades=40, page_size=10)
    run_pipeline_twice(env)

    catalog = open_catalog(load_settings())
    s3 = moto_server.client("s3")
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=s3_glue_home.bucket)
    objects = {f"s3://{s3_glue_home.bucket}/{o['Key']}" for page in pages for o in page.get("Contents", [])}
    for name in ("raw_scripted_trades", "raw_scripted_b_trades", "trades_unified"):
        table = catalog.load_table((NS, name))
        files = {task.file.file_path for task in table.scan().plan_files()}
        assert files and files <= objects, f"{name}: data files missing from the bucket"
        assert table.metadata_location in objects
        assert table.metadata_location.startswith(f"s3://{s3_glue_home.bucket}/warehouse/")
    glue_tables = moto_server.client("glue").get_tables(DatabaseName=NS)["TableList"]
    by_name = {t["Name"]: t for t in glue_tables}
    assert by_name["trades_unified"]["Parameters"]["table_type"].upper() == "ICEBERG"
    assert by_name["trades_unified"]["Parameters"]["metadata_location"] == \
        catalog.load_table((NS, "trades_unified")).metadata_location
    assert not list((tmp_path / "home").rglob("*.parquet")), "nothing may land on local disk"


def iceberg_tables(server: PostgresServer, database: str) -> dict[str, str]:
    """table name -> metadata location, straight from pyiceberg's catalog table in PostgreSQL."""
    conn = server.connect(database)
    with conn.cursor() as cur:
        cur.execute("SELECT table_name, metadata_location FROM iceberg_tables WHERE table_namespace = %s", (NS,))
        rows = dict(cur.fetchall())
    conn.close()
    return rows


def test_pipeline_on_postgres_catalog(tmp_path: Path, postgres_home: StorageHome,
                                      postgres_server: PostgresServer) -> None:
    env = scripted_env(tmp_path, postgres_home, trades=40, page_size=10)
    run_pipeline_twice(env)

    catalog = open_catalog(load_settings())
    rows = iceberg_tables(postgres_server, postgres_home.database)
    assert {"raw_scripted_trades", "raw_scripted_b_trades", "trades_unified", "schemahub_watermarks"} <= set(rows)
    for name in ("raw_scripted_trades", "trades_unified"):
        assert rows[name] == catalog.load_table((NS, name)).metadata_location
    assert not (tmp_path / "home" / "catalog.db").exists(), "no SQLite catalog may be created"


COVERS = "schemahub.covers."  # what a raw commit covers, per (stream, symbol)


def _changed_keys(snapshots) -> list[set[str]]:
    """Per snapshot (oldest first), the coverage keys whose value that commit changed."""
    out, before = [], {}
    for _, props_all, _ in snapshots:
        props = {k: v for k, v in props_all.items() if k.startswith(COVERS)}
        changed = {k for k, v in props.items() if before.get(k) != v}
        if changed:
            out.append(changed)
        before = props or before
    return out


def test_concurrent_processes_on_postgres_catalog(tmp_path: Path, postgres_home: StorageHome) -> None:
    """Three `run ingest` processes at once on one raw table: two race on BTC-USD, one owns ETH-USD,
    while a fourth process compacts the same table.

    Every page lands exactly once: the racing pair never doubles a page, and the ETH-USD writer, whose
    commits keep conflicting with the others', loses none of its commits.
    """
    env = scripted_env(tmp_path, postgres_home, trades=60, page_size=5, slow_ms=200)
    run_cli("init", env=env)
    # one page per commit, so the writers' commits interleave (the default would bound commits by rows and time)
    procs = [subprocess.Popen([*SCHEMAHUB, "run", "ingest", "scripted", "--symbols", symbol, "--json",
                               "--pages-per-commit", "1"],
                              env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for symbol in ("BTC-USD", "BTC-USD", "ETH-USD")]
    catalog = open_catalog(load_settings())
    seen: dict[int, tuple[int, dict, str]] = {}  # the engine expires its own old snapshots: record them as they land

    def observe() -> None:
        for s in catalog.load_table((NS, "raw_scripted_trades")).snapshots():
            seen.setdefault(s.snapshot_id, (s.timestamp_ms, dict(s.summary.additional_properties),
                                            s.summary.operation.value))

    while any(p.poll() is None for p in procs):  # compact the table under the writers' feet
        maintain(catalog, NS, older_than=None, do_compact=True, small_file_bytes=1 << 30)
        observe()
        time.sleep(0.2)
    observe()
    history = sorted(seen.values(), key=lambda s: s[0])
    outputs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, f"{out}\n{err}"
    stats = [json.loads(out)[0] for out, _ in outputs]
    assert stats[2]["landed"] == 60 and stats[2]["commits"] == 12, "the ETH-USD writer lost a commit"
    assert stats[0]["landed"] + stats[1]["landed"] == 60, "the racing BTC-USD writers landed a page twice"

    raw = open_catalog(load_settings()).load_table((NS, "raw_scripted_trades"))
    data = raw.scan(selected_fields=("symbol", "id")).to_arrow()
    for symbol in ("BTC-USD", "ETH-USD"):
        ids = data.filter(pc.equal(data["symbol"], symbol.replace("-", "")))["id"].to_pylist()
        assert Counter(ids).most_common(1)[0][1] == 1, f"duplicate raw rows for {symbol}"
        assert set(ids) == {t["id"] for t in trades_for("scripted", 0, symbol, 60)}, f"gap in {symbol}"
    covers = [props.get(COVERS + "trades.ETH-USD") for _, props, _ in history]
    assert len({c for c in covers if c}) == 12, "every ETH-USD commit is its own snapshot"
    operations = [op for _, _, op in history]
    assert "append" in operations[operations.index("overwrite"):], "no compaction landed between the writers' commits"
    order = ["ETH" if COVERS + "trades.ETH-USD" in changed else "BTC" for changed in _changed_keys(history)]
    runs = sum(1 for a, b in zip(order, order[1:], strict=False) if a != b)
    assert runs >= 2, f"the writers did not overlap in time: {order}"

    unify = json.loads(run_cli("run", "unify", "trades_unified", "--json", env=env).stdout)
    assert unify[0]["unified"] == 120
    keys = unified_keys()
    assert len(keys) == len(set(keys)) == 120


def test_catalog_secrets_from_pyiceberg_env(tmp_path: Path, postgres_home: StorageHome,
                                            postgres_server: PostgresServer) -> None:
    """The documented way to keep the database URI (and its password) out of schemahub.yaml."""
    catalog = {k: v for k, v in postgres_home.catalog.items() if k != "uri"}
    postgres_home.config.write_text(json.dumps({"catalog": catalog}))  # JSON is YAML
    env = {**postgres_home.env, "PYICEBERG_CATALOG__PG__URI": postgres_home.catalog["uri"]}
    run_cli("init", env=env)
    assert "trades_unified" in iceberg_tables(postgres_server, postgres_home.database)


def test_sandbox_venues_to_s3_with_glue(s3_glue_home: StorageHome, moto_server: MotoServer,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The real venue connectors, over HTTP from the simulated venues, into the S3 warehouse."""
    from schemahub_core.apps.pipeline import run_ingest, run_unify
    from schemahub_core.framework.registry import get_registry
    from schemahub_core.sandbox import EVENT_AT, Sandbox, SandboxConfig

    registry = get_registry()
    since, until = EVENT_AT - timedelta(seconds=1), EVENT_AT + timedelta(seconds=2)
    with Sandbox(SandboxConfig.fast()) as sandbox:
        for key, value in sandbox.env().items():
            monkeypatch.setenv(key, value)
        settings = load_settings()
        catalog = open_catalog(settings)
        stats = []
        for source, symbol in (("binance.trades", "BTC-USDT"), ("coinbase.trades", "BTC-USD"),
                               ("kraken.trades", "BTC-USD")):
            stats += run_ingest(settings, registry, [source], symbols=[symbol], since=since, until=until,
                                catalog=catalog)
        assert [s.error for s in stats] == [None] * 3 and all(s.landed for s in stats)
        unified = run_unify(settings, registry, "trades_unified", catalog=catalog)
    assert unified.error is None and unified.unified == sum(s.landed for s in stats)
    keys = unified_keys()
    assert len(keys) == len(set(keys)) == unified.unified
    assert {k[0] for k in keys} == {"BINANCE", "COINBASE", "KRAKEN"}
    listed = moto_server.client("s3").list_objects_v2(Bucket=s3_glue_home.bucket, Prefix="warehouse/")
    keys_in_bucket = {f"s3://{s3_glue_home.bucket}/{o['Key']}" for o in listed.get("Contents", [])}
    files = {t.file.file_path for t in catalog.load_table((NS, "trades_unified")).scan().plan_files()}
    assert files and files <= keys_in_bucket
