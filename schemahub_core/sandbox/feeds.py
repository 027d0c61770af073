"""The simulated venues' WebSocket side: quote pushes on the sandbox clock, plus controls for live tests.

Each venue module owns its wire format (subscribe handshake, message shape)
and hands ``Feed.stream`` a formatter; this module owns what every venue
shares: pushing the simulated best bid/ask of every subscribed market
``interval`` apart (and at once when a scripted divergence starts or ends, so
its edges are sharp), a scripted divergence (one venue's quotes moved by X bps
for Y ms), and dropping a venue's connections (optionally refusing new ones for
a while) to test reconnects. The controls are thread-safe: tests call them from
outside the server's event loop.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket

from schemahub_core.sandbox.market import Market, Quote

if TYPE_CHECKING:
    from schemahub_core.sandbox.host import Clock

Format = Callable[[str, Quote, bool], str]  # (native symbol, quote, first message of the subscription?) -> text


@dataclass(frozen=True)
class Divergence:
    """Quotes of ``asset`` (every asset when None) moved by ``bps`` while ``start_ns <= t < end_ns``."""

    bps: float
    start_ns: int
    end_ns: int
    asset: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"bps": self.bps, "start_ns": self.start_ns, "end_ns": self.end_ns, "asset": self.asset}


@dataclass
class FirehosePlan:
    """What one connection of the load-test firehose (``sandbox.firehose``) gets: ``(native, asset)`` markets
    and the messages sent before the quotes."""

    markets: list[tuple[str, str]]
    hello: list[str] = field(default_factory=list)


@dataclass(eq=False)  # hashed by identity: kept in a set
class _Connection:
    wake: asyncio.Event
    loop: asyncio.AbstractEventLoop
    dropped: bool = False


@dataclass
class FeedStats:
    accepted: int = 0
    refused: int = 0
    dropped: int = 0
    messages: int = 0
    open: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "refused": self.refused, "dropped": self.dropped,
                "messages": self.messages, "open": self.open}


class Feed:
    """One venue's live side: its connections, divergences and the quote it shows at a sandbox time."""

    interval = 0.05  # seconds between pushes of a subscribed market

    def __init__(self, name: str, market: Market, clock: Clock) -> None:
        self.name, self.market, self.clock = name, market, clock
        self.divergences: list[Divergence] = []
        self.stats = FeedStats()
        self._refuse_until_ns = 0
        self._connections: set[_Connection] = set()
        self._lock = threading.Lock()

    # -- what the venue shows ------------------------------------------------------------------------
    def quote(self, asset: str, t_ns: int) -> Quote:
        """The simulated best bid/ask at ``t_ns``, moved by any divergence active then (rounded to cents)."""
        q = self.market.quote(self.name, asset, t_ns)
        bps = sum(d.bps for d in self.divergences if d.start_ns <= t_ns < d.end_ns and d.asset in (None, asset))
        if not bps:
            return q
        factor = 1 + bps / 1e4
        return Quote(t_ns, round(q.bid * factor, 2), q.bid_qty, round(q.ask * factor, 2), q.ask_qty)

    # -- controls (any thread) ------------------------------------------------------------------------
    def diverge(self, bps: float, ms: float, asset: str | None = None) -> Divergence:
        """Move this venue's quotes by ``bps`` for ``ms`` milliseconds from now (sandbox clock)."""
        start = self.clock.now_ns()
        divergence = Divergence(float(bps), start, start + int(ms * 1_000_000), asset)
        self.divergences.append(divergence)
        self._wake_all()
        return divergence

    def drop(self, refuse_ms: float = 0.0) -> int:
        """Close every open connection (code 1012, as a venue restarting); refuse new ones for ``refuse_ms``."""
        self._refuse_until_ns = self.clock.now_ns() + int(refuse_ms * 1_000_000)
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            conn.dropped = True
        self._wake_all()
        self.stats.dropped += len(connections)
        return len(connections)

    def _wake_all(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            conn.loop.call_soon_threadsafe(conn.wake.set)

    # -- serving --------------------------------------------------------------------------------------
    async def accept(self, websocket: WebSocket) -> bool:
        """Accept the handshake, or refuse it (HTTP 403) while a drop's refusal window lasts."""
        if self.clock.now_ns() < self._refuse_until_ns:
            self.stats.refused += 1
            await websocket.close(code=1013)
            return False
        await websocket.accept()
        self.stats.accepted += 1
        return True

    def _next_edge(self, now_ns: int) -> float:
        edges = [t for d in self.divergences for t in (d.start_ns, d.end_ns) if t > now_ns]
        return (min(edges) - now_ns) / 1e9 if edges else math.inf

    async def stream(self, websocket: WebSocket, markets: list[tuple[str, str]], fmt: Format) -> None:
        """Push ``(native symbol, asset)`` quotes until the client leaves or the feed is dropped."""
        conn = _Connection(asyncio.Event(), asyncio.get_running_loop())
        with self._lock:
            self._connections.add(conn)
        self.stats.open += 1
        clock = self.clock
        first = True
        try:
            while not conn.dropped:
                conn.wake.clear()  # before reading the clock: a control call from now on wakes the wait below
                now = clock.now_ns()
                for native, asset in markets:
                    await websocket.send_text(fmt(native, self.quote(asset, now), first))
                    self.stats.messages += 1
                first = False
                edge = self._next_edge(now)
                # 1 ms past an edge, so the push after it is surely on the far side (timers can fire early)
                timeout = min(self.interval, edge + 0.001)
                try:
                    await asyncio.wait_for(conn.wake.wait(), timeout)
                except TimeoutError:
                    pass
            await websocket.close(code=1012)
        except Exception:  # the client went away (any flavour of disconnect ends this connection only)
            pass
        finally:
            self.stats.open -= 1
            with self._lock:
                self._connections.discard(conn)

    async def receive_json(self, websocket: WebSocket, timeout: float = 5.0) -> Any:
        """The client's next JSON message (its subscription), or None if it sends none in time."""
        try:
            return await asyncio.wait_for(websocket.receive_json(), timeout)
        except Exception:
            return None
