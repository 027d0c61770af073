"""Binance connector against the sandbox's simulated Binance (127.0.0.1), and its mapping on hand-written rows."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from schemahub_binance import MAPPINGS
from schemahub_binance.connector import POLICY, BinanceConnector

from schemahub_core import ConnectorError
from schemahub_core.engine.raw import cast_records
from schemahub_core.framework.mapping import load_mapping
from schemahub_core.framework.registry import get_registry
from schemahub_core.sandbox import EVENT_AT
from schemahub_core.testing.conformance import assert_conformance, fetch_all, map_records

SINCE = EVENT_AT - timedelta(minutes=3)
UNTIL = EVENT_AT + timedelta(minutes=2)


def connector(sandbox, **options) -> BinanceConnector:
    return BinanceConnector(sandbox.connector_options("binance", **{"page_size": 50, "backoff": 0.05, **options}))


# (stream, id field, time field): individual trades (the default) and aggregate trades
STREAMS = [("trades", "id", "time"), ("agg_trades", "a", "T")]


@pytest.mark.parametrize(("stream", "id_field", "time_field"), STREAMS)
def test_pages_cover_the_range_exactly_once_resume_and_edges(sandbox, stream, id_field, time_field):
    expected = sandbox.venues["binance"].expected_keys(stream, "BTC-USDT", SINCE, UNTIL)
    report = assert_conformance(connector(sandbox), stream, "BTC-USDT", SINCE, UNTIL, expected, min_pages=20)
    assert report["pages"] >= 20 and report["records"] == len(expected)


@pytest.mark.parametrize(("stream", "id_field", "time_field"), STREAMS)
def test_cursor_mid_stream_resumes_after_that_trade(sandbox, stream, id_field, time_field):
    ids = [k[1] for k in sandbox.venues["binance"].expected_keys(stream, "BTC-USDT", SINCE, UNTIL)]
    run = fetch_all(connector(sandbox), stream, "BTC-USDT", cursor=ids[100], until=UNTIL)
    assert [r[id_field] for r in run.records] == ids[101:]


@pytest.mark.parametrize(("stream", "id_field", "time_field"), STREAMS)
def test_range_edges_are_inclusive_since_exclusive_until_at_ms_precision(sandbox, stream, id_field, time_field):
    run = fetch_all(connector(sandbox), stream, "BTC-USDT", since=SINCE, until=SINCE + timedelta(seconds=20))
    first, last = run.records[0], run.records[-1]
    t_first = datetime.fromtimestamp(first[time_field] / 1000, UTC)
    t_last = datetime.fromtimestamp(last[time_field] / 1000, UTC)
    inner = fetch_all(connector(sandbox), stream, "BTC-USDT", since=t_first, until=t_last)
    assert inner.records[0][id_field] == first[id_field]  # a trade exactly at `since` is in
    assert all(r[time_field] < last[time_field] for r in inner.records)  # trades exactly at `until` are out
    later = fetch_all(connector(sandbox), stream, "BTC-USDT", since=t_first + timedelta(microseconds=1),
                      until=t_last)
    assert later.records[0][time_field] > first[time_field]  # since is rounded up to the next whole ms, never down


def test_individual_trades_are_the_fills_of_the_aggregates(sandbox):
    """Each aggTrade's f..l are the ids of its individual trades: same price, time and taker, quantities add up."""
    c = connector(sandbox)
    until = SINCE + timedelta(seconds=30)
    aggs = fetch_all(c, "agg_trades", "BTC-USDT", since=SINCE, until=until).records
    fills = fetch_all(c, "trades", "BTC-USDT", since=SINCE, until=until).records
    by_id = {f["id"]: f for f in fills}
    assert [f["id"] for f in fills] == list(range(aggs[0]["f"], aggs[-1]["l"] + 1))  # contiguous, nothing else
    assert any(a["l"] > a["f"] for a in aggs)
    for a in aggs:
        parts = [by_id[i] for i in range(a["f"], a["l"] + 1)]
        assert {(p["price"], p["time"], p["isBuyerMaker"]) for p in parts} == {(a["p"], a["T"], a["m"])}
        assert sum(Decimal(p["qty"]) for p in parts) == Decimal(a["q"])
        assert all(Decimal(p["quoteQty"]) == Decimal(p["price"]) * Decimal(p["qty"]) for p in parts)


def test_individual_trades_cost_weight_25_a_page_and_start_from_the_first_aggregate(sandbox):
    c, stats = connector(sandbox), sandbox.venues["binance"].stats
    requests, weight = stats.requests, stats.weight
    run = fetch_all(c, "trades", "BTC-USDT", since=SINCE, until=SINCE + timedelta(seconds=60))
    requests, weight = stats.requests - requests, stats.weight - weight
    assert requests >= len(run.pages) >= 3  # one aggTrades?startTime=&limit=1 (the first id), then historicalTrades
    assert weight == c.session.stats.weight == 4 + 25 * (requests - 1)
    first = fetch_all(connector(sandbox), "agg_trades", "BTC-USDT", since=SINCE, until=SINCE + timedelta(seconds=10))
    assert run.records[0]["id"] == first.records[0]["f"]


# Hand-written aggTrades rows (documented format) -> expected trades_unified rows.
# `m` true = the buyer was the maker = the taker SOLD.
CASES = [
    ({"symbol": "BTCUSDT", "a": 1, "p": "43210.50000000", "q": "0.01000000", "f": 1, "l": 1, "T": 1707405124123,
      "m": True, "M": True}, ("BTC-USDT", "1", "SELL", 43210.5, 0.01, "2024-02-08T15:12:04.123000")),
    ({"symbol": "BTCUSDT", "a": 2, "p": "43210.51", "q": "1.5", "f": 2, "l": 3, "T": 1707405124124,
      "m": False, "M": True}, ("BTC-USDT", "2", "BUY", 43210.51, 1.5, "2024-02-08T15:12:04.124000")),
    ({"symbol": "ETHUSDT", "a": 3000000000, "p": "2460.01", "q": "10", "f": 5, "l": 5, "T": 1707405124999,
      "m": False, "M": True}, ("ETH-USDT", "3000000000", "BUY", 2460.01, 10.0, "2024-02-08T15:12:04.999000")),
    ({"symbol": "ETHBTC", "a": 4, "p": "0.05444000", "q": "0.3", "f": 6, "l": 9, "T": 1707405125000,
      "m": True, "M": True}, ("ETH-BTC", "4", "SELL", 0.05444, 0.3, "2024-02-08T15:12:05")),
    ({"symbol": "BNBFDUSD", "a": 5, "p": "312.1", "q": "2", "f": 10, "l": 10, "T": 1704067200000,
      "m": False, "M": True}, ("BNB-FDUSD", "5", "BUY", 312.1, 2.0, "2024-01-01T00:00:00")),
    ({"symbol": "SOLUSDC", "a": 6, "p": "101.25", "q": "7.125", "f": 11, "l": 12, "T": 1707405124001,
      "m": True, "M": False}, ("SOL-USDC", "6", "SELL", 101.25, 7.125, "2024-02-08T15:12:04.001000")),
    ({"symbol": "BTCTRY", "a": 7, "p": "1400000.00", "q": "0.00010000", "f": 13, "l": 13, "T": 1707405124000,
      "m": False, "M": True}, ("BTC-TRY", "7", "BUY", 1400000.0, 0.0001, "2024-02-08T15:12:04")),
    ({"symbol": "ETHEUR", "a": 8, "p": "2281.99", "q": "0.5", "f": 14, "l": 14, "T": 1735689599999,
      "m": True, "M": True}, ("ETH-EUR", "8", "SELL", 2281.99, 0.5, "2024-12-31T23:59:59.999000")),
    ({"symbol": "BTCUSDT", "a": 9, "p": "43210.49999999", "q": "0.00000001", "f": 15, "l": 15,
      "T": 1707405124500, "m": True, "M": True},
     ("BTC-USDT", "9", "SELL", 43210.49999999, 1e-08, "2024-02-08T15:12:04.500000")),
    ({"symbol": "USDCUSDT", "a": 10, "p": "1.0001", "q": "5000", "f": 16, "l": 16, "T": 1707405124777,
      "m": False, "M": True}, ("USDC-USDT", "10", "BUY", 1.0001, 5000.0, "2024-02-08T15:12:04.777000")),
    ({"symbol": "WBTCBTC", "a": 11, "p": "0.9998", "q": "0.1", "f": 17, "l": 17, "T": 1707405124778,
      "m": True, "M": True}, ("WBTC-BTC", "11", "SELL", 0.9998, 0.1, "2024-02-08T15:12:04.778000")),
]


@pytest.mark.parametrize(("raw", "expected"), CASES, ids=[str(r["a"]) for r, _ in CASES])
def test_mapping_normalizes_side_time_and_symbol(raw, expected):
    """The same rows as individual trades through the default mapping, and as aggTrades through the optional one."""
    fill = {"symbol": raw["symbol"], "id": raw["a"], "price": raw["p"], "qty": raw["q"], "time": raw["T"],
            "quoteQty": "0", "isBuyerMaker": raw["m"], "isBestMatch": raw["M"]}
    for stream, record, path in (("trades", fill, "trades_unified.yaml"),
                                 ("agg_trades", raw, "optional/agg_trades_unified.yaml")):
        _check_mapped(stream, record, load_mapping(MAPPINGS / path), expected)


def _check_mapped(stream, raw, mapping, expected):
    rows, rejected = map_records(BinanceConnector.streams[stream], mapping, [raw])
    assert not rejected
    row = rows[0]
    symbol, trade_id, side, price, qty, ts = expected
    assert (row["exchange"], row["symbol"], row["trade_id"], row["side"]) == ("BINANCE", symbol, trade_id, side)
    assert (row["price"], row["quantity"]) == (price, qty)
    assert row["trade_ts"] == datetime.fromisoformat(ts).replace(tzinfo=UTC)
    assert (row["native_symbol"], row["base_asset"], row["quote_asset"]) == (
        raw["symbol"], *symbol.split("-"))


def test_quotes_map_to_quotes_unified(sandbox):
    page = next(connector(sandbox).fetch("quotes", "ETH-USDT", None))
    rows, rejected = map_records(BinanceConnector.streams["quotes"], load_mapping(MAPPINGS / "quotes_unified.yaml"),
                                 page.records)
    assert not rejected
    q = rows[0]
    assert (q["exchange"], q["symbol"], q["native_symbol"]) == ("BINANCE", "ETH-USDT", "ETHUSDT")
    assert 0 < q["bid_price"] < q["ask_price"] and q["bid_qty"] > 0 and q["quote_ts"] is not None


def test_forced_429_5xx_and_timeout_are_retried_and_the_fetch_completes(sandbox):
    c = connector(sandbox, timeout=0.5)
    sandbox.inject("binance", "429", retry_after=0.3)
    sandbox.inject("binance", "5xx", status=502)
    sandbox.inject("binance", "timeout", delay=1.0)
    until = SINCE + timedelta(seconds=90)
    run = fetch_all(c, "agg_trades", "BTC-USDT", since=SINCE, until=until)
    assert [r["a"] for r in run.records] == sandbox.expected_trade_ids("binance", "BTCUSDT", SINCE, until)
    assert c.session.stats.retries == 3
    assert c.session.stats.by_status.get(418, 0) == 0  # Retry-After was honoured, so no ban
    assert not sandbox.faults.pending()


def test_malformed_row_is_quarantined_not_dropped(sandbox):
    sandbox.inject("binance", "malformed_row", path="historicalTrades")
    run = fetch_all(connector(sandbox), "trades", "BTC-USDT", since=SINCE, until=SINCE + timedelta(seconds=10))
    rows, rejected = map_records(BinanceConnector.streams["trades"], load_mapping(MAPPINGS / "trades_unified.yaml"),
                                 run.records)
    assert len(rejected) == 1 and "not-a-price" in rejected[0].reason and '"not-a-price"' in rejected[0].payload
    assert len(rows) + len(rejected) == len(run.records)


def test_unknown_symbol_is_a_clear_error(sandbox):
    with pytest.raises(ConnectorError, match=r"binance: HTTP 400 on /binance/api/v3/aggTrades: Invalid symbol"):
        fetch_all(connector(sandbox), "trades", "DOGE-XYZ", since=SINCE)
    with pytest.raises(ConnectorError, match=r"binance: HTTP 400 on /binance/api/v3/historicalTrades: Invalid symb"):
        fetch_all(connector(sandbox), "trades", "DOGE-XYZ", cursor=1)


def test_malformed_body_is_retried_then_a_clear_error(sandbox):
    sandbox.inject("binance", "malformed_body", count=3)
    with pytest.raises(ConnectorError, match="malformed JSON.*gave up after 2 retries"):
        fetch_all(connector(sandbox, max_retries=2), "trades", "BTC-USDT", since=SINCE)


def test_defaults_are_the_real_venue():
    c = BinanceConnector({})
    assert c.base_url == "https://api.binance.com"
    assert (POLICY.rate.limit, POLICY.rate.window) == (6000, 60)
    assert c.session.policy.used_weight_header == "X-MBX-USED-WEIGHT-1M"


RECORDED = Path(__file__).resolve().parents[3].parent / "shared" / "recorded" / "binance"


@pytest.mark.skipif(not RECORDED.is_dir(), reason=f"the recorded venue answers are not beside the repo ({RECORDED})")
@pytest.mark.parametrize("name", ["trades.json", "historicalTrades.json"])
def test_recorded_individual_trades_parse_row_for_row(sandbox, name):
    """Real /api/v3/trades and /historicalTrades answers (BTCUSDT, 2021-10-22): the stream and its mapping."""
    recorded = json.loads((RECORDED / name).read_text())
    records = [{**row, "symbol": "BTCUSDT"} for row in recorded]  # the connector adds the symbol the rows omit
    raw, rejected = cast_records(BinanceConnector.streams["trades"], records, get_registry().transforms, "binance")
    assert not rejected and raw.num_rows == len(recorded) == 10
    for row, got in zip(recorded, raw.to_pylist(), strict=True):
        assert got["id"] == str(row["id"]) and got["symbol"] == "BTCUSDT"
        assert (got["price"], got["qty"], got["quoteQty"]) == (float(row["price"]), float(row["qty"]),
                                                               float(row["quoteQty"]))
        assert got["time"] == datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=row["time"])
        assert (got["isBuyerMaker"], got["isBestMatch"]) == (row["isBuyerMaker"], row["isBestMatch"])
    rows, rejected = map_records(BinanceConnector.streams["trades"], load_mapping(MAPPINGS / "trades_unified.yaml"),
                                 records)
    assert not rejected
    for row, got in zip(recorded, rows, strict=True):
        assert (got["exchange"], got["symbol"], got["native_symbol"]) == ("BINANCE", "BTC-USDT", "BTCUSDT")
        assert got["trade_id"] == str(row["id"]) and got["side"] == ("SELL" if row["isBuyerMaker"] else "BUY")
        assert (got["price"], got["quantity"]) == (float(row["price"]), float(row["qty"]))
    # the simulated venue speaks the same wire format: same fields, order and JSON types
    served = connector(sandbox).session.get_json(sandbox.base_url("binance") + "/api/v3/historicalTrades",
                                                 {"symbol": "BTCUSDT", "limit": 3}, 25)[0]
    shape = [[(k, type(v).__name__) for k, v in r.items()] for r in (*recorded, *served)]
    assert all(s == shape[0] for s in shape)
    assert all(len(r["price"].split(".")[1]) == 8 for r in (*recorded, *served))


def test_agg_trades_pages_render_byte_for_byte_the_rows_the_venue_serves():
    """The column-wise page renderer is the row one's fast twin: every page of a day at realistic intensity (the
    event hour included, ETH's quantities too, a drop_ids hole) renders the bytes JSONResponse makes of the rows."""
    from schemahub_binance.sandbox import _row, agg_trades_body
    from starlette.responses import JSONResponse

    from schemahub_core.sandbox import REALISTIC_INTENSITY, Sandbox, SandboxConfig, to_ns

    sandbox = Sandbox(SandboxConfig(intensity=REALISTIC_INTENSITY))
    venue = sandbox.venues["binance"]
    pages = 0
    for asset, native in (("BTC", "BTCUSDT"), ("ETH", "ETHUSDT")):
        start = venue.market.index_at("binance", asset, to_ns(EVENT_AT - timedelta(hours=1)))
        stop = venue.market.index_at("binance", asset, to_ns(EVENT_AT + timedelta(hours=1)))
        if asset == "ETH":
            first_id = venue.market.venues["binance"].first_id + start
            sandbox.inject("binance", "drop_ids", ids=[[first_id + 10, first_id + 2500]])
        for index in range(start, stop, 1000):
            columns = venue.columns_forward(native, asset, index, 1000, 2**62)
            expected = JSONResponse([_row(t) for t in columns.trades()]).body
            assert agg_trades_body(columns) == expected, (native, index)
            pages += 1
    assert pages > 120 and first_id + 10 not in venue.columns_forward("ETHUSDT", "ETH", start, 1000, 2**62).ids
