"""Rate-limit use: ingest from the sandbox at the venues' real limits; share of the allowed weight used, and 429s.

The sandbox runs as its own process with Binance 6000 weight/min, Coinbase
10 req/s (bursts 15) and Kraken 1 req/s; one `schemahub run ingest` process per
venue pages through days of history. Pages are 100 rows so that the sandbox's
pure-Python market, not the client, is never the bottleneck (a venue's request
weight does not depend on the page size).

Binance counts weight in fixed windows aligned to the epoch minute, so a client
may rightly spend most of a minute's budget in its first seconds: its share is
measured over whole, aligned windows (two minutes at full size). ``--quick``
scales Binance to 1000 weight per 10 s (the client is told the same limit).
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from schemahub_core.sandbox import Limit, venue_apps

from .harness import Result

SYMBOLS = {"binance": "BTC-USDT", "coinbase": "BTC-USD", "kraken": "BTC-USD"}
SCHEMAHUB = [sys.executable, "-m", "schemahub_core"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stats(base: str) -> dict:
    with urllib.request.urlopen(f"{base}/_sandbox/stats", timeout=10) as response:
        return json.load(response)


def run(quick: bool, workdir: Path) -> list[Result]:
    real = {name: app.real_limit for name, app in venue_apps().items()}
    limits = {**real, "binance": Limit(1000, 10)} if quick else real
    windows = 1 if quick else 2
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "SCHEMAHUB_HOME": str(workdir / "home"), "SCHEMAHUB_LOAD_PLUGINS": ",".join(SYMBOLS)}
    for venue in SYMBOLS:
        env[f"SCHEMAHUB_{venue.upper()}_BASE_URL"] = f"{base}/{venue}"
        env[f"SCHEMAHUB_{venue.upper()}_PAGE_SIZE"] = "100"
        env[f"SCHEMAHUB_{venue.upper()}_RATE_LIMIT"] = limits[venue].spec()
    overrides = [arg for venue in SYMBOLS for arg in ("--rate-limit", f"{venue}={limits[venue].spec()}")]
    sandbox = subprocess.Popen([*SCHEMAHUB, "sandbox", "--port", str(port), *overrides], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ingests: list[subprocess.Popen] = []
    try:
        for _ in range(100):
            try:
                _stats(base)
                break
            except OSError:
                time.sleep(0.1)
        subprocess.run([*SCHEMAHUB, "init"], env=env, check=True, capture_output=True)
        for venue, symbol in SYMBOLS.items():
            ingests.append(subprocess.Popen(
                [*SCHEMAHUB, "run", "ingest", f"{venue}.trades", "--symbols", symbol, "--since",
                 "2024-02-07T00:00:00Z", "--pages-per-commit", "50"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        window = limits["binance"].window
        start = (time.time() // window + 2) * window  # the current, partial window is the warm-up
        time.sleep(start - time.time() + 0.02)
        before, t0 = _stats(base), time.monotonic()
        samples = [before]  # one at each window's end: a short window shows where the rate went
        for w in range(1, windows + 1):
            time.sleep(start + w * window - time.time() - 0.02)  # just before the next window opens
            samples.append(_stats(base))
        after, t1 = samples[-1], time.monotonic()
        finished = [venue for venue, p in zip(SYMBOLS, ingests, strict=True) if p.poll() is not None]
    finally:
        for p in [*ingests, sandbox]:
            p.kill()
            p.wait()
    results = []
    for venue in SYMBOLS:
        limit = limits[venue]
        allowed = limit.limit * (t1 - t0) / limit.window
        used = after[venue]["weight"] - before[venue]["weight"]
        statuses = {code: after[venue]["statuses"].get(code, 0) for code in ("429", "418")}
        details = {"seconds": round(t1 - t0, 2), "weight_used": used, "weight_allowed": round(allowed, 1),
                   "requests": after[venue]["requests"] - before[venue]["requests"], "statuses_total": statuses,
                   "ran_out_of_data": venue in finished,
                   "weight_per_window": [b[venue]["weight"] - a[venue]["weight"]
                                         for a, b in itertools.pairwise(samples)]}
        results.append(Result(f"rate_limit_{venue}",
                              f"{venue} ({limit.spec()} limit): weight used / allowed; 429s: {statuses['429']}, "
                              f"418s: {statuses['418']}", used, allowed, "weight", 0.9, goal="min", details=details,
                              also=not any(statuses.values()) and venue not in finished))
    return results
