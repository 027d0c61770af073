"""History: backfill many simulated days of one busy symbol day by day, at DEFAULT settings, no rate limit.

Three claims, each against a baseline measured in the same run:
- the last day's ingest throughput is at least 0.8x the first day's (commits stay cheap as history grows);
- total metadata bytes (raw + unified) are at most 0.2x their data bytes;
- ingest plus unify sustain at least 50k trades/s (twice Binance's per-IP weight allowance of ~25k/s).

The symbol is Binance BTC-USDT's aggregate trades (``binance.agg_trades``: the endpoint that 25k trades/s
allowance is computed for, weight 4 per 1,000), unified into ``trades_unified`` through the plugin's optional
mapping, at the market's realistic intensity (about 1M trades a day) unless ``--intensity`` says otherwise.
Days come from the simulated market (``schemahub_core.sandbox``, 120 days by default). The sandbox runs as its own
process, as a venue is remote: its Python market generating and serving JSON pages does not share this
process's interpreter lock with SchemaHub. CPU seconds of this process (SchemaHub's own work, the sandbox's not
included) are recorded beside the wall times, which other work on a shared machine skews.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

from schemahub_core.apps.pipeline import run_ingest, run_unify
from schemahub_core.framework.config import Settings, default_catalog
from schemahub_core.framework.registry import get_registry
from schemahub_core.sandbox import REALISTIC_INTENSITY
from schemahub_core.sandbox.market import MARKET_END, MARKET_START

from .harness import Result

DAYS = 30
BINANCE_PER_IP = 25_000  # trades/s Binance's 6000 weight/min allows one IP (aggTrades: weight 4 per 1000)
NO_LIMIT = "1000000000/1"
T = TypeVar("T")


def _bytes(home: Path, part: str) -> int:
    return sum(p.stat().st_size for p in (home / "warehouse").rglob("*") if p.is_file() and f"/{part}/" in str(p))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sandbox(port: int, intensity: float) -> subprocess.Popen:
    """The sandbox in its own process; returns once it answers."""
    env = {**os.environ, "SCHEMAHUB_LOAD_PLUGINS": "binance"}
    proc = subprocess.Popen([sys.executable, "-m", "schemahub_core", "sandbox", "--port", str(port),
                             "--intensity", f"{intensity:g}", "--rate-limit", f"binance={NO_LIMIT}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sandbox/stats", timeout=5) as response:
                json.load(response)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError("the sandbox process exited at startup") from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the sandbox did not answer within 30 s")


def _timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    """``fn()``, its wall seconds and this process's CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def run(quick: bool, workdir: Path, intensity: float | None = None) -> list[Result]:
    from schemahub_binance import MAPPINGS

    intensity = intensity or REALISTIC_INTENSITY
    days = min(2 if quick else DAYS, (MARKET_END - MARKET_START).days)
    first_day = MARKET_END - timedelta(days=days)
    registry = get_registry()
    home = workdir / "home"
    mappings = home / "mappings"
    mappings.mkdir(parents=True)
    shutil.copy(MAPPINGS / "optional" / "agg_trades_unified.yaml", mappings)  # aggregates -> trades_unified
    per_day: list[dict] = []
    port = _free_port()
    sandbox = _sandbox(port, intensity)
    try:
        settings = Settings(home=home, catalog=default_catalog(home), mappings_dir=mappings,
                            connectors={"binance": {"base_url": f"http://127.0.0.1:{port}/binance",
                                                    "rate_limit": NO_LIMIT}})
        for i in range(days):
            since = first_day + timedelta(days=i)
            (stats,), ingest_s, ingest_cpu = _timed(lambda since=since: run_ingest(
                settings, registry, ["binance.agg_trades"], symbols=["BTC-USDT"], since=since,
                until=since + timedelta(days=1)))
            if stats.error:
                raise RuntimeError(stats.error)
            unified, unify_s, unify_cpu = _timed(lambda: run_unify(settings, registry, "trades_unified"))
            if unified.error:
                raise RuntimeError(unified.error)
            per_day.append({"day": since.date().isoformat(), "trades": stats.landed, "commits": stats.commits,
                            "ingest_s": round(ingest_s, 2), "ingest_cpu_s": round(ingest_cpu, 2),
                            "unify_s": round(unify_s, 2), "unify_cpu_s": round(unify_cpu, 2),
                            "unified": unified.unified, "load": round(os.getloadavg()[0], 1)})
            print(f"  {per_day[-1]}", flush=True)
    finally:
        sandbox.kill()
        sandbox.wait()
    first, last = per_day[0], per_day[-1]
    first_rate, last_rate = first["trades"] / first["ingest_s"], last["trades"] / last["ingest_s"]
    trades = sum(d["trades"] for d in per_day)
    seconds = sum(d["ingest_s"] + d["unify_s"] for d in per_day)
    cpu = sum(d["ingest_cpu_s"] + d["unify_cpu_s"] for d in per_day)
    metadata, data = _bytes(home, "metadata"), _bytes(home, "data")
    details = {"days": days, "intensity": intensity, "stream": "binance.agg_trades", "per_day": per_day,
               "metadata_bytes": metadata, "data_bytes": data, "trades": trades,
               "ingest_cpu_rate_last_vs_first": round((last["trades"] / last["ingest_cpu_s"])
                                                      / (first["trades"] / first["ingest_cpu_s"]), 3),
               "schemahub_cpu_trades_per_s": round(trades / cpu),
               "market": f"{MARKET_START.date()}..{MARKET_END.date()}", "settings": "defaults",
               "sandbox": "own process"}
    return [
        Result("history_throughput", f"last of {days} backfilled days ingests at >= 0.8x the first day's rate",
               last_rate, first_rate, "trades/s", 0.8, goal="min", details=details),
        Result("history_metadata", "metadata bytes <= 0.2x data bytes after the backfill", metadata, data, "B", 0.2),
        Result("history_rate", "ingest + unify >= 2x Binance's per-IP allowance (50k trades/s)",
               trades / seconds, BINANCE_PER_IP, "trades/s", 2.0, goal="min",
               details={"wall_s": round(seconds, 1), "cpu_s": round(cpu, 1)}),
    ]
