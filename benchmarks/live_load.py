"""``schemahub live --land`` under load: a simulated venue's quote feed as fast as it pushes, for 60 s.

The feed is the sandbox's firehose (``schemahub_core.sandbox.firehose``): a dedicated process serving the
venue's WebSocket wire format from pre-serialised quotes, many frames per write, at ``--rate`` messages per
second (0: as fast as this process reads). This process runs what ``schemahub live --land`` runs
(``build_session`` with a ``Lander``), with the view rendered on every tick into a throwaway console.

Measured: messages the firehose sent and the feed read, quotes handed on, rows landed and committed, distinct
landing keys (exactly once: rows == distinct keys == quotes handed on, nothing pending at the end), RSS every
second (flat memory: the last quarter's peak against the peak of the second quarter), view refreshes per
second, and how often reading paused for landing (bounded memory). ``SCHEMAHUB_BENCH_TRACEMALLOC=1`` adds
the ten allocation sites that grew most between the first and the last quarter.

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
import tracemalloc
from pathlib import Path

import numpy as np
from rich.console import Console

from .harness import Result

TARGET = 50_000.0


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(workdir: Path, seconds: float, venue: str = "binance",
            symbols: tuple[str, ...] = ("BTC-USD", "ETH-USD"), rate: float = 0.0) -> dict:
    from schemahub_core.apps.live import build_session, render_board
    from schemahub_core.engine.catalog import open_catalog
    from schemahub_core.framework.config import Settings, default_catalog
    from schemahub_core.framework.registry import get_registry

    server = subprocess.Popen([sys.executable, "-m", "schemahub_core.sandbox.firehose", venue, "--rate", str(rate)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    traced = os.environ.get("SCHEMAHUB_BENCH_TRACEMALLOC") == "1"
    try:
        port = int(server.stdout.readline())  # type: ignore[union-attr]
        home = workdir / "home"
        catalog = open_catalog(Settings(home=home, catalog=default_catalog(home)))
        path = {"kraken": "/ws/v2", "coinbase": "/ws"}.get(venue, "")  # where the venue's WebSocket sits
        session = build_session(get_registry(), list(symbols), lambda name: {
            "base_url": f"http://127.0.0.1:{port}", "ws_url": f"ws://127.0.0.1:{port}{path}"},
            venues=[venue], land=(catalog, "schemahub"))
        view = Console(file=io.StringIO(), width=160)
        rss: list[tuple[float, float]] = []
        refreshes = [0]
        snapshots: list[tracemalloc.Snapshot] = []
        started = time.monotonic()

        def refresh() -> None:
            view.file = io.StringIO()
            view.print(render_board(session.board, lander=session.lander))
            refreshes[0] += 1
            now = time.monotonic() - started
            if not rss or now - rss[-1][0] >= 1.0:
                rss.append((round(now, 1), round(_rss_mb(), 1)))
                if traced and now >= (seconds / 4, seconds * 0.9, float("inf"))[len(snapshots)]:
                    snapshots.append(tracemalloc.take_snapshot())

        if traced:
            tracemalloc.start(5)
        asyncio.run(session.run(seconds, refresh=refresh))
        elapsed = time.monotonic() - started
        server.stdin.close()  # type: ignore[union-attr]
        sent = int(server.stdout.readline())  # type: ignore[union-attr]
    finally:
        server.kill()
        server.wait()
    feed = session.feeds[0].feed
    lander = session.lander
    assert lander is not None
    raw = catalog.load_table(("schemahub", f"raw_{venue}_quotes")).scan().to_arrow()
    key = [c for c in ("symbol", "pair", "product_id") if c in raw.column_names][0]
    distinct = raw.group_by([key, "time"]).aggregate([]).num_rows
    quotes = sum(session.received.values())
    mb = [m for _, m in rss]
    quarter = max(1, len(mb) // 4)
    out = {
        "seconds": round(elapsed, 2), "venue": venue, "symbols": list(symbols), "rate_asked": rate,
        "sandbox_sent": sent, "feed_read": feed.messages, "in_flight_at_stop": sent - feed.messages,
        "repeats_dropped": feed.repeats, "bad_messages": feed.bad_messages, "quotes": quotes,
        "received_by_lander": lander.received, "landed": lander.landed, "rows_in_table": raw.num_rows,
        "distinct_keys": distinct, "commits": lander.commits, "pending_at_end": lander.pending(),
        "read_per_s": round(feed.messages / elapsed), "landed_per_s": round(lander.landed / elapsed),
        "reading_paused_for_landing": session.paused,
        "rss_mb_second_quarter_max": max(mb[quarter:2 * quarter]) if len(mb) >= 4 else None,
        "rss_mb_last_quarter_max": max(mb[-quarter:]) if mb else None,
        "rss_mb_every_5s": [m for t, m in rss if int(t) % 5 == 0],
        "refreshes_per_s": round(refreshes[0] / elapsed, 1), "errors": session.errors[-3:],
        "reconnects": feed.connects - 1,
    }
    if traced and len(snapshots) == 2:
        grown = snapshots[1].compare_to(snapshots[0], "lineno")[:10]
        out["tracemalloc_growth"] = [f"{s.size_diff / 2**20:+.1f} MB {s.traceback}" for s in grown]
    return out


def client_capacity(workdir: Path, n: int = 200_000, per_read: int = 500) -> dict:
    """What the receiving side does per message, without a socket: parse a read's messages at once, drop
    repeats, update the board, queue for landing; then land them all. The ceiling of ``live --land`` in this
    process, whatever a feed could push."""
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
    for k in range(0, n, per_read):
        chunk = messages[k:k + per_read]
        batch = feed.drop_repeats(feed.parse_batch(chunk, feed._receive_times(len(chunk))))
        lander.add_batch("binance", batch)
        board.update_batch("binance", batch)
    handled = time.perf_counter() - started
    started = time.perf_counter()
    lander.flush()
    landed = time.perf_counter() - started
    assert lander.landed == n, lander.summary()
    return {"messages": n, "per_read": per_read, "handle_per_s": round(n / handled),
            "land_per_s": round(n / landed), "end_to_end_per_s": round(n / (handled + landed))}


def run(quick: bool, workdir: Path) -> Result:
    d = measure(workdir, 5.0 if quick else 60.0)
    d["client_capacity"] = client_capacity(workdir, 20_000 if quick else 200_000)
    exact = d["landed"] == d["rows_in_table"] == d["distinct_keys"] == d["quotes"] and d["pending_at_end"] == 0
    flat = d["rss_mb_last_quarter_max"] is not None and d["rss_mb_second_quarter_max"] is not None and \
        d["rss_mb_last_quarter_max"] <= 1.15 * d["rss_mb_second_quarter_max"]
    return Result("live_load", "live --land from the sandbox: messages read per second (exactly once, flat memory)",
                  float(d["read_per_s"]), TARGET, "msg/s", 1.0, goal="min", details=d,
                  also=exact and flat and d["refreshes_per_s"] >= 4)


if __name__ == "__main__":  # python -m benchmarks.live_load [seconds [rate [venue]]] | capacity
    import tempfile

    _ = np  # numpy is what the feed's batches are cut with; imported here so its import is not timed
    with tempfile.TemporaryDirectory() as tmp:
        if sys.argv[1:] == ["capacity"]:
            print(json.dumps(client_capacity(Path(tmp)), indent=2))
        else:
            print(json.dumps(measure(Path(tmp), float(sys.argv[1]) if len(sys.argv) > 1 else 60.0,
                                     rate=float(sys.argv[2]) if len(sys.argv) > 2 else 0.0,
                                     venue=sys.argv[3] if len(sys.argv) > 3 else "binance"), indent=2))
