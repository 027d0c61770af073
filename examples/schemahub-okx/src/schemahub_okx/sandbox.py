"""A simulated OKX for ``schemahub sandbox``: ``GET /api/v5/market/history-trades`` and ``/api/v5/public/time``
with OKX's wire format.

Served under ``/okx`` next to the built-in venues (hook ``register_sandbox_venues``), with SIMULATED trades
from the sandbox's shared market. What it reproduces from OKX's public docs:

- ``{"code": "0", "msg": "", "data": [...]}``, rows newest first, every value a string:
  ``instId, tradeId, px, sz, side, ts`` (``side`` is the taker's side, ``ts`` epoch milliseconds);
- ``type=1`` (default) pages by ``tradeId``: ``after=X`` gives ids < X, ``before=Y`` ids > Y (both: the
  window between; ``before`` alone: the latest data); ``type=2``: ``after`` is a time in ms (ts < X), and
  ``before`` is not supported; ``limit`` at most 100;
- 20 requests per 2 s per IP, over it HTTP 429 with code ``50011``; an unknown instrument is code ``51001``;
- ``GET /api/v5/public/time``: ``{"code": "0", "data": [{"ts": "<ms>"}]}``;
- the daily trade archives, ``/cdn/okex/traderecords/trades/daily/YYYYMMDD/{instId}-trades-YYYY-MM-DD.zip``: one
  CSV with a header, ``instrument_name,trade_id,side,price,size,created_time``, the REST rows' values; a day
  not over at the sandbox clock (or before the market) is a 404. Archive faults via ``self.archives.fault``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from schemahub_core.sandbox import ArchiveShelf, Limit, MarketVenue, Trade, VenueApp, Verdict, int_param, to_ns

INSTRUMENTS = {"BTC-USDT": "BTC", "ETH-USDT": "ETH"}
PROFILE = MarketVenue("okx", lag_ms=(20.0, 90.0), basis=0.0002, spread_bps=0.4, rate={"BTC": 2.0, "ETH": 1.2},
                      time_step_ns=1_000_000, first_id=480_000_000)
MS = 1_000_000
ARCHIVE_NAME = re.compile(r"(?P<inst>[A-Z]+-[A-Z]+)-trades-(?P<day>\d{4}-\d{2}-\d{2})\.zip")


def _error(code: str, msg: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"code": code, "msg": msg, "data": []}, status_code=status)


def _decimal(value: float, places: int) -> str:
    return f"{value:.{places}f}".rstrip("0").rstrip(".") or "0"


def _row(inst: str, trade: Trade) -> dict[str, str]:
    return {"instId": inst, "tradeId": str(trade.id), "px": _decimal(trade.price, 2), "sz": _decimal(trade.qty, 8),
            "side": trade.taker, "ts": str(trade.time_ns // MS)}


class OkxApp(VenueApp):
    name = "okx"
    real_limit = Limit(20, 2, burst=20)
    fast_limit = Limit(1000, 1)
    symbols = {inst: inst for inst in INSTRUMENTS}
    market_profile = PROFILE

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.archives = ArchiveShelf(self._archive_lines)

    def routes(self) -> list[Route]:
        return [self.route("/api/v5/market/history-trades", self.history_trades),
                self.route("/api/v5/public/time", lambda request, corrupt: JSONResponse(
                    {"code": "0", "msg": "", "data": [{"ts": str(self.sandbox.clock.now_ns() // MS)}]})),
                Route("/cdn/okex/traderecords/trades/daily/{day}/{file}", self.archive)]

    def archive(self, request: Request) -> Response:
        """The CDN: no rate limit; a file whose folder is not its day is a 404, as any unknown path."""
        name, day = request.path_params["file"], request.path_params["day"]
        match = ARCHIVE_NAME.fullmatch(name)
        if match is None or match["day"].replace("-", "") != day:
            name = ""
        return self.archives.serve(name, checksum=False)

    def _archive_lines(self, name: str) -> Iterator[str] | None:
        match = ARCHIVE_NAME.fullmatch(name)
        if match is None or match["inst"] not in INSTRUMENTS:
            return None
        start = datetime.strptime(match["day"], "%Y-%m-%d").replace(tzinfo=UTC)
        end = start + timedelta(days=1)
        if to_ns(end) > self.sandbox.clock.now_ns() or end <= self.sandbox.market.start:
            return None
        return self._day_lines(match["inst"], start, end)

    def _day_lines(self, inst: str, start: datetime, end: datetime) -> Iterator[str]:
        yield "instrument_name,trade_id,side,price,size,created_time"
        for trade in self.served(inst, self._trades(inst, start, end)):
            row = _row(inst, trade)
            yield f"{inst},{row['tradeId']},{row['side']},{row['px']},{row['sz']},{row['ts']}"

    def refused(self, verdict: Verdict) -> Response:
        return _error("50011", "Rate limit reached. Please refer to API documentation and throttle requests "
                      "accordingly", verdict.status)

    def server_error(self, status: int) -> Response:
        return _error("50001", "Service temporarily unavailable (injected by the sandbox)", status)

    def body_rate_limited(self) -> Response:
        return _error("50011", "Rate limit reached.", 200)

    def history_trades(self, request: Request, corrupt: bool) -> Response:
        inst = request.query_params.get("instId")
        if not inst:
            return _error("50014", "Parameter instId cannot be empty")
        asset = INSTRUMENTS.get(inst)
        if asset is None:
            return _error("51001", "Instrument ID does not exist")
        kind = request.query_params.get("type") or "1"
        try:
            after, before, limit = int_param(request, "after"), int_param(request, "before"), int_param(
                request, "limit", 100)
        except ValueError as exc:
            return _error("51000", f"Parameter {exc} error")
        if kind not in ("1", "2") or not 1 <= limit <= 100:
            return _error("51000", f"Parameter {'type' if kind not in ('1', '2') else 'limit'} error")
        if kind == "2" and before is not None:
            return _error("51000", "Parameter before error")  # timestamp pagination is `after` only
        m, now = self.market, self.sandbox.clock.now_ns()
        hi = m.index_at(self.name, asset, now + 1)  # one past the newest trade so far
        first = m.first_index(self.name, asset)
        if after is not None:
            below = after - PROFILE.first_id if kind == "1" else m.index_at(self.name, asset, after * MS)
            hi = min(hi, max(first, below) if kind == "1" else below)
        lo = first if before is None else max(first, before - PROFILE.first_id + 1)
        if before is None:  # the newest `limit` served trades below the ceiling
            trades = self.trades_backward(inst, asset, hi, limit, now)
        else:  # an id window: what is served of it
            start = max(lo, hi - limit)
            trades = self.served(inst, m.trades_from(self.name, asset, start, hi - start, now)) if hi > start else []
        rows = [_row(inst, t) for t in reversed(trades)]
        if corrupt and rows:
            rows[-1]["ts"] = "not-a-time"
        return JSONResponse({"code": "0", "msg": "", "data": rows})

    def _trades(self, symbol: str, since: datetime, until: datetime) -> list[Trade]:
        asset = INSTRUMENTS[symbol.upper()]
        lo, hi = -(-to_ns(since) // MS) * MS, -(-to_ns(until) // MS) * MS  # OKX compares whole milliseconds
        first, last = self.market.index_at(self.name, asset, lo), self.market.index_at(self.name, asset, hi)
        return self.market.trades_from(self.name, asset, first, last - first, hi - 1)

    def expected_keys(self, stream: str, symbol: str, since: datetime, until: datetime) -> list[tuple] | None:
        if stream != "trades" or symbol.upper() not in INSTRUMENTS:
            return None
        return [(symbol.upper(), t.id) for t in self._trades(symbol, since, until)]

    def taker_sides(self, stream: str, symbol: str, since: datetime, until: datetime) -> dict[tuple, str] | None:
        if stream != "trades" or symbol.upper() not in INSTRUMENTS:
            return None
        return {(symbol.upper(), t.id): t.taker.upper() for t in self._trades(symbol, since, until)}
