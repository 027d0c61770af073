"""Kraken Spot: ``/0/public/Trades`` (cursor = the nanosecond ``last`` token) and ``/0/public/Ticker`` quotes.

Kraken answers errors in a 200 body (``{"error": ["EAPI:Rate limit exceeded"]}``
is retried, ``EQuery:Unknown asset pair`` is not), keys the result by its own
pair name (ask for ``XBTUSD``, get ``XXBTZUSD``), and writes ``time`` as JSON
float seconds: the body is parsed with floats kept as their decimal text so the
``from_s`` cast is exact to the microsecond. ``since`` is exclusive on Kraken,
so a first run starts at ``since - 1 ns``; ``until`` is exclusive; when a run
stops at ``until`` mid-page the cursor is the last *yielded* trade's time, not
the page's ``last``, so a resume neither skips nor repeats.

Live quotes come from WebSocket v2 ``ticker`` (``event_trigger: bbo``: one update per best bid/offer
change; ``bid``/``bid_qty``/``ask``/``ask_qty`` are real book sizes, unlike the REST lot volumes).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemahub_core import (
    QUOTE_SCHEMA,
    Column,
    Connector,
    ConnectorError,
    Cursor,
    CursorKind,
    IdContinuity,
    JSONNumber,
    LiveFeed,
    LiveQuote,
    Page,
    QuoteBatch,
    RateLimit,
    RetryableError,
    Stream,
    VenuePolicy,
    dumps_exact,
    vectorized_rows,
    venue_session,
)

TS = pa.timestamp("us", tz="UTC")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BASE_URL = "https://api.kraken.com"
WS_URL = "wss://ws.kraken.com/v2"
PAGE_SIZE = 1000
FIELDS = ("price", "volume", "time", "side", "ordertype", "misc", "trade_id")
# Canonical -> the pair name Kraken accepts in requests (it answers with its own key, e.g. XXBTZUSD).
PAIRS = {"BTC-USD": "XBTUSD", "ETH-USD": "ETHUSD", "BTC-EUR": "XBTEUR", "ETH-EUR": "ETHEUR", "ETH-BTC": "ETHXBT"}
RETRYABLE = ("EAPI:Rate limit exceeded", "EService:Unavailable", "EService:Busy", "EGeneral:Temporary lockout")

TRADES = Stream(
    name="trades",
    columns=(
        Column("pair", pa.string()),  # Kraken's own result key, e.g. XXBTZUSD
        Column("price", pa.float64(), "to_double"),
        Column("volume", pa.float64(), "to_double"),
        Column("time", TS, "from_s"),  # float seconds, kept as decimal text
        Column("side", pa.string()),  # b/s: already the taker's side
        Column("ordertype", pa.string()),
        Column("misc", pa.string()),
        Column("trade_id", pa.int64()),
    ),
    key=("pair", "trade_id"),
    cursor_kind=CursorKind.TIME_NS,
    event_time="time",
    ids=IdContinuity.CONTIGUOUS,  # consecutive per pair (docs/venues.md); pre-2022 rows have none
)

QUOTES = Stream(
    name="quotes",
    columns=(
        Column("pair", pa.string()),
        Column("bid", pa.float64(), "to_double"),
        Column("bid_lot_volume", pa.float64(), "to_double"),  # Ticker lot volume: not book depth
        Column("ask", pa.float64(), "to_double"),
        Column("ask_lot_volume", pa.float64(), "to_double"),
        Column("bid_qty", pa.float64(), "to_double"),  # null from REST; the WebSocket ticker has real sizes
        Column("ask_qty", pa.float64(), "to_double"),
        Column("last", pa.float64(), "to_double"),
        Column("time", TS, "from_us"),  # Ticker has no time: the connector's receive time, µs
    ),
    key=("pair", "time"),
    cursor_kind=CursorKind.TIME,
    event_time="time",
)


def check_body(response: Any, body: Any) -> None:
    """Kraken reports errors inside 200 bodies: retry the transient ones, refuse the rest."""
    errors = body.get("error") if isinstance(body, dict) else None
    if not errors:
        if not isinstance(body, dict) or "result" not in body:
            raise ConnectorError(f"kraken: unexpected body from {response.url}: {str(body)[:120]}")
        return
    text = "; ".join(map(str, errors))
    if any(str(e).startswith(RETRYABLE) for e in errors):
        raise RetryableError(text)
    path = urlparse(response.url).path
    raise ConnectorError(f"kraken: {path}: {text}")


POLICY = VenuePolicy(
    name="kraken",
    rate=RateLimit(1, 1),  # public endpoints: about 1 request/s sustained
    # one request at a time, so 95 % leaves 53 ms between requests for arrival jitter (benchmarks/rate_limit.py:
    # 0.892 of the allowed rate at the default 90 %, where one request fewer per two minutes misses 0.9)
    headroom=0.95,
    backoff=1.0,
    parse_float=JSONNumber,  # keep `time` (and any float) as its exact decimal text, a number in _raw_payload
    check_body=check_body,
)


def _ns(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1) * 1000


def time_ns(value: Any) -> int | None:
    """Kraken float seconds (as decimal text or int) to exact integer nanoseconds (floored)."""
    try:
        return int((Decimal(str(value)) * 1_000_000_000).to_integral_value(rounding="ROUND_FLOOR"))
    except (InvalidOperation, ValueError):
        return None


def trade_record(pair_key: str, row: Any) -> Any:
    """One Trades row (``[price, volume, time, side, ordertype, misc, trade_id]``) as a record keyed by the
    pair name Kraken answered with. Rows of another shape are passed on as they are (the raw cast
    quarantines them); rows from before late 2022 have no ``trade_id``."""
    return dict(zip(FIELDS, row, strict=False), pair=pair_key) if isinstance(row, list) else row


class KrakenConnector(Connector):
    """Options: ``base_url``, ``page_size`` (``count``, ≤ 1000) and the session's ``rate_limit`` / ``timeout`` /
    ``max_retries``. Public market data needs no API key."""

    name = "kraken"
    description = "Kraken Spot REST"
    streams = {"trades": TRADES, "quotes": QUOTES}
    default_symbols = ("BTC-USD", "ETH-USD")

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.base_url = str(self.options.get("base_url") or BASE_URL).rstrip("/")
        self.page_size = self.option("page_size", PAGE_SIZE, int)
        self.session = venue_session(POLICY, self.options)

    def native_symbol(self, symbol: str) -> str:
        canonical = symbol.upper().replace("/", "-")
        return PAIRS.get(canonical, canonical.replace("-", "").replace("BTC", "XBT"))

    def close(self) -> None:
        self.session.close()

    def live_feed(self, symbols: Sequence[str]) -> KrakenLiveFeed:
        """WebSocket v2 ``ticker`` for ``symbols`` (v2 writes ``BTC/USD``; option ``ws_url``)."""
        return KrakenLiveFeed(str(self.options.get("ws_url") or WS_URL),
                              {s.upper().replace("-", "/"): s.upper() for s in symbols})

    def server_time(self) -> datetime:
        """The venue's clock: ``GET /0/public/Time`` (``result.unixtime``, whole seconds)."""
        body, _ = self.session.get_json(f"{self.base_url}/0/public/Time")
        unixtime = body["result"].get("unixtime") if isinstance(body.get("result"), dict) else None
        if not isinstance(unixtime, int | float):
            raise ConnectorError(f"kraken: /0/public/Time returned {str(body)[:120]}")
        return datetime.fromtimestamp(int(unixtime), UTC)

    def _result(self, path: str, params: dict[str, Any]) -> tuple[str, Any, dict[str, Any]]:
        body, _ = self.session.get_json(f"{self.base_url}{path}", params)
        result = body["result"]
        keys = [k for k in result if k != "last"]
        if len(keys) != 1:
            raise ConnectorError(f"kraken: {path} for {params.get('pair')}: expected one pair in the result, "
                                 f"got {keys}")
        return keys[0], result[keys[0]], result

    def fetch_trades(
        self,
        symbol: str,
        cursor: Cursor,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[Page]:
        """Pages of trades in time order (see the module docstring)."""
        pair = self.native_symbol(symbol)
        position: int | None = int(cursor) if cursor is not None else (_ns(since) - 1 if since is not None else None)
        until_ns = _ns(until) if until is not None else None
        while True:
            params = {"pair": pair, "count": self.page_size}
            if position is not None:
                params["since"] = position
            key, rows, result = self._result("/0/public/Trades", params)
            if not isinstance(rows, list):
                raise ConnectorError(f"kraken: Trades for {pair} returned {type(rows).__name__}, expected a list")
            records, payloads, last_ns, done = [], [], None, False
            for row in rows:
                t = time_ns(row[2]) if isinstance(row, list) and len(row) > 2 else None
                if until_ns is not None and t is not None and t >= until_ns:
                    done = True
                    break
                payloads.append(dumps_exact(row))
                records.append(trade_record(key, row))
                if t is not None:
                    last_ns = t if last_ns is None else max(last_ns, t)
            page_cursor = str(last_ns) if done and last_ns is not None else str(result.get("last") or last_ns)
            if records:
                yield Page(records, page_cursor, payloads)
            advanced = page_cursor not in (None, "None") and (position is None or int(page_cursor) > position)
            if done or len(rows) < self.page_size or not advanced:
                return
            position = int(page_cursor)

    def fetch_quotes(self, symbol: str, cursor: Cursor, since: datetime | None = None,
                     until: datetime | None = None) -> Iterator[Page]:
        """One page: the current best bid/ask (REST has no quote history)."""
        yield self._quote(self.native_symbol(symbol))

    def _quote(self, pair: str) -> Page:
        key, info, _ = self._result("/0/public/Ticker", {"pair": pair})
        if not isinstance(info, dict):
            raise ConnectorError(f"kraken: Ticker for {pair} returned {type(info).__name__}, expected an object")

        def field(name: str, i: int) -> Any:
            value = info.get(name)
            return value[i] if isinstance(value, list) and len(value) > i else None

        record = {"pair": key, "bid": field("b", 0), "bid_lot_volume": field("b", 2), "ask": field("a", 0),
                  "ask_lot_volume": field("a", 2), "bid_qty": None, "ask_qty": None, "last": field("c", 0),
                  "time": _ns(datetime.now(UTC)) // 1000}
        return Page([record], record["time"], [dumps_exact(info)])


TICKER_MESSAGE = pa.schema([  # a v2 ticker message: channel, type and the ticker of each symbol
    pa.field("channel", pa.string()), pa.field("type", pa.string()),
    pa.field("data", pa.list_(pa.struct([pa.field(n, pa.string() if n == "symbol" else pa.float64()) for n in (
        "symbol", "bid", "bid_qty", "ask", "ask_qty", "last")])))])


class KrakenLiveFeed(LiveFeed):
    """Kraken WS v2 ``ticker``. Its messages carry no time: ``quote_ts`` is the receive time."""

    exchange = "KRAKEN"

    def subscribe_messages(self) -> list[dict[str, Any]]:
        return [{"method": "subscribe", "params": {"channel": "ticker", "symbol": list(self.symbols),
                                                   "event_trigger": "bbo", "snapshot": True}}]

    def parse_batch(self, messages: Sequence[str], received_us: np.ndarray) -> QuoteBatch:
        """``ticker`` snapshots and updates read at once (pyarrow's JSON reader), one row per ``data`` item; any
        other message in the batch (status, acks, heartbeats, a bad one) sends the batch through ``parse``."""
        table = vectorized_rows(messages, TICKER_MESSAGE)
        kinds = table.column("type").combine_chunks()
        data = table.column("data").combine_chunks()
        if not pc.all(pc.fill_null(pc.and_(pc.equal(table.column("channel"), "ticker"),
                                           pc.is_in(kinds, pa.array(["snapshot", "update"]))), False)).as_py() \
                or data.null_count:
            return super().parse_batch(messages, received_us)
        items = pc.list_flatten(data)
        rows = pc.list_parent_indices(data)
        fields = {name: items.field(name) for name in ("symbol", "bid", "bid_qty", "ask", "ask_qty", "last")}
        if any(fields[k].null_count for k in ("symbol", "bid", "ask")):
            return super().parse_batch(messages, received_us)
        pair = fields["symbol"]
        known = pa.array(list(self.symbols), pa.string())
        symbol = pc.coalesce(pc.take(pa.array(list(self.symbols.values()), pa.string()), pc.index_in(pair, known)),
                             pair)
        received = pc.take(pa.array(received_us, pa.int64()), rows)
        quotes = pa.Table.from_arrays([pair, symbol, fields["bid"], fields["bid_qty"], fields["ask"], fields["ask_qty"],
                                       received, received, pa.nulls(len(items), pa.int64())], schema=QUOTE_SCHEMA)
        none = pa.nulls(len(items), pa.float64())
        records = pa.table({"pair": pair, "bid": fields["bid"], "bid_qty": fields["bid_qty"], "ask": fields["ask"],
                            "ask_qty": fields["ask_qty"], "bid_lot_volume": none, "ask_lot_volume": none,
                            "last": fields["last"], "time": received})
        return QuoteBatch(self.exchange, quotes, records, pc.take(pa.array(messages, pa.string()), rows))

    def parse(self, message: str, received: datetime) -> list[LiveQuote]:
        body = json.loads(message)
        if not isinstance(body, dict):
            return []
        if body.get("method") == "subscribe" and body.get("success") is False:
            self.report(f"kraken: {body.get('error')}")
        if body.get("channel") != "ticker" or body.get("type") not in ("snapshot", "update"):
            return []  # status, heartbeat, acks
        quotes = []
        for item in body.get("data") or []:
            pair = item["symbol"]
            record = {"pair": pair, "bid": item["bid"], "bid_qty": item.get("bid_qty"), "ask": item["ask"],
                      "ask_qty": item.get("ask_qty"), "bid_lot_volume": None, "ask_lot_volume": None,
                      "last": item.get("last"), "time": _ns(received) // 1000}
            quotes.append(LiveQuote(self.exchange, self.symbols.get(pair, pair), pair, float(item["bid"]),
                                    _float(item.get("bid_qty")), float(item["ask"]), _float(item.get("ask_qty")),
                                    received, received, record, message))
        return quotes


def _float(value: Any) -> float | None:
    return None if value is None else float(value)
