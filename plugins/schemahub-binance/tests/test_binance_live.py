"""Binance's live book ticker: a message shaped as in Binance's docs, parsed and mapped into quotes_unified."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from schemahub_binance import MAPPINGS
from schemahub_binance.connector import BinanceConnector

from schemahub_core.framework.mapping import load_mapping
from schemahub_core.testing.conformance import map_records

RECEIVED = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
TICKER = {"u": 400900217, "s": "BNBUSDT", "b": "25.35190000", "B": "31.21000000", "a": "25.36520000",
          "A": "40.66000000"}


def test_book_ticker_is_normalized_and_maps_like_rest_quotes():
    feed = BinanceConnector({"ws_url": "ws://127.0.0.1:1/binance"}).live_feed(["BNB-USDT", "BTC-USDT"])
    assert feed.connect_url() == "ws://127.0.0.1:1/binance/stream?streams=bnbusdt@bookTicker/btcusdt@bookTicker"
    message = json.dumps({"stream": "bnbusdt@bookTicker", "data": TICKER})
    (quote,) = feed.parse(message, RECEIVED)
    assert (quote.exchange, quote.symbol, quote.native_symbol, quote.sequence) == ("BINANCE", "BNB-USDT", "BNBUSDT",
                                                                                   400900217)
    assert (quote.bid_price, quote.bid_qty, quote.ask_price, quote.ask_qty) == (25.3519, 31.21, 25.3652, 40.66)
    assert quote.quote_ts == quote.ingest_ts == RECEIVED  # the stream carries no time
    assert feed.parse(json.dumps(TICKER), RECEIVED)[0].record == quote.record  # a raw /ws/ stream, unwrapped
    assert feed.parse('{"result": null, "id": 1}', RECEIVED) == []
    (row,), rejected = map_records(BinanceConnector.streams["quotes"], load_mapping(MAPPINGS / "quotes_unified.yaml"),
                                   [quote.record])
    assert rejected == []
    assert {k: row[k] for k in ("exchange", "symbol", "bid_price", "bid_qty", "ask_price", "ask_qty", "quote_ts")} \
        == {"exchange": "BINANCE", "symbol": "BNB-USDT", "bid_price": 25.3519, "bid_qty": 31.21,
            "ask_price": 25.3652, "ask_qty": 40.66, "quote_ts": RECEIVED}
