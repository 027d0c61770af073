"""``schemahub replay``: the tick-by-tick replay of a window, with time travel."""

from __future__ import annotations

import click

from schemahub_core.apps.cli.context import Context, console, emit_json, fail, pass_ctx


@click.command()
@click.option("--at", "at", required=True, help="Window start, ISO 8601 UTC, e.g. 2024-02-08T15:12:04Z.")
@click.option("--window", default="12s", show_default=True, help="Window length: 12s, 500ms, 2m ...")
@click.option("--symbol", required=True, help="Canonical BASE-QUOTE symbol, e.g. BTC-USD (see --quote-aliases).")
@click.option("--venues", multiple=True,
              help="Only these venues (repeat or comma-separate), as the exchange column writes them (upper case).")
@click.option("--as-of", "as_of", help="Time travel: a trades_unified snapshot id, or a timestamp resolved "
              "through the snapshot log (the table as a reader saw it then).")
@click.option("--speed", default=0.2, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Playback rate, market time per wall time (0.1 = ten times slower than real time).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Also write the Replay page of "
              "`schemahub serve` as one self-contained file (data and plotly.js inline: slider and Play, offline).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary (venues, disagreement, lead–lag) as JSON.")
@click.option("--quote-aliases", default="USD,USDT,USDC", show_default=True,
              help="Quote currencies treated as one for cross-venue comparison, so --symbol BTC-USD also "
              "matches venues quoting BTC-USDT or BTC-USDC (each venue contributes one market: the exact symbol "
              "if it has it). Pass '' to match the symbol exactly.")
@pass_ctx
def replay(ctx: Context, at: str, window: str, symbol: str, venues: tuple[str, ...], as_of: str | None,
           speed: float, html_path: str | None, as_json: bool, quote_aliases: str) -> None:
    """Replay a market window tick by tick from trades_unified, pinned to an Iceberg snapshot.

    \b
    Shows, per venue, the last price, spread and trade tape, the cross-venue disagreement in bps and
    its peak, and a lead–lag estimate ("BINANCE leads COINBASE by ~N ms") with a confidence figure.
    Animated in a terminal (rich Live); without a TTY it prints a timeline and summary instead.
    The window is [--at, --at + --window); the 2 s before it give each venue its opening price
    and feed the lead–lag estimate.

    \b
      schemahub replay --at 2024-02-08T15:12:04Z --window 12s --symbol BTC-USD
      schemahub replay --at 2024-02-08T15:12:04Z --symbol BTC-USD --as-of 2024-02-09T00:00:00Z --html replay.html
    """
    from schemahub_core.apps.replay import (
        ReplayError,
        ReplayRequest,
        load_replay,
        parse_duration,
        parse_instant,
        play,
        render_report,
    )
    from schemahub_core.apps.serve import write_replay_html

    try:
        request = ReplayRequest(
            symbol=symbol, start=parse_instant(at), window=parse_duration(window),
            venues=tuple(v for item in venues for v in item.split(",") if v.strip()), as_of=as_of,
            quote_aliases=tuple(a for a in quote_aliases.split(",") if a.strip()))
        result = load_replay(ctx.catalog(), ctx.settings.namespace, request)
    except ReplayError as exc:
        fail(str(exc))
    written = write_replay_html(result, html_path) if html_path else None
    if as_json:
        emit_json({**result.summary(), "html": str(written) if written else None})
        return
    animated = console.is_terminal
    if animated:
        try:
            play(result, console, speed=speed)
        except KeyboardInterrupt:
            pass
    console.print(render_report(result, include_frame=not animated))
    if written:
        console.print(f"wrote the Replay page to [bold]{written}[/] (self-contained, opens offline)", highlight=False)
