"""Kraken connector against the sandbox's simulated Kraken, and its mapping on hand-written response bodies."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pytest
from schemahub_kraken import MAPPINGS
from schemahub_kraken.connector import POLICY, KrakenConnector, time_ns, trade_record

from schemahub_core import ConnectorError
from schemahub_core.framework.mapping import load_mapping
from schemahub_core.sandbox import EVENT_AT
from schemahub_core.testing.conformance import assert_conformance, fetch_all, map_records

SINCE = EVENT_AT - timedelta(minutes=15)
UNTIL = EVENT_AT + timedelta(minutes=15)


def connector(sandbox, **options) -> KrakenConnector:
    return KrakenConnector(sandbox.connector_options("kraken", **{"page_size": 50, "backoff": 0.05, **options}))


def test_pages_cover_the_range_exactly_once_resume_and_edges(sandbox):
    expected = [("XXBTZUSD", i) for i in sandbox.expected_trade_ids("kraken", "XXBTZUSD", SINCE, UNTIL)]
    report = assert_conformance(connector(sandbox), "trades", "BTC-USD", SINCE, UNTIL, expected, min_pages=20)
    assert report["pages"] >= 20 and report["records"] == len(expected)


def test_ns_cursor_mid_stream_resumes_strictly_after_it(sandbox):
    run = fetch_all(connector(sandbox), "trades", "ETH-USD", since=SINCE, until=UNTIL)
    middle = run.records[123]
    rest = fetch_all(connector(sandbox), "trades", "ETH-USD", cursor=str(time_ns(middle["time"])), until=UNTIL)
    assert [r["trade_id"] for r in rest.records] == [r["trade_id"] for r in run.records[124:]]
    assert {r["pair"] for r in run.records} == {"XETHZUSD"}  # Kraken's key, not the ETHUSD we asked for


def test_stopping_at_until_mid_page_leaves_a_cursor_that_skips_nothing(sandbox):
    c = connector(sandbox, page_size=1000)
    cut = SINCE + timedelta(seconds=95)
    first = fetch_all(c, "trades", "BTC-USD", since=SINCE, until=cut)
    rest = fetch_all(c, "trades", "BTC-USD", cursor=first.pages[-1].cursor, until=UNTIL)
    ids = sandbox.expected_trade_ids("kraken", "XXBTZUSD", SINCE, UNTIL)
    assert [r["trade_id"] for r in first.records + rest.records] == ids


def _body(rows: str, key: str = "XXBTZUSD") -> dict:
    text = f'{{"error":[],"result":{{"{key}":[{rows}],"last":"1707405124123456789"}}}}'
    return json.loads(text, parse_float=POLICY.parse_float)  # as the connector's session parses it


# Hand-written Trades rows (documented format) -> expected trades_unified rows. `b`/`s` is the taker side;
# `time` is float seconds with sub-µs digits, floored to the µs from its text (a float parse gets some wrong).
CASES = [
    ("XXBTZUSD", '["43210.10000","0.01000000",1707405124.1234567,"b","l","",101]',
     ("BTC-USD", "101", "BUY", 43210.1, 0.01, "2024-02-08T15:12:04.123456")),
    ("XXBTZUSD", '["43210.00000","0.50000000",1707405124.0000169,"s","m","",102]',
     ("BTC-USD", "102", "SELL", 43210.0, 0.5, "2024-02-08T15:12:04.000016")),
    ("XXBTZUSD", '["43209.90000","1.00000000",1707405124.9999999,"s","l","",103]',
     ("BTC-USD", "103", "SELL", 43209.9, 1.0, "2024-02-08T15:12:04.999999")),
    ("XXBTZUSD", '["43209.80000","0.00010000",1707405124,"b","m","",104]',
     ("BTC-USD", "104", "BUY", 43209.8, 0.0001, "2024-02-08T15:12:04")),
    ("XETHZUSD", '["2460.01000","3.25000000",1707405124.1,"b","l","",105]',
     ("ETH-USD", "105", "BUY", 2460.01, 3.25, "2024-02-08T15:12:04.100000")),
    ("XETHZUSD", '["2459.99000","0.10000000",1707405124.0000429,"s","l","",106]',
     ("ETH-USD", "106", "SELL", 2459.99, 0.1, "2024-02-08T15:12:04.000042")),
    ("XXBTZEUR", '["40000.0","0.2",1704067199.9999999,"b","l","",107]',
     ("BTC-EUR", "107", "BUY", 40000.0, 0.2, "2023-12-31T23:59:59.999999")),
    ("XETHXXBT", '["0.054440","1.0",1707405124.0000689,"s","l","",108]',
     ("ETH-BTC", "108", "SELL", 0.05444, 1.0, "2024-02-08T15:12:04.000068")),
    ("SOLUSD", '["101.25","7.125",1707405124.5,"b","m","",109]',
     ("SOL-USD", "109", "BUY", 101.25, 7.125, "2024-02-08T15:12:04.500000")),
    ("XBTUSDT", '["43215.5","0.03",1707405124.0000819,"s","l","",110]',
     ("BTC-USDT", "110", "SELL", 43215.5, 0.03, "2024-02-08T15:12:04.000081")),
    ("XXBTZUSD", '["43100.0","2.0",1707405136.0001079,"b","l","",111]',
     ("BTC-USD", "111", "BUY", 43100.0, 2.0, "2024-02-08T15:12:16.000107")),
]


@pytest.mark.parametrize(("key", "row", "expected"), CASES, ids=[c[2][1] for c in CASES])
def test_mapping_keeps_taker_side_exact_microseconds_and_renames_xbt(key, row, expected):
    body = _body(row, key)
    (pair, rows), = ((k, v) for k, v in body["result"].items() if k != "last")
    records = [trade_record(pair, r) for r in rows]
    out, rejected = map_records(KrakenConnector.streams["trades"], load_mapping(MAPPINGS / "trades_unified.yaml"),
                                records)
    assert not rejected
    got = out[0]
    symbol, trade_id, side, price, qty, ts = expected
    assert (got["exchange"], got["symbol"], got["trade_id"], got["side"]) == ("KRAKEN", symbol, trade_id, side)
    assert (got["price"], got["quantity"]) == (price, qty)
    assert got["trade_ts"] == datetime.fromisoformat(ts).replace(tzinfo=UTC)
    assert (got["native_symbol"], got["base_asset"], got["quote_asset"]) == (key, *symbol.split("-"))


def test_float_parsing_would_get_these_times_wrong():
    """Why the connector keeps JSON floats as text: the plain float path misses the µs on some cases above."""
    wrong = [c for c in CASES if "." in c[1].split(",")[2] and math.floor(
        float(c[1].split(",")[2]) * 1e6) % 1_000_000 != datetime.fromisoformat(c[2][5]).microsecond]
    assert len(wrong) >= 3


def test_rows_without_trade_id_are_quarantined_with_a_reason():
    body = _body('["43210.1","0.01",1650000000.1234,"b","l",""]')  # pre-2022 rows have 6 elements
    records = [trade_record("XXBTZUSD", r) for r in body["result"]["XXBTZUSD"]]
    out, rejected = map_records(KrakenConnector.streams["trades"], load_mapping(MAPPINGS / "trades_unified.yaml"),
                                records)
    assert out == [] and "missing key column(s) trade_id" in rejected[0].reason


def test_quotes_map_to_quotes_unified(sandbox):
    page = next(connector(sandbox).fetch("quotes", "BTC-USD", None))
    rows, rejected = map_records(KrakenConnector.streams["quotes"], load_mapping(MAPPINGS / "quotes_unified.yaml"),
                                 page.records)
    assert not rejected
    q = rows[0]
    assert (q["exchange"], q["symbol"], q["native_symbol"]) == ("KRAKEN", "BTC-USD", "XXBTZUSD")
    assert 0 < q["bid_price"] < q["ask_price"] and q["bid_qty"] is None


def test_body_rate_limit_5xx_and_timeout_are_retried_and_the_fetch_completes(sandbox):
    c = connector(sandbox, timeout=0.5)
    sandbox.inject("kraken", "rate_limit_body")  # {"error": ["EAPI:Rate limit exceeded"]} in a 200
    sandbox.inject("kraken", "5xx", status=503)
    sandbox.inject("kraken", "timeout", delay=1.0)
    sandbox.inject("kraken", "429", retry_after=0.2)  # Kraken answers this one in the body too
    until = SINCE + timedelta(minutes=3)
    run = fetch_all(c, "trades", "BTC-USD", since=SINCE, until=until)
    assert [r["trade_id"] for r in run.records] == sandbox.expected_trade_ids("kraken", "XXBTZUSD", SINCE, until)
    assert c.session.stats.retries == 4 and c.session.stats.rate_limited == 2


def test_malformed_row_is_quarantined_not_dropped(sandbox):
    sandbox.inject("kraken", "malformed_row", path="Trades")
    run = fetch_all(connector(sandbox), "trades", "BTC-USD", since=SINCE, until=SINCE + timedelta(minutes=1))
    out, rejected = map_records(KrakenConnector.streams["trades"], load_mapping(MAPPINGS / "trades_unified.yaml"),
                                run.records)
    assert len(rejected) == 1 and "NaN-ish" in rejected[0].reason
    assert len(out) + len(rejected) == len(run.records)


def test_unknown_pair_is_a_clear_error(sandbox):
    with pytest.raises(ConnectorError, match=r"kraken: /kraken/0/public/Trades: EQuery:Unknown asset pair"):
        fetch_all(connector(sandbox), "trades", "DOGE-XYZ", since=SINCE)


def test_defaults_are_the_real_venue():
    c = KrakenConnector({})
    assert c.base_url == "https://api.kraken.com"
    assert (POLICY.rate.limit, POLICY.rate.window) == (1, 1)
    assert c.native_symbol("BTC-USD") == "XBTUSD"
