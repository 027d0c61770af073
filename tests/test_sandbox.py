"""The simulated venues: labelled, deterministic, lazy, and carrying the scripted 2024-02-08 15:12:04 event."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import requests

from schemahub_core.sandbox import (
    DEFAULT_DAYS,
    EVENT_AT,
    LABEL,
    MARKET_END,
    MARKET_START,
    REALISTIC_INTENSITY,
    Limit,
    Market,
    Sandbox,
    SandboxConfig,
    venue_apps,
)
from schemahub_core.sandbox.market import NS, to_ns
from schemahub_core.testing.sandbox import _clear_sandbox_faults, sandbox  # noqa: F401

EVENT = to_ns(EVENT_AT)


def test_every_answer_is_labelled_simulated(sandbox):  # noqa: F811
    root = requests.get(f"http://127.0.0.1:{sandbox.port}/").json()
    assert "SIMULATED" in root["label"] and root["market"]["simulated"] is True
    for url in (sandbox.base_url("binance") + "/api/v3/ticker/bookTicker?symbol=BTCUSDT",
                sandbox.base_url("coinbase") + "/products/BTC-USD/ticker",
                sandbox.base_url("kraken") + "/0/public/Ticker?pair=XBTUSD"):
        assert requests.get(url).headers["X-SchemaHub-Sandbox"] == LABEL

# The venues' market profiles come from their plugins, as the sandbox gets them.
PROFILES = [app.market_profile for app in venue_apps().values() if app.market_profile is not None]


def _market(seed: int = 20240208, **options) -> Market:
    market = Market(seed, **options)
    for profile in PROFILES:
        market.add_venue(profile)
    return market


def test_market_is_deterministic_per_seed_and_lazy():
    started = time.perf_counter()
    a, b, c = _market(1), _market(1), _market(2)
    assert time.perf_counter() - started < 0.1  # nothing is generated up front
    hour = to_ns(EVENT_AT.replace(minute=0, second=0))
    take = [m.trades_from("coinbase", "BTC", m.index_at("coinbase", "BTC", hour), 500, hour + 3600 * NS)
            for m in (a, b, c)]
    assert take[0] == take[1] and take[0] != take[2]


# The first series position of each of the 73 hours from 2024-02-07, as the 3-day market gave them before
# the market spanned 120 days (last value, sha1 of the list): trade ids of those days did not move.
KEPT_HOURS = {("binance", "BTC"): (777779, "d1d38801f6d6"), ("binance", "ETH"): (517736, "c8a52707066d"),
              ("coinbase", "BTC"): (388865, "9e89f72e32e9"), ("coinbase", "ETH"): (260765, "ec7b3fa73805"),
              ("kraken", "BTC"): (155503, "fe4b8e679b8c"), ("kraken", "ETH"): (103760, "c89eb5530d46")}


def test_120_days_of_trades_for_btc_and_eth_on_every_venue_with_the_original_days_ids_kept():
    m = _market()
    assert (MARKET_END - MARKET_START).days == DEFAULT_DAYS == 120 and m.start == MARKET_START
    for (venue, asset), (last, digest) in KEPT_HOURS.items():
        firsts = [m._first_index(venue, asset, h) for h in range(73)]
        assert (firsts[-1], hashlib.sha1(repr(firsts).encode()).hexdigest()[:12]) == (last, digest)
        first = m.trades_from(venue, asset, m.first_index(venue, asset), 1, to_ns(MARKET_END))[0]
        assert to_ns(MARKET_START) <= first.time_ns < to_ns(MARKET_START) + 60 * NS and first.index < 0
        days = [m.index_at(venue, asset, to_ns(MARKET_START + timedelta(days=d))) for d in range(121)]
        per_day = [b - a for a, b in zip(days, days[1:], strict=False)]
        assert min(per_day) > 86_400 * 0.3  # every one of the 120 days trading
        assert days[-1] - days[0] == m.index_at(venue, asset, to_ns(MARKET_END)) - m.first_index(venue, asset)


def test_realistic_intensity_gives_a_busy_symbol_a_million_trades_a_day_and_hours_stay_fast():
    m = _market(intensity=REALISTIC_INTENSITY)
    day = to_ns(datetime(2024, 1, 15, tzinfo=UTC))
    started = time.perf_counter()
    count = m.index_at("binance", "BTC", day + 86_400 * NS) - m.index_at("binance", "BTC", day)
    assert 900_000 < count < 1_200_000
    hour = m.hour_of(day) + 7
    m._generate_hour("binance", "BTC", hour)  # ~43k trades
    assert time.perf_counter() - started < 2.0
    page = m.trades_from("binance", "BTC", m._first_index("binance", "BTC", hour), 1000, day + 86_400 * NS)
    assert len(page) == 1000 and [t.id for t in page] == list(range(page[0].id, page[0].id + 1000))
    assert all(a.time_ns <= b.time_ns for a, b in zip(page, page[1:], strict=False))


def test_sandbox_config_sets_the_span_and_intensity():
    box = Sandbox(SandboxConfig(days=5, intensity=2.0, venues={}))
    info = box.describe()
    assert info["from"] == (MARKET_END - timedelta(days=5)).isoformat() and info["intensity"] == 2.0


def _first_drop(m: Market, venue: str, threshold: float = 0.003) -> int:
    """Milliseconds after the event start when the venue's mid first falls `threshold` below its pre-event mid."""
    before = m.venue_mid(venue, "BTC", EVENT - NS)
    for ms in range(0, 3000):
        if m.venue_mid(venue, "BTC", EVENT + ms * 1_000_000) < before * (1 - threshold):
            return ms
    raise AssertionError(f"{venue} never moved")


def test_binance_moves_first_coinbase_40_to_120_ms_later_kraken_later_still():
    m = _market()
    binance, coinbase, kraken = (_first_drop(m, v) for v in ("binance", "coinbase", "kraken"))
    assert 40 <= coinbase - binance <= 120
    assert kraken > coinbase


def test_spreads_widen_and_venues_disagree_during_the_event():
    m = _market()
    quiet, hot = EVENT - 600 * NS, EVENT + 500_000_000
    for venue in ("binance", "coinbase", "kraken"):
        assert m.spread(venue, hot) > 10 * m.spread(venue, quiet)

    def disagreement_bps(t: int) -> float:
        mids = [m.venue_mid(v, "BTC", t) for v in ("coinbase", "kraken")]
        return abs(mids[0] - mids[1]) / mids[0] * 1e4

    calm = max(disagreement_bps(quiet + i * 100_000_000) for i in range(120))
    stressed = max(disagreement_bps(EVENT + i * 100_000_000) for i in range(120))
    assert stressed > 5 * calm


def test_event_trades_are_served_for_the_replay_symbols(sandbox):  # noqa: F811
    window = (EVENT_AT, EVENT_AT + timedelta(seconds=12))
    for venue, symbol in (("binance", "BTCUSDT"), ("coinbase", "BTC-USD"), ("kraken", "XXBTZUSD")):
        ids = sandbox.expected_trade_ids(venue, symbol, *window)
        assert len(ids) > 12 * 0.6 * 4, f"{venue} has too few trades in the event window"


def test_fault_endpoint_queues_and_reports(sandbox):  # noqa: F811
    control = f"http://127.0.0.1:{sandbox.port}/_sandbox/faults"
    assert requests.post(control, json={"venue": "kraken", "kind": "bogus"}).status_code == 400
    requests.post(control, json={"venue": "coinbase", "kind": "5xx", "status": 502})
    assert requests.get(sandbox.base_url("coinbase") + "/products/BTC-USD/ticker").status_code == 502
    assert requests.get(sandbox.base_url("coinbase") + "/products/BTC-USD/ticker").status_code == 200


def test_drop_ids_leaves_a_silent_hole_in_full_pages_until_cleared(sandbox):  # noqa: F811
    """Every venue pages past the dropped ids (full pages, no error), only for the named symbol."""
    ids = sandbox.expected_trade_ids("binance", "BTCUSDT", EVENT_AT, EVENT_AT + timedelta(minutes=5))
    lo, hi = ids[10], ids[14]
    sandbox.inject("binance", "drop_ids", ids=[[lo, hi]], symbol="BTC-USDT")
    url = sandbox.base_url("binance") + "/api/v3/aggTrades"
    page = requests.get(url, params={"symbol": "BTCUSDT", "fromId": ids[0], "limit": 30}).json()
    assert [r["a"] for r in page] == ids[:10] + ids[15:35]
    other = requests.get(url, params={"symbol": "ETHUSDT", "fromId": ids[0], "limit": 30}).json()
    assert len(other) == 30 and [r["a"] for r in other] == list(range(ids[0], ids[0] + 30))
    assert sandbox.faults.pending()[0]["kind"] == "drop_ids"  # it stands: not used up by requests

    cb = sandbox.expected_trade_ids("coinbase", "BTC-USD", EVENT_AT, EVENT_AT + timedelta(minutes=5))
    sandbox.inject("coinbase", "drop_ids", ids=[[cb[5], cb[6]]])
    trades = sandbox.base_url("coinbase") + "/products/BTC-USD/trades"
    newer = requests.get(trades, params={"before": cb[0], "limit": 10}).json()
    assert sorted(r["trade_id"] for r in newer) == cb[1:5] + cb[7:13]
    older = requests.get(trades, params={"after": cb[12], "limit": 10}).json()
    assert sorted(r["trade_id"] for r in older) == cb[0:5] + cb[7:12]

    kr = sandbox.expected_trade_ids("kraken", "XXBTZUSD", EVENT_AT, EVENT_AT + timedelta(minutes=5))
    sandbox.inject("kraken", "drop_ids", ids=[[kr[1], kr[2]]], symbol="XXBTZUSD")
    body = requests.get(sandbox.base_url("kraken") + "/0/public/Trades",
                        params={"pair": "XBTUSD", "since": to_ns(EVENT_AT) - 1, "count": 5}).json()
    assert [r[6] for r in body["result"]["XXBTZUSD"]] == [kr[0], *kr[3:7]]

    assert requests.post(f"http://127.0.0.1:{sandbox.port}/_sandbox/faults",
                         json={"venue": "binance", "kind": "drop_ids", "ids": [[5, 1]]}).status_code == 400
    requests.delete(f"http://127.0.0.1:{sandbox.port}/_sandbox/faults")
    page = requests.get(url, params={"symbol": "BTCUSDT", "fromId": ids[0], "limit": 30}).json()
    assert [r["a"] for r in page] == ids[:30]


def test_custom_limits_are_enforced_in_the_venue_format():
    server = Sandbox(SandboxConfig.fast(kraken=Limit(2, 10))).start()
    try:
        url = server.base_url("kraken") + "/0/public/Ticker?pair=XBTUSD"
        answers = [requests.get(url) for _ in range(3)]
        assert answers[2].status_code == 200  # Kraken reports the limit in a 200 body
        assert answers[2].json() == {"error": ["EAPI:Rate limit exceeded"]}
        assert server.stats()["kraken"]["refused"] == 1
    finally:
        server.stop()


def test_cli_serves_the_sandbox_on_the_given_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "schemahub_core", "sandbox", "--port", str(port), "--fast"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                body = requests.get(f"http://127.0.0.1:{port}/binance/api/v3/aggTrades",
                                    params={"symbol": "BTCUSDT", "limit": 2}, timeout=10).json()
                break
            except (requests.ConnectionError, requests.Timeout):  # starting, or busy generating its first hour
                assert time.monotonic() < deadline and proc.poll() is None, "sandbox did not start"
                time.sleep(0.1)
        assert len(body) == 2 and {"a", "p", "q", "f", "l", "T", "m", "M"} == set(body[0])
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
    assert "SIMULATED" in out and f"SCHEMAHUB_BINANCE_BASE_URL=http://127.0.0.1:{port}/binance" in out.replace("\n", "")
