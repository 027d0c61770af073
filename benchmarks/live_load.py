"""``schemahub live --land`` under load: the sandbox's quote feed as fast as it pushes, for 60 s.

The simulated venues run in a child process (its own interpreter) with the feed's push interval at 0, so it
sends as fast as it can; this process runs what ``schemahub live --land`` runs (``build_session`` with a
``Lander``), with the view rendered on every tick into a throwaway console. Measured: messages the sandbox
sent, messages the feed read (quotes plus repeats the feed drops by update id), quotes handed on, rows
landed and committed, distinct landing keys (exactly once: rows == distinct keys == quotes handed on), RSS
every second (flat memory: the last quarter vs the second) and view refreshes per second.

Reference (issue 20): Redpanda Connect's Iceberg output was measured at about 34.8k msg/s. Target: 50k msg/s.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from .harness import Result

TARGET = 50_000.0
SERVER = """
import sys
from schemahub_core.sandbox import Sandbox, SandboxConfig, venue_apps
apps = {n: c for n, c in venue_apps().items() if n == sys.argv[1]}
server = Sandbox(SandboxConfig.fast(venues=apps)).start()
for venue in server.venues.values():
    venue.feed.interval = 0.0  # push as fast as the server can
print(server.port, flush=True)
sys.stdin.read()
print(server.venues[sys.argv[1]].feed.stats.messages, flush=True)
"""


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(workdir: Path, seconds: float, venue: str = "binance",
            symbols: tuple[str, ...] = ("BTC-USD", "ETH-USD")) -> dict:
    from schemahub_core.apps.live import build_session, render_board
    from schemahub_core.engine.catalog import open_catalog
    from schemahub_core.framework.config import Settings, default_catalog
    from schemahub_core.framework.registry import get_registry

    server = subprocess.Popen([sys.executable, "-c", SERVER, venue], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        port = int(server.stdout.readline())
        home = workdir / "home"
        catalog = open_catalog(Settings(home=home, catalog=default_catalog(home)))
        ws = {"binance": "", "coinbase": "", "kraken": "/ws/v2"}.get(venue, "")
        session = build_session(get_registry(), list(symbols), lambda name: {
            "base_url": f"http://127.0.0.1:{port}/{name}", "ws_url": f"ws://127.0.0.1:{port}/{name}{ws}"},
            venues=[venue], land=(catalog, "schemahub"))
        view = Console(file=io.StringIO(), width=160)
        rss: list[float] = []
        refreshes = [0]
        last_sample = [0.0]

        def refresh() -> None:
            view.file = io.StringIO()
            view.print(render_board(session.board, lander=session.lander))
            refreshes[0] += 1
            now = time.monotonic()
            if now - last_sample[0] >= 1.0:
                rss.append(_rss_mb())
                last_sample[0] = now

        started = time.monotonic()
        asyncio.run(session.run(seconds, refresh=refresh))
        elapsed = time.monotonic() - started
        server.stdin.close()
        sent = int(server.stdout.readline())
    finally:
        server.kill()
        server.wait()
    feed = session.feeds[0].feed
    lander = session.lander
    raw = catalog.load_table(("schemahub", f"raw_{venue}_quotes")).scan().to_arrow()
    key = [c for c in ("symbol", "pair", "product_id") if c in raw.column_names][0]
    distinct = raw.group_by([key, "time"]).aggregate([]).num_rows
    quarter = max(1, len(rss) // 4)
    return {
        "seconds": round(elapsed, 2), "venue": venue, "symbols": list(symbols),
        "sandbox_sent": sent, "feed_read": sum(session.received.values()) + feed.repeats,
        "repeats_dropped": feed.repeats, "quotes": sum(session.received.values()),
        "received_by_lander": lander.received, "landed": lander.landed, "rows_in_table": raw.num_rows,
        "distinct_keys": distinct, "commits": lander.commits, "pending_at_end": lander.pending(),
        "read_per_s": round((sum(session.received.values()) + feed.repeats) / elapsed),
        "landed_per_s": round(lander.landed / elapsed),
        "rss_mb_second": round(rss[1] if len(rss) > 1 else rss[0], 1) if rss else None,
        "rss_mb_last_quarter_max": round(max(rss[-quarter:]), 1) if rss else None,
        "refreshes_per_s": round(refreshes[0] / elapsed, 1), "errors": session.errors[-3:],
    }


def client_capacity(workdir: Path, n: int = 200_000) -> dict:
    """What the receiving side does per message, without a socket: parse, drop repeats, board, lander; then
    land them all. The ceiling of ``live --land`` in this process, whatever a feed could push."""
    from schemahub_core.apps.live import Board, Lander, plan_markets
    from schemahub_core.engine.catalog import open_catalog
    from schemahub_core.framework.config import Settings, default_catalog
    from schemahub_core.framework.registry import get_registry

    registry = get_registry()
    cls = registry.connectors["binance"]
    connector = cls({})
    feed = connector.live_feed(["BTC-USDT"])
    board = Board(plan_markets({"binance": cls}, ["BTC-USD"]))
    home = workdir / "capacity"
    lander = Lander(open_catalog(Settings(home=home, catalog=default_catalog(home))), "schemahub", registry,
                    {"binance": connector}, {"binance": "quotes"})
    messages = [json.dumps({"stream": "btcusdt@bookTicker", "data": {
        "u": i, "s": "BTCUSDT", "b": f"{45000 + i % 100:.2f}", "B": "1.5", "a": f"{45001 + i % 100:.2f}", "A": "2.0"}})
        for i in range(1, n + 1)]
    started = time.perf_counter()
    for text in messages:
        for quote in feed.parse(text, feed._receive_time()):
            if not feed._is_repeat(quote):
                lander.add("binance", quote)
                board.update("binance", quote)
    handled = time.perf_counter() - started
    started = time.perf_counter()
    lander.flush()
    landed = time.perf_counter() - started
    assert lander.landed == n, lander.summary()
    return {"messages": n, "handle_per_s": round(n / handled), "land_per_s": round(n / landed),
            "end_to_end_per_s": round(n / (handled + landed))}


def run(quick: bool, workdir: Path) -> Result:
    d = measure(workdir, 5.0 if quick else 60.0)
    d["client_capacity"] = client_capacity(workdir, 20_000 if quick else 200_000)
    exact = d["landed"] == d["rows_in_table"] == d["distinct_keys"] == d["quotes"] and d["pending_at_end"] == 0
    flat = d["rss_mb_last_quarter_max"] is not None and d["rss_mb_last_quarter_max"] <= 1.25 * d["rss_mb_second"]
    return Result("live_load", "live --land from the sandbox: messages read per second (exactly once, flat memory)",
                  float(d["read_per_s"]), TARGET, "msg/s", 1.0, goal="min", details=d,
                  also=exact and flat and d["refreshes_per_s"] >= 4)


if __name__ == "__main__":  # python -m benchmarks.live_load [seconds | capacity]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        if sys.argv[1:] == ["capacity"]:
            print(json.dumps(client_capacity(Path(tmp)), indent=2))
        else:
            print(json.dumps(measure(Path(tmp), float(sys.argv[1]) if len(sys.argv) > 1 else 60.0), indent=2))
