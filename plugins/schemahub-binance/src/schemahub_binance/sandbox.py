"""Simulated Binance Spot REST (``/api/v3``): aggTrades, trades, historicalTrades, bookTicker, exchangeInfo;
WebSocket ``@bookTicker``.

Wire format, parameter rules, weights, ``X-MBX-USED-WEIGHT-1M`` and error
bodies follow the real API (see docs/VENUES facts): aggTrades rows
``{a,p,q,f,l,T,m,M}``, ``fromId`` cannot be combined with ``startTime``/``endTime``,
both time bounds are inclusive, ``m`` true means the buyer was the maker.

Individual trades are the fills each simulated aggregate trade stands for: aggregate ``i`` (its position in
the series) is ``1 + i % 2`` fills with the consecutive ids ``f..l``, at its price and time, with its taker
side, their quantities summing to its ``q`` exactly (``{id,price,qty,quoteQty,time,isBuyerMaker,isBestMatch}``,
``quoteQty = price * qty``). So the ids of consecutive aggregates join up, as on Binance.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from schemahub_core.sandbox import (
    ArchiveShelf,
    FirehosePlan,
    Limit,
    MarketVenue,
    Quote,
    Trade,
    TradeColumns,
    VenueApp,
    Verdict,
    bad_request,
    int_param,
    to_ns,
)

SYMBOLS = {"BTCUSDT": ("BTC", "USDT"), "ETHUSDT": ("ETH", "USDT")}
# Binance leads the simulated market: no lag, a USDT premium, the tightest spread, ms timestamps.
PROFILE = MarketVenue("binance", (0.0, 0.0), 0.00025, 0.3, {"BTC": 3.0, "ETH": 2.0}, 1_000_000, 2_900_000_000)
WEIGHTS = {"aggTrades": 4, "trades": 25, "historicalTrades": 25, "bookTicker": 2, "exchangeInfo": 20, "ping": 1,
           "time": 1}
FIRST_TRADE_ID = 1_000_000_000  # id of the first individual trade of each symbol's series
MS = 1_000_000
INVALID_SYMBOL = {"code": -1121, "msg": "Invalid symbol."}
MICROS_FROM = datetime(2025, 1, 1, tzinfo=UTC)  # spot archives: µs timestamps from this day on, ms before
ARCHIVE_NAME = re.compile(
    r"^(?P<symbol>[A-Z0-9]+)-(?P<kind>aggTrades|trades)-(?P<year>\d{4})-(?P<month>\d{2})(?:-(?P<day>\d{2}))?\.zip$")


def _first_id(index: int) -> int:
    """Id of the first fill of aggregate ``index``: aggregates hold 1, 2, 1, 2, ... fills."""
    return FIRST_TRADE_ID + index + index // 2


def _aggregate_of(trade_id: int) -> tuple[int, int]:
    """(aggregate index, position inside it) of individual trade ``trade_id`` (inverse of ``_first_id``)."""
    k, r = divmod(trade_id - FIRST_TRADE_ID, 3)  # floor division: ids before the anchor map back too
    return (2 * k, 0) if r == 0 else (2 * k + 1, r - 1)


def _row(trade: Trade) -> dict:
    first = _first_id(trade.index)
    return {
        "a": trade.id,
        "p": f"{trade.price:.8f}",
        "q": f"{trade.qty:.8f}",
        "f": first,
        "l": first + trade.index % 2,
        "T": trade.time_ns // MS,
        "m": trade.taker == "sell",  # buyer was the maker = the taker sold
        "M": True,
    }


def _text(values: np.ndarray) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def _fixed8(values: np.ndarray, digits: int) -> pa.Array | None:
    """``f"{v:.8f}"`` of values the market rounded to ``digits`` decimals, as text, column-wise; None when
    some value is not such a rounding (then only the per-row formatting is exact).

    The market's ``np.round(x, digits)`` is ``rint(x * 10**digits) / 10**digits``, so the units come back
    exactly, and a double that near a ``digits``-decimal number prints it at 8 decimals.
    """
    scale = 10**digits
    units = np.rint(values * scale).astype(np.int64)
    if not np.array_equal(units / scale, values) or (units < 0).any():
        return None
    fraction = pc.utf8_lpad(_text(units % scale), digits, "0")
    return pc.binary_join_element_wise(_text(units // scale), fraction, ".")


def agg_trades_body(trades: TradeColumns) -> bytes | None:
    """The aggTrades JSON of ``trades``, byte for byte what ``JSONResponse`` renders of their ``_row`` dicts,
    built a column at a time (Arrow's string kernels, no object per row); None when a price or quantity is not
    of the market's rounding (the caller renders rows then)."""
    if not len(trades):
        return b"[]"
    prices, qtys = _fixed8(trades.prices, 2), _fixed8(trades.qtys, 5)
    if prices is None or qtys is None:
        return None
    first = FIRST_TRADE_ID + trades.index + trades.index // 2  # _first_id, vectorized
    rows = pc.binary_join_element_wise(
        '{"a":', _text(trades.ids), ',"p":"', prices, '000000","q":"', qtys, '000","f":', _text(first),
        ',"l":', _text(first + trades.index % 2), ',"T":', _text(trades.times // MS), ',"m":',
        pc.if_else(pa.array(trades.sells), "true", "false"), ',"M":true},', "")
    offsets, data = rows.buffers()[1:]
    start, end = np.frombuffer(offsets, np.int32)[[rows.offset, rows.offset + len(rows)]]
    return b"[" + data.to_pybytes()[start:end - 1] + b"]"  # the rows' text, less the last row's comma


def archive_line(trade: Trade, micros: bool) -> str:
    """One spot aggTrades archive line, from the same values as the REST row (no header, True/False)."""
    row = _row(trade)
    time = trade.time_ns // 1000 if micros else row["T"]
    return f"{row['a']},{row['p']},{row['q']},{row['f']},{row['l']},{time},{row['m']},{row['M']}"


def _next_month(day: datetime) -> datetime:
    return datetime(day.year + day.month // 12, day.month % 12 + 1, 1, tzinfo=UTC)


def _fills(trade: Trade) -> list[dict]:
    """The individual trades of one aggregate, in the order of their ids."""
    qty = Decimal(f"{trade.qty:.8f}")
    parts = [qty]
    if trade.index % 2:
        half = (qty / 2).quantize(Decimal("0.00001"), ROUND_DOWN) or (qty / 2).quantize(Decimal("1e-8"), ROUND_DOWN)
        parts = [qty - half, half]
    price = Decimal(f"{trade.price:.8f}")
    first = _first_id(trade.index)
    return [{"id": first + k, "price": f"{price:.8f}", "qty": f"{q:.8f}",
             "quoteQty": f"{(price * q).quantize(Decimal('1e-8')):.8f}", "time": trade.time_ns // MS,
             "isBuyerMaker": trade.taker == "sell", "isBestMatch": True} for k, q in enumerate(parts)]


class BinanceApp(VenueApp):
    name = "binance"
    weighted = True
    real_limit = Limit(6000, 60)  # 6000 request weight per minute per IP (late 2025)
    fast_limit = Limit(100_000, 1)
    symbols = {native: f"{base}-{quote}" for native, (base, quote) in SYMBOLS.items()}
    market_profile = PROFILE

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.archives = ArchiveShelf(self._archive_lines, version=self._archive_version)

    # -- data.binance.vision: data/spot/{daily|monthly}/aggTrades/SYMBOL/SYMBOL-aggTrades-{day|month}.zip[.CHECKSUM]
    def _archive_lines(self, name: str) -> Iterator[str] | None:
        """The file's lines, or None when Binance would have no such file: unknown symbol, before the simulated
        market, or a day (month) that is not over yet at the sandbox clock."""
        match = ARCHIVE_NAME.match(name)
        if match is None or match["symbol"] not in SYMBOLS:
            return None
        start = datetime(int(match["year"]), int(match["month"]), int(match["day"] or 1), tzinfo=UTC)
        end = _next_month(start) if match["day"] is None else start + timedelta(days=1)
        if to_ns(end) > self.sandbox.clock.now_ns() or end <= self.sandbox.market.start:
            return None
        return self._trade_lines(match["symbol"], to_ns(start), to_ns(end), start >= MICROS_FROM,
                                 match["kind"] == "trades")

    def _archive_version(self, name: str) -> object:
        """What else shapes a file's content: the ids a standing ``drop_ids`` fault leaves out."""
        symbol = name.split("-", 1)[0]
        return tuple(self.sandbox.faults.dropped(self.name, {symbol, self.symbols.get(symbol, symbol)}))

    def _trade_lines(self, native: str, start_ns: int, end_ns: int, micros: bool, fills: bool = False
                     ) -> Iterator[str]:
        """aggTrades lines, or with ``fills`` the spot ``trades`` lines (id, price, qty, quoteQty, time, is buyer
        maker, is best match) of the same trades."""
        m, asset = self.market, SYMBOLS[native][0]
        index, stop = m.index_at("binance", asset, start_ns), m.index_at("binance", asset, end_ns)
        while index < stop:  # an hour of trades at a time: a monthly file never sits in memory as objects
            trades = m.trades_from("binance", asset, index, min(100_000, stop - index), end_ns - 1)
            if not trades:
                return
            if fills:
                ranges = self.sandbox.faults.dropped(self.name, {native, self.symbols.get(native, native)})
                for trade in trades:
                    for f in _fills(trade):
                        if not any(lo <= f["id"] <= hi for lo, hi in ranges):  # the same holes as REST
                            time = trade.time_ns // 1000 if micros else f["time"]
                            yield (f"{f['id']},{f['price']},{f['qty']},{f['quoteQty']},{time},{f['isBuyerMaker']},"
                                   f"{f['isBestMatch']}")
                index = trades[-1].index + 1
                continue
            for trade in self.served(native, trades):  # the same holes as REST when ids are dropped
                yield archive_line(trade, micros)
            index = trades[-1].index + 1

    def archive(self, request: Request) -> Response:
        name = request.path_params["file"]
        checksum = name.endswith(".CHECKSUM")
        name = name.removesuffix(".CHECKSUM")
        expected = f"{request.path_params['symbol']}-{request.path_params.get('kind', 'aggTrades')}-"
        if request.path_params["period"] not in ("daily", "monthly") or not name.startswith(expected) or \
                (request.path_params["period"] == "daily") != (name.count("-") == 4):
            return self.archives.serve("", checksum)  # 404
        return self.archives.serve(name, checksum)

    def routes(self) -> list[Route]:
        return [
            Route("/data/spot/{period}/{kind:str}/{symbol}/{file}", self._archive_endpoint),
            self.route("/api/v3/aggTrades", self.agg_trades, WEIGHTS["aggTrades"]),
            self.route("/api/v3/trades", self.recent_trades, WEIGHTS["trades"]),
            self.route("/api/v3/historicalTrades", self.historical_trades, WEIGHTS["historicalTrades"]),
            self.route("/api/v3/ticker/bookTicker", self.book_ticker, WEIGHTS["bookTicker"]),
            self.route("/api/v3/exchangeInfo", self.exchange_info, WEIGHTS["exchangeInfo"]),
            self.route("/api/v3/ping", lambda request, corrupt: JSONResponse({}), WEIGHTS["ping"]),
            self.route("/api/v3/time", lambda request, corrupt: JSONResponse(
                {"serverTime": self.sandbox.clock.now_ns() // MS}), WEIGHTS["time"]),
            WebSocketRoute("/ws/{stream}", self.ws_raw),
            WebSocketRoute("/stream", self.ws_combined),
        ]

    async def _archive_endpoint(self, request: Request) -> Response:
        """Archives come from Binance's CDN: no request weight, no API faults."""
        import anyio

        self.stats.requests += 1
        response = await anyio.to_thread.run_sync(self.archive, request)
        self.stats.statuses[response.status_code] += 1
        return response

    # -- WebSocket: raw /ws/<symbol>@bookTicker and combined /stream?streams=a/b ({"stream", "data"}) -----------
    @staticmethod
    def _markets(names: list[str]) -> list[tuple[str, str]]:
        """(native, asset) of the ``<symbol>@bookTicker`` names the sandbox lists; others stay silent, as on
        Binance."""
        out = []
        for name in names:
            symbol, _, kind = name.partition("@")
            if kind == "bookTicker" and symbol.upper() in SYMBOLS:
                out.append((symbol.upper(), SYMBOLS[symbol.upper()][0]))
        return out

    @staticmethod
    def _ticker(native: str, q: Quote) -> dict:
        return {"u": q.time_ns // 1000, "s": native, "b": f"{q.bid:.8f}", "B": f"{q.bid_qty:.8f}",
                "a": f"{q.ask:.8f}", "A": f"{q.ask_qty:.8f}"}

    def firehose_plan(self, path: str, query: Mapping[str, str], subscribe: Any) -> FirehosePlan | None:
        """``/stream?streams=a/b`` (combined) or ``/ws/<stream>`` (raw), as the WebSocket routes read them."""
        if path.rstrip("/").endswith("/stream"):
            return FirehosePlan(self._markets([n for n in query.get("streams", "").split("/") if n]))
        if "/ws/" in path:
            return FirehosePlan(self._markets([path.rsplit("/", 1)[1]]))
        return None

    def firehose_template(self, native: str, quote: Quote) -> tuple[str, str]:
        """The combined-stream message, cut at ``u`` (Binance's order book update id)."""
        text = json.dumps({"stream": f"{native.lower()}@bookTicker", "data": {**self._ticker(native, quote), "u": 0}})
        before, after = text.split('"u": 0', 1)
        return before + '"u": ', after

    async def ws_raw(self, websocket: WebSocket) -> None:
        if await self.feed.accept(websocket):
            await self.feed.stream(websocket, self._markets([websocket.path_params["stream"]]),
                                   lambda native, q, first: json.dumps(self._ticker(native, q)))

    async def ws_combined(self, websocket: WebSocket) -> None:
        if await self.feed.accept(websocket):
            names = [n for n in websocket.query_params.get("streams", "").split("/") if n]
            await self.feed.stream(websocket, self._markets(names), lambda native, q, first: json.dumps(
                {"stream": f"{native.lower()}@bookTicker", "data": self._ticker(native, q)}))

    def refused(self, verdict: Verdict) -> Response:
        if verdict.status == 418:
            body = {"code": -1003, "msg": "Way too many requests; IP banned until later. (simulated)"}
        else:
            body = {"code": -1003, "msg": "Too many requests; current limit of IP is "
                                          f"{self.limit.limit} request weight per {self.limit.window:g} s. "
                                          "Please use WebSocket Streams for live updates to avoid polling the API."}
        return JSONResponse(body, status_code=verdict.status, headers={"Retry-After": f"{verdict.retry_after:g}"})

    def server_error(self, status: int) -> Response:
        return JSONResponse({"code": -1000, "msg": "An unknown error occurred while processing the request."},
                            status_code=status)

    def headers(self, response: Response) -> None:
        response.headers["X-MBX-USED-WEIGHT-1M"] = str(self.limiter.used())

    def agg_trades(self, request: Request, corrupt: bool) -> Response:
        symbol = request.query_params.get("symbol", "")
        if not symbol:
            return bad_request({"code": -1102, "msg": "Mandatory parameter 'symbol' was not sent, was empty/null, "
                                                      "or malformed."})
        if symbol not in SYMBOLS:
            return bad_request(INVALID_SYMBOL)
        try:
            from_id = int_param(request, "fromId")
            start = int_param(request, "startTime")
            end = int_param(request, "endTime")
            limit = int_param(request, "limit", 500)
        except ValueError as exc:
            return bad_request({"code": -1100, "msg": f"Illegal characters found in parameter '{exc}'; "
                                                      "legal range is '^[0-9]{1,20}$'."})
        if not 1 <= limit <= 1000:
            return bad_request({"code": -1130, "msg": "Invalid data sent for a parameter."})
        if from_id is not None and (start is not None or end is not None):
            return bad_request({"code": -1128, "msg": "Combination of optional parameters invalid."})
        asset = SYMBOLS[symbol][0]
        now = self.sandbox.clock.now_ns()
        until = now if end is None else min(now, end * MS + MS - 1)
        m = self.market
        if from_id is not None or start is not None:
            index = m.index_of_id("binance", from_id) if from_id is not None else m.index_at("binance", asset,
                                                                                              start * MS)
            columns = self.columns_forward(symbol, asset, index, limit, until)
            plain = not corrupt and not (len(columns) and self.extra_fields(int(columns.times[-1])))
            body = agg_trades_body(columns) if plain else None  # a fault's rows are made one by one below
            if body is not None:
                return Response(body, media_type="application/json")
            trades = columns.trades()
        else:  # the most recent trades (before endTime when given)
            trades = self.trades_backward(symbol, asset, m.index_at("binance", asset, until + 1), limit, until)
        rows = [{**_row(t), **self.extra_fields(t.time_ns)} for t in trades]
        if corrupt and rows:
            rows[0]["p"] = "not-a-price"  # the oldest row, inside any requested range
        return JSONResponse(rows)

    def _trade_params(self, request: Request, with_from_id: bool) -> tuple[str, int | None, int] | Response:
        symbol = request.query_params.get("symbol", "")
        if not symbol:
            return bad_request({"code": -1102, "msg": "Mandatory parameter 'symbol' was not sent, was empty/null, "
                                                      "or malformed."})
        if symbol not in SYMBOLS:
            return bad_request(INVALID_SYMBOL)
        try:
            limit = int_param(request, "limit", 500)
            from_id = int_param(request, "fromId") if with_from_id else None
        except ValueError as exc:
            return bad_request({"code": -1100, "msg": f"Illegal characters found in parameter '{exc}'; "
                                                      "legal range is '^[0-9]{1,20}$'."})
        if not 1 <= limit <= 1000:
            return bad_request({"code": -1130, "msg": "Invalid data sent for a parameter."})
        return symbol, from_id, limit

    def fills(self, symbol: str, from_id: int | None, limit: int) -> list[dict]:
        """Up to ``limit`` individual trades from id ``from_id`` on, or the newest ones when it is None.

        A ``drop_ids`` fault is matched against these trade ids here (against aggregate ids on aggTrades; the two
        id ranges never overlap), and the page is filled past what it drops.
        """
        asset, now = SYMBOLS[symbol][0], self.sandbox.clock.now_ns()
        ranges = self.sandbox.faults.dropped(self.name, {symbol, self.symbols[symbol]})

        def kept(aggs: list[Trade]) -> list[dict]:
            return [{**f, **self.extra_fields(t.time_ns)} for t in aggs for f in _fills(t)
                    if not any(lo <= f["id"] <= hi for lo, hi in ranges)]

        out: list[dict] = []
        if from_id is None:
            end = self.market.index_at("binance", asset, now + 1)
            first = self.market.first_index("binance", asset)
            while len(out) < limit and end > first:
                start = max(first, end - limit)
                out = kept(self.market.trades_from("binance", asset, start, end - start, now)) + out
                end = start
            return out[-limit:]
        index, _ = _aggregate_of(from_id)
        while len(out) < limit:
            batch = self.market.trades_from("binance", asset, index, limit, now)
            if not batch:
                break
            out += [f for f in kept(batch) if f["id"] >= from_id]
            index = batch[-1].index + 1
        return out[:limit]

    def _trades_response(self, request: Request, corrupt: bool, with_from_id: bool) -> Response:
        params = self._trade_params(request, with_from_id)
        if isinstance(params, Response):
            return params
        rows = self.fills(*params)
        if corrupt and rows:
            rows[0]["price"] = "not-a-price"
        return JSONResponse(rows)

    def recent_trades(self, request: Request, corrupt: bool) -> Response:
        """``/api/v3/trades``: the newest ``limit`` trades (500 by default, at most 1000), oldest first."""
        return self._trades_response(request, corrupt, with_from_id=False)

    def historical_trades(self, request: Request, corrupt: bool) -> Response:
        """``/api/v3/historicalTrades``: ``limit`` trades from ``fromId`` on (the newest without it)."""
        return self._trades_response(request, corrupt, with_from_id=True)

    # -- the truth conformance checks compare with ------------------------------------------------------
    def expected_keys(self, stream: str, symbol: str, since: datetime, until: datetime) -> list[tuple] | None:
        native = symbol.replace("-", "").upper()
        if stream == "agg_trades":
            return [(native, a) for a in self.trade_ids(native, since, until)]
        if stream == "trades":
            return [(native, f["id"]) for t in self._aggregates(native, since, until) for f in _fills(t)]
        return None

    def taker_sides(self, stream: str, symbol: str, since: datetime, until: datetime) -> dict[tuple, str] | None:
        native = symbol.replace("-", "").upper()
        if stream not in ("trades", "agg_trades"):
            return None
        sides = {}
        for t in self._aggregates(native, since, until):
            for key in ([t.id] if stream == "agg_trades" else [f["id"] for f in _fills(t)]):
                sides[(native, key)] = t.taker.upper()
        return sides

    def _aggregates(self, native: str, since: datetime, until: datetime) -> list[Trade]:
        ids = self.trade_ids(native, since, until)
        if not ids:
            return []
        asset = SYMBOLS[native][0]
        first = self.market.index_of_id("binance", ids[0])
        return [t for t in self.market.trades_from("binance", asset, first, len(ids), 2**62) if t.id <= ids[-1]]

    def book_ticker(self, request: Request, corrupt: bool) -> Response:
        symbol = request.query_params.get("symbol", "")
        if symbol not in SYMBOLS:
            return bad_request(INVALID_SYMBOL)
        q = self.market.quote("binance", SYMBOLS[symbol][0], self.sandbox.clock.now_ns())
        body = {"symbol": symbol, "bidPrice": f"{q.bid:.8f}", "bidQty": f"{q.bid_qty:.8f}",
                "askPrice": f"{q.ask:.8f}", "askQty": f"{q.ask_qty:.8f}"}
        if corrupt:
            body["bidPrice"] = "n/a"
        return JSONResponse(body)

    def exchange_info(self, request: Request, corrupt: bool) -> Response:
        return JSONResponse({
            "timezone": "UTC",
            "serverTime": self.sandbox.clock.now_ns() // MS,
            "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                            "limit": round(self.limit.limit * 60 / self.limit.window)}],
            "symbols": [{"symbol": s, "status": "TRADING", "baseAsset": b, "quoteAsset": q}
                        for s, (b, q) in SYMBOLS.items()],
        })


