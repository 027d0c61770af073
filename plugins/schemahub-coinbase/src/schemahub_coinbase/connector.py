"""Coinbase Exchange: ``/products/{id}/trades`` (cursor = trade_id) and ``/products/{id}/ticker`` quotes.

Coinbase pages by ``trade_id`` only, newest first: ``after=X`` gives older
trades (ids < X), ``before=X`` the adjacent newer page (ids > X). There is no
time parameter, so a first run with ``since`` locates the first trade at or
after ``since`` by paging older with ``after`` (exponential steps back from the
newest trade, then bisection: about 2·log2(N) one-row requests instead of N/1000
full pages), and from there every page walks forward with ``before=<last id>``,
which is also how a run resumes from its cursor. ``until`` is exclusive.
REST ``side`` is the MAKER's side; the mapping inverts it.

Live quotes come from the WebSocket ``ticker`` channel (``best_bid``, ``best_bid_size``...,
``time``, ``sequence``), renamed to the REST ticker's columns so both land in ``raw_coinbase_quotes``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
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
BASE_URL = "https://api.exchange.coinbase.com"
WS_URL = "wss://ws-feed.exchange.coinbase.com"
PAGE_SIZE = 1000

TRADES = Stream(
    name="trades",
    columns=(
        Column("product_id", pa.string()),  # added by the connector from the request path
        Column("trade_id", pa.int64()),
        Column("price", pa.float64(), "to_double"),
        Column("size", pa.float64(), "to_double"),
        Column("side", pa.string()),  # the MAKER's side on REST trades
        Column("time", TS, "iso8601"),
    ),
    key=("product_id", "trade_id"),
    cursor_kind=CursorKind.ID,
    event_time="time",
    ids=IdContinuity.CONTIGUOUS,  # trade_id is consecutive per product
)

QUOTES = Stream(
    name="quotes",
    columns=(
        Column("product_id", pa.string()),
        Column("trade_id", pa.int64()),
        Column("price", pa.float64(), "to_double"),  # last trade
        Column("size", pa.float64(), "to_double"),  # last trade's size, not a quote size
        Column("bid", pa.float64(), "to_double"),
        Column("ask", pa.float64(), "to_double"),
        Column("bid_size", pa.float64(), "to_double"),  # not in the REST ticker (null); WebSocket ticker has it
        Column("ask_size", pa.float64(), "to_double"),
        Column("volume", pa.float64(), "to_double"),
        Column("time", TS, "iso8601"),
    ),
    key=("product_id", "time"),
    cursor_kind=CursorKind.TIME,
    event_time="time",
)


def _error_message(body: Any) -> str | None:
    return str(body["message"]) if isinstance(body, dict) and "message" in body else None


POLICY = VenuePolicy(
    name="coinbase",
    rate=RateLimit(10, 1),  # public endpoints: 10 requests/s per IP (bursts to 15)
    # the venue's bucket takes bursts of 15, which absorbs arrival jitter: 97 % of the rate never trips it
    # (benchmarks/rate_limit.py measured 0.894 of the allowed rate at the default 90 %)
    headroom=0.97,
    error_message=_error_message,
)


def _parse_time(text: str) -> datetime:
    """Coinbase ISO time (µs or ms, ``Z``) to an aware datetime, exactly."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class CoinbaseConnector(Connector):
    """Options: ``base_url``, ``page_size`` and the session's ``rate_limit`` / ``timeout`` / ``max_retries``.
    Public market data needs no API key."""

    name = "coinbase"
    description = "Coinbase Exchange REST"
    streams = {"trades": TRADES, "quotes": QUOTES}
    default_symbols = ("BTC-USD", "ETH-USD")

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.base_url = str(self.options.get("base_url") or BASE_URL).rstrip("/")
        self.page_size = self.option("page_size", PAGE_SIZE, int)
        self.session = venue_session(POLICY, self.options)

    def native_symbol(self, symbol: str) -> str:
        return symbol.replace("/", "-").upper()

    def live_feed(self, symbols: Sequence[str]) -> CoinbaseLiveFeed:
        """The ``ticker`` channel for ``symbols`` (option ``ws_url``)."""
        return CoinbaseLiveFeed(str(self.options.get("ws_url") or WS_URL),
                                {self.native_symbol(s): s.upper() for s in symbols})

    def close(self) -> None:
        self.session.close()

    def server_time(self) -> datetime:
        """The venue's clock: ``GET /time`` (``iso``, milliseconds)."""
        body, _ = self.session.get_json(f"{self.base_url}/time")
        if not isinstance(body, dict) or not isinstance(body.get("iso"), str):
            raise ConnectorError(f"coinbase: /time returned {str(body)[:120]}")
        try:
            return _parse_time(body["iso"]).astimezone(UTC)
        except ValueError:
            raise ConnectorError(f"coinbase: /time returned an unreadable time {body['iso']!r}") from None

    def _trades(self, product: str, **params: Any) -> list[dict[str, Any]]:
        rows, _ = self.session.get_json(f"{self.base_url}/products/{product}/trades", params)
        if not isinstance(rows, list):
            raise ConnectorError(f"coinbase: trades for {product} returned {type(rows).__name__}, expected a list")
        return rows

    def _trade_before(self, product: str, trade_id: int) -> tuple[int, datetime] | None:
        """(id, time) of the newest trade with an id below ``trade_id``; None when there is none."""
        rows = self._trades(product, after=trade_id, limit=1)
        return self._id_time(product, rows[0]) if rows else None

    @staticmethod
    def _id_time(product: str, row: Any) -> tuple[int, datetime]:
        t = _time_or_none(row) if isinstance(row, dict) else None
        if t is None or not isinstance(row.get("trade_id"), int):
            raise ConnectorError(f"coinbase: malformed trade while locating the start time for {product}: "
                                 f"{str(row)[:120]}")
        return row["trade_id"], t

    def _start_id(self, product: str, since: datetime) -> int | None:
        """The id just before the first trade at or after ``since`` (None: no trade that late yet)."""
        newest = self._trades(product, limit=1)
        if not newest:
            return None
        hi, t = self._id_time(product, newest[0])  # hi: a trade at or after `since`
        if t < since:
            return None
        step, lo = 1000, None
        while lo is None:  # page older in growing steps until a trade before `since`
            found = self._trade_before(product, hi - step + 1)
            if found is None:  # history starts within the step: bisect from before its start
                lo = hi - step
            elif found[1] < since:
                lo = found[0]
            else:
                hi, step = found[0], step * 2
        while hi - lo > 1:  # bisect: lo is before `since`, hi at or after it
            mid = (lo + hi) // 2
            found = self._trade_before(product, mid + 1)
            if found is None or found[0] <= lo:
                lo = mid
            elif found[1] < since:
                lo = found[0]
            else:
                hi = found[0]
        return lo

    def fetch_trades(
        self,
        symbol: str,
        cursor: Cursor,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[Page]:
        """Pages of trades in ascending trade_id order (see the module docstring)."""
        product = self.native_symbol(symbol)
        since, until = _aware(since), _aware(until)
        if cursor is None and since is not None:
            start = self._start_id(product, since)
            if start is None:
                return
            cursor = start
        if cursor is None:  # no position at all: the newest page, then forward from it
            rows = self._trades(product, limit=self.page_size)
        else:
            rows = self._trades(product, before=int(cursor), limit=self.page_size)
        while True:
            rows = sorted(rows, key=_order)
            records, payloads, last_id, done = [], [], None, False
            for row in rows:
                if until is not None and isinstance(row, dict) and _time_or_none(row) is not None \
                        and _time_or_none(row) >= until:
                    done = True
                    break
                payloads.append(json.dumps(row, separators=(",", ":")))
                records.append({**row, "product_id": product} if isinstance(row, dict) else row)
                if isinstance(row, dict) and isinstance(row.get("trade_id"), int):
                    last_id = row["trade_id"] if last_id is None else max(last_id, row["trade_id"])
            if records:
                yield Page(records, last_id if last_id is not None else cursor, payloads)
            if done or len(rows) < self.page_size or last_id is None:
                return
            rows = self._trades(product, before=last_id, limit=self.page_size)

    def fetch_quotes(self, symbol: str, cursor: Cursor, since: datetime | None = None,
                     until: datetime | None = None) -> Iterator[Page]:
        """One page: the current best bid/ask (REST has no quote history)."""
        yield self._quote(self.native_symbol(symbol))

    def _quote(self, product: str) -> Page:
        body, _ = self.session.get_json(f"{self.base_url}/products/{product}/ticker")
        if not isinstance(body, dict):
            raise ConnectorError(f"coinbase: ticker for {product} returned {type(body).__name__}, expected an object")
        return Page([{**body, "product_id": product}], body.get("time"), [json.dumps(body, separators=(",", ":"))])


def _time_or_none(row: dict[str, Any]) -> datetime | None:
    try:
        return _parse_time(row["time"]).astimezone(UTC)
    except (KeyError, TypeError, ValueError):
        return None



def _order(row: Any) -> int:
    """Ascending trade_id; rows without a usable id (quarantined later) first."""
    return row["trade_id"] if isinstance(row, dict) and isinstance(row.get("trade_id"), int) else -1


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


class CoinbaseLiveFeed(LiveFeed):
    """Coinbase Exchange ``ticker`` channel; ``time`` is the venue's, ``sequence`` orders the messages."""

    exchange = "COINBASE"

    def subscribe_messages(self) -> list[dict[str, Any]]:
        return [{"type": "subscribe", "product_ids": list(self.symbols), "channels": ["ticker"]}]

    def parse(self, message: str, received: datetime) -> list[LiveQuote]:
        body = json.loads(message)
        kind = body.get("type") if isinstance(body, dict) else None
        if kind == "error":
            self.report(f"coinbase: {body.get('message')}: {body.get('reason')}")
        if kind != "ticker":
            return []  # subscriptions, heartbeat...
        product = body["product_id"]
        record = {"product_id": product, "trade_id": body.get("trade_id"), "price": body.get("price"),
                  "size": body.get("last_size"), "bid": body["best_bid"], "ask": body["best_ask"],
                  "bid_size": body.get("best_bid_size"), "ask_size": body.get("best_ask_size"),
                  "volume": body.get("volume_24h"), "time": body["time"]}
        bid_size, ask_size = body.get("best_bid_size"), body.get("best_ask_size")
        sequence = body.get("sequence")
        return [LiveQuote(self.exchange, self.symbols.get(product, product), product, float(body["best_bid"]),
                          float(bid_size) if bid_size is not None else None, float(body["best_ask"]),
                          float(ask_size) if ask_size is not None else None, _parse_time(body["time"]), received,
                          record, message, sequence if isinstance(sequence, int) else None)]
