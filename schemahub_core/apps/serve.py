"""``schemahub serve``: the browser UI (Replay with a timeline slider, Live streaming quotes) on 127.0.0.1.

There is no second implementation here. The Replay page gets its numbers from the replay frame model
(``Replay``: last prices, disagreement and its running peak, spreads, lead–lag), exported per trade event by
``replay_payload``; the page only binary-searches the event at the slider's instant and shows that row, the
way ``Replay.state_at`` does. The Live page shows ``live.Board`` rows as ``board_view`` formats them (the
same cells, statuses and events as the terminal table), pushed over a WebSocket by a ``LiveSession`` running
in the server's event loop. ``replay --html`` writes the same Replay page with the payload and plotly.js
inlined, so it plays offline from ``file://``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from pyiceberg.catalog import Catalog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from schemahub_core.apps.live import Board, Lander, LiveError, LiveSession, board_view
from schemahub_core.apps.replay import (
    TAPE_ROWS,
    TRADES,
    Replay,
    ReplayError,
    ReplayRequest,
    load_replay,
    load_table,
    parse_duration,
    parse_instant,
)

WEB = Path(__file__).parent / "web"
LIVE_PUSH_EVERY = 0.1  # seconds between board pushes to a Live page


def plotly_js_path() -> Path:
    """plotly.min.js as shipped inside the plotly package: the pages work offline."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


# ------------------------------------------------------------------------------------------------ replay page


def _col(a: np.ndarray, digits: int | None = None) -> list[float | None]:
    """A float column as JSON numbers, NaN/inf as null (JSON has no NaN)."""
    a = np.asarray(a, dtype=np.float64)
    if digits is not None:
        a = np.round(a, digits)
    return np.where(np.isfinite(a), a, None).tolist()  # type: ignore[call-overload]


def replay_payload(replay: Replay) -> dict[str, Any]:
    """The frame model of a replay as columns, one row per trade event from the window's start state on.

    Row ``i`` is the replay's event ``k0 + i`` (``k0`` the last lead-in event, the state at the window start):
    what ``Replay.state_at(t)`` shows for any ``t`` whose last event is that one.
    """
    frames = replay.frames()
    summary = replay.summary()
    snap = summary["snapshot"]  # ids are 64-bit: as text, a JavaScript number would round them
    summary["snapshot"] = {**snap, "id": None if snap["id"] is None else str(snap["id"])}
    return {
        "symbol": replay.request.symbol.upper(),
        "start_us": replay.start_us, "end_us": replay.end_us,
        "venues": list(replay.venues), "markets": replay.markets,
        "tape_rows": TAPE_ROWS,
        "window": {"at": summary["window"]["start"], "window": _duration_text(replay.request.window),
                   "as_of": replay.request.as_of, "venues": ",".join(replay.request.venues)},
        "snapshot": summary["snapshot"], "files_scanned": replay.files_scanned, "trades": summary["trades"],
        "summary": summary,
        "events": {"t": frames["t"].tolist(), "venue": frames["venue"].tolist(), "price": frames["price"].tolist(),
                   "side": frames["side"].tolist(), "qty": frames["qty"].tolist()},
        "per_venue": [{
            "venue": v,
            "last": _col(frames["last"][:, j]),
            "deviation_bps": _col(frames["deviation_bps"][:, j]),
            "last_trade_us": _col(frames["last_trade_us"][:, j]),
            "trades_so_far": frames["trades_so_far"][:, j].tolist(),
            "spread_source": replay.spread_source_of(v),
            "trade_spread_bps": _col(frames["trade_spread_bps"][:, j]),
            "quotes": _quotes_of(replay, j),
        } for j, v in enumerate(replay.venues)],
        "disagreement_bps": _col(frames["disagreement_bps"]),
        "peak_bps": _col(frames["peak_bps"]),
        "peak_at_us": _col(frames["peak_at_us"]),
        "lead_lag": replay.lead_lag.to_dict(),
    }


def _quotes_of(replay: Replay, j: int) -> dict[str, Any] | None:
    q = replay.quote_arrays(j)
    if q is None:
        return None
    t, bid, ask, spread = q
    return {"t": t.tolist(), "bid": _col(bid), "ask": _col(ask), "spread_bps": _col(spread)}


def _duration_text(d: timedelta) -> str:
    ms = d // timedelta(milliseconds=1)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _script_json(data: Any) -> str:
    """JSON safe inside <script>: no ``</script>`` or ``<!--`` can end the element early."""
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c").replace("\u2028", "\\u2028")


def _asset(name: str) -> str:
    return (WEB / name).read_text(encoding="utf-8")


def render_page(page: str, config: dict[str, Any], *, inline_plotly: bool = False) -> str:
    """A page (``replay`` or ``live``) with its CSS and JS inlined and ``config`` embedded as JSON.

    ``inline_plotly`` embeds plotly.min.js too (the self-contained file); otherwise the page loads it from
    the server's ``/static/plotly.min.js``.
    """
    plotly_tag = ""
    if page == "replay":
        plotly_tag = (f"<script>{plotly_js_path().read_text(encoding='utf-8')}</script>" if inline_plotly
                      else '<script src="/static/plotly.min.js"></script>')
    html = _asset(f"{page}.html")
    return (html.replace("/*STYLE*/", _asset("style.css"))
            .replace("<!--PLOTLY-->", plotly_tag)
            .replace("/*CONFIG*/null", _script_json(config))
            .replace("/*SCRIPT*/", _asset(f"{page}.js")))


def replay_page(replay: Replay | None, *, static: bool, defaults: dict[str, Any] | None = None) -> str:
    """The Replay page: with the data embedded (``static``: a file that plays offline) or driven by the API."""
    config = {"mode": "static" if static else "server", "payload": replay_payload(replay) if replay else None,
              "defaults": defaults or {}}
    return render_page("replay", config, inline_plotly=static)


def write_replay_html(replay: Replay, path: str | Path) -> Path:
    """``replay --html``: the Replay page as one self-contained file (data, plotly.js, slider and Play)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replay_page(replay, static=True), encoding="utf-8")
    return path


def snapshot_choices(catalog: Catalog, namespace: str, limit: int = 50) -> list[dict[str, Any]]:
    """The newest ``trades_unified`` snapshots for the time-travel picker (newest first)."""
    table = load_table(catalog, namespace, TRADES)
    if table is None:
        return []
    snaps = sorted(table.snapshots(), key=lambda s: s.timestamp_ms, reverse=True)[:limit]
    return [{"id": str(s.snapshot_id),
             "committed_at": datetime.fromtimestamp(s.timestamp_ms / 1000, UTC).isoformat(timespec="milliseconds"),
             "operation": s.summary.operation.value if s.summary else None} for s in snaps]


def request_from_query(params: dict[str, str]) -> ReplayRequest:
    """The Replay form's fields, validated the way ``schemahub replay`` validates its options."""
    symbol = (params.get("symbol") or "").strip()
    at = (params.get("at") or "").strip()
    if not symbol or not at:
        raise ReplayError("pick a symbol and a timestamp")
    venues = tuple(v.strip() for v in (params.get("venues") or "").split(",") if v.strip())
    return ReplayRequest(symbol=symbol, start=parse_instant(at), window=parse_duration(params.get("window") or "12s"),
                         venues=venues, as_of=(params.get("as_of") or "").strip() or None)


# ------------------------------------------------------------------------------------------------------ app


class LiveHub:
    """The one ``LiveSession`` of the server, started with it; every Live page watches the same board."""

    def __init__(self, factory: Callable[[], LiveSession] | None, caption: str | None = None) -> None:
        self.factory = factory
        self.caption = caption
        self.session: LiveSession | None = None
        self.error: str | None = None if factory else "live quotes are off (started with --no-live)"
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.factory is None:
            return
        try:
            self.session = self.factory()
        except LiveError as exc:
            self.error = str(exc)
            return
        self._task = asyncio.create_task(self.session.run(None), name="schemahub-live")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def view(self) -> dict[str, Any]:
        if self.session is None:
            return {"error": self.error, "rows": [], "events": []}
        board: Board = self.session.board
        lander: Lander | None = self.session.lander
        return {**board_view(board, datetime.now(UTC), lander=lander), "caption": self.caption,
                "received": dict(self.session.received), "errors": self.session.errors[-5:], "error": None}


def create_app(catalog: Callable[[], Catalog], namespace: str, *, live: Callable[[], LiveSession] | None = None,
               defaults: dict[str, Any] | None = None, caption: str | None = None) -> Starlette:
    """The web app. ``catalog`` opens a catalog (called per request, in a worker thread); ``live`` builds the
    live session (None: no live quotes)."""
    hub = LiveHub(live, caption)
    defaults = defaults or {}

    async def index(request: Request) -> Response:
        return RedirectResponse("/replay")

    async def replay_html(request: Request) -> Response:
        return HTMLResponse(replay_page(None, static=False, defaults=defaults))

    async def live_html(request: Request) -> Response:
        return HTMLResponse(render_page("live", {"caption": caption}))

    async def plotly(request: Request) -> Response:
        return FileResponse(plotly_js_path(), media_type="text/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})  # 4.6 MB, same for a version

    async def api_replay(request: Request) -> Response:
        def work() -> dict[str, Any]:
            return replay_payload(load_replay(catalog(), namespace, request_from_query(dict(request.query_params))))

        try:
            return JSONResponse(await asyncio.to_thread(work))
        except ReplayError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    async def api_snapshots(request: Request) -> Response:
        return JSONResponse(await asyncio.to_thread(lambda: snapshot_choices(catalog(), namespace)))

    async def api_live(request: Request) -> Response:
        return JSONResponse(hub.view())

    async def ws_live(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text(json.dumps(hub.view(), default=str))
                await asyncio.sleep(LIVE_PUSH_EVERY)
        except (WebSocketDisconnect, RuntimeError, ConnectionError):
            pass

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await hub.start()
        try:
            yield
        finally:
            await hub.stop()

    app = Starlette(routes=[
        Route("/", index), Route("/replay", replay_html), Route("/live", live_html),
        Route("/static/plotly.min.js", plotly), Route("/api/replay", api_replay),
        Route("/api/snapshots", api_snapshots), Route("/api/live", api_live), WebSocketRoute("/ws/live", ws_live),
    ], lifespan=lifespan)
    app.state.hub = hub
    return app


class WebServer:
    """The app served by uvicorn in a background thread (tests) or the foreground (the CLI), on 127.0.0.1."""

    def __init__(self, app: Starlette, host: str = "127.0.0.1") -> None:
        self.app, self.host = app, host
        self.port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _bind(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, port))
        self.port = sock.getsockname()[1]
        return sock

    def _config(self) -> uvicorn.Config:
        return uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="on",
                              timeout_graceful_shutdown=1)

    def start(self, port: int = 0) -> WebServer:
        """Serve in a daemon thread (``port=0``: a free port); returns once it accepts connections."""
        sock = self._bind(port)
        self._server = uvicorn.Server(self._config())
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name="schemahub-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the web server did not start")
            time.sleep(0.01)
        return self

    def serve_forever(self, port: int, ready: Callable[[str], None] | None = None) -> None:
        """Serve in the foreground until Ctrl-C; ``ready(url)`` once the port is bound."""
        sock = self._bind(port)
        sock.listen(2048)  # connections made once ``ready`` reports the URL wait in the backlog, not refused
        if ready is not None:
            ready(self.url)
        uvicorn.Server(self._config()).run(sockets=[sock])

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> WebServer:
        return self.start() if self.port is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
