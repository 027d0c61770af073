"""Long ingests against the sandbox's enforced limits: no 429 (never a 418) while using >= 80 % of the rate.

Small windows keep the test fast; the shape of each limit is the venue's real one (Binance weight in fixed
windows with X-MBX-USED-WEIGHT-1M, Coinbase and Kraken token buckets).
"""

from __future__ import annotations

import time

import pytest
import requests
from schemahub_binance.connector import BinanceConnector
from schemahub_coinbase.connector import CoinbaseConnector
from schemahub_kraken.connector import KrakenConnector

from schemahub_core import VenuePolicy, venue_session
from schemahub_core.framework.http import RateLimit
from schemahub_core.sandbox import MARKET_START, Limit, SandboxConfig
from schemahub_core.testing.sandbox import sandbox_factory  # noqa: F401

DURATION = 2.0  # seconds of measured, sustained ingest per venue (after a 1-window warm-up)
CASES = {
    "binance": (BinanceConnector, "BTC-USDT", Limit(160, 1)),  # aggTrades weight 4: 40 requests/s
    "coinbase": (CoinbaseConnector, "BTC-USD", Limit(30, 1, burst=30)),
    "kraken": (KrakenConnector, "BTC-USD", Limit(20, 1)),
}


@pytest.mark.parametrize("venue", list(CASES))
def test_long_ingest_uses_the_rate_without_hitting_the_limit(sandbox_factory, venue):  # noqa: F811
    cls, symbol, limit = CASES[venue]
    server = sandbox_factory(SandboxConfig.fast(**{venue: limit}))
    connector = cls(server.connector_options(venue, page_size=20))
    cursor = 600_000_000 if venue == "coinbase" else None  # Coinbase: page forward from the first trade
    pages = connector.fetch("trades", symbol, cursor, since=MARKET_START)
    next(pages)  # warm-up: the sandbox generates the first simulated hours lazily
    warm_until = time.monotonic() + limit.window  # skip the first window: its burst would flatter the figure
    for _ in pages:
        if time.monotonic() >= warm_until:
            break
    before = server.stats()[venue]["weight"]
    start = time.monotonic()
    for _ in pages:
        if time.monotonic() - start > DURATION:
            break
    elapsed = time.monotonic() - start
    stats = server.stats()[venue]
    used = (stats["weight"] - before) / (elapsed * limit.limit / limit.window)
    print(f"{venue}: {stats['requests']} requests, {used:.0%} of the allowed rate, statuses {stats['statuses']}")
    assert stats["refused"] == 0 and set(stats["statuses"]) == {200}  # no 429, no 418, no body rate errors
    assert used >= 0.8
    assert connector.session.stats.rate_limited == 0


def test_binance_pauses_on_the_used_weight_header_when_others_share_the_ip(sandbox_factory):  # noqa: F811
    """Another client (same IP) already spent most of the window: the header, not the bucket, must stop us."""
    server = sandbox_factory(SandboxConfig.fast(binance=Limit(40, 2)))
    url = server.base_url("binance") + "/api/v3/aggTrades"
    params = {"symbol": "BTCUSDT", "fromId": 2_900_000_000, "limit": 5}
    policy = VenuePolicy("binance-shared-ip-test", RateLimit(40, 2), headroom=1.0,
                         used_weight_header="X-MBX-USED-WEIGHT-1M")
    session = venue_session(policy)
    time.sleep(2 - time.time() % 2 + 0.05)  # start of a fresh 2 s window
    with requests.Session() as other:
        for _ in range(7):  # 28 of 40 weight
            other.get(url, params=params).raise_for_status()
    for _ in range(5):  # 20 more weight: would be 48 > 40 without the header check
        session.get_json(url, params, weight=4)
    assert session.stats.waited > 0
    assert server.stats()["binance"]["refused"] == 0


def test_ignoring_retry_after_gets_the_ip_banned_and_the_session_stops(sandbox_factory):  # noqa: F811
    """Why Retry-After must be honoured: the sandbox bans like Binance, and a 418 is not retried."""
    server = sandbox_factory(SandboxConfig.fast())
    url = server.base_url("binance") + "/api/v3/ping"
    server.inject("binance", "429", retry_after=30)
    assert requests.get(url).status_code == 429
    banned = requests.get(url)
    assert banned.status_code == 418 and float(banned.headers["Retry-After"]) > 0
    session = venue_session(VenuePolicy("binance-ban-test", RateLimit(1000, 1), error_message=lambda b: b.get("msg")))
    with pytest.raises(Exception, match="IP banned by the venue"):
        session.get_json(url)
    assert session.stats.requests == 1  # no retry into a ban
