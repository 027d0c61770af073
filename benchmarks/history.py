"""History: backfill many simulated days of one busy symbol day by day, at DEFAULT settings, no rate limit.

Three claims, each against a baseline measured in the same run:
- the last day's ingest throughput is at least 0.8x the first day's (commits stay cheap as history grows);
- total metadata bytes (raw + unified) are at most 0.2x their data bytes;
- ingest plus unify sustain at least 50k trades/s (twice Binance's per-IP weight allowance of ~25k/s).

Days come from the simulated market (``schemahub_core.sandbox``): up to ``DAYS`` of them, as many as it spans.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

from schemahub_core.apps.pipeline import run_ingest, run_unify
from schemahub_core.framework.config import Settings, default_catalog
from schemahub_core.framework.registry import get_registry
from schemahub_core.sandbox import Limit, Sandbox, SandboxConfig
from schemahub_core.sandbox.market import MARKET_END, MARKET_START

from .harness import Result

DAYS = 30
BINANCE_PER_IP = 25_000  # trades/s Binance's 6000 weight/min allows one IP (aggTrades: weight 4 per 1000)


def _bytes(home: Path, part: str) -> int:
    return sum(p.stat().st_size for p in (home / "warehouse").rglob("*") if p.is_file() and f"/{part}/" in str(p))


def run(quick: bool, workdir: Path) -> list[Result]:
    days = min(2 if quick else DAYS, (MARKET_END - MARKET_START).days)
    first_day = MARKET_END - timedelta(days=days)
    registry = get_registry()
    home = workdir / "home"
    per_day: list[dict] = []
    with Sandbox(SandboxConfig.fast(binance=Limit(10_000_000, 1))) as sandbox:
        settings = Settings(home=home, catalog=default_catalog(home),
                            connectors={"binance": sandbox.connector_options("binance")})
        for i in range(days):
            since = first_day + timedelta(days=i)
            started = time.perf_counter()
            (stats,) = run_ingest(settings, registry, ["binance.trades"], symbols=["BTC-USDT"], since=since,
                                  until=since + timedelta(days=1))
            ingest_s = time.perf_counter() - started
            if stats.error:
                raise RuntimeError(stats.error)
            started = time.perf_counter()
            unified = run_unify(settings, registry, "trades_unified")
            unify_s = time.perf_counter() - started
            per_day.append({"day": since.date().isoformat(), "trades": stats.landed, "commits": stats.commits,
                            "ingest_s": round(ingest_s, 2), "unify_s": round(unify_s, 2),
                            "unified": unified.unified})
    first, last = per_day[0], per_day[-1]
    first_rate, last_rate = first["trades"] / first["ingest_s"], last["trades"] / last["ingest_s"]
    trades = sum(d["trades"] for d in per_day)
    seconds = sum(d["ingest_s"] + d["unify_s"] for d in per_day)
    metadata, data = _bytes(home, "metadata"), _bytes(home, "data")
    details = {"days": days, "per_day": per_day, "metadata_bytes": metadata, "data_bytes": data,
               "market": f"{MARKET_START.date()}..{MARKET_END.date()}", "settings": "defaults"}
    return [
        Result("history_throughput", f"last of {days} backfilled days ingests at >= 0.8x the first day's rate",
               last_rate, first_rate, "trades/s", 0.8, goal="min", details=details),
        Result("history_metadata", "metadata bytes <= 0.2x data bytes after the backfill", metadata, data, "B", 0.2),
        Result("history_rate", "ingest + unify >= 2x Binance's per-IP allowance (50k trades/s)",
               trades / seconds, BINANCE_PER_IP, "trades/s", 2.0, goal="min"),
    ]
