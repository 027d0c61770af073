"""Kraken's WebSocket v2 ticker: messages shaped as in Kraken's docs, parsed and mapped into quotes_unified."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from schemahub_kraken import MAPPINGS
from schemahub_kraken.connector import KrakenConnector

from schemahub_core.framework.mapping import load_mapping
from schemahub_core.testing.conformance import map_records

RECEIVED = datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)
SNAPSHOT = {"channel": "ticker", "type": "snapshot", "data": [
    {"symbol": "BTC/USD", "bid": 43210.1, "bid_qty": 0.52, "ask": 43210.2, "ask_qty": 1.75, "last": 43210.1,
     "volume": 1234.5, "vwap": 43100.0, "low": 42000.0, "high": 44000.0, "change": 120.3, "change_pct": 0.28},
    {"symbol": "ETH/USD", "bid": 2460.11, "bid_qty": 3.0, "ask": 2460.12, "ask_qty": 4.5, "last": 2460.1,
     "volume": 9.0, "vwap": 2450.0, "low": 2400.0, "high": 2500.0, "change": 1.0, "change_pct": 0.04}]}


def test_ticker_is_normalized_and_maps_like_rest_quotes():
    feed = KrakenConnector({"ws_url": "ws://127.0.0.1:1/kraken/ws/v2"}).live_feed(["BTC-USD", "ETH-USD"])
    (subscribe,) = feed.subscribe_messages()
    assert subscribe["params"]["symbol"] == ["BTC/USD", "ETH/USD"] and subscribe["params"]["channel"] == "ticker"
    btc, eth = feed.parse(json.dumps(SNAPSHOT), RECEIVED)
    assert (btc.exchange, btc.symbol, btc.native_symbol, eth.symbol) == ("KRAKEN", "BTC-USD", "BTC/USD", "ETH-USD")
    assert (btc.bid_price, btc.bid_qty, btc.ask_price, btc.ask_qty) == (43210.1, 0.52, 43210.2, 1.75)
    assert btc.quote_ts == btc.ingest_ts == RECEIVED  # v2 ticker carries no time
    refused = {"method": "subscribe", "success": False, "error": "Currency pair not supported XBT/EUR"}
    assert feed.parse(json.dumps(refused), RECEIVED) == [] and "not supported" in str(feed.last_error)
    assert feed.parse('{"channel": "heartbeat"}', RECEIVED) == []
    rows, rejected = map_records(KrakenConnector.streams["quotes"], load_mapping(MAPPINGS / "quotes_unified.yaml"),
                                 [btc.record, eth.record])
    assert rejected == []
    assert [(r["exchange"], r["symbol"], r["native_symbol"], r["bid_qty"], r["quote_ts"]) for r in rows] == [
        ("KRAKEN", "BTC-USD", "BTC/USD", 0.52, RECEIVED), ("KRAKEN", "ETH-USD", "ETH/USD", 3.0, RECEIVED)]
