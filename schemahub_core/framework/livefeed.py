"""The live-feed contract: a venue's WebSocket best bid/ask, normalized, with the connection handled here.

A connector that streams quotes returns a ``LiveFeed`` subclass from
``Connector.live_feed(symbols)``. The plugin says only what is venue-specific
(where to connect, what to send once connected, how one message becomes
``LiveQuote``s); the core owns everything every venue needs the same way:

- reconnect on any close or error, with exponential backoff and jitter, forever
  (a live view must outlive a venue's hiccup), and a status callback so the view
  can mark the venue stale meanwhile;
- a receive time that strictly increases per feed, so it is a unique key and a
  cursor for landing even when two messages arrive in the same microsecond;
- dropping repeats, e.g. the snapshot a venue resends on (re)subscribe when the
  book has not changed, so each quote is handed on once;
- a malformed message is counted and skipped, never fatal.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import websockets

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_us(moment: datetime) -> int:
    """Exact epoch microseconds of an aware datetime."""
    return (moment - EPOCH) // timedelta(microseconds=1)


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


StatusCallback = Callable[["LiveFeed", str], None]


class LiveFeed:
    """A venue's WebSocket quote feed for some markets (``symbols``: native -> canonical).

    Subclasses set ``exchange`` and implement ``parse``; override ``connect_url``
    and ``subscribe_messages`` when the venue needs them. Iterate ``quotes()``.
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

    def report(self, error: str) -> None:
        """Record a venue-side error (a refused subscription...) without stopping the feed."""
        self.last_error = error

    # -- the connection ----------------------------------------------------------------------------
    def _receive_time(self) -> datetime:
        now = epoch_us(datetime.now(UTC))
        self._last_us = max(now, self._last_us + 1)
        return EPOCH + timedelta(microseconds=self._last_us)

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

    def _status(self, connected: bool) -> None:
        self.connected = connected
        if self.on_status is not None:
            self.on_status(self, "connected" if connected else "disconnected")

    def backoff(self, attempt: int) -> float:
        return min(self.max_backoff, self.min_backoff * 2 ** min(attempt, 10)) * random.uniform(0.5, 1.0)

    async def quotes(self) -> AsyncIterator[LiveQuote]:
        """Quotes as they arrive, across reconnects, until the consumer stops iterating."""
        attempt = 0
        while True:
            try:
                async with websockets.connect(self.connect_url(), open_timeout=self.open_timeout,
                                              close_timeout=1, max_size=2**22) as ws:
                    for message in self.subscribe_messages():
                        await ws.send(message if isinstance(message, str) else json.dumps(message))
                    attempt = 0
                    self.connects += 1
                    self._status(True)
                    async for message in ws:
                        received = self._receive_time()
                        text = message if isinstance(message, str) else message.decode("utf-8", "replace")
                        try:
                            parsed = self.parse(text, received)
                        except Exception as exc:  # a bad message is skipped, the feed goes on
                            self.bad_messages += 1
                            self.last_error = f"unreadable message: {type(exc).__name__}: {exc}"
                            continue
                        for quote in parsed:
                            if self._is_repeat(quote):
                                self.repeats += 1
                                continue
                            yield quote
                    self.last_error = f"closed by the venue (code {ws.close_code})"
            except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            if self.connected:
                self.drops += 1
                self._status(False)
            else:
                self.failed_attempts += 1
            await asyncio.sleep(self.backoff(attempt))
            attempt += 1
