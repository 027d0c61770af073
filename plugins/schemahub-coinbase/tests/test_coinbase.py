"""Coinbase connector against the sandbox's simulated Coinbase Exchange, and its mapping on hand-written rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from schemahub_coinbase import MAPPINGS
from schemahub_coinbase.connector import POLICY, CoinbaseConnector

from schemahub_core import ConnectorError
from schemahub_core.framework.mapping import load_mapping
from schemahub_core.sandbox import EVENT_AT
from schemahub_core.testing.conformance import assert_conformance, fetch_all, map_records

SINCE = EVENT_AT - timedelta(minutes=6)
UNTIL = EVENT_AT + timedelta(minutes=5)


def connector(sandbox, **options) -> CoinbaseConnector:
    return CoinbaseConnector(sandbox.connector_options("coinbase", **{"page_size": 50, "backoff": 0.05, **options}))


def test_pages_cover_the_range_exactly_once_resume_and_edges(sandbox):
    expected = [("BTC-USD", i) for i in sandbox.expected_trade_ids("coinbase", "BTC-USD", SINCE, UNTIL)]
    report = assert_conformance(connector(sandbox), "trades", "BTC-USD", SINCE, UNTIL, expected, min_pages=20)
    assert report["pages"] >= 20 and report["records"] == len(expected)


def test_cursor_mid_stream_pages_forward_with_before(sandbox):
    ids = sandbox.expected_trade_ids("coinbase", "ETH-USD", SINCE, UNTIL)
    run = fetch_all(connector(sandbox), "trades", "ETH-USD", cursor=ids[77], until=UNTIL)
    assert [r["trade_id"] for r in run.records] == ids[78:]
    assert all(r["product_id"] == "ETH-USD" for r in run.records)


def test_since_is_found_by_paging_older_then_bisecting(sandbox):
    c = connector(sandbox)
    ids = sandbox.expected_trade_ids("coinbase", "BTC-USD", SINCE, UNTIL)
    run = fetch_all(c, "trades", "BTC-USD", since=SINCE, until=SINCE + timedelta(seconds=30))
    assert run.records[0]["trade_id"] == ids[0]
    locate = c.session.stats.requests - len(run.pages)
    assert locate < 70  # ~2 log2(N) one-row probes, not N/1000 full pages back from the newest trade


# Hand-written REST trades (documented format) -> expected trades_unified rows.
# REST `side` is the MAKER's side: "sell" means the taker BOUGHT.
CASES = [
    ({"product_id": "BTC-USD", "trade_id": 123, "price": "43210.50", "size": "0.01", "side": "sell",
      "time": "2024-02-08T15:12:04.123456Z"}, ("BTC-USD", "123", "BUY", 43210.5, 0.01, "2024-02-08T15:12:04.123456")),
    ({"product_id": "BTC-USD", "trade_id": 124, "price": "43210.49", "size": "0.5", "side": "buy",
      "time": "2024-02-08T15:12:04.123457Z"}, ("BTC-USD", "124", "SELL", 43210.49, 0.5, "2024-02-08T15:12:04.123457")),
    ({"product_id": "ETH-USD", "trade_id": 9000000001, "price": "2460.01", "size": "3.25000000", "side": "buy",
      "time": "2024-02-08T15:12:04.120Z"},
     ("ETH-USD", "9000000001", "SELL", 2460.01, 3.25, "2024-02-08T15:12:04.120000")),
    ({"product_id": "ETH-BTC", "trade_id": 7, "price": "0.05444", "size": "1", "side": "sell",
      "time": "2024-02-08T15:12:04.000001Z"}, ("ETH-BTC", "7", "BUY", 0.05444, 1.0, "2024-02-08T15:12:04.000001")),
    ({"product_id": "SOL-USDC", "trade_id": 8, "price": "101.25", "size": "7.125", "side": "buy",
      "time": "2024-02-08T15:12:04.999999Z"}, ("SOL-USDC", "8", "SELL", 101.25, 7.125, "2024-02-08T15:12:04.999999")),
    ({"product_id": "BTC-EUR", "trade_id": 9, "price": "40000.00", "size": "0.00000001", "side": "sell",
      "time": "2024-12-31T23:59:59.999Z"}, ("BTC-EUR", "9", "BUY", 40000.0, 1e-08, "2024-12-31T23:59:59.999000")),
    ({"product_id": "BTC-USD", "trade_id": 10, "price": "43000", "size": "2", "side": "SELL",
      "time": "2024-02-08T15:12:05.000000Z"}, ("BTC-USD", "10", "BUY", 43000.0, 2.0, "2024-02-08T15:12:05")),
    ({"product_id": "USDT-USD", "trade_id": 11, "price": "1.0001", "size": "5000", "side": "buy",
      "time": "2024-01-01T00:00:00.000Z"}, ("USDT-USD", "11", "SELL", 1.0001, 5000.0, "2024-01-01T00:00:00")),
    ({"product_id": "ETH-USD", "trade_id": 12, "price": "2459.99", "size": "0.1", "side": "sell",
      "time": "2024-02-08T15:12:04.04Z"}, ("ETH-USD", "12", "BUY", 2459.99, 0.1, "2024-02-08T15:12:04.040000")),
    ({"product_id": "DOGE-USD", "trade_id": 13, "price": "0.08123", "size": "1000", "side": "buy",
      "time": "2024-02-08T15:12:04.1234567Z"},
     ("DOGE-USD", "13", "SELL", 0.08123, 1000.0, "2024-02-08T15:12:04.123456")),
]


@pytest.mark.parametrize(("raw", "expected"), CASES, ids=[str(r["trade_id"]) for r, _ in CASES])
def test_mapping_inverts_the_maker_side_and_keeps_microseconds(raw, expected):
    rows, rejected = map_records(CoinbaseConnector.streams["trades"], load_mapping(MAPPINGS / "trades_unified.yaml"),
                                 [raw])
    assert not rejected
    row = rows[0]
    symbol, trade_id, side, price, qty, ts = expected
    assert (row["exchange"], row["symbol"], row["trade_id"], row["side"]) == ("COINBASE", symbol, trade_id, side)
    assert (row["price"], row["quantity"]) == (price, qty)
    assert row["trade_ts"] == datetime.fromisoformat(ts).replace(tzinfo=UTC)
    assert (row["native_symbol"], row["base_asset"], row["quote_asset"]) == (raw["product_id"], *symbol.split("-"))


def test_quotes_map_to_quotes_unified(sandbox):
    page = next(connector(sandbox).fetch("quotes", "BTC-USD", None))
    rows, rejected = map_records(CoinbaseConnector.streams["quotes"],
                                 load_mapping(MAPPINGS / "quotes_unified.yaml"), page.records)
    assert not rejected
    q = rows[0]
    assert (q["exchange"], q["symbol"], q["native_symbol"]) == ("COINBASE", "BTC-USD", "BTC-USD")
    assert 0 < q["bid_price"] < q["ask_price"] and q["bid_qty"] is None  # REST ticker has no sizes
    assert q["quote_ts"].year == 2024  # the sandbox's simulated clock


def test_forced_429_5xx_and_timeout_are_retried_and_the_fetch_completes(sandbox):
    c = connector(sandbox, timeout=0.5)
    ids = sandbox.expected_trade_ids("coinbase", "BTC-USD", SINCE, UNTIL)
    sandbox.inject("coinbase", "429", retry_after=0.2)
    sandbox.inject("coinbase", "5xx", status=500)
    sandbox.inject("coinbase", "timeout", delay=1.0)
    run = fetch_all(c, "trades", "BTC-USD", cursor=ids[0], until=UNTIL)
    assert [r["trade_id"] for r in run.records] == ids[1:]
    assert c.session.stats.retries == 3 and not sandbox.faults.pending()


def test_malformed_row_is_quarantined_not_dropped(sandbox):
    ids = sandbox.expected_trade_ids("coinbase", "BTC-USD", SINCE, UNTIL)
    sandbox.inject("coinbase", "malformed_row", path="/trades")
    run = fetch_all(connector(sandbox), "trades", "BTC-USD", cursor=ids[0], until=SINCE + timedelta(seconds=20))
    rows, rejected = map_records(CoinbaseConnector.streams["trades"], load_mapping(MAPPINGS / "trades_unified.yaml"),
                                 run.records)
    assert len(rejected) == 1 and "yesterday at noon" in rejected[0].reason
    assert len(rows) + len(rejected) == len(run.records)


def test_malformed_row_while_locating_since_is_a_clear_error(sandbox):
    sandbox.inject("coinbase", "malformed_row", path="/trades")
    with pytest.raises(ConnectorError, match="coinbase: malformed trade while locating the start time"):
        fetch_all(connector(sandbox), "trades", "BTC-USD", since=SINCE)


def test_unknown_product_is_a_clear_error(sandbox):
    with pytest.raises(ConnectorError, match=r"coinbase: HTTP 404 on /coinbase/products/DOGE-XYZ/trades: NotFound"):
        fetch_all(connector(sandbox), "trades", "DOGE-XYZ", since=SINCE)


def test_defaults_are_the_real_venue():
    c = CoinbaseConnector({})
    assert c.base_url == "https://api.exchange.coinbase.com"
    assert (POLICY.rate.limit, POLICY.rate.window) == (10, 1)
