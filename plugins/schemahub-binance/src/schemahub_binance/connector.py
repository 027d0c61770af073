"""Binance Spot: aggregated trades (``/api/v3/aggTrades``, cursor = aggregate trade id) and book ticker quotes,
REST and live (WebSocket ``<symbol>@bookTicker``, ``{u,s,b,B,a,A}``, on the combined ``/stream`` endpoint).

Paging: the first page starts at ``startTime`` (inclusive, ms) when a ``since``
is given, then every next page asks ``fromId = last a + 1`` (Binance refuses
``fromId`` together with a time bound). ``until`` is exclusive and checked on
``T``. Request weight (aggTrades 4, bookTicker 2) is drawn from the shared
session's bucket, and ``X-MBX-USED-WEIGHT-1M`` is tracked so the IP never
reaches a 429, let alone the 418 ban that follows one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from schemahub_core import (
    Column,
    Connector,
    ConnectorError,
    Cursor,
    CursorKind,
    IdContinuity,
    LiveFeed,
    LiveQuote,
    Page,
    RateLimit,
    Stream,
    VenuePolicy,
    venue_session,
)

TS = pa.timestamp("us", tz="UTC")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BASE_URL = "https://api.binance.com"
WS_URL = "wss://stream.binance.com:9443"
PAGE_SIZE = 1000
WEIGHTS = {"aggTrades": 4, "bookTicker": 2}

TRADES = Stream(
    name="trades",
    columns=(
        Column("symbol", pa.string()),  # added by the connector: aggTrades rows omit it
        Column("a", pa.int64()),
        Column("p", pa.float64(), "to_double"),
        Column("q", pa.float64(), "to_double"),
        Column("f", pa.int64()),
        Column("l", pa.int64()),
        Column("T", TS, "from_ms"),
        Column("m", pa.bool_()),
        Column("M_best_match", pa.bool_(), native="M"),  # "was the best price match"; `m` is beside it
    ),
    key=("symbol", "a"),
    cursor_kind=CursorKind.ID,
    event_time="T",
    ids=IdContinuity.CONTIGUOUS,  # aggregate ids are consecutive per symbol
)

QUOTES = Stream(
    name="quotes",
    columns=(
        Column("symbol", pa.string()),
        Column("bidPrice", pa.float64(), "to_double"),
        Column("bidQty", pa.float64(), "to_double"),
        Column("askPrice", pa.float64(), "to_double"),
        Column("askQty", pa.float64(), "to_double"),
        Column("time", TS, "from_us"),  # bookTicker has no time: the connector's receive time, µs
    ),
    key=("symbol", "time"),
    cursor_kind=CursorKind.TIME,
    event_time="time",
)


def _error_message(body: Any) -> str | None:
    if isinstance(body, dict) and "msg" in body:
        return f"{body['msg']} (code {body.get('code')})"
    return None


POLICY = VenuePolicy(
    name="binance",
    rate=RateLimit(6000, 60),  # request weight per minute per IP
    used_weight_header="X-MBX-USED-WEIGHT-1M",
    error_message=_error_message,
)


def _us(moment: datetime) -> int:
    """Exact epoch microseconds (naive datetimes are UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1)


class BinanceConnector(Connector):
    """Options: ``base_url``, ``api_key`` (sent as ``X-MBX-APIKEY``, optional for public data), ``page_size``,
    and the session's ``rate_limit`` / ``timeout`` / ``max_retries`` (see ``schemahub_core.framework.http``)."""

    name = "binance"
    description = "Binance Spot REST"
    streams = {"trades": TRADES, "quotes": QUOTES}
    default_symbols = ("BTC-USDT", "ETH-USDT")

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.base_url = str(self.options.get("base_url") or BASE_URL).rstrip("/")
        self.page_size = int(self.options.get("page_size") or PAGE_SIZE)
        key = self.options.get("api_key")
        self.session = venue_session(POLICY, self.options, {"X-MBX-APIKEY": key} if key else None)

    def native_symbol(self, symbol: str) -> str:
        return symbol.replace("-", "").replace("/", "").upper()

    def live_feed(self, symbols: Sequence[str]) -> BinanceLiveFeed:
        """``@bookTicker`` for ``symbols`` on one combined-stream connection (option ``ws_url``)."""
        return BinanceLiveFeed(str(self.options.get("ws_url") or WS_URL),
                               {self.native_symbol(s): s.upper() for s in symbols})

    def close(self) -> None:
        self.session.close()

    def fetch_trades(
        self,
        symbol: str,
        cursor: Cursor,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[Page]:
        """Pages of aggregate trades (see the module docstring for the paging rules)."""
        native = self.native_symbol(symbol)
        params: dict[str, Any] = {"symbol": native, "limit": self.page_size}
        if cursor is not None:
            params["fromId"] = int(cursor) + 1
        elif since is not None:
            params["startTime"] = -(-_us(since) // 1000)  # first whole ms at or after `since`
        until_us = _us(until) if until is not None else None
        while True:
            rows, _ = self.session.get_json(f"{self.base_url}/api/v3/aggTrades", params, WEIGHTS["aggTrades"])
            if not isinstance(rows, list):
                raise ConnectorError(f"binance: aggTrades for {native} returned {type(rows).__name__}, expected a list")
            records, payloads, last_id, done = [], [], None, False
            for row in rows:
                t = row.get("T") if isinstance(row, dict) else None
                if until_us is not None and isinstance(t, int) and t * 1000 >= until_us:
                    done = True
                    break
                payloads.append(json.dumps(row, separators=(",", ":")))
                records.append({**row, "symbol": native} if isinstance(row, dict) else row)
                if isinstance(row, dict) and isinstance(row.get("a"), int):
                    last_id = row["a"] if last_id is None else max(last_id, row["a"])
            if records:
                yield Page(records, last_id if last_id is not None else cursor, payloads)
                cursor = last_id if last_id is not None else cursor
            if done or len(rows) < self.page_size or last_id is None:
                return
            params = {"symbol": native, "limit": self.page_size, "fromId": last_id + 1}

    def fetch_quotes(self, symbol: str, cursor: Cursor, since: datetime | None = None,
                     until: datetime | None = None) -> Iterator[Page]:
        """One page: the current best bid/ask (REST has no quote history)."""
        yield self._quote(symbol)

    def _quote(self, symbol: str) -> Page:
        native = self.native_symbol(symbol)
        body, _ = self.session.get_json(f"{self.base_url}/api/v3/ticker/bookTicker", {"symbol": native},
                                        WEIGHTS["bookTicker"])
        if not isinstance(body, dict):
            raise ConnectorError(f"binance: bookTicker for {native} returned {type(body).__name__}, expected an object")
        received = _us(datetime.now(UTC))
        return Page([{**body, "time": received}], received, [json.dumps(body, separators=(",", ":"))])


class BinanceLiveFeed(LiveFeed):
    """Binance's book ticker stream. It carries no time: ``quote_ts`` is the receive time, as for REST."""

    exchange = "BINANCE"

    def connect_url(self) -> str:
        streams = "/".join(f"{native.lower()}@bookTicker" for native in self.symbols)
        return f"{self.url}/stream?streams={streams}"

    def parse(self, message: str, received: datetime) -> list[LiveQuote]:
        body = json.loads(message)
        data = body.get("data", body) if isinstance(body, dict) else None
        if not isinstance(data, dict) or "u" not in data:
            return []  # e.g. {"result": null, "id": 1}
        native = data["s"]
        record = {"symbol": native, "bidPrice": data["b"], "bidQty": data["B"], "askPrice": data["a"],
                  "askQty": data["A"], "time": _us(received)}
        return [LiveQuote(self.exchange, self.symbols.get(native, native), native, float(data["b"]), float(data["B"]),
                          float(data["a"]), float(data["A"]), received, received, record, message, int(data["u"]))]
