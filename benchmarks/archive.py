"""Archive: 30 simulated days of one busy symbol (BTCUSDT) from the sandbox's archives into the raw table.

``schemahub backfill``'s engine at default settings (raw payload on, default rows per commit) against the
sandbox on 127.0.0.1: download, sha256, streaming CSV parse, casts, Iceberg commits. Two baselines:

- the floor, measured in the same run: pyarrow's CSV reader over the same zips (already on disk, typed
  columns) plus ``pq.write_table``, which is the least any loader must do with these files;
- the REST path at Binance's real rate limit, computed from the limit: 6,000 request weight per minute,
  4 per aggTrades page of 1,000 rows, so 1,500 pages a minute = 25,000 trades/s per IP.

The sandbox builds (simulates) every file before the clock starts: generating the market is not landing.
"""

from __future__ import annotations

import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from schemahub_core.engine.archives import backfill
from schemahub_core.sandbox import Sandbox, SandboxConfig

from .harness import Result
from .warehouse import fresh_warehouse

FIRST_DAY = datetime(2024, 2, 8, tzinfo=UTC)
REST_ROWS_PER_S = 6000 / 4 * 1000 / 60  # weight per minute / weight per page * rows per page / seconds
COLUMNS = {"a": pa.int64(), "p": pa.float64(), "q": pa.float64(), "f": pa.int64(), "l": pa.int64(),
           "T": pa.int64(), "m": pa.bool_(), "M": pa.bool_()}


def floor(zips: list[Path], out: Path) -> int:
    """pyarrow CSV read of each file (typed, from the zip) + ``pq.write_table``: rows written."""
    rows = 0
    for i, path in enumerate(zips):
        with zipfile.ZipFile(path) as archive, archive.open(archive.namelist()[0]) as member:
            table = pacsv.read_csv(member, read_options=pacsv.ReadOptions(column_names=list(COLUMNS)),
                                   convert_options=pacsv.ConvertOptions(column_types=COLUMNS))
        pq.write_table(table, out / f"{i}.parquet")
        rows += table.num_rows
    return rows


def simulate(start: datetime, names: list[str], workdir: Path) -> list[Path]:
    """Build the sandbox's zips for ``names`` (the market is deterministic: any process builds the same bytes)."""
    config = SandboxConfig.fast()
    config.start = start
    shelf = Sandbox(config).venues["binance"].archives
    paths = []
    for name in names:
        (workdir / name).write_bytes(shelf.build(name).zip_bytes)
        paths.append(workdir / name)
    return paths


def run(quick: bool, workdir: Path) -> list[Result]:
    days = 3 if quick else 30
    until = FIRST_DAY + timedelta(days=days)
    config = SandboxConfig.fast()
    config.start = until + timedelta(days=1)  # every day of the window is over, hence archived
    names = [f"BTCUSDT-aggTrades-{FIRST_DAY + timedelta(days=d):%Y-%m-%d}.zip" for d in range(days)]
    built = time.perf_counter()
    with ProcessPoolExecutor(3) as pool:  # untimed: simulating the market is not landing it
        zips = [p for part in pool.map(simulate, [config.start] * 3, [names[i::3] for i in range(3)],
                                       [workdir] * 3) for p in part]
    zips.sort()
    built = time.perf_counter() - built
    archive_bytes = sum(p.stat().st_size for p in zips)
    with Sandbox(config) as sandbox:
        for path in zips:  # the sandbox serves exactly these bytes
            sandbox.venues["binance"].archives.publish(path.name, path.read_bytes())

        out = workdir / "floor"
        out.mkdir()
        started = time.perf_counter()
        floor_rows = floor(zips, out)
        floor_s = time.perf_counter() - started

        wh = fresh_warehouse(workdir / "wh")
        started = time.perf_counter()
        stats = backfill(wh.catalog, wh.namespace, wh.registry, "binance", stream="agg_trades", since=FIRST_DAY,
                         until=until, symbols=["BTC-USDT"], options=sandbox.connector_options("binance"))
        engine_s = time.perf_counter() - started
    failed = [s.error for s in stats if s.error]
    assert not failed, failed
    landed = wh.table("raw_binance_agg_trades").scan(selected_fields=("a",)).to_arrow()
    assert landed.num_rows == floor_rows and pc.count_distinct(landed["a"]).as_py() == floor_rows, \
        "the backfill lost or doubled rows"
    engine_rate, floor_rate = floor_rows / engine_s, floor_rows / floor_s
    details = {"days": days, "files": len(zips), "trades": floor_rows, "archive_bytes": archive_bytes,
               "engine_s": round(engine_s, 3), "floor_s": round(floor_s, 3), "simulate_s": round(built, 1),
               "engine_trades_per_s": round(engine_rate), "floor_trades_per_s": round(floor_rate),
               "rest_trades_per_s_at_real_limit": REST_ROWS_PER_S, "commits": sum(s.commits for s in stats)}
    return [
        Result("archive", f"{days} days of BTCUSDT archives -> raw table, throughput vs CSV read + pq.write_table",
               engine_rate, floor_rate, "trades/s", 0.7, goal="min", details=details),
        Result("archive_vs_rest", f"{days} days from archives vs REST at Binance's real limit (computed: "
               "6000 weight/min, 4 per 1000-row page)", engine_rate, REST_ROWS_PER_S, "trades/s", 20.0,
               goal="min", details=details),
    ]
