"""``schemahub serve``: the browser UI (Replay and Live) on 127.0.0.1."""

from __future__ import annotations

import click

from schemahub_core.apps.cli.context import Context, console, err_console, fail, pass_ctx
from schemahub_core.framework.config import ConfigError


@click.command()
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port on 127.0.0.1 (0: any free port).")
@click.option("--symbols", default="BTC-USD", show_default=True,
              help="Live page: comma-separated canonical symbols compared across venues.")
@click.option("--threshold-bps", default=5.0, show_default=True, type=click.FloatRange(min=0),
              help="Live page: flag a venue whose mid is further than this from the cross-venue median.")
@click.option("--stale-after", default="5s", show_default=True,
              help="Live page: a connected venue with no quote for this long is stale.")
@click.option("--sandbox", "use_sandbox", is_flag=True,
              help="Live page: watch the SIMULATED venues, started in this process (no network).")
@click.option("--no-live", is_flag=True, help="No Live page (no WebSocket feeds are opened).")
@click.option("--symbol", "replay_symbol", default="BTC-USD", show_default=True,
              help="Replay page: the symbol the form starts with.")
@click.option("--at", "replay_at", default="", help="Replay page: the timestamp the form starts with.")
@click.option("--window", "replay_window", default="12s", show_default=True,
              help="Replay page: the window the form starts with.")
@pass_ctx
def serve(ctx: Context, port: int, symbols: str, threshold_bps: float, stale_after: str, use_sandbox: bool,
          no_live: bool, replay_symbol: str, replay_at: str, replay_window: str) -> None:
    """The browser UI on http://127.0.0.1:PORT: Replay with a timeline slider, Live streaming quotes.

    \b
    Replay (/replay): pick symbol, timestamp, window and snapshot, click Replay; the slider plays the
    window tick by tick (play, pause, speed, scrub) with each venue's last price, bid/ask and spread,
    the cross-venue disagreement, the lead–lag estimate and the trade tape. The same engine as
    `schemahub replay`; `replay --html FILE` saves this page for offline use.
    Live (/live): the `schemahub live` table, streamed over a WebSocket.

    \b
      schemahub serve
      schemahub serve --sandbox --port 8080
    """
    from schemahub_core.apps.live import LiveError, build_session
    from schemahub_core.apps.replay import ReplayError, parse_duration
    from schemahub_core.apps.serve import WebServer, create_app
    from schemahub_core.engine.catalog import open_catalog

    try:
        stale = parse_duration(stale_after).total_seconds()
    except ReplayError as exc:
        fail(str(exc))
    settings = ctx.settings
    sandbox = None
    options_for = settings.connector_options
    caption = None
    if use_sandbox and not no_live:
        from schemahub_core.sandbox import LABEL, Sandbox, SandboxConfig

        sandbox = Sandbox(SandboxConfig.fast()).start()
        options_for, caption = sandbox.connector_options, LABEL
        err_console.print(f"[yellow]{LABEL}[/] on the Live page", highlight=False)
    session = None
    if not no_live:
        try:
            session = build_session(ctx.registry, [s.strip() for s in symbols.split(",") if s.strip()], options_for,
                                    threshold_bps=threshold_bps, stale_after=stale)
        except (LiveError, ConfigError) as exc:
            if sandbox is not None:
                sandbox.stop()
            fail(str(exc))
    app = create_app(lambda: open_catalog(settings), settings.namespace,
                     live=(lambda: session) if session is not None else None, caption=caption,
                     defaults={"symbol": replay_symbol, "at": replay_at, "window": replay_window})

    def ready(url: str) -> None:
        console.print(f"SchemaHub on [bold]{url}[/]  (Replay: {url}/replay, Live: {url}/live); Ctrl-C stops",
                      highlight=False, soft_wrap=True)

    try:
        WebServer(app).serve_forever(port, ready=ready)
    except OSError as exc:
        fail(f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc} (pick another --port)")
    except KeyboardInterrupt:
        pass
    finally:
        if sandbox is not None:
            sandbox.stop()
