"""schemahub live against the sandbox's WebSocket feeds: real sockets on 127.0.0.1, no mocks.

Waits are event-driven (``LiveSession.wait_for`` re-checks on every quote and status change) with
generous timeouts; nothing sleeps on the assumption that the machine is fast.
"""

from __future__ import annotations

import asyncio
import json
import statistics
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import requests
from conftest import run_cli
from rich.console import Console

from schemahub_core.apps.live import (
    Board,
    Discrepancy,
    Lander,
    LiveSession,
    Market,
    build_session,
    plan_markets,
    render_board,
)
from schemahub_core.apps.pipeline import run_unify
from schemahub_core.engine.catalog import open_catalog
from schemahub_core.engine.state import read_cursor
from schemahub_core.framework.config import load_settings
from schemahub_core.framework.livefeed import LiveQuote
from schemahub_core.framework.registry import get_registry
from schemahub_core.sandbox import Sandbox
from schemahub_core.testing.sandbox import _clear_sandbox_faults, sandbox  # noqa: F401

TIMEOUT = 20.0  # generous: event-driven waits finish as soon as their condition holds
ASSETS = {"binance": "BTC", "coinbase": "BTC", "kraken": "BTC"}


def _session(sandbox: Sandbox, **kwargs) -> LiveSession:  # noqa: F811
    return build_session(get_registry(), ["BTC-USD"], sandbox.connector_options, **kwargs)


def _all_quoted(session: LiveSession) -> bool:
    return all(r.quote is not None and r.connected for r in session.board.rows.values())


def _more_quotes(session: LiveSession, n: int):
    """A predicate: every venue has delivered ``n`` more quotes than now."""
    start = dict(session.received)
    return lambda: all(session.received.get(s, 0) >= start.get(s, 0) + n for s in ASSETS)


def _mid(sandbox: Sandbox, venue: str, t_ns: int) -> float:  # noqa: F811
    q = sandbox.venues[venue].feed.quote(ASSETS[venue], t_ns)
    return (q.bid + q.ask) / 2


def test_btc_usd_compares_binance_usdt():
    markets = plan_markets(get_registry().connectors, ["BTC-USD"])
    assert {(m.source, m.symbol) for m in markets} >= {("binance", "BTC-USDT"), ("coinbase", "BTC-USD"),
                                                     ("kraken", "BTC-USD")}
    assert {m.group for m in markets} == {"BTC-USD"}


def test_scripted_divergence_is_one_event_with_its_venue_peak_and_duration(sandbox):  # noqa: F811
    session = _session(sandbox, threshold_bps=5.0)
    events: list[tuple[str, dict]] = []
    session.board.on_event = lambda kind, e: events.append((kind, e.as_dict(kind)))
    scripted = {}

    async def script(s: LiveSession) -> None:
        await s.wait_for(lambda: _all_quoted(s), TIMEOUT)
        scripted["d"] = sandbox.venues["coinbase"].feed.diverge(20.0, 300)
        await s.wait_for(lambda: any(kind == "end" for kind, _ in events), TIMEOUT)
        await s.wait_for(_more_quotes(s, 10), TIMEOUT)  # time for a spurious second event to show up

    asyncio.run(session.run(60, until=script))
    d = scripted["d"]
    middle = d.start_ns + (d.end_ns - d.start_ns) // 2
    mids = {v: _mid(sandbox, v, middle) for v in ASSETS}
    median = statistics.median(mids.values())
    expected_peak = (mids["coinbase"] - median) / median * 1e4
    ends = [e for kind, e in events if kind == "end"]
    assert [kind for kind, _ in events] == ["start", "end"], events
    (event,) = ends
    assert event["exchange"] == "COINBASE" and event["group"] == "BTC-USD" and event["reason"] == "converged"
    assert abs(event["peak_bps"] - expected_peak) <= 0.5, (event["peak_bps"], expected_peak)
    assert abs(event["duration_ms"] - 300) <= 50, event["duration_ms"]


def test_a_dropped_feed_shows_stale_reconnects_and_the_run_goes_on(sandbox):  # noqa: F811
    session = _session(sandbox)
    seen: dict[str, object] = {}

    async def script(s: LiveSession) -> None:
        await s.wait_for(lambda: _all_quoted(s), TIMEOUT)
        before = dict(s.received)
        assert sandbox.venues["binance"].feed.drop(refuse_ms=400) >= 1  # (+ any a previous test left closing)
        row = s.board.rows[("BTC-USD", "binance")]
        await s.wait_for(lambda: not row.connected, TIMEOUT)
        console = Console(record=True, width=160)
        console.print(render_board(s.board))
        seen["stale_view"] = console.export_text()
        seen["stale_deviation"] = row.deviation_bps
        # the others go on during the outage, and binance comes back with fresh quotes
        await s.wait_for(lambda: row.connected and s.received["binance"] > before["binance"] + 3, TIMEOUT)
        seen["others"] = {v: s.received[v] - before[v] for v in ("coinbase", "kraken")}
        await s.wait_for(_more_quotes(s, 3), TIMEOUT)

    asyncio.run(session.run(60, until=script))
    binance_line = next(line for line in str(seen["stale_view"]).splitlines() if "BINANCE" in line)
    assert "stale (reconnecting)" in binance_line
    assert seen["stale_deviation"] is None  # a stale venue is out of the median
    feed = next(p.feed for p in session.feeds if p.source == "binance")
    assert (feed.connects, feed.drops) == (2, 1)
    assert all(n > 0 for n in seen["others"].values()), seen["others"]  # type: ignore[union-attr]
    assert sandbox.venues["binance"].feed.stats.refused >= 1  # reconnect attempts met the outage: backoff
    assert session.errors == []


def test_landed_quotes_equal_received_quotes_across_a_forced_reconnect(sandbox, home):  # noqa: F811
    settings = load_settings()
    catalog = open_catalog(settings)
    session = _session(sandbox, land=(catalog, settings.namespace))
    session.flush_every = 0.25
    received: list[tuple[str, LiveQuote]] = []
    session.on_quote = lambda source, q: received.append((source, q))

    async def script(s: LiveSession) -> None:
        assert s.lander is not None
        await s.wait_for(lambda: _all_quoted(s) and s.lander.commits >= 3, TIMEOUT)
        sandbox.venues["coinbase"].feed.drop(refuse_ms=200)
        sandbox.venues["kraken"].feed.drop()
        feeds = [p.feed for p in s.feeds if p.source in ("coinbase", "kraken")]
        await s.wait_for(lambda: all(f.drops == 1 and f.connected for f in feeds), TIMEOUT)
        commits, more = s.lander.commits, _more_quotes(s, 1)
        await s.wait_for(lambda: s.lander.commits >= commits + 3 and more(), TIMEOUT)

    asyncio.run(session.run(60, until=script))
    lander = session.lander
    assert lander is not None and lander.pending() == 0 and lander.last_error is None
    assert lander.received == lander.landed == len(received) and lander.dropped_batches == 0
    for source in ASSETS:
        table = catalog.load_table((settings.namespace, f"raw_{source}_quotes"))
        landed = Counter(table.scan(selected_fields=("_raw_payload",)).to_arrow().column(0).to_pylist())
        got = Counter(q.payload for src, q in received if src == source)
        assert max(landed.values()) == 1, f"{source}: a quote landed twice"
        assert landed == got, f"{source}: landed != received"
        mine = [q for src, q in received if src == source]
        assert read_cursor(table, "quotes", mine[-1].symbol) == mine[-1].cursor
    feeds = {p.source: p.feed for p in session.feeds}
    assert feeds["coinbase"].drops == feeds["kraken"].drops == 1
    stats = run_unify(settings, get_registry(), "quotes_unified", catalog=catalog)
    assert stats.error is None and stats.unified == len(received) and stats.deduplicated == 0


def test_a_landed_batch_offered_again_is_not_landed_twice(home):
    """As after a commit whose response was lost: the committed cursor names the last landed quote."""
    settings = load_settings()
    catalog = open_catalog(settings)
    registry = get_registry()
    connector = registry.connectors["binance"]({})
    lander = Lander(catalog, settings.namespace, registry, {"binance": connector}, {"binance": "quotes"})
    t0 = datetime(2026, 1, 2, tzinfo=UTC)

    def quote(i: int) -> LiveQuote:
        at = t0 + timedelta(microseconds=i)
        record = {"symbol": "BTCUSDT", "bidPrice": "1.5", "bidQty": "2", "askPrice": "1.6", "askQty": "3",
                  "time": 1_767_312_000_000_000 + i}
        return LiveQuote("BINANCE", "BTC-USDT", "BTCUSDT", 1.5, 2.0, 1.6, 3.0, at, at, record, f'{{"u":{i}}}', i)

    first = [quote(i) for i in range(3)]
    for q in first:
        lander.add("binance", q)
    assert [s.landed for s in lander.flush()] == [3]
    for q in [*first, quote(3), quote(4)]:  # the first three again, as if their landing had not been seen
        lander.add("binance", q)
    assert [s.landed for s in lander.flush()] == [2] and lander.pending() == 0
    rows = catalog.load_table((settings.namespace, "raw_binance_quotes")).scan().to_arrow()
    assert sorted(rows.column("_raw_payload").to_pylist()) == [f'{{"u":{i}}}' for i in range(5)]


def test_sandbox_live_controls_over_http(sandbox):  # noqa: F811
    url = f"http://{sandbox.host}:{sandbox.port}/_sandbox/live"
    body = requests.post(url, json={"venue": "kraken", "diverge_bps": 12.5, "ms": 10}, timeout=10).json()
    assert body["kraken"]["divergences"][-1]["bps"] == 12.5
    assert requests.post(url, json={"venue": "nowhere", "drop": True}, timeout=10).status_code == 400


def test_live_view_renders_columns_and_values():
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    def quote(exchange: str, symbol: str, bid: float, ask: float) -> LiveQuote:
        return LiveQuote(exchange, symbol, symbol, bid, 1.0, ask, 2.0, now, now - timedelta(milliseconds=250),
                         {}, "{}")

    board = Board([Market("BTC-USD", "binance", "BTC-USDT"), Market("BTC-USD", "coinbase", "BTC-USD"),
                   Market("BTC-USD", "kraken", "BTC-USD")], threshold_bps=2.0)
    board.update("binance", quote("BINANCE", "BTC-USDT", 45009.5, 45010.5))  # mid 45010
    board.update("coinbase", quote("COINBASE", "BTC-USD", 44999.0, 45001.0))  # mid 45000 = the median
    board.update("kraken", quote("KRAKEN", "BTC-USD", 44994.0, 44996.0))  # mid 44995
    board.set_connected("kraken", "KRAKEN", False, now)
    console = Console(record=True, width=160)
    console.print(render_board(board, now))
    text = console.export_text()
    header = next(line for line in text.splitlines() if "symbol" in line)
    for column in ("symbol", "venue", "market", "bid", "ask", "mid", "spread bps", "dev bps", "age ms", "status"):
        assert column in header
    rows = {line.split()[3]: line for line in text.splitlines() if "BTC-USD" in line and "│" in line}
    # binance: mid 45,010.00, spread 1/45010 = 0.22 bps; kraken is out of the median, so it is (45010+45000)/2
    cells = {venue: [c.strip() for c in line.split("│")[1:-1]] for venue, line in rows.items()}
    assert cells["BINANCE"] == ["BTC-USD", "BINANCE", "BTC-USDT", "45,009.50", "45,010.50", "45,010.00", "0.22",
                                "+1.11", "250", "ok"]
    assert cells["KRAKEN"][7:] == ["", "250", "stale (reconnecting)"]
    # the event of the moment all three were live (median 45,000: binance +2.22 bps), closed on kraken's drop
    assert "BINANCE BTC-USDT +2.22 bps peak, 250 ms from 03:04:04.750 (converged)" in text
    assert "-1.11" in rows["COINBASE"] and "45,000.00" in rows["COINBASE"]
    assert "stale (reconnecting)" in rows["KRAKEN"] and "44,995.00" in rows["KRAKEN"]
    board.threshold_bps = 1.0
    board.evaluate("BTC-USD", now)
    console = Console(record=True, width=160)
    console.print(render_board(board, now))
    text = console.export_text()
    assert text.count("DISCREPANCY") == 2 and "BINANCE BTC-USDT +1.11 bps peak, since 03:04:05.000" in text
    assert isinstance(board.open[("BTC-USD", "binance")], Discrepancy)


def test_cli_live_lands_and_unify_normalizes(home):
    out = run_cli("live", "--symbols", "BTC-USD", "--sandbox", "--duration", "2s", "--land", "--json").stdout
    landing = json.loads(out.strip().splitlines()[-1])
    assert landing["event"] == "landing" and landing["received"] == landing["landed"] > 0
    assert landing["namespace"] == "schemahub_sandbox"  # simulated quotes never land among real data
    assert json.loads(run_cli("status", "--json").stdout) == {"sources": [], "targets": []}
    unified = json.loads(run_cli("run", "unify", "quotes_unified", "--json",
                                 env={"SCHEMAHUB_NAMESPACE": landing["namespace"]}).stdout)
    assert unified[0]["unified"] == landing["landed"]


@pytest.mark.parametrize("args, message", [
    (("--symbols", "BTC-USD", "--venues", "nasdaq"), "venue 'nasdaq' has no live feed"),
    (("--symbols", "BTCUSD"), "unknown symbol 'BTCUSD'"),
])
def test_cli_live_bad_options_fail_in_one_line(home, args, message):
    proc = run_cli("live", *args, check=False)
    assert proc.returncode == 1 and message in proc.stderr


