"""Unify scales with the delta: 100k new trades into a target of 1M vs 10M rows.

The target holds daily partitions of equal density (the table grows by days,
as a real one does); the new trades fall on its newest day and the next. Unify
reads only the new raw appends and the key columns of the affected days, so
its time should not depend on how many days the table already holds.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from schemahub_core.engine.state import source_key
from schemahub_core.engine.unify import unify

from .harness import Result, median_seconds
from .warehouse import Warehouse, fresh_warehouse
from .workload import DAY_MS, START_MS, raw_binance, unified_days


def prepare(folder: Path, days: int, per_day: int, delta: int) -> tuple[Warehouse, int]:
    """A target of ``days * per_day`` rows that has consumed raw up to now, then ``delta`` new raw rows."""
    wh = fresh_warehouse(folder)
    seed_snapshot = wh.append("raw_binance_agg_trades", raw_binance(1, first_id=0, start_ms=START_MS))
    chunks = unified_days(days, per_day)
    for lo in range(0, days, 10):  # ten days per commit keeps setup quick; unify's reads are per partition
        batch = pa.concat_tables(chunks[lo:lo + 10])
        wh.append("trades_unified", batch, {source_key("raw_binance_agg_trades"): str(seed_snapshot)})
    newest_day_ms = START_MS + (days - 1) * DAY_MS
    new = raw_binance(delta, first_id=days * per_day + 1, start_ms=newest_day_ms + DAY_MS // 2, span_ms=DAY_MS)
    wh.append("raw_binance_agg_trades", new)
    return wh, wh.table("trades_unified").current_snapshot().snapshot_id


def timed_unify(wh: Warehouse, before: int) -> float:
    mapping = wh.mapping("binance.agg_trades")

    def reset() -> None:
        wh.table("trades_unified").manage_snapshots().set_current_snapshot(before).commit()

    def once() -> None:
        stats = unify(wh.catalog, wh.namespace, wh.registry, "trades_unified", [mapping])
        if stats.error or not stats.unified:
            raise RuntimeError(f"unify did nothing: {stats}")

    seconds, _ = median_seconds(once, setup=reset)
    return seconds


def run(quick: bool, workdir: Path) -> list[Result]:
    per_day, delta = (10_000, 10_000) if quick else (100_000, 100_000)
    small_days, large_days = 10, 100
    small, before_small = prepare(workdir / "small", small_days, per_day, delta)
    large, before_large = prepare(workdir / "large", large_days, per_day, delta)
    t_small, t_large = timed_unify(small, before_small), timed_unify(large, before_large)
    details = {"delta": delta, "small_rows": small_days * per_day, "large_rows": large_days * per_day,
               "small_s": t_small, "large_s": t_large}
    return [Result("unify_delta", f"unify {delta:,} new trades into {large_days * per_day:,} vs "
                                  f"{small_days * per_day:,} target rows", t_large, t_small, "s", 1.3,
                   details=details)]
