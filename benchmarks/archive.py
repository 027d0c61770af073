"""Archive: 30 simulated days of one busy symbol (BTCUSDT) from the sandbox's archives into the raw table.

``schemahub backfill``'s engine at default settings (raw payload on, default rows per commit) against the
sandbox on 127.0.0.1: download, sha256, streaming CSV parse, casts, Iceberg commits. Two baselines:

- the floor, measured in the same run: pyarrow's CSV reader over the same zips (already on disk, typed
  columns) plus ``pq.write_table``, which is the least any loader must do with these files. It runs once
  before and once after the backfill and its mean time is the baseline, so load that changes during the run
  (the machine is shared) weighs on both sides alike;
- the REST path at Binance's real rate limit, computed from the limit for the same stream, rows for rows:
  ``agg_trades`` (the aggTrades files) against ``GET /api/v3/aggTrades``: 6,000 request weight a minute,
  weight 4 per page of at most 1,000 aggregates, so 1,500 pages a minute = 25,000 rows/s per IP. The
  ``trades`` stream (the individual trades files; a shorter window, its simulated files are slow to build)
  against ``GET /api/v3/historicalTrades``: weight 25 per 1,000 trades, 240 pages a minute = 4,000 rows/s.
  Both are upper bounds for REST: they assume every request returns a full page at once.

The sandbox builds (simulates) every file before the clock starts: generating the market is not landing.
CPU seconds are recorded beside wall time for both (the machine is shared: on two busy cores the wall ratio
moves with the load, the CPU ratio much less).
"""

from __future__ import annotations

import os
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
WEIGHT_PER_MINUTE = 6000
PAGE_ROWS = 1000
REST = {  # stream -> (archive folder, weight of one 1,000-row page, endpoint)
    "agg_trades": ("aggTrades", 4, "aggTrades"),
    "trades": ("trades", 25, "historicalTrades"),
}
COLUMNS = {
    "agg_trades": {"a": pa.int64(), "p": pa.float64(), "q": pa.float64(), "f": pa.int64(), "l": pa.int64(),
                   "T": pa.int64(), "m": pa.bool_(), "M": pa.bool_()},
    "trades": {"id": pa.int64(), "price": pa.float64(), "qty": pa.float64(), "quoteQty": pa.float64(),
               "time": pa.int64(), "isBuyerMaker": pa.bool_(), "isBestMatch": pa.bool_()},
}


def rest_rows_per_s(stream: str) -> float:
    """Rows a second one IP can page from REST at Binance's real weight limit (every page full, no latency)."""
    return WEIGHT_PER_MINUTE / REST[stream][1] * PAGE_ROWS / 60


def floor(zips: list[Path], out: Path, columns: dict[str, pa.DataType] | None = None) -> int:
    """pyarrow CSV read of each file (typed, from the zip) + ``pq.write_table``: rows written."""
    columns = columns or COLUMNS["agg_trades"]
    rows = 0
    for i, path in enumerate(zips):
        with zipfile.ZipFile(path) as archive, archive.open(archive.namelist()[0]) as member:
            table = pacsv.read_csv(member, read_options=pacsv.ReadOptions(column_names=list(columns)),
                                   convert_options=pacsv.ConvertOptions(column_types=columns))
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


def measure(stream: str, days: int, workdir: Path) -> dict:
    """Build ``days`` daily files of ``stream``, then time the floor and the backfill over the same bytes."""
    workdir.mkdir(parents=True)
    load = [round(x, 2) for x in os.getloadavg()]
    until = FIRST_DAY + timedelta(days=days)
    config = SandboxConfig.fast()
    config.start = until + timedelta(days=1)  # every day of the window is over, hence archived
    kind = REST[stream][0]
    names = [f"BTCUSDT-{kind}-{FIRST_DAY + timedelta(days=d):%Y-%m-%d}.zip" for d in range(days)]
    built = time.perf_counter()
    parts = min(3, days)
    with ProcessPoolExecutor(parts) as pool:  # untimed: simulating the market is not landing it
        zips = [p for part in pool.map(simulate, [config.start] * parts, [names[i::parts] for i in range(parts)],
                                       [workdir] * parts) for p in part]
    zips.sort()
    built = time.perf_counter() - built
    with Sandbox(config) as sandbox:
        for path in zips:  # the sandbox serves exactly these bytes
            sandbox.venues["binance"].archives.publish(path.name, path.read_bytes())

        floors, floor_cpu = [], []

        def timed_floor() -> int:
            out = workdir / f"floor-{len(floors)}"
            out.mkdir()
            started, cpu = time.perf_counter(), time.process_time()
            rows = floor(zips, out, COLUMNS[stream])
            floors.append(time.perf_counter() - started)
            floor_cpu.append(time.process_time() - cpu)
            return rows

        floor_rows = timed_floor()
        wh = fresh_warehouse(workdir / "wh")
        started, cpu = time.perf_counter(), time.process_time()
        stats = backfill(wh.catalog, wh.namespace, wh.registry, "binance", stream=stream, since=FIRST_DAY,
                         until=until, symbols=["BTC-USDT"], options=sandbox.connector_options("binance"))
        engine_s, engine_cpu = time.perf_counter() - started, time.process_time() - cpu
        timed_floor()
        floor_s = sum(floors) / len(floors)
    failed = [s.error for s in stats if s.error]
    assert not failed, failed
    key = "a" if stream == "agg_trades" else "id"
    landed = wh.table(f"raw_binance_{stream}").scan(selected_fields=(key,)).to_arrow()
    assert landed.num_rows == floor_rows and pc.count_distinct(landed[key]).as_py() == floor_rows, \
        "the backfill lost or doubled rows"
    return {"stream": stream, "days": days, "files": len(zips), "rows": floor_rows,
            "archive_bytes": sum(p.stat().st_size for p in zips), "engine_s": round(engine_s, 3),
            "floor_s": round(floor_s, 3), "floor_runs_s": [round(f, 3) for f in floors], "simulate_s": round(built, 1),
            # CPU seconds of this process (all threads; the in-process sandbox's serving is in the engine's, ~1 %)
            "engine_cpu_s": round(engine_cpu, 3), "floor_runs_cpu_s": [round(c, 3) for c in floor_cpu],
            "load_average_at_start": load, "cpu_ratio": round(sum(floor_cpu) / len(floor_cpu) / engine_cpu, 3),
            "engine_rows_per_s": round(floor_rows / engine_s), "floor_rows_per_s": round(floor_rows / floor_s),
            "rest_rows_per_s_at_real_limit": rest_rows_per_s(stream), "commits": sum(s.commits for s in stats),
            "rest_computation": f"{WEIGHT_PER_MINUTE} weight/min / {REST[stream][1]} per {PAGE_ROWS}-row "
                                f"{REST[stream][2]} page * {PAGE_ROWS} rows / 60 s"}


def run(quick: bool, workdir: Path) -> list[Result]:
    agg = measure("agg_trades", 3 if quick else 30, workdir / "agg_trades")
    fills = measure("trades", 1 if quick else 3, workdir / "trades")
    results = []
    for d, label in ((agg, "aggregate trades"), (fills, "individual trades")):
        engine, base = d["rows"] / d["engine_s"], d["rows"] / d["floor_s"]
        name = "archive" if d["stream"] == "agg_trades" else "archive_trades"
        results += [
            Result(name, f"{d['days']} days of BTCUSDT {label} archives -> raw table, throughput vs CSV read + "
                   "pq.write_table", engine, base, "rows/s", 0.7, goal="min", details=d),
            Result(f"{name}_vs_rest", f"{d['days']} days of {label} from archives vs REST {REST[d['stream']][2]} at "
                   f"Binance's real limit (computed: {d['rest_computation']})", engine,
                   d["rest_rows_per_s_at_real_limit"], "rows/s", 20.0, goal="min", details=d),
        ]
    return results
