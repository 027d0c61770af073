"""Replay latency: the 12-second window query on a table holding 1 day vs 90 days.

The table grows by one append per day, as daily ingestion makes it; the window
query filters on symbol and time, so pyiceberg prunes to the one day partition.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from schemahub_core.apps.replay import ReplayRequest, load_replay

from .harness import Result, median_seconds
from .warehouse import Warehouse, fresh_warehouse
from .workload import START_MS, unified_days

AT = datetime.fromtimestamp(START_MS / 1000, UTC) + timedelta(hours=15, minutes=12, seconds=4)


def prepare(folder: Path, days: int, per_day: int) -> Warehouse:
    wh = fresh_warehouse(folder)
    # the event day first, then older days: the newest snapshots are not the ones the query needs
    for venue, symbol, seed in (("BINANCE", "BTC-USDT", 1), ("COINBASE", "BTC-USD", 2)):
        for i, day in enumerate(unified_days(days, per_day, exchange=venue, symbol=symbol, seed=seed,
                                             first_day_ms=START_MS - (days - 1) * 86_400_000)):
            if i == days - 1 or days == 1:
                continue
            wh.append("trades_unified", day)
        wh.append("trades_unified", unified_days(1, per_day, exchange=venue, symbol=symbol, seed=seed,
                                                 first_id=10**9)[0])
    return wh


def run(quick: bool, workdir: Path) -> list[Result]:
    per_day = 20_000 if quick else 50_000
    request = ReplayRequest(symbol="BTC-USD", start=AT, window=timedelta(seconds=12))
    timings = {}
    for days in (1, 90):
        wh = prepare(workdir / f"days{days}", days, per_day)
        replay = load_replay(wh.catalog, wh.namespace, request)
        assert replay.trades.num_rows > 0 and replay.files_scanned == 2, replay.files_scanned
        timings[days], _ = median_seconds(lambda wh=wh: load_replay(wh.catalog, wh.namespace, request), runs=5)
    details = {"rows_per_day_per_venue": per_day, "venues": 2, "one_day_s": timings[1], "ninety_days_s": timings[90]}
    return [Result("replay_latency", "12 s replay window query: table of 90 days vs 1 day", timings[90], timings[1],
                   "s", 1.5, details=details)]
