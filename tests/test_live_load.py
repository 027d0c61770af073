"""The live path under load (issue 20): the sandbox's firehose, the feed's batched reads, landing in bounded batches.

The firehose is a real process serving the simulated Binance's wire format from pre-serialised frames; the
feed reads it through the core's WebSocket client and the plugin's vectorized ``parse_batch``; the lander
lands through ``StreamIngest`` into a real Iceberg table. The 60 s benchmark is ``benchmarks/live_load.py``;
these tests keep to a few seconds.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest
from conftest import ROOT

from schemahub_core.apps.live import build_session
from schemahub_core.engine.catalog import open_catalog
from schemahub_core.framework.config import Settings, default_catalog
from schemahub_core.framework.livefeed import LiveFeed, LiveQuote, QuoteBatch, _Socket
from schemahub_core.framework.registry import get_registry

RECORDED = ROOT.parent / "shared" / "recorded" / "binance" / "ws_bookTicker.jsonl"


def start_firehose(venue: str) -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, "-m", "schemahub_core.sandbox.firehose", venue],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield int(proc.stdout.readline())  # type: ignore[union-attr]
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def firehose() -> Iterator[int]:
    yield from start_firehose("binance")


@pytest.fixture(scope="module")
def kraken_firehose() -> Iterator[int]:
    yield from start_firehose("kraken")


def binance_feed(port: int, symbols: list[str]) -> LiveFeed:
    connector = get_registry().connectors["binance"]({"ws_url": f"ws://127.0.0.1:{port}"})
    return connector.live_feed(symbols)


def test_the_vectorized_parse_equals_the_per_message_parse(tmp_path: Path) -> None:
    if not RECORDED.exists():
        pytest.skip("no recorded Binance messages beside the repo")
    lines = [line for line in RECORDED.read_text().splitlines() if '"bookTicker"' in line or '"u"' in line]
    messages = [json.dumps({"stream": "btcusdt@bookTicker", "data": json.loads(line).get("data", json.loads(line))})
                for line in lines]
    feed = binance_feed(1, ["BTC-USDT"])
    received = feed._receive_times(len(messages))
    fast = feed.parse_batch(messages, received)
    slow = LiveFeed.parse_batch(feed, messages, received)
    assert fast.num_rows == slow.num_rows == len(messages) > 0
    assert fast.quotes.equals(slow.quotes) and fast.payloads.equals(slow.payloads)
    assert fast.records.to_pylist() == slow.records.to_pylist()
    assert fast.to_quotes() == [q for m, us in zip(messages, received.tolist(), strict=True)
                                for q in feed.parse(m, datetime.fromtimestamp(us / 1e6, UTC).replace(
                                    microsecond=us % 1_000_000))]


def test_a_bad_message_in_a_read_costs_only_itself() -> None:
    feed = binance_feed(1, ["BTC-USDT"])
    good = [json.dumps({"stream": "btcusdt@bookTicker", "data": {"u": i, "s": "BTCUSDT", "b": "1.5", "B": "2",
                                                                 "a": "1.6", "A": "3"}}) for i in range(1, 4)]
    messages = [good[0], '{"result": null, "id": 1}', good[1], "not json {", good[2], good[2]]
    batch = feed._read([m.encode() for m in messages])
    assert batch.quotes.column("sequence").to_pylist() == [1, 2, 3]  # the ack is no quote; the repeat is dropped
    assert (feed.bad_messages, feed.repeats, feed.messages) == (1, 1, 6)


def test_the_client_answers_pings_and_joins_fragments() -> None:
    async def scenario() -> list[bytes]:
        got: list[bytes] = []
        pong = asyncio.get_running_loop().create_future()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            key = next(v.strip() for k, _, v in (x.partition(":") for x in head.split("\r\n"))
                       if k.lower() == "sec-websocket-key")
            import base64
            import hashlib
            accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            writer.write(bytes((0x01, 3)) + b"abc" + bytes((0x89, 2)) + b"hi" + bytes((0x80, 3)) + b"def")
            writer.write(bytes((0x81, 126)) + (300).to_bytes(2, "big") + b"x" * 300)
            frame = await reader.readexactly(8)  # the masked pong: 2 header bytes, 4 mask bytes, 2 payload bytes
            mask = frame[2:6]
            pong.set_result((frame[0], bytes(b ^ mask[i] for i, b in enumerate(frame[6:]))))
            writer.write(bytes((0x88, 2)) + (1000).to_bytes(2, "big"))
            await writer.drain()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        sock = await _Socket.connect(f"ws://127.0.0.1:{port}/x", 5)
        while (messages := await sock.read_messages()) is not None:
            got += messages
        assert await pong == (0x8A, b"hi") and sock.close_code == 1000
        await sock.close()
        server.close()
        return got

    assert asyncio.run(scenario()) == [b"abcdef", b"x" * 300]


def test_the_firehose_sends_unique_increasing_quotes_in_batches(firehose: int) -> None:
    feed = binance_feed(firehose, ["BTC-USDT", "ETH-USDT"])

    async def read(n: int) -> list[QuoteBatch]:
        out: list[QuoteBatch] = []
        async for batch in feed.batches():
            out.append(batch)
            if sum(b.num_rows for b in out) >= n:
                return out
        return out

    batches = asyncio.run(read(20_000))
    quotes = QuoteBatch.concat(batches)
    assert feed.repeats == 0 and feed.bad_messages == 0 and max(b.num_rows for b in batches) > 100
    for symbol in ("BTC-USDT", "ETH-USDT"):
        mine = quotes.quotes.filter(pc.equal(quotes.quotes.column("symbol"), symbol))
        assert np.all(np.diff(mine.column("sequence").to_numpy()) == 1)  # every update id, in order
        assert pc.min(mine.column("bid_price")).as_py() < pc.max(mine.column("ask_price")).as_py()
    assert np.all(np.diff(quotes.quotes.column("ingest_us").to_numpy()) > 0)  # receive times: a unique cursor


def test_live_land_under_load_lands_every_quote_once_with_bounded_pending(firehose: int, home: Path) -> None:
    catalog = open_catalog(Settings(home=home, catalog=default_catalog(home)))
    session = build_session(get_registry(), ["BTC-USD", "ETH-USD"], lambda name: {
        "ws_url": f"ws://127.0.0.1:{firehose}"}, venues=["binance"], land=(catalog, "schemahub"))
    session.max_pending, session.flush_every = 20_000, 0.5
    peak = [0]

    async def watch(s: object) -> None:
        while True:
            assert session.lander is not None
            peak[0] = max(peak[0], session.lander.pending())
            await asyncio.sleep(0.005)

    with pytest.raises(TimeoutError):
        asyncio.run(session.run(3.0, until=watch))
    lander = session.lander
    assert lander is not None, session.errors
    assert lander.pending() == 0 and lander.last_error is None and not session.errors, lander.summary()
    rows = catalog.load_table(("schemahub", "raw_binance_quotes")).scan().to_arrow()
    received = sum(session.received.values())
    assert received > 20_000 and session.paused > 0 and peak[0] < 2 * session.max_pending
    assert lander.received == lander.landed == rows.num_rows == received
    assert rows.group_by(["symbol", "time"]).aggregate([]).num_rows == received  # each once


def test_quotes_of_a_batch_are_the_live_quotes_of_its_rows() -> None:
    at = datetime(2026, 1, 2, tzinfo=UTC)
    quote = LiveQuote("BINANCE", "BTC-USDT", "BTCUSDT", 1.5, 2.0, 1.6, None, at, at, {"symbol": "BTCUSDT", "t": 1},
                      "{}", 7)
    assert QuoteBatch.from_quotes("BINANCE", [quote]).to_quotes() == [quote]


def kraken_messages() -> list[str]:
    def item(symbol: str, bid: float, ask: float, qty: float | None) -> dict:
        return {"symbol": symbol, "bid": bid, "bid_qty": qty, "ask": ask, "ask_qty": 2.5, "last": bid, "volume": 1.0}

    return [json.dumps({"channel": "ticker", "type": "snapshot", "data": [item("BTC/USD", 45000.1, 45000.2, 1.5),
                                                                          item("ETH/USD", 2500, 2500.1, None)]}),
            json.dumps({"channel": "ticker", "type": "update", "data": [item("BTC/USD", 45000.1, 45000.3, 1.5)]})]


def test_the_kraken_vectorized_parse_equals_the_per_message_parse() -> None:
    connector = get_registry().connectors["kraken"]({"ws_url": "ws://127.0.0.1:1/ws/v2"})
    feed = connector.live_feed(["BTC-USD", "ETH-USD"])
    messages = kraken_messages()
    received = feed._receive_times(len(messages))
    fast = feed.parse_batch(messages, received)
    slow = LiveFeed.parse_batch(feed, messages, received)
    assert fast.num_rows == slow.num_rows == 3
    assert fast.quotes.equals(slow.quotes) and fast.payloads.equals(slow.payloads)
    assert fast.records.to_pylist() == slow.records.to_pylist()
    assert feed._read([m.encode() for m in messages]).num_rows == 3 and feed.repeats == 0
    again = feed._read([m.encode() for m in messages[1:]])  # the same BTC book as the last one: a repeat
    assert again.num_rows == 0 and feed.repeats == 1


def test_the_kraken_firehose_subscribes_and_lands_every_quote_once(kraken_firehose: int, home: Path) -> None:
    catalog = open_catalog(Settings(home=home, catalog=default_catalog(home)))
    session = build_session(get_registry(), ["BTC-USD", "ETH-USD"], lambda name: {
        "ws_url": f"ws://127.0.0.1:{kraken_firehose}/ws/v2"}, venues=["kraken"], land=(catalog, "schemahub"))
    asyncio.run(session.run(2.0))
    lander = session.lander
    assert lander is not None and lander.pending() == 0 and lander.last_error is None and not session.errors
    rows = catalog.load_table(("schemahub", "raw_kraken_quotes")).scan().to_arrow()
    received = sum(session.received.values())
    assert received > 1000 and lander.landed == rows.num_rows == received
    assert rows.group_by(["pair", "time"]).aggregate([]).num_rows == received
    assert set(rows["pair"].to_pylist()) == {"BTC/USD", "ETH/USD"}
