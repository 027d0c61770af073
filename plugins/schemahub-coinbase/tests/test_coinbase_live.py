"""Coinbase's live ticker channel: messages shaped as in Coinbase's docs, parsed and mapped into quotes_unified."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from schemahub_coinbase import MAPPINGS
from schemahub_coinbase.connector import CoinbaseConnector

from schemahub_core.framework.mapping import load_mapping
from schemahub_core.testing.conformance import map_records

RECEIVED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TICKER = {"type": "ticker", "sequence": 37475248783, "product_id": "ETH-USD", "price": "1285.22",
          "open_24h": "1310.79", "volume_24h": "245532.79269678", "low_24h": "1280.52", "high_24h": "1313.8",
          "volume_30d": "9788783.60117027", "best_bid": "1285.04", "best_bid_size": "0.46688654",
          "best_ask": "1285.27", "best_ask_size": "1.56637040", "side": "buy", "time": "2022-10-19T23:28:22.061769Z",
          "trade_id": 370843401, "last_size": "11.4396987"}


def test_ticker_is_normalized_and_maps_like_rest_quotes():
    feed = CoinbaseConnector({"ws_url": "ws://127.0.0.1:1/coinbase/ws"}).live_feed(["ETH-USD"])
    assert feed.subscribe_messages() == [{"type": "subscribe", "product_ids": ["ETH-USD"], "channels": ["ticker"]}]
    (quote,) = feed.parse(json.dumps(TICKER), RECEIVED)
    assert (quote.exchange, quote.symbol, quote.sequence) == ("COINBASE", "ETH-USD", 37475248783)
    assert (quote.bid_price, quote.bid_qty, quote.ask_price, quote.ask_qty) == (1285.04, 0.46688654, 1285.27,
                                                                                1.5663704)
    assert quote.quote_ts == datetime(2022, 10, 19, 23, 28, 22, 61769, tzinfo=UTC) and quote.ingest_ts == RECEIVED
    assert feed.parse('{"type": "subscriptions", "channels": []}', RECEIVED) == []
    assert feed.parse('{"type": "error", "message": "Failed to subscribe", "reason": "X is not a valid product"}',
                      RECEIVED) == [] and "not a valid product" in str(feed.last_error)
    (row,), rejected = map_records(CoinbaseConnector.streams["quotes"],
                                   load_mapping(MAPPINGS / "quotes_unified.yaml"), [quote.record])
    assert rejected == []
    assert {k: row[k] for k in ("exchange", "symbol", "bid_price", "bid_qty", "ask_price", "ask_qty", "quote_ts")} \
        == {"exchange": "COINBASE", "symbol": "ETH-USD", "bid_price": 1285.04, "bid_qty": 0.46688654,
            "ask_price": 1285.27, "ask_qty": 1.5663704, "quote_ts": quote.quote_ts}
