"""Unify on Spark: 10M new raw rows on ``local[1]`` vs ``local[2]`` (the scaling ratio) and vs the embedded engine.

One raw lake is landed once (``land_backlog``: 1M trades a day, 3 % landed twice); three copies of its catalog
(the raw files are shared, read only) are each unified from scratch in a child process of their own: embedded,
Spark ``local[1]``, Spark ``local[2]``. A Spark child starts its session before the clock starts (the JVM start
is reported apart), so the times compare the unify work. Every run must unify exactly the distinct trades.
Claims: ``local[2]`` takes at most 0.75x the time of ``local[1]`` (two cores; 0.5 is perfect scaling), and
Spark on two cores within 2x of the embedded engine on one machine (Spark's worth is beyond one machine; on
one it pays for serializing rows to its executors and a shuffle for the dedup).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from schemahub_core.engine.catalog import open_catalog
from schemahub_core.framework.config import Settings, default_catalog
from schemahub_core.testing.scripted import land_backlog, scripted_registry

from .harness import Result

PER_DAY = 1_000_000
SPARK_CONF = {"spark.driver.memory": "2g"}


def _settings(home: Path) -> Settings:
    return Settings(home=home, catalog=default_catalog(home), mappings_dir=home / "no-mapping-files")


def child(home: Path, engine: str) -> None:
    """Unify ``home`` on ``engine`` (``embedded`` or a Spark master URL); print seconds and stats as JSON."""
    registry = scripted_registry()
    catalog = open_catalog(_settings(home))
    mappings = [m for _, m in registry.mappings]
    session_seconds = 0.0
    if engine == "embedded":
        from schemahub_core.engine.unify import unify

        started = time.perf_counter()
        stats = unify(catalog, "schemahub", registry, "trades_unified", mappings)
    else:
        from schemahub_core.engine.spark import base_session
        from schemahub_core.engine.spark_unify import spark_unify

        started = time.perf_counter()
        spark = base_session(engine, SPARK_CONF, app_name="schemahub-bench")
        session_seconds = time.perf_counter() - started
        started = time.perf_counter()
        stats = spark_unify(spark, catalog, "schemahub", registry, "trades_unified", mappings)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "session_seconds": session_seconds, "fetched": stats.fetched,
                      "unified": stats.unified, "commits": stats.commits, "error": stats.error}))


def measure(raw_home: Path, workdir: Path, engine: str, trades: int) -> dict:
    """Unify a fresh copy of the raw lake's catalog on ``engine`` in a child process."""
    home = workdir / f"unify-{engine.replace('[', '-').replace(']', '')}"
    home.mkdir()
    shutil.copyfile(raw_home / "catalog.db", home / "catalog.db")
    proc = subprocess.run(["nice", sys.executable, "-m", "benchmarks.spark_unify", str(home), engine],
                          capture_output=True, text=True, timeout=7200)
    if proc.returncode != 0:
        raise RuntimeError(f"unify child on {engine} failed: {proc.stderr.strip().splitlines()[-3:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["error"] or result["unified"] != trades or result["commits"] != 1:
        raise RuntimeError(f"unify of {trades:,} rows on {engine} was not exact: {result}")
    result["rows_per_s"] = result["fetched"] / result["seconds"]
    return result


def run(quick: bool, workdir: Path) -> list[Result]:
    trades = 200_000 if quick else 10_000_000
    raw_home = workdir / "raw"
    started = time.perf_counter()
    land_backlog(open_catalog(_settings(raw_home)), "schemahub", trades, days=max(1, trades // PER_DAY))
    landed = time.perf_counter() - started
    runs = {engine: measure(raw_home, workdir, engine, trades) for engine in ("embedded", "local[1]", "local[2]")}
    details = {"trades": trades, "per_day": PER_DAY, "land_seconds": landed, "spark_conf": SPARK_CONF, **runs}
    one, two, embedded = runs["local[1]"]["seconds"], runs["local[2]"]["seconds"], runs["embedded"]["seconds"]
    return [
        Result("spark_unify", f"Spark unify of {trades:,} new raw rows: local[2] vs local[1] (scaling)",
               two, one, "s", 0.75, details=details),
        Result("spark_unify", f"Spark unify of {trades:,} new raw rows: local[2] vs the embedded engine",
               two, embedded, "s", 2.0, details=details),
    ]


if __name__ == "__main__":
    child(Path(sys.argv[1]), sys.argv[2])
