"""``schemahub live``: streaming quotes and cross-venue discrepancies."""

from __future__ import annotations

import json
import logging
from typing import Any

import click

from schemahub_core.apps.cli.context import Context, console, err_console, fail, pass_ctx, plain
from schemahub_core.framework.config import ConfigError


@click.command()
@click.option("--symbols", required=True, help="Comma-separated canonical symbols compared across venues, "
              "e.g. BTC-USD,ETH-USD (see --quote-aliases).")
@click.option("--threshold-bps", default=5.0, show_default=True, type=click.FloatRange(min=0),
              help="Flag a venue whose mid is further than this from the cross-venue median.")
@click.option("--land", is_flag=True, help="Also land every quote in raw_<venue>_quotes (exactly once, "
              "micro-batches every second); `schemahub run unify quotes_unified` normalizes them.")
@click.option("--duration", help="Stop after this long (60s, 5m); default: until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="No table: stream discrepancy events as JSON lines.")
@click.option("--venues", multiple=True,
              help="Only these venues (repeat or comma-separate), named as in 'schemahub plugins list'.")
@click.option("--quote-aliases", default="USD,USDT,USDC", show_default=True,
              help="Quote currencies treated as one, so BTC-USD also compares a venue's BTC-USDT. "
              "Pass '' to compare the exact symbol only.")
@click.option("--stale-after", default="5s", show_default=True,
              help="A connected venue with no quote for this long is stale (left out of the median).")
@click.option("--sandbox", "use_sandbox", is_flag=True,
              help="Start the SIMULATED venues in this process and watch them (no network). With --land the "
              "quotes land in the namespace <namespace>_sandbox, never among real data.")
@click.option("--give-up-after", default="10s", show_default=True,
              help="Exit with an error when no venue sent a single quote in this long.")
@pass_ctx
def live(ctx: Context, symbols: str, threshold_bps: float, land: bool, duration: str | None, as_json: bool,
         venues: tuple[str, ...], quote_aliases: str, stale_after: str, use_sandbox: bool,
         give_up_after: str) -> None:
    """Live best bid/ask of every venue over WebSockets, and where they disagree.

    \b
    A table refreshed 8 times a second: venue, bid, ask, mid, spread (bps), deviation of the mid from
    the cross-venue median (bps) and quote age (ms). Rows above --threshold-bps are highlighted and
    logged as discrepancy events (start, peak, end, duration). A dropped feed reconnects with backoff
    and shows as stale meanwhile.

    \b
      schemahub live --symbols BTC-USD --sandbox --duration 30s
      schemahub live --symbols BTC-USD,ETH-USD --threshold-bps 3 --land --json
    """
    import asyncio

    from rich.live import Live

    from schemahub_core.apps.live import LiveError, build_session, render_board
    from schemahub_core.apps.replay import ReplayError, parse_duration

    try:
        seconds = parse_duration(duration).total_seconds() if duration else None
        stale = parse_duration(stale_after).total_seconds()
        give_up = parse_duration(give_up_after).total_seconds()
    except ReplayError as exc:
        fail(str(exc))
    server = None
    options_for = ctx.settings.connector_options
    namespace = f"{ctx.settings.namespace}_sandbox" if use_sandbox else ctx.settings.namespace
    caption = None
    if use_sandbox:
        from schemahub_core.sandbox import LABEL, Sandbox, SandboxConfig

        server = Sandbox(SandboxConfig.fast()).start()
        # the simulated venues' server runs in this process: a client leaving mid-send (every feed, when live
        # stops) is logged by uvicorn as an ASGI traceback, noise for someone watching quotes
        logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
        options_for = server.connector_options
        caption = LABEL
        if as_json:  # the table's caption says it otherwise
            err_console.print(f"[yellow]{LABEL}[/]", highlight=False)
    try:
        session = build_session(
            ctx.registry, [s.strip() for s in symbols.split(",") if s.strip()], options_for,
            venues=[v for item in venues for v in item.split(",")], threshold_bps=threshold_bps,
            quote_aliases=[a for a in quote_aliases.split(",") if a.strip()], stale_after=stale,
            land=(ctx.catalog(), namespace) if land else None, raw_payload=ctx.settings.raw_payload)
    except (LiveError, ConfigError) as exc:
        if server is not None:
            server.stop()
        fail(str(exc))
    ended = []

    def on_event(kind: str, event: Any) -> None:
        if as_json:
            click.echo(json.dumps(event.as_dict(kind)), nl=True)
        elif kind == "end":
            ended.append(event)

    session.board.on_event = on_event
    session.no_data_timeout = give_up
    view = Live(console=console, auto_refresh=False, transient=False) if not as_json else None

    def refresh() -> None:
        if view is not None:
            view.update(render_board(session.board, lander=session.lander, caption=caption), refresh=True)

    try:
        if view is not None:
            view.start()
        asyncio.run(session.run(seconds, refresh=refresh))
    except KeyboardInterrupt:
        pass
    finally:
        if view is not None:
            refresh()
            view.stop()
        if server is not None:
            server.stop()
    if not any(session.received.values()):
        fail(session.gave_up or session.no_data_reason(seconds or give_up))
    if as_json:
        if session.lander is not None:
            click.echo(json.dumps({"event": "landing", "namespace": namespace, "received": session.lander.received,
                                   "landed": session.lander.landed, "commits": session.lander.commits}))
        return
    console.print()
    console.print(plain(f"{len(ended)} discrepancy event(s) above {threshold_bps:g} bps; quotes received: "
                        + ", ".join(f"{k} {v}" for k, v in session.received.items())), highlight=False)
    for plan in session.feeds:
        feed = plan.feed
        if feed.drops or feed.failed_attempts or not feed.connects:
            err_console.print("[yellow]warning:[/] " + plain(f"{plan.source}: {feed.connects} connection(s), "
                              f"{feed.drops} dropped, {feed.failed_attempts} failed attempt(s); last error: "
                              f"{feed.last_error}"),
                              highlight=False, soft_wrap=True)
    for message in session.errors[-5:]:
        err_console.print(f"[yellow]warning:[/] {plain(message)}", highlight=False)
    if session.lander is not None:
        unify = "schemahub run unify quotes_unified"
        if namespace != ctx.settings.namespace:
            unify = f"SCHEMAHUB_NAMESPACE={namespace} {unify}"
        console.print(plain(f"{session.lander.summary()} in namespace {namespace}"
                            + (" (SIMULATED data, kept apart from real data)" if use_sandbox else "")
                            + f"; normalize with `{unify}`"), highlight=False, soft_wrap=True)
