"""The sandbox process: every installed plugin's simulated venue behind one HTTP server on 127.0.0.1.

The core serves no venue of its own: venue plugins register theirs (hook ``register_sandbox_venues``). Each
venue lives under its own path prefix, so a connector points at it by its base URL alone
(``SCHEMAHUB_<VENUE>_BASE_URL=http://127.0.0.1:8765/<venue>``)::

    /<venue>/...                       the venue's REST routes and WebSocket feed (``ws_url(venue)``)
    /_sandbox/{stats,faults,live}      control: counters, fault injection, scripted divergences and drops
The sandbox clock starts at the end of the simulated days (2024-02-10 00:00 UTC; the market spans the
``days`` before it, 120 by default) and runs forward in real time, so the market stays "live" while history
is fixed and every past day, the 2024-02-08 event included, can be backfilled.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from schemahub_core.sandbox.faults import Fault, Faults
from schemahub_core.sandbox.host import Clock
from schemahub_core.sandbox.limits import Limit
from schemahub_core.sandbox.market import DEFAULT_DAYS, EVENT_AT, LABEL, MARKET_END, Market
from schemahub_core.sandbox.venue import VenueApp


def venue_apps() -> dict[str, type[VenueApp]]:
    """Every ``VenueApp`` the installed plugins register (hook ``register_sandbox_venues``)."""
    from schemahub_core.framework.registry import get_registry

    return dict(get_registry().sandbox_venues)


@dataclass
class SandboxConfig:
    """Seed, clock, market span and intensity, and per-venue limits (real by default)."""

    seed: int = 20240208
    start: datetime = MARKET_END  # where the clock starts
    days: int = DEFAULT_DAYS  # simulated history before ``start``
    intensity: float = 1.0  # trade-rate multiplier; REALISTIC_INTENSITY gives a busy symbol ~1M trades/day
    speed: float = 1.0
    limits: dict[str, Limit] = field(default_factory=dict)  # per venue; others get their ``real_limit``
    fast_limits: bool = False  # a venue missing from ``limits`` gets its ``fast_limit`` instead of ``real_limit``
    venues: dict[str, type[VenueApp]] | None = None  # None: every installed plugin's (``venue_apps()``)

    @classmethod
    def fast(cls, venues: dict[str, type[VenueApp]] | None = None, **limits: Limit) -> SandboxConfig:
        """Limits high enough that tests not about rate limiting never wait."""
        return cls(limits=dict(limits), fast_limits=True, venues=venues)

    def limit(self, app: type[VenueApp]) -> Limit:
        return self.limits.get(app.name) or (app.fast_limit if self.fast_limits else app.real_limit)


class Sandbox:
    """The simulated venues, their state, and (once started) the server thread."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        if self.config.days < 1:
            raise ValueError(f"the simulated market needs at least one day, got {self.config.days}")
        self.market = Market(self.config.seed, start=self.config.start - timedelta(days=self.config.days),
                             intensity=self.config.intensity)
        self.clock = Clock(self.config.start, self.config.speed)
        self.faults = Faults()
        apps = venue_apps() if self.config.venues is None else self.config.venues
        self.venues = {name: cls(self, self.config.limit(cls)) for name, cls in apps.items()}
        self.host = "127.0.0.1"
        self.port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # -- the ASGI app -------------------------------------------------------------------------------
    def app(self) -> Starlette:
        routes: list[Any] = [Mount(f"/{name}", routes=venue.routes()) for name, venue in self.venues.items()]
        routes += [
            Route("/", self._index),
            Route("/_sandbox/stats", self._stats),
            Route("/_sandbox/faults", self._faults, methods=["GET", "POST", "DELETE"]),
            Route("/_sandbox/live", self._live, methods=["GET", "POST"]),
        ]
        return Starlette(routes=routes)

    async def _index(self, request: Request) -> JSONResponse:
        return JSONResponse({"label": LABEL, "market": self.describe(), "base_urls": self.base_urls()})

    async def _stats(self, request: Request) -> JSONResponse:
        return JSONResponse(self.stats())

    async def _faults(self, request: Request) -> JSONResponse:
        if request.method == "POST":
            try:
                self.inject(**await request.json())
            except (TypeError, ValueError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
        elif request.method == "DELETE":
            self.faults.clear()
        return JSONResponse({"pending": self.faults.pending(), "fired": self.faults.fired})

    async def _live(self, request: Request) -> JSONResponse:
        """POST {"venue", "diverge_bps", "ms"[, "asset"]} or {"venue", "drop": true[, "refuse_ms"]}."""
        if request.method == "POST":
            body = await request.json()
            if not isinstance(body, dict) or body.get("venue") not in self.venues:
                return JSONResponse({"error": f"unknown venue (venues: {', '.join(self.venues)})"}, status_code=400)
            feed = self.venues[body["venue"]].feed
            if body.get("drop"):
                feed.drop(float(body.get("refuse_ms", 0)))
            if "diverge_bps" in body:
                feed.diverge(float(body["diverge_bps"]), float(body.get("ms", 1000)), body.get("asset"))
        return JSONResponse({n: {**v.feed.stats.as_dict(), "divergences": [d.as_dict() for d in v.feed.divergences]}
                             for n, v in self.venues.items()})

    # -- control --------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {"simulated": True, "from": self.market.start.isoformat(), "days": self.config.days,
                "intensity": self.config.intensity, "clock_start": self.config.start.isoformat(),
                "event": EVENT_AT.isoformat(),
                "symbols": {n: v.symbols for n, v in self.venues.items()},
                "limits": {n: v.limit.spec() for n, v in self.venues.items()}}

    def inject(self, venue: str, kind: str, **options: Any) -> None:
        """Queue a fault (see ``faults.Fault``) for the next request(s) to ``venue``."""
        if venue not in self.venues:
            raise ValueError(f"unknown venue {venue!r} (venues: {', '.join(self.venues)})")
        self.faults.add(Fault(venue, kind, **options))

    def expected_trade_ids(self, venue: str, native_symbol: str, since: datetime, until: datetime) -> list[int]:
        """Ids of the simulated trades with ``since <= time < until`` (the truth tests compare against)."""
        if venue not in self.venues:
            raise ValueError(f"unknown venue {venue!r} (venues: {', '.join(self.venues)})")
        return self.venues[venue].trade_ids(native_symbol, since, until)

    def stats(self) -> dict[str, Any]:
        return {name: venue.stats.as_dict() for name, venue in self.venues.items()}

    def base_url(self, venue: str) -> str:
        if self.port is None:
            raise RuntimeError("the sandbox is not started")
        return f"http://{self.host}:{self.port}/{venue}"

    def base_urls(self) -> dict[str, str]:
        return {name: self.base_url(name) for name in self.venues} if self.port else {}

    def ws_url(self, venue: str) -> str:
        """The venue's WebSocket endpoint here (its connector's ``ws_url`` option)."""
        return f"ws://{self.host}:{self.port}/{venue}{self.venues[venue].ws_path}" if self.port else ""

    def connector_options(self, venue: str, **extra: Any) -> dict[str, Any]:
        """Options that point a venue's connector here, with a client rate matching the sandbox's limit."""
        return {"base_url": self.base_url(venue), "ws_url": self.ws_url(venue),
                "rate_limit": self.venues[venue].limit.spec(), **extra}

    def env(self) -> dict[str, str]:
        """Environment variables that point every connector at this sandbox."""
        out = {}
        for name in self.venues:
            out[f"SCHEMAHUB_{name.upper()}_BASE_URL"] = self.base_url(name)
            out[f"SCHEMAHUB_{name.upper()}_RATE_LIMIT"] = self.venues[name].limit.spec()
            out[f"SCHEMAHUB_{name.upper()}_WS_URL"] = self.ws_url(name)
        return out

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self, port: int = 0, host: str = "127.0.0.1") -> Sandbox:
        """Serve in a background thread (``port=0``: a free port); returns once it accepts connections."""
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP,
        # and without it every keep-alive request waits ~40 ms for a delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        self.host, self.port = host, sock.getsockname()[1]
        config = uvicorn.Config(self.app(), log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="schemahub-sandbox", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the sandbox server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            # WebSocket handlers still streaming are cancelled at shutdown, on purpose: uvicorn would log each
            # cancellation as a traceback ("Exception in ASGI application"), noise in a CLI that is exiting.
            logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def serve_forever(self, port: int, host: str = "127.0.0.1") -> None:
        """Serve in the foreground (the ``schemahub sandbox`` command)."""
        self.host, self.port = host, port
        uvicorn.run(self.app(), host=host, port=port, log_level="warning", access_log=False, lifespan="off")

    def __enter__(self) -> Sandbox:
        return self.start() if self.port is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
