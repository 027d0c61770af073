"""``schemahub sandbox``: serve the simulated venues in the foreground."""

from __future__ import annotations

import click

from schemahub_core.apps.cli.context import console, fail


@click.command()
@click.option("--port", default=8765, show_default=True, envvar="SCHEMAHUB_SANDBOX_PORT",
              help="One port on 127.0.0.1 for every simulated venue (env SCHEMAHUB_SANDBOX_PORT).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--seed", default=20240208, show_default=True, help="Seed of the simulated market.")
@click.option("--days", default=120, show_default=True, type=click.IntRange(min=1),
              help="Days of simulated history before the clock's start (2024-02-10).")
@click.option("--intensity", default="default", show_default=True, metavar="default|realistic|FACTOR",
              help="Trade rates: 'default' keeps the demo fast; 'realistic' gives a busy symbol ~1M trades/day; "
                   "or a multiplier such as 2.5.")
@click.option("--fast", is_flag=True, help="Generous rate limits instead of the venues' real ones.")
@click.option("--rate-limit", "rate_limits", multiple=True, metavar="VENUE=LIMIT/SECONDS",
              help="Override one venue's limit, e.g. <venue>=10/1 (repeatable).")
@click.option("--env", "print_env", is_flag=True,
              help="Serve nothing: print the `export` lines that point every venue at this sandbox (with the same "
              "--port/--fast/--rate-limit), for `eval \"$(schemahub sandbox --fast --env)\"`.")
def sandbox(port: int, host: str, seed: int, days: int, intensity: str, fast: bool,
            rate_limits: tuple[str, ...], print_env: bool) -> None:
    """Serve every installed venue plugin's SIMULATED REST API and WebSocket feed on one local port.

    \b
    Each venue lives under its own path prefix; point its connector at it with
      SCHEMAHUB_<VENUE>_BASE_URL=http://127.0.0.1:8765/<venue>
    (the startup lines print each one). Rate limits are the real venues' by default;
    --fast or --rate-limit relaxes them (then set SCHEMAHUB_<VENUE>_RATE_LIMIT to match).
    Faults for testing: POST /_sandbox/faults {"venue": "<venue>", "kind": "429"}.
    Venue plugins bring their simulated venue (hook register_sandbox_venues): with none
    installed the sandbox has nothing to serve.
    """
    from schemahub_core.sandbox import REALISTIC_INTENSITY, Limit, Sandbox, SandboxConfig, venue_apps

    try:
        factor = {"default": 1.0, "realistic": REALISTIC_INTENSITY}.get(intensity) or float(intensity)
    except ValueError:
        fail(f"--intensity {intensity!r}: expected default, realistic or a positive number")
    if factor <= 0:
        fail(f"--intensity {intensity!r}: must be positive")

    limits: dict[str, Limit] = {}
    for spec in rate_limits:
        venue, _, value = spec.partition("=")
        try:
            number, _, seconds = value.partition("/")
            limits[venue] = Limit(int(number), float(seconds.rstrip("s") or 1))
        except ValueError:
            fail(f"--rate-limit {spec!r}: expected VENUE=LIMIT/SECONDS, e.g. {venue or 'myvenue'}=10/1")
        if venue not in venue_apps():
            fail(f"--rate-limit {spec!r}: unknown venue {venue!r} (venues: {', '.join(venue_apps())})")
    if not venue_apps():
        fail("no simulated venue is installed: venue plugins bring theirs (pip install schemahub-<venue>)")
    server = Sandbox(SandboxConfig(seed=seed, days=days, intensity=factor, limits=limits, fast_limits=fast))
    server.port, server.host = port, host
    if print_env:
        for key, value in server.env().items():
            click.echo(f"export {key}={value}")
        return
    info = server.describe()
    console.print(f"[bold]SchemaHub sandbox[/]: [yellow]SIMULATED market data[/], event at {info['event']}, "
                  f"clock starts {info['clock_start']}, history from {info['from']}, intensity {info['intensity']:g} "
                  "(relative times like --since 2h count back from this clock, which each venue serves)",
                  highlight=False)
    for venue, url in server.base_urls().items():
        console.print(f"  {venue:9} {url}   limit {info['limits'][venue]}   "
                      f"SCHEMAHUB_{venue.upper()}_BASE_URL={url}", highlight=False)
    try:
        server.serve_forever(port, host)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc} (try --port)")
