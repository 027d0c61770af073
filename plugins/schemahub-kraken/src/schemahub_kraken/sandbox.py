"""Simulated Kraken Spot REST: ``/0/public/Trades``, ``/0/public/Ticker`` and ``/0/public/Time``; WebSocket v2
``/ws/v2`` ``ticker``.

Errors, including rate limiting, come in a 200 body (``{"error": [...]}``).
The result is keyed by Kraken's own pair name (``XXBTZUSD``) whatever alias was
asked for; ``time`` is a JSON float of seconds (written here with 7 decimals,
i.e. 100 ns steps, so a float parse is not exact); ``last`` is the nanosecond
cursor: the next call with ``since=last`` returns trades strictly after it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from schemahub_core.sandbox import NS, FirehosePlan, Limit, MarketVenue, Quote, Trade, VenueApp, Verdict, int_param

PAIRS = {"XXBTZUSD": "BTC", "XETHZUSD": "ETH"}
# Kraken sees the latent price 150-350 ms late; 100 ns timestamps (float seconds on the wire).
PROFILE = MarketVenue("kraken", (150.0, 350.0), -0.0001, 1.2, {"BTC": 0.6, "ETH": 0.4}, 100, 66_000_000)
ALIASES = {"XBTUSD": "XXBTZUSD", "BTCUSD": "XXBTZUSD", "XXBTZUSD": "XXBTZUSD", "XBT/USD": "XXBTZUSD",
           "ETHUSD": "XETHZUSD", "XETHZUSD": "XETHZUSD", "ETH/USD": "XETHZUSD"}
SECONDS_BELOW = 10**12  # a `since` smaller than this is in seconds, larger in nanoseconds


def seconds_text(t_ns: int) -> str:
    return f"{t_ns // NS}.{(t_ns % NS) // 100:07d}"


def _row(trade: Trade) -> list:
    ordertype = "m" if trade.index % 3 == 0 else "l"
    return [f"{trade.price:.5f}", f"{trade.qty:.8f}", f"@T{seconds_text(trade.time_ns)}",
            "b" if trade.taker == "buy" else "s", ordertype, "", trade.id]


def _dumps(body: dict) -> Response:
    """JSON with ``time`` as a bare number (a float on the wire, like the real API)."""
    text = re.sub(r'"@T([0-9.]+)"', r"\1", json.dumps(body, separators=(",", ":")))
    return Response(text, media_type="application/json")


def _error(*errors: str) -> Response:
    return JSONResponse({"error": list(errors)})


class KrakenApp(VenueApp):
    name = "kraken"
    real_limit = Limit(1, 1)  # public calls: about 1 request/s sustained
    fast_limit = Limit(1000, 1)
    symbols = {"XXBTZUSD": "BTC-USD", "XETHZUSD": "ETH-USD"}
    aliases = {"XBTUSD": "XXBTZUSD", "ETHUSD": "XETHZUSD"}  # what clients may ask for -> the result key
    market_profile = PROFILE

    def routes(self) -> list[Route]:
        return [
            self.route("/0/public/Trades", self.trades),
            self.route("/0/public/Ticker", self.ticker),
            self.route("/0/public/Time", self.time),
            WebSocketRoute("/ws/v2", self.ws),
        ]

    ws_path = "/ws/v2"
    WS_SYMBOLS = {"BTC/USD": "BTC", "ETH/USD": "ETH"}

    async def ws(self, websocket: WebSocket) -> None:
        """v2: a ``status`` message, then ``{"method": "subscribe", "params": {"channel": "ticker", "symbol":
        [...]}}`` -> one ack per symbol, a ``snapshot``, then ``update`` messages (numbers, not strings)."""
        if not await self.feed.accept(websocket):
            return
        await websocket.send_json({"channel": "status", "type": "update", "data": [
            {"version": "2.0.10", "system": "online", "api_version": "v2", "connection_id": id(websocket)}]})
        request = await self.feed.receive_json(websocket)
        params = request.get("params") if isinstance(request, dict) else None
        if not isinstance(params, dict) or request.get("method") != "subscribe" or params.get("channel") != "ticker":
            await websocket.close(code=1008)
            return
        markets = []
        for symbol in params.get("symbol") or []:
            ok = symbol in self.WS_SYMBOLS
            ack: dict = {"method": "subscribe", "success": ok, "time_in": "", "time_out": ""}
            if ok:
                ack["result"] = {"channel": "ticker", "symbol": symbol, "snapshot": True,
                                 "event_trigger": params.get("event_trigger", "trades")}
                markets.append((symbol, self.WS_SYMBOLS[symbol]))
            else:
                ack.update(error=f"Currency pair not supported {symbol}", symbol=symbol)
            await websocket.send_json(ack)
        await self.feed.stream(websocket, markets, self._ticker_message)

    def firehose_plan(self, path: str, query: Mapping[str, str], subscribe: Any) -> FirehosePlan | None:
        """v2 ``ticker`` subscriptions, as ``ws`` reads them: the status message and one ack per symbol first."""
        params = subscribe.get("params") if isinstance(subscribe, dict) else None
        if not path.rstrip("/").endswith("/ws/v2") or not isinstance(params, dict) or \
                params.get("channel") != "ticker":
            return None
        symbols = [s for s in params.get("symbol") or [] if s in self.WS_SYMBOLS]
        hello = [json.dumps({"channel": "status", "type": "update", "data": [
            {"version": "2.0.10", "system": "online", "api_version": "v2", "connection_id": 1}]})]
        trigger = params.get("event_trigger", "trades")
        hello += [json.dumps({"method": "subscribe", "success": True, "time_in": "", "time_out": "", "result": {
            "channel": "ticker", "symbol": s, "snapshot": True, "event_trigger": trigger}}) for s in symbols]
        return FirehosePlan([(s, self.WS_SYMBOLS[s]) for s in symbols], hello)

    def firehose_template(self, native: str, quote: Quote) -> tuple[str, str]:
        """Kraken's ticker update carries no id: the whole message (repeats are dropped by content)."""
        return self._ticker_message(native, quote, False), ""

    def _ticker_message(self, symbol: str, q: Quote, first: bool) -> str:
        bid, ask = math.floor(q.bid * 10) / 10, math.ceil(q.ask * 10) / 10
        mid = round((bid + ask) / 2, 1)
        return json.dumps({"channel": "ticker", "type": "snapshot" if first else "update", "data": [{
            "symbol": symbol, "bid": bid, "bid_qty": q.bid_qty, "ask": ask, "ask_qty": q.ask_qty, "last": mid,
            "volume": 1234.5, "vwap": mid, "low": mid, "high": mid, "change": 0.0, "change_pct": 0.0}]})

    def refused(self, verdict: Verdict) -> Response:
        return _error("EAPI:Rate limit exceeded")

    def body_rate_limited(self) -> Response:
        return _error("EAPI:Rate limit exceeded")

    def server_error(self, status: int) -> Response:
        return Response("<html><body><h1>503 Service Unavailable</h1></body></html>", status_code=status,
                        media_type="text/html")

    def trades(self, request: Request, corrupt: bool) -> Response:
        pair = ALIASES.get(request.query_params.get("pair", "").upper())
        if pair is None:
            return _error("EQuery:Unknown asset pair")
        try:
            since = int_param(request, "since")
            count = int_param(request, "count", 1000)
        except ValueError as exc:
            return _error(f"EGeneral:Invalid arguments:{exc}")
        count = max(1, min(1000, count))
        asset = PAIRS[pair]
        m = self.market
        now = self.sandbox.clock.now_ns()
        if since is None:
            index = m.index_at("kraken", asset, now + 1) - count
        else:
            since_ns = since * NS if since < SECONDS_BELOW else since
            index = m.index_at("kraken", asset, since_ns + 1)
        trades = self.trades_forward(pair, asset, index, count, now)
        rows = [_row(t) for t in trades]
        if corrupt and rows:
            rows[0][0] = "NaN-ish"  # the oldest row
        last = str(trades[-1].time_ns) if trades else str(since if since is not None else now)
        return _dumps({"error": [], "result": {pair: rows, "last": last}})

    def time(self, request: Request, corrupt: bool) -> Response:
        """``GET /0/public/Time``: ``{"error": [], "result": {"unixtime": int seconds, "rfc1123": "..."}}``."""
        now = datetime.fromtimestamp(self.sandbox.clock.now_ns() // NS, UTC)
        return JSONResponse({"error": [], "result": {"unixtime": int(now.timestamp()),
                                                     "rfc1123": now.strftime("%a, %d %b %y %H:%M:%S +0000")}})

    def ticker(self, request: Request, corrupt: bool) -> Response:
        pair = ALIASES.get(request.query_params.get("pair", "").upper())
        if pair is None:
            return _error("EQuery:Unknown asset pair")
        m = self.market
        now = self.sandbox.clock.now_ns()
        q = m.quote("kraken", PAIRS[pair], now)
        last = f"{(q.bid + q.ask) / 2:.1f}"
        info = {
            "a": [f"{math.ceil(q.ask * 10) / 10:.1f}", "1", "1.000"],
            "b": [f"{math.floor(q.bid * 10) / 10:.1f}", "2", "2.000"],
            "c": [last, "0.01000000"], "v": ["1234.5", "2345.6"], "p": [last, last],
            "t": [12345, 23456], "l": [last, last], "h": [last, last], "o": last,
        }
        if corrupt:
            info["a"] = ["?"]
        return JSONResponse({"error": [], "result": {pair: info}})
