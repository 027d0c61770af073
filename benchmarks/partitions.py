"""Partition planning: files and bytes a replay window scans drop as ``partitions suggest`` predicts.

One busy day of 50 symbols (one of them holding 30 % of the trades), landed the way unify lands it: a commit per
two-hour slice, each file holding every symbol. At default settings ``partitions suggest`` proposes a spec; the
benchmark applies it, compacts (``maintain --compact`` moves old files into the new spec) and plans the same 12 s
replay window again. The claims: measured files scanned after == predicted, and bytes scanned drop against the
layout routine maintenance leaves with today's spec (one compacted file per day). The uncompacted time slices
are reported too: for one window they can read less than any compacted layout (the details say how much).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemahub_core.apps.partitions import TARGET_FILE_BYTES, apply, suggest
from schemahub_core.apps.replay import parse_instant, window_scan
from schemahub_core.engine.maintenance import compact

from .harness import Result
from .warehouse import fresh_warehouse
from .workload import DAY_MS, START_MS

SYMBOLS = [f"A{i:02d}-USDT" for i in range(50)]


def _slice(rng: np.random.Generator, n: int, start_ms: int, span_ms: int, first_id: int) -> pa.Table:
    weights = np.full(len(SYMBOLS), 0.7 / (len(SYMBOLS) - 1))
    weights[0] = 0.3
    sym = np.array(SYMBOLS, dtype=object)[rng.choice(len(SYMBOLS), n, p=weights)]
    ts_us = (start_ms + np.sort(rng.integers(0, span_ms, n))) * 1000
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
    slices = 12
    started = time.perf_counter()
    for k in range(slices):
        wh.append("trades_unified", _slice(rng, per_day // slices, START_MS + k * DAY_MS // slices, DAY_MS // slices,
                                           1 + k * per_day))
    built = time.perf_counter() - started
    table = wh.table("trades_unified")
    started = time.perf_counter()
    s = suggest(table, target_file_bytes=target)
    planned = time.perf_counter() - started
    assert s.changed and s.proposed is not None, s.reasons
    start_us = int(parse_instant(s.window["start"]).timestamp() * 1_000_000)
    before = _scanned(table, s.window["symbol"], start_us)
    assert before == (s.now.files, s.now.bytes)
    apply(table, s)
    compact(wh.catalog, (wh.namespace, "trades_unified"))
    after = _scanned(wh.table("trades_unified"), s.window["symbol"], start_us)
    details = {"rows": s.rows, "symbols": len(SYMBOLS), "proposed_spec": s.proposed_spec, "reasons": s.reasons,
               "files_before": before[0], "bytes_before": before[1], "files_after": after[0], "bytes_after": after[1],
               "predicted_files_after": s.proposed.files, "predicted_bytes_after": s.proposed.bytes,
               "compacted_same_spec": {"files": s.compacted.files, "bytes": s.compacted.bytes},
               "suggest_seconds": planned, "build_seconds": built}
    return [
        Result("partitions_files", "files a 12 s replay window scans after apply + compact, vs predicted",
               after[0], s.proposed.files, "files", 1.0, details=details),
        Result("partitions_bytes", "bytes a 12 s replay window scans: proposed spec compacted vs today's spec "
               "compacted (what maintain --compact leaves)", after[1], s.compacted.bytes, "bytes", 0.5,
               details=details),
    ]
