"""Simulated Coinbase Exchange REST: ``/products/{id}/trades``, ``/products/{id}/ticker`` and ``/time``; WebSocket
``/ws`` (``ticker`` channel). The real ticker channel pushes on every match; this one pushes the simulated best
bid/ask at a steady rate (see ``feeds``), with the same message shape.

Trades come newest first; ``side`` is the MAKER's side; pagination is by
``trade_id`` only: ``after=X`` returns older trades (ids < X), ``before=X``
the adjacent newer ones (ids > X), and ``CB-BEFORE``/``CB-AFTER`` headers carry
the newest/oldest id of the page. There is no time parameter.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from schemahub_core.sandbox import NS, Limit, MarketVenue, Quote, Trade, VenueApp, Verdict, bad_request, int_param

PRODUCTS = {"BTC-USD": "BTC", "ETH-USD": "ETH"}
# Coinbase sees the latent price 40-120 ms late; µs timestamps.
PROFILE = MarketVenue("coinbase", (40.0, 120.0), 0.0, 0.6, {"BTC": 1.5, "ETH": 1.0}, 1_000, 600_000_000)
NOT_FOUND = {"message": "NotFound"}


def iso(t_ns: int) -> str:
    """Coinbase's time format: microseconds, or milliseconds when that is all there is."""
    stamp = datetime.fromtimestamp(t_ns // NS, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    micros = (t_ns % NS) // 1_000
    return f"{stamp}.{micros // 1000:03d}Z" if micros % 1000 == 0 else f"{stamp}.{micros:06d}Z"


def _row(trade: Trade) -> dict:
    return {
        "time": iso(trade.time_ns),
        "trade_id": trade.id,
        "price": f"{trade.price:.2f}",
        "size": f"{trade.qty:.8f}",
        "side": "sell" if trade.taker == "buy" else "buy",  # the maker's side
    }


class CoinbaseApp(VenueApp):
    name = "coinbase"
    real_limit = Limit(10, 1, burst=15)  # about 10 public requests/s per IP, bursts to 15
    fast_limit = Limit(1000, 1)
    symbols = {product: product for product in PRODUCTS}
    market_profile = PROFILE

    def routes(self) -> list[Route]:
        return [
            self.route("/products/{product_id}/trades", self.trades),
            self.route("/products/{product_id}/ticker", self.ticker),
            self.route("/time", self.time),
            WebSocketRoute("/ws", self.ws),
        ]

    ws_path = "/ws"

    async def ws(self, websocket: WebSocket) -> None:
        """``{"type": "subscribe", "product_ids": [...], "channels": ["ticker"]}`` -> ``subscriptions``, then
        ``ticker`` messages. An unknown product is refused with an ``error`` message, as Coinbase does."""
        if not await self.feed.accept(websocket):
            return
        request = await self.feed.receive_json(websocket)
        if not isinstance(request, dict) or request.get("type") != "subscribe":
            await websocket.close(code=1008)  # Coinbase drops a client that does not subscribe within 5 s
            return
        products = [str(p) for p in request.get("product_ids") or []]
        unknown = [p for p in products if p not in PRODUCTS]
        if unknown:
            await websocket.send_json({"type": "error", "message": "Failed to subscribe",
                                       "reason": f"{unknown[0]} is not a valid product"})
            await websocket.close()
            return
        await websocket.send_json({"type": "subscriptions", "channels": [{"name": "ticker", "product_ids": products}]})
        await self.feed.stream(websocket, [(p, PRODUCTS[p]) for p in products], self._ticker_message)

    def _ticker_message(self, product: str, q: Quote, first: bool) -> str:
        asset = PRODUCTS[product]
        m = self.market
        last = m.trades_from("coinbase", asset, m.index_at("coinbase", asset, q.time_ns + 1) - 1, 1, q.time_ns)
        price = last[0].price if last else q.bid
        return json.dumps({
            "type": "ticker", "sequence": q.time_ns // 1000, "product_id": product, "price": f"{price:.2f}",
            "open_24h": f"{price:.2f}", "volume_24h": "12345.67890000", "low_24h": f"{price:.2f}",
            "high_24h": f"{price:.2f}", "volume_30d": "345678.12345678",
            "best_bid": f"{q.bid:.2f}", "best_bid_size": f"{q.bid_qty:.8f}",
            "best_ask": f"{q.ask:.2f}", "best_ask_size": f"{q.ask_qty:.8f}",
            "side": "sell" if last and last[0].taker == "sell" else "buy",  # the TAKER's side on ticker
            "time": iso(q.time_ns), "trade_id": last[0].id if last else 0,
            "last_size": f"{last[0].qty:.8f}" if last else "0",
        })

    def refused(self, verdict: Verdict) -> Response:
        headers = {"Retry-After": f"{verdict.retry_after:g}"} if verdict.retry_after else None
        if verdict.status != 429:
            return JSONResponse({"message": "Forbidden"}, status_code=verdict.status, headers=headers)
        return JSONResponse({"message": "Public rate limit exceeded"}, status_code=429, headers=headers)

    def trades(self, request: Request, corrupt: bool) -> Response:
        asset = PRODUCTS.get(request.path_params["product_id"])
        if asset is None:
            return bad_request(NOT_FOUND, 404)
        try:
            after = int_param(request, "after")
            before = int_param(request, "before")
            limit = int_param(request, "limit", 1000)
        except ValueError as exc:
            return bad_request({"message": f"invalid {exc}"})
        if not 1 <= limit <= 1000:
            return bad_request({"message": "limit must be between 1 and 1000"})
        m = self.market
        now = self.sandbox.clock.now_ns()
        newest = m.index_at("coinbase", asset, now + 1)  # one past the newest trade so far
        first_id = PROFILE.first_id
        product = request.path_params["product_id"]
        if before is not None:  # the adjacent newer page
            trades = self.trades_forward(product, asset, max(m.first_index("coinbase", asset), before - first_id + 1),
                                         limit, now)
        else:
            hi = newest if after is None else min(newest, max(m.first_index("coinbase", asset), after - first_id))
            trades = self.trades_backward(product, asset, hi, limit, now)
        rows = [_row(t) for t in reversed(trades)]
        if corrupt and rows:
            rows[-1]["time"] = "yesterday at noon"  # the oldest row
        headers = {"CB-BEFORE": str(rows[0]["trade_id"]), "CB-AFTER": str(rows[-1]["trade_id"])} if rows else {}
        return JSONResponse(rows, headers=headers)

    def time(self, request: Request, corrupt: bool) -> Response:
        """``GET /time``: the server's clock as ``{"iso": "...Z" (ms), "epoch": float seconds}``, like Coinbase."""
        now_ms = self.sandbox.clock.now_ns() // 1_000_000
        stamp = datetime.fromtimestamp(now_ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return JSONResponse({"iso": f"{stamp}.{now_ms % 1000:03d}Z", "epoch": now_ms / 1000})

    def ticker(self, request: Request, corrupt: bool) -> Response:
        asset = PRODUCTS.get(request.path_params["product_id"])
        if asset is None:
            return bad_request(NOT_FOUND, 404)
        m = self.market
        now = self.sandbox.clock.now_ns()
        q = m.quote("coinbase", asset, now)
        last = m.trades_from("coinbase", asset, m.index_at("coinbase", asset, now + 1) - 1, 1, now)
        body = {
            "ask": f"{q.ask:.2f}", "bid": f"{q.bid:.2f}", "volume": "12345.67890000",
            "trade_id": last[0].id if last else 0,
            "price": f"{last[0].price:.2f}" if last else f"{q.bid:.2f}",
            "size": f"{last[0].qty:.8f}" if last else "0",
            "time": iso(now),
        }
        if corrupt:
            body["time"] = "soon"
        return JSONResponse(body)
