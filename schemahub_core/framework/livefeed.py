"""The live-feed contract: a venue's WebSocket best bid/ask, normalized, with the connection handled here.

A connector that streams quotes returns a ``LiveFeed`` subclass from
``Connector.live_feed(symbols)``. The plugin says only what is venue-specific
(where to connect, what to send once connected, how messages become quotes);
the core owns everything every venue needs the same way:

- reconnect on any close or error, with exponential backoff and jitter, forever
  (a live view must outlive a venue's hiccup), and a status callback so the view
  can mark the venue stale meanwhile;
- a receive time that strictly increases per feed, so it is a unique key and a
  cursor for landing even when two messages arrive in the same microsecond;
- dropping repeats, e.g. the snapshot a venue resends on (re)subscribe when the
  book has not changed, so each quote is handed on once;
- a malformed message is counted and skipped, never fatal.

Throughput: the connection is a small RFC 6455 client (``_Socket``) that splits every complete frame of a
read at once, so a busy feed hands on ``QuoteBatch``es (columns, not objects) of all the messages that
arrived together. ``LiveFeed.parse_batch`` turns them into columns; its default calls ``parse`` per message,
and a plugin can override it with a vectorized reader (pyarrow's JSON reader), as the bundled venues do.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_MESSAGE = 2**22  # bytes: a larger message is a protocol error (as websockets' max_size)
READ_SIZE = 2**20


def epoch_us(moment: datetime) -> int:
    """Exact epoch microseconds of an aware datetime."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


@dataclass(frozen=True)
class LiveQuote:
    """One best bid/ask, normalized to the quotes schema, plus what landing needs.

    ``record`` holds the venue's native fields under the column names of the
    connector's ``LiveFeed.stream`` (so live rows land in the same raw table as
    REST ones); ``payload`` is the message as received.
    """

    exchange: str  # upper case, e.g. BINANCE
    symbol: str  # canonical BASE-QUOTE
    native_symbol: str
    bid_price: float
    bid_qty: float | None
    ask_price: float
    ask_qty: float | None
    quote_ts: datetime  # the venue's time when it sends one, else the receive time
    ingest_ts: datetime  # receive time, strictly increasing per feed
    record: dict[str, Any]
    payload: str
    sequence: int | None = None  # the venue's update id when it has one (Binance u, Coinbase sequence)

    @property
    def mid(self) -> float:
        return (self.bid_price + self.ask_price) / 2

    @property
    def spread_bps(self) -> float:
        return (self.ask_price - self.bid_price) / self.mid * 1e4 if self.mid else 0.0

    @property
    def cursor(self) -> int:
        """The landing cursor: receive time in µs (unique and increasing per feed)."""
        return epoch_us(self.ingest_ts)


QUOTE_SCHEMA = pa.schema([
    pa.field("native_symbol", pa.string()),
    pa.field("symbol", pa.string()),
    pa.field("bid_price", pa.float64()),
    pa.field("bid_qty", pa.float64()),
    pa.field("ask_price", pa.float64()),
    pa.field("ask_qty", pa.float64()),
    pa.field("quote_us", pa.int64()),  # the venue's time when it sends one, else the receive time
    pa.field("ingest_us", pa.int64()),  # receive time, strictly increasing per feed: the landing cursor
    pa.field("sequence", pa.int64()),
])


@dataclass(frozen=True)
class QuoteBatch:
    """Quotes as columns: ``quotes`` (``QUOTE_SCHEMA``, what the board reads), ``records`` (the same rows as
    the stream's record fields, by record key, in the venue's form: what lands) and ``payloads`` (each row's
    message, as received)."""

    exchange: str
    quotes: pa.Table
    records: pa.Table
    payloads: pa.Array

    @property
    def num_rows(self) -> int:
        return self.quotes.num_rows

    def filter(self, mask: pa.Array | pa.ChunkedArray | np.ndarray) -> QuoteBatch:
        if isinstance(mask, np.ndarray):
            mask = pa.array(mask, pa.bool_())
        elif isinstance(mask, pa.ChunkedArray):
            mask = mask.combine_chunks()
        return QuoteBatch(self.exchange, self.quotes.filter(mask), self.records.filter(mask),
                          self.payloads.filter(mask))

    def slice(self, offset: int, length: int | None = None) -> QuoteBatch:
        return QuoteBatch(self.exchange, self.quotes.slice(offset, length), self.records.slice(offset, length),
                          self.payloads.slice(offset, length))

    def quote(self, i: int) -> LiveQuote:
        """Row ``i`` as a ``LiveQuote`` (the board keeps the newest per market; callbacks get every one)."""
        q = {name: self.quotes.column(name)[i].as_py() for name in self.quotes.column_names}
        record = {name: self.records.column(name)[i].as_py() for name in self.records.column_names}
        return LiveQuote(self.exchange, q["symbol"], q["native_symbol"], q["bid_price"], q["bid_qty"], q["ask_price"],
                         q["ask_qty"], from_us(q["quote_us"]), from_us(q["ingest_us"]), record,
                         self.payloads[i].as_py(), q["sequence"])

    def to_quotes(self) -> list[LiveQuote]:
        return [self.quote(i) for i in range(self.num_rows)]

    def newest_per_symbol(self) -> list[int]:
        """Row index of the last quote of each symbol, in the order the symbols last appear."""
        symbols = self.quotes.column("symbol").to_pylist()
        last = {s: i for i, s in enumerate(symbols)}
        return sorted(last.values())

    @classmethod
    def from_quotes(cls, exchange: str, quotes: Sequence[LiveQuote]) -> QuoteBatch:
        """Columns of ``LiveQuote`` objects (one feed's: their records have the same fields)."""
        record_keys = list(dict.fromkeys(k for q in quotes for k in q.record))
        rows = {
            "native_symbol": [q.native_symbol for q in quotes], "symbol": [q.symbol for q in quotes],
            "bid_price": [q.bid_price for q in quotes], "bid_qty": [q.bid_qty for q in quotes],
            "ask_price": [q.ask_price for q in quotes], "ask_qty": [q.ask_qty for q in quotes],
            "quote_us": [epoch_us(q.quote_ts) for q in quotes], "ingest_us": [epoch_us(q.ingest_ts) for q in quotes],
            "sequence": [q.sequence for q in quotes],
        }
        records = pa.table({k: _array([q.record.get(k) for q in quotes]) for k in record_keys}) if record_keys \
            else pa.table({})
        return cls(exchange, pa.Table.from_pydict(rows, schema=QUOTE_SCHEMA), records,
                   pa.array([q.payload for q in quotes], pa.string()))

    @classmethod
    def concat(cls, batches: Sequence[QuoteBatch]) -> QuoteBatch:
        return cls(batches[0].exchange, pa.concat_tables([b.quotes for b in batches]),
                   pa.concat_tables([b.records for b in batches], promote_options="permissive"),
                   pa.concat_arrays([b.payloads for b in batches]))


def _array(values: list[Any]) -> pa.Array:
    """One record field as a column; mixed JSON types are kept as text (the raw cast reads both)."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


class WebSocketError(ConnectionError):
    """The venue refused the handshake, broke the protocol or closed the connection."""


class _Socket:
    """A small RFC 6455 client: handshake, masked frames out, and every complete frame of a read in at once.

    No extension is negotiated (no compression). Pings are answered; a close is answered and ends the
    connection after the messages read before it.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buffer = bytearray()
        self.fragments: list[bytes] = []
        self.close_code: int | None = None

    @classmethod
    async def connect(cls, url: str, open_timeout: float) -> _Socket:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss"):
            raise WebSocketError(f"not a WebSocket URL: {url}")
        secure = parts.scheme == "wss"
        host = parts.hostname or ""
        port = parts.port or (443 if secure else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = base64.b64encode(os.urandom(16)).decode()
        async with asyncio.timeout(open_timeout):
            reader, writer = await asyncio.open_connection(host, port, ssl=ssl.create_default_context() if secure
                                                           else None, limit=MAX_MESSAGE)
            sock = cls(reader, writer)
            try:
                writer.write((f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                              f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                              "User-Agent: schemahub\r\n\r\n").encode())
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            except BaseException:
                writer.close()
                raise
        status = head.split("\r\n", 1)[0]
        fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head.split("\r\n")[1:])}
        expected = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode())
                                    .digest()).decode()
        if status.split(" ")[1:2] != ["101"] or fields.get("sec-websocket-accept") != expected:
            writer.close()
            code = status.split(" ")[1] if len(status.split(" ")) > 1 else "?"
            raise WebSocketError(f"server rejected WebSocket connection: HTTP {code}")
        return sock

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 2**16:
            head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
        self.writer.write(head + mask + bytes(b ^ mask[i & 3] for i, b in enumerate(payload)))

    async def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode())
        await self.writer.drain()

    async def read_messages(self) -> list[bytes] | None:
        """The messages of the next read (maybe none yet); None once the connection is closed."""
        if self.close_code is not None:
            return None
        data = await self.reader.read(READ_SIZE)
        if not data:
            self.close_code = 1006
            return None
        buf = self.buffer
        buf += data
        out: list[bytes] = []
        i, size = 0, len(buf)
        while size - i >= 2:
            first, second = buf[i], buf[i + 1]
            if second & 0x80:
                raise WebSocketError("the server masked a frame")
            n, head = second & 0x7F, 2
            if n == 126:
                if size - i < 4:
                    break
                n, head = int.from_bytes(buf[i + 2:i + 4], "big"), 4
            elif n == 127:
                if size - i < 10:
                    break
                n, head = int.from_bytes(buf[i + 2:i + 10], "big"), 10
            if n > MAX_MESSAGE:
                raise WebSocketError(f"message of {n} bytes is over the limit of {MAX_MESSAGE}")
            if size - i < head + n:
                break
            payload = bytes(buf[i + head:i + head + n])
            i += head + n
            opcode = first & 0x0F
            if opcode in (0x1, 0x2, 0x0):
                if first & 0x80 and not self.fragments:
                    out.append(payload)
                else:
                    self.fragments.append(payload)
                    if first & 0x80:
                        out.append(b"".join(self.fragments))
                        self.fragments = []
            elif opcode == 0x9:
                self._send_frame(0xA, payload)
            elif opcode == 0x8:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self._send_frame(0x8, payload[:2])
                break
        del buf[:i]
        return out

    async def close(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            if self.close_code is None:
                self._send_frame(0x8, (1000).to_bytes(2, "big"))
            self.writer.close()
        with contextlib.suppress(OSError, RuntimeError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 1)


StatusCallback = Callable[["LiveFeed", str], None]


class LiveFeed:
    """A venue's WebSocket quote feed for some markets (``symbols``: native -> canonical).

    Subclasses set ``exchange`` and implement ``parse`` (optionally ``parse_batch``, for speed); override
    ``connect_url`` and ``subscribe_messages`` when the venue needs them. Iterate ``batches()`` (or
    ``quotes()``, one object per quote).
    """

    exchange: ClassVar[str] = ""
    stream: ClassVar[str] = "quotes"  # the connector stream whose raw columns ``LiveQuote.record`` fills

    def __init__(self, url: str, symbols: Mapping[str, str], *, min_backoff: float = 0.1,
                 max_backoff: float = 5.0, open_timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.symbols = dict(symbols)
        self.min_backoff, self.max_backoff, self.open_timeout = min_backoff, max_backoff, open_timeout
        self.connected = False
        self.connects = 0  # successful connections (1 + reconnects)
        self.drops = 0  # connections lost after they were up
        self.failed_attempts = 0
        self.bad_messages = 0
        self.messages = 0  # messages read (quotes, acks, heartbeats, bad ones)
        self.repeats = 0  # quotes dropped as repeats of the previous one
        self.last_error: str | None = None
        self.on_status: StatusCallback | None = None
        self._last_us = 0
        self._last: dict[str, Any] = {}

    # -- venue specifics ---------------------------------------------------------------------------
    def connect_url(self) -> str:
        return self.url

    def subscribe_messages(self) -> list[Any]:
        """Messages sent right after connecting (dicts are sent as JSON)."""
        return []

    def parse(self, message: str, received: datetime) -> list[LiveQuote]:
        """The quotes in one message (``[]`` for acks, heartbeats...); ``received`` is the receive time."""
        raise NotImplementedError(f"{type(self).__name__}.parse is not implemented")

    def parse_batch(self, messages: Sequence[str], received_us: np.ndarray) -> QuoteBatch:
        """The quotes of ``messages`` as columns; ``received_us[i]`` is message ``i``'s receive time (µs).

        The default calls ``parse`` per message (a message it cannot read is counted and skipped). Override
        it to read many messages at once, and fall back to this one for a batch your reader refuses.
        """
        quotes: list[LiveQuote] = []
        for message, us in zip(messages, received_us.tolist(), strict=True):
            try:
                quotes += self.parse(message, from_us(us))
            except Exception as exc:  # a bad message is skipped, the feed goes on
                self.bad_messages += 1
                self.last_error = f"unreadable message: {type(exc).__name__}: {exc}"
        return QuoteBatch.from_quotes(self.exchange, quotes)

    def report(self, error: str) -> None:
        """Record a venue-side error (a refused subscription...) without stopping the feed."""
        self.last_error = error

    # -- the connection ----------------------------------------------------------------------------
    def _receive_times(self, n: int) -> np.ndarray:
        """``n`` receive times (µs) for messages read now: strictly increasing, also across reads."""
        first = max(epoch_us(datetime.now(UTC)), self._last_us + 1)
        self._last_us = first + n - 1
        return np.arange(first, first + n, dtype=np.int64)

    def _receive_time(self) -> datetime:
        return from_us(int(self._receive_times(1)[0]))

    def _is_repeat(self, quote: LiveQuote) -> bool:
        key = quote.native_symbol
        if quote.sequence is not None:
            last = self._last.get(key)
            self._last[key] = max(quote.sequence, last) if isinstance(last, int) else quote.sequence
            return isinstance(last, int) and quote.sequence <= last
        content = (quote.bid_price, quote.bid_qty, quote.ask_price, quote.ask_qty)
        repeat = self._last.get(key) == content
        self._last[key] = content
        return repeat

    def drop_repeats(self, batch: QuoteBatch) -> QuoteBatch:
        """The batch without repeats, per market: a sequence not above the highest seen, else the same book as
        the market's previous quote (what ``_is_repeat`` decides per quote, on whole columns)."""
        n = batch.num_rows
        if n == 0:
            return batch
        q = batch.quotes
        natives = q.column("native_symbol").to_numpy(zero_copy_only=False)
        sequence = q.column("sequence")
        keep = np.ones(n, dtype=bool)
        if sequence.null_count == 0:
            seqs = sequence.to_numpy()
            for native in np.unique(natives):
                idx = np.flatnonzero(natives == native)
                values = seqs[idx]
                last = self._last.get(native)
                start = last if isinstance(last, int) else np.iinfo(np.int64).min
                seen = np.maximum.accumulate(np.concatenate(([start], values)))[:-1]
                keep[idx] = values > seen
                self._last[native] = int(max(start, values.max()))
        elif sequence.null_count == n:  # no ids: the same book as the market's previous quote is a repeat
            book = np.column_stack([q.column(c).to_numpy(zero_copy_only=False).astype(float)
                                    for c in ("bid_price", "bid_qty", "ask_price", "ask_qty")])
            for native in np.unique(natives):
                idx = np.flatnonzero(natives == native)
                last = self._last.get(native)
                previous = np.vstack([np.array([np.nan if v is None else v for v in last], dtype=float)
                                      if isinstance(last, tuple) else np.full(4, np.inf), book[idx][:-1]])
                same = (book[idx] == previous) | (np.isnan(book[idx]) & np.isnan(previous))
                keep[idx] = ~same.all(axis=1)
                b, bq, a, aq = (None if np.isnan(v) else float(v) for v in book[idx[-1]])
                self._last[native] = (b, bq, a, aq)
        else:  # a mix: quote by quote
            for i, quote in enumerate(batch.to_quotes()):
                keep[i] = not self._is_repeat(quote)
        dropped = n - int(keep.sum())
        if not dropped:
            return batch
        self.repeats += dropped
        return batch.filter(keep)

    def _status(self, connected: bool) -> None:
        self.connected = connected
        if self.on_status is not None:
            self.on_status(self, "connected" if connected else "disconnected")

    def backoff(self, attempt: int) -> float:
        return min(self.max_backoff, self.min_backoff * 2 ** min(attempt, 10)) * random.uniform(0.5, 1.0)

    def _read(self, raw: list[bytes]) -> QuoteBatch:
        self.messages += len(raw)
        texts = [m.decode("utf-8", "replace") for m in raw]
        received = self._receive_times(len(texts))
        try:
            batch = self.parse_batch(texts, received)
        except Exception:  # a plugin's batch reader failed: message by message, so only the bad ones are lost
            batch = LiveFeed.parse_batch(self, texts, received)
        return self.drop_repeats(batch)

    async def batches(self) -> AsyncIterator[QuoteBatch]:
        """Quotes as they arrive, a batch per read (every message that arrived together), across reconnects,
        until the consumer stops iterating. Batches are never empty."""
        attempt = 0
        while True:
            sock: _Socket | None = None
            try:
                sock = await _Socket.connect(self.connect_url(), self.open_timeout)
                for message in self.subscribe_messages():
                    await sock.send(message if isinstance(message, str) else json.dumps(message))
                attempt = 0
                self.connects += 1
                self._status(True)
                while (raw := await sock.read_messages()) is not None:
                    if raw:
                        batch = self._read(raw)
                        if batch.num_rows:
                            yield batch
                self.last_error = f"closed by the venue (code {sock.close_code})"
            except (OSError, TimeoutError, EOFError, asyncio.LimitOverrunError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                if sock is not None:
                    await sock.close()
            if self.connected:
                self.drops += 1
                self._status(False)
            else:
                self.failed_attempts += 1
            await asyncio.sleep(self.backoff(attempt))
            attempt += 1

    async def quotes(self) -> AsyncIterator[LiveQuote]:
        """Quotes as they arrive, one object each (``batches`` is the fast path)."""
        async for batch in self.batches():
            for quote in batch.to_quotes():
                yield quote


def vectorized_rows(messages: Sequence[str], schema: pa.Schema) -> pa.Table:
    """``messages`` (one JSON object each) read at once with ``schema`` (other fields ignored), one row per
    message; raises when any message is not such an object, so the caller can fall back to ``parse``."""
    import pyarrow.json as pj

    text = "\n".join(messages).encode()
    if any("\n" in m for m in messages):
        raise ValueError("a message spans lines")
    table = pj.read_json(pa.BufferReader(text), parse_options=pj.ParseOptions(
        explicit_schema=schema, unexpected_field_behavior="ignore"))
    if table.num_rows != len(messages):
        raise ValueError("messages and rows do not line up")
    return table

