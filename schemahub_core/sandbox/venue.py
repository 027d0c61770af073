"""What every simulated venue shares: the request gate (rate limit, faults, labels) around its handlers.

A venue plugin's simulated venue (its ``sandbox.py``) describes its endpoints, their weights and its error
formats; ``VenueApp.route`` wraps each handler so that limits and injected faults behave the same way
everywhere.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from schemahub_core.sandbox.faults import Fault
from schemahub_core.sandbox.feeds import Feed, FirehosePlan
from schemahub_core.sandbox.host import Host
from schemahub_core.sandbox.limits import FixedWindowWeight, Limit, TokenBucket, Verdict
from schemahub_core.sandbox.market import LABEL, Quote, Trade, TradeColumns, to_ns
from schemahub_core.sandbox.market import Venue as MarketVenue

SANDBOX_HEADER = "X-SchemaHub-Sandbox"

Handler = Callable[[Request, bool], Response]  # (request, corrupt one row?) -> response


@dataclass
class VenueStats:
    requests: int = 0
    weight: int = 0
    statuses: Counter = field(default_factory=Counter)
    refused: int = 0  # 429 and 418 sent because a limit was crossed (not injected)
    injected: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"requests": self.requests, "weight": self.weight, "statuses": dict(self.statuses),
                "refused": self.refused, "injected": self.injected}


class VenueApp:
    """One venue: its limiter, stats and the gate every endpoint goes through.

    This is also the public base class for a plugin's simulated venue (hook ``register_sandbox_venues``):
    set ``name`` (the connector's name: the venue is served under ``/<name>``), implement ``routes`` with
    ``self.route(path, handler)``, and optionally declare ``real_limit`` / ``fast_limit`` (the venue's published
    limit, and a generous one for tests), ``symbols`` (native -> canonical), a ``market_profile`` to trade in the
    shared simulated market, and ``expected_keys`` so conformance can prove no record is missing.
    """

    name: str = ""
    weighted = False  # True: fixed-window request weight; False: token bucket
    ws_path = ""  # where the venue's WebSocket endpoint sits under its prefix (its ws_url, as base_url for REST)
    real_limit: ClassVar[Limit] = Limit(10, 1)  # used when the sandbox config names no limit for this venue
    fast_limit: ClassVar[Limit] = Limit(1000, 1)  # ... and this one under ``SandboxConfig.fast()``
    symbols: ClassVar[dict[str, str]] = {}  # native symbol -> canonical, shown by ``describe``
    aliases: ClassVar[dict[str, str]] = {}  # other spellings clients may use -> the native symbol
    market_profile: ClassVar[MarketVenue | None] = None  # lag, basis, spread, rate, id origin in the shared market

    def __init__(self, sandbox: Host, limit: Limit) -> None:
        self.sandbox = sandbox
        self.market = sandbox.market
        if self.market_profile is not None:
            self.market.add_venue(self.market_profile)
        self.limit = limit
        self.limiter: FixedWindowWeight | TokenBucket = (
            FixedWindowWeight(limit) if self.weighted else TokenBucket(limit))
        self.stats = VenueStats()
        # the WebSocket side: pushes, scripted divergences, drops
        self.feed = Feed(self.name, self.market, sandbox.clock)

    # -- venue specifics (overridden) -------------------------------------------------------------
    def routes(self) -> list[Route]:
        raise NotImplementedError

    def refused(self, verdict: Verdict) -> Response:
        """The venue's own answer when a client is over the limit."""
        return JSONResponse({"message": "Public rate limit exceeded"}, status_code=verdict.status,
                            headers={"Retry-After": f"{verdict.retry_after:g}"} if verdict.retry_after else None)

    def server_error(self, status: int) -> Response:
        return JSONResponse({"message": "Internal server error (injected by the sandbox)"}, status_code=status)

    def body_rate_limited(self) -> Response:
        return self.refused(Verdict(False, 429, 1.0))

    def headers(self, response: Response) -> None:
        """Headers the venue adds to every answer."""

    # -- load tests (``schemahub_core.sandbox.firehose``) -------------------------------------------------------
    def firehose_plan(self, path: str, query: Mapping[str, str], subscribe: Any) -> FirehosePlan | None:
        """What a WebSocket connection to ``path`` (``query``; ``subscribe``: the client's first message as
        JSON, or None) subscribes to, for the firehose; None: this venue has no firehose (the default)."""
        return None

    def firehose_template(self, native: str, quote: Quote) -> tuple[str, str]:
        """The venue's quote message for ``quote``, cut where its update id goes (``(message, "")`` when the
        message has none): the firehose pre-serialises these and joins each around the next id."""
        raise NotImplementedError(f"{self.name} has no firehose")

    def expected_keys(self, stream: str, symbol: str, since: datetime, until: datetime) -> list[tuple] | None:
        """The record keys ``stream`` holds for canonical ``symbol`` in ``[since, until)``, in order; None if unknown.

        ``schemahub plugins test`` compares a connector's output with this truth (no gap, no extra).
        """
        return None

    def trade_ids(self, native_symbol: str, since: datetime, until: datetime) -> list[int]:
        """Ids of the simulated trades of ``native_symbol`` with ``since <= time < until``, in order.

        Bounds are compared at the venue's timestamp resolution (``market_profile.time_step_ns``), as the venue
        compares them.
        """
        profile = self.market_profile
        native = self.aliases.get(native_symbol, native_symbol)
        if profile is None or native not in self.symbols:
            raise ValueError(f"{self.name} has no simulated trades for {native_symbol!r}")
        asset = self.symbols[native].split("-")[0]
        step = profile.time_step_ns
        lo, hi = -(-to_ns(since) // step) * step, -(-to_ns(until) // step) * step
        first = self.market.index_at(self.name, asset, lo)
        last = self.market.index_at(self.name, asset, hi)
        return [t.id for t in self.market.trades_from(self.name, asset, first, last - first, hi - 1)]

    def taker_sides(self, stream: str, symbol: str, since: datetime, until: datetime) -> dict[tuple, str] | None:
        """Record key -> the taker's side (``BUY``/``SELL``) of the trades in ``[since, until)``; None if unknown.

        ``schemahub plugins test`` checks the mapping's ``side`` against it: the classic maker/taker inversion.
        """
        return None

    def extra_fields(self, t_ns: int) -> dict[str, Any]:
        """Fields a standing ``new_field`` fault adds to this venue's trade rows at ``t_ns`` (simulated drift).

        A venue whose rows are JSON objects merges them into each trade row, so a client sees the venue start
        sending a field it did not declare."""
        return self.sandbox.faults.extra_fields(self.name, t_ns)

    # -- dropped ids (fault ``drop_ids``): every venue serves its trades through these -------------------
    def served(self, native_symbol: str, trades: list[Trade]) -> list[Trade]:
        """``trades`` without those a standing ``drop_ids`` fault leaves out for ``native_symbol``."""
        ranges = self.sandbox.faults.dropped(self.name, {native_symbol, self.symbols.get(native_symbol, native_symbol)})
        if not ranges:
            return trades
        return [t for t in trades if not any(lo <= t.id <= hi for lo, hi in ranges)]

    def trades_forward(self, native_symbol: str, asset: str, index: int, limit: int, until_ns: int) -> list[Trade]:
        """Up to ``limit`` served trades from series position ``index`` on (none after ``until_ns``), oldest first.

        Dropped trades are skipped and the page is filled past them, as a venue with a hole fills its pages.
        """
        return self.columns_forward(native_symbol, asset, index, limit, until_ns).trades()

    def columns_forward(self, native_symbol: str, asset: str, index: int, limit: int, until_ns: int
                        ) -> TradeColumns:
        """``trades_forward`` as arrays (a page rendered without a ``Trade`` per row)."""
        ranges = self.sandbox.faults.dropped(self.name, {native_symbol, self.symbols.get(native_symbol, native_symbol)})
        parts: list[TradeColumns] = []
        count = 0
        while count < limit:
            batch = self.market.trade_columns(self.name, asset, index, limit - count, until_ns)
            if not len(batch):
                break
            index = int(batch.index[-1]) + 1
            if ranges:
                dropped = np.zeros(len(batch), bool)
                for lo, hi in ranges:
                    dropped |= (batch.ids >= lo) & (batch.ids <= hi)
                batch = batch.where(~dropped)
            parts.append(batch)
            count += len(batch)
        return TradeColumns.concat(parts)

    def trades_backward(self, native_symbol: str, asset: str, end: int, limit: int, until_ns: int) -> list[Trade]:
        """Up to ``limit`` served trades before series position ``end`` (none after ``until_ns``), oldest first."""
        out: list[Trade] = []
        first = self.market.first_index(self.name, asset)
        while len(out) < limit and end > first:
            start = max(first, end - (limit - len(out)))
            out = self.served(native_symbol, self.market.trades_from(self.name, asset, start, end - start,
                                                                     until_ns)) + out
            end = start
        return out

    # -- the gate ---------------------------------------------------------------------------------
    def route(self, path: str, handler: Handler, weight: int = 1) -> Route:
        async def endpoint(request: Request) -> Response:
            response = await self._gate(request, handler, weight)
            response.headers[SANDBOX_HEADER] = LABEL
            self.headers(response)
            self.stats.statuses[response.status_code] += 1
            return response

        return Route(path, endpoint, methods=["GET"])

    async def _gate(self, request: Request, handler: Handler, weight: int) -> Response:
        client = request.client.host if request.client else "?"
        self.stats.requests += 1
        self.stats.weight += weight
        verdict = self.limiter.admit(client, weight)
        if not verdict.allowed:
            self.stats.refused += 1
            return self.refused(verdict)
        fault: Fault | None = self.sandbox.faults.take(self.name, request.url.path)
        corrupt = False
        if fault is not None:
            self.stats.injected += 1
            if fault.kind in ("429", "418"):
                if isinstance(self.limiter, FixedWindowWeight) and fault.kind == "429":
                    self.limiter.warn(client, fault.retry_after)
                return self.refused(Verdict(False, int(fault.kind), fault.retry_after, verdict.used))
            if fault.kind == "5xx":
                return self.server_error(fault.status)
            if fault.kind == "timeout":
                await asyncio.sleep(fault.delay)
            if fault.kind == "malformed_body":
                return Response('{"truncated": [1, 2', media_type="application/json")
            if fault.kind == "rate_limit_body":
                return self.body_rate_limited()
            corrupt = fault.kind == "malformed_row"
        return handler(request, corrupt)


def bad_request(body: dict[str, Any], status: int = 400) -> JSONResponse:
    return JSONResponse(body, status_code=status)


def int_param(request: Request, name: str, default: int | None = None) -> int | None:
    """An integer query parameter; ``ValueError`` names it when it is not an integer."""
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(name) from None
