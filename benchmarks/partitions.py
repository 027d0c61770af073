"""Partition planning: files and bytes a replay window scans drop as ``partitions suggest`` predicts.

One busy day of 50 symbols (one of them holding 30 % of the trades) that arrived as 48 interleaved commits: each
commit carries trades of every symbol from across the whole day, as when a day is backfilled or re-landed by
several writers (venues, late data) rather than appended in time order. Every data file then spans the whole day
and every symbol, so neither the time bounds nor the symbol bounds of a file prune anything: a 12 s replay window
of one symbol plans all 48 files. At default settings ``partitions suggest`` proposes a spec (the day has too
many and too large files for 50 symbols: ``bucket(16, symbol)``) and predicts the files and bytes the same window
scans after ``maintain --compact`` rewrites the day into it. The benchmark applies the spec, runs maintain's
compaction, plans the window again, and compares: measured files == predicted, and files and bytes drop against
the layout as it landed.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemahub_core.apps.partitions import TARGET_FILE_BYTES, apply, suggest
from schemahub_core.apps.replay import parse_instant, window_scan
from schemahub_core.engine.maintenance import maintain

from .harness import Result
from .warehouse import fresh_warehouse
from .workload import DAY_MS, START_MS

SYMBOLS = [f"A{i:02d}-USDT" for i in range(50)]
COMMITS = 48


def _day(rng: np.random.Generator, n: int, first_id: int) -> pa.Table:
    """``n`` trades over one day, sorted by time; 30 % of them on one symbol."""
    weights = np.full(len(SYMBOLS), 0.7 / (len(SYMBOLS) - 1))
    weights[0] = 0.3
    sym = np.array(SYMBOLS, dtype=object)[rng.choice(len(SYMBOLS), n, p=weights)]
    ts_us = (START_MS + np.sort(rng.integers(0, DAY_MS, n))) * 1000
    ts = pa.array(ts_us, pa.timestamp("us", tz="UTC"))
    symbol = pa.array(sym, pa.string())
    return pa.table({
        "exchange": pa.array(np.full(n, "SIMULATED", dtype=object), pa.string()), "symbol": symbol,
        "trade_id": pa.array(np.arange(first_id, first_id + n).astype(str).astype(object), pa.string()),
        "side": pa.array(np.where(rng.random(n) < 0.5, "BUY", "SELL").astype(object), pa.string()),
        "price": 100 + rng.random(n), "quantity": rng.exponential(0.05, n), "trade_ts": ts, "ingest_ts": ts,
        "base_asset": symbol, "quote_asset": pa.array(np.full(n, "USDT", dtype=object), pa.string()),
        "native_symbol": symbol,
    })


def _scanned(table, symbol: str, start_us: int) -> tuple[int, int]:
    tasks = list(window_scan(table, [symbol], start_us, start_us + 12_000_000).plan_files())
    return len(tasks), sum(t.file.file_size_in_bytes for t in tasks)


def run(quick: bool, workdir: Path) -> list[Result]:
    per_day = 300_000 if quick else 8_000_000
    target = 1024 * 1024 if quick else TARGET_FILE_BYTES  # quick sizes check the harness, not the claim
    wh = fresh_warehouse(workdir / "wh")
    rng = np.random.default_rng(5)
    day = _day(rng, per_day, 1)
    commit_of = rng.integers(0, COMMITS, per_day)  # interleaved: every commit holds trades from the whole day
    started = time.perf_counter()
    for k in range(COMMITS):
        wh.append("trades_unified", day.filter(pa.array(commit_of == k)))
    built = time.perf_counter() - started
    del day
    table = wh.table("trades_unified")
    started = time.perf_counter()
    s = suggest(table, target_file_bytes=target)
    planned = time.perf_counter() - started
    assert s.changed and s.proposed is not None and s.now is not None and s.compacted is not None, s.reasons
    start_us = int(parse_instant(s.window["start"]).timestamp() * 1_000_000)
    before = _scanned(table, s.window["symbol"], start_us)
    assert before == (s.now.files, s.now.bytes)  # the current layout's figure is planned, not estimated
    apply(table, s)
    started = time.perf_counter()
    maintain(wh.catalog, wh.namespace, None, do_compact=True)  # `schemahub maintain --compact`, no expiry
    rewrite = time.perf_counter() - started
    after = _scanned(wh.table("trades_unified"), s.window["symbol"], start_us)
    details = {"rows": s.rows, "symbols": len(SYMBOLS), "commits": COMMITS, "proposed_spec": s.proposed_spec,
               "reasons": s.reasons, "window": s.window,
               "files_before": before[0], "bytes_before": before[1], "files_after": after[0], "bytes_after": after[1],
               "predicted_files_after": s.proposed.files, "predicted_bytes_after": s.proposed.bytes,
               "compacted_same_spec": {"files": s.compacted.files, "bytes": s.compacted.bytes},
               "suggest_seconds": planned, "build_seconds": built, "maintain_seconds": rewrite}
    return [
        Result("partitions_files", "files a 12 s replay window scans after apply + maintain --compact, vs predicted",
               after[0], s.proposed.files, "files", 1.0, details=details, also=after[0] == s.proposed.files),
        Result("partitions_files_drop", "files a 12 s replay window scans: after apply + compact vs as landed "
               f"({COMMITS} interleaved commits)", after[0], before[0], "files", 0.1, details=details),
        Result("partitions_bytes", "bytes a 12 s replay window scans: after apply + compact vs as landed",
               after[1], before[1], "bytes", 0.5, details=details),
        Result("partitions_bytes_predicted", "bytes a 12 s replay window scans after apply + compact, vs predicted",
               after[1], s.proposed.bytes, "bytes", 1.1, details=details),
    ]
