"""Audit 30 simulated days x 3 venues (both symbols each) in at most 10 s, reading only key columns.

The history is written straight into a fresh warehouse (the audit is what is timed, not landing): each venue's
trades at its simulated market rates (``VenueApp.market_profile.rate``, Poisson counts per hour, times at the
venue's resolution), ids consecutive per symbol, every raw column filled, and ``trades_unified`` made from it by
the venues' own mappings, one append per venue and day, as daily ingestion leaves it. A few defects are planted
(three id ranges removed, one raw row doubled) and the audit must report exactly those. Figures: the median of
three audits, each in a fresh process (``benchmarks.audit_probe``) so its peak RSS is the audit's own, next to
that of a process that opens everything and does not audit; the columns each scan projects (its schema); and
the share of the data files' bytes that those column chunks hold (what is actually read).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemahub_core.engine.state import source_key
from schemahub_core.engine.tables import raw_table_name
from schemahub_core.engine.unify import first_per_key
from schemahub_core.framework.mapping import collect_mappings
from schemahub_core.sandbox import venue_apps

from .harness import Result
from .warehouse import Warehouse, fresh_warehouse

VENUES = ("binance", "coinbase", "kraken")
START = datetime(2024, 1, 10, tzinfo=UTC)
HOUR_US = 3_600_000_000
# string columns whose values the mappings read (side rules): a venue's own vocabulary
STRINGS = {"coinbase": {"side": ["buy", "sell"]}, "kraken": {"side": ["b", "s"], "ordertype": ["m", "l"], "misc": [""]}}
# planted defects: (venue, symbol, day, position in the day, how many ids removed)
DROPS = [("binance", "BTCUSDT", 4, 1000, 100), ("binance", "BTCUSDT", 16, 5000, 1),
         ("binance", "BTCUSDT", 28, 20, 1000)]


def _symbol_day(rng: np.random.Generator, venue: str, stream, native: str, rate: float, day: int, first_id: int,
                step_ns: int) -> pa.Table:
    counts = rng.poisson(rate * 3600, 24)
    n = int(counts.sum())
    day_us = int((START + timedelta(days=day)).timestamp()) * 1_000_000
    hour_start = np.repeat(np.arange(24, dtype=np.int64) * HOUR_US, counts)
    step_us = max(1, step_ns // 1000)
    offsets = rng.integers(0, HOUR_US // step_us, n) * step_us
    ts = np.sort(day_us + hour_start + offsets)
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    columns: dict[str, pa.Array] = {}
    for col in stream.columns:
        if col.name == stream.symbol_column:
            columns[col.name] = pa.array(np.full(n, native, dtype=object), pa.string())
        elif col.name == stream.id_column:
            columns[col.name] = pa.array(ids)
        elif col.name == stream.event_time:
            columns[col.name] = pa.array(ts, pa.timestamp("us", tz="UTC"))
        elif pa.types.is_floating(col.type):
            columns[col.name] = pa.array(rng.random(n) * 100)
        elif pa.types.is_integer(col.type):
            columns[col.name] = pa.array(ids * 2)
        elif pa.types.is_boolean(col.type):
            columns[col.name] = pa.array(rng.random(n) < 0.5)
        else:
            words = STRINGS.get(venue, {}).get(col.name, ["x"])
            columns[col.name] = pa.array(np.array(words, dtype=object)[rng.integers(0, len(words), n)], pa.string())
    columns["_source"] = pa.array(np.full(n, venue, dtype=object), pa.string())
    columns["_source_ingest_ts"] = pa.array(ts, pa.timestamp("us", tz="UTC"))
    columns["_raw_payload"] = pa.nulls(n, pa.string())
    return pa.table(columns)


def build(wh: Warehouse, days: int, symbols_per_venue: int) -> tuple[int, list[tuple]]:
    """Write the history; return (raw rows, the planted gaps as (venue, native, first_id, last_id))."""
    rng = np.random.default_rng(20240208)
    mappings = {m.source: m for m in collect_mappings(wh.registry, None) if m.target_table == "trades_unified"}
    target = wh.registry.targets["trades_unified"]
    apps = venue_apps()
    rows, planted, progress = 0, [], {}
    for venue in VENUES:
        app, stream = apps[venue], wh.registry.connectors[venue].streams["trades"]
        profile = app.market_profile
        natives = list(app.symbols)[:symbols_per_venue]
        next_id = {native: profile.first_id for native in natives}
        for day in range(days):
            parts = []
            for native in natives:
                asset = app.symbols[native].split("-")[0]
                part = _symbol_day(rng, venue, stream, native, profile.rate[asset], day, next_id[native],
                                   profile.time_step_ns)
                next_id[native] += part.num_rows
                for v, s, d, at, count in DROPS:
                    if (v, s, d) == (venue, native, day) and at + count < part.num_rows:
                        ids = part.column(stream.id_column)
                        planted.append((venue, native, ids[at].as_py(), ids[at + count - 1].as_py()))
                        part = pa.concat_tables([part.slice(0, at), part.slice(at + count)])
                parts.append(part)
            raw = pa.concat_tables(parts)
            if (venue, day) == ("binance", 10):
                raw = pa.concat_tables([raw, raw.slice(123, 1)])  # one row landed twice in raw
            rows += raw.num_rows
            snapshot = wh.append(raw_table_name(venue, "trades"), raw)
            unified = mappings[f"{venue}.trades"].apply(raw, wh.registry, target.schema)
            unified = unified.take(pc.sort_indices(unified, [("trade_ts", "ascending")]))
            unified = first_per_key(unified, target.key)  # unify drops the doubled raw row
            progress[source_key(raw_table_name(venue, "trades"))] = str(snapshot)
            wh.append("trades_unified", unified.set_column(
                unified.schema.get_field_index("ingest_ts"), "ingest_ts",
                pa.repeat(pa.scalar(datetime.now(UTC), pa.timestamp("us", tz="UTC")), unified.num_rows)),
                dict(progress))
    return rows, planted


def key_share(wh: Warehouse, columns_read: dict[str, list[str]]) -> float:
    """Compressed bytes of the column chunks an audit reads / all data bytes of the tables it reads."""
    read = total = 0
    for name, cols in columns_read.items():
        for task in wh.table(name).scan().plan_files():
            meta = pq.read_metadata(task.file.file_path.removeprefix("file://"))
            for g in range(meta.num_row_groups):
                group = meta.row_group(g)
                for c in range(group.num_columns):
                    chunk = group.column(c)
                    total += chunk.total_compressed_size
                    if chunk.path_in_schema in cols:
                        read += chunk.total_compressed_size
    return read / total if total else 0.0


def _probe(home: Path, *extra: str) -> dict:
    """One audit (or, with ``--floor``, none) in a process of its own: see ``benchmarks.audit_probe``."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.audit_probe", str(home), *extra], capture_output=True,
                          text=True, check=True, cwd=Path(__file__).resolve().parent.parent)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool, workdir: Path) -> Result:
    days, per_venue = (3, 1) if quick else (30, 2)
    wh = fresh_warehouse(workdir / "warehouse")
    rows, planted = build(wh, days, per_venue)
    runs = [_probe(wh.home) for _ in range(3)]  # each audit in a fresh process: its own peak RSS
    floor = _probe(wh.home, "--floor")
    times = [r["seconds"] for r in runs]
    seconds = statistics.median(times)
    report = runs[-1]
    found = sorted(tuple(g) for g in report["gaps"])
    doubled = 1 if days > 10 else 0
    exact = found == sorted(planted) and report["raw_duplicates"] == doubled and report["other_problems"] == 0
    keys_only = all(set(cols) <= {"symbol", "id", "time", "product_id", "trade_id", "pair", "exchange", "trade_ts"}
                    for cols in report["columns_read"].values())
    return Result(
        name="audit",
        claim=f"audit {days} simulated days x {len(VENUES)} venues ({per_venue} symbol(s) each) in <= 10 s, "
              "key columns only, planted gaps found exactly",
        value=seconds, baseline=10.0, unit="s", target=1.0, goal="max", also=exact and keys_only,
        details={"raw_rows": rows, "rows_read": report["rows_read"], "runs_s": [round(t, 3) for t in times],
                 "cpu_s": [round(r["cpu_s"], 3) for r in runs],
                 "peak_rss_mb": [round(r["peak_rss_mb"]) for r in runs],
                 "floor_rss_mb": round(floor["peak_rss_mb"]),  # a process that opens everything, no audit
                 "rows_per_s": round(report["rows_read"] / seconds), "planted_gaps": len(planted),
                 "found_gaps": len(found), "exact": exact, "keys_only": keys_only,
                 "columns_read": report["columns_read"],  # the scans' projected schemas
                 "key_bytes_share": round(key_share(wh, report["columns_read"]), 4)},
    )
