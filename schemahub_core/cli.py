"""The ``schemahub`` command line. Commands are thin: the work lives in the engine modules."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from . import plugins
from .config import ConfigError, Settings, load_settings
from .mapping import MappingError, check_mapping, collect_mappings, load_mapping
from .registry import Registry, get_registry

console = Console()
err_console = Console(stderr=True)


class Context:
    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    @property
    def registry(self) -> Registry:
        return get_registry()

    def catalog(self):
        from .catalog import open_catalog

        return open_catalog(self.settings)


pass_ctx = click.make_pass_decorator(Context)


def fail(message: str) -> None:
    """One clear line on stderr and exit 1: the house style for every user error."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(1)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), envvar="SCHEMAHUB_CONFIG",
              help="Settings file (default: config/schemahub.yaml if present).")
@click.version_option(package_name="schemahub-core", prog_name="schemahub")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None) -> None:
    """SchemaHub lands crypto exchange market data into Apache Iceberg, exactly once.

    \b
    Typical session:
      schemahub init                       create the catalog namespace and tables
      schemahub plugins list               installed venues, transforms, sinks
      schemahub mappings validate          check every mapping before any write
      schemahub run pipeline trades_unified   ingest all venues, then unify

    With no configuration, the catalog and warehouse live in ./.schemahub/
    (set SCHEMAHUB_HOME or config/schemahub.yaml to move them).
    """
    ctx.obj = Context(config_path)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_ctx
def init(ctx: Context, as_json: bool) -> None:
    """Create the namespace and every table (raw, unified, meta). Safe to rerun."""
    from .tables import init_tables

    try:
        results = init_tables(ctx.catalog(), ctx.settings.namespace, ctx.registry)
    except (ConfigError, RuntimeError) as exc:
        fail(str(exc))
    if as_json:
        emit_json({"namespace": ctx.settings.namespace,
                   "tables": [{"name": n, "created": c} for n, c in results]})
        return
    table = Table(title=f"namespace {ctx.settings.namespace}")
    table.add_column("table")
    table.add_column("status")
    for name, created in results:
        table.add_row(name, "[green]created[/]" if created else "exists")
    console.print(table)


@cli.group(name="plugins")
def plugins_group() -> None:
    """Inspect installed plugins, generate a new one, run the conformance suite on one."""


def plugin_rows(registry: Registry) -> list[dict[str, Any]]:
    rows = []
    for name, (dist, version) in sorted(plugins.distributions.items()):
        provided = registry.provided.get(name, {})
        rows.append({
            "name": name,
            "distribution": dist,
            "version": version,
            "connectors": list(provided.get("connectors", [])),
            "streams": list(provided.get("streams", [])),
            "transforms": list(provided.get("transforms", [])),
            "sinks": list(provided.get("sinks", [])),
            "mappings": list(provided.get("mappings", [])),
            "targets": list(provided.get("targets", [])),
            "sandbox_venues": list(provided.get("sandbox_venues", [])),
            "error": registry.errors.get(name),
        })
    for name, failure in sorted(plugins.failures.items()):
        rows.append({"name": name, "distribution": failure.distribution, "version": failure.version,
                     "connectors": [], "streams": [], "transforms": [], "sinks": [], "mappings": [],
                     "targets": [], "sandbox_venues": [], "error": failure.error})
    return rows


@plugins_group.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print the plugins as JSON.")
@pass_ctx
def plugins_list(ctx: Context, as_json: bool) -> None:
    """List plugins with what each provides; a plugin that fails to load is shown with its error."""
    rows = plugin_rows(ctx.registry)
    if as_json:
        emit_json(rows)
        return
    table = Table(title="SchemaHub plugins")
    for col in ("plugin", "version", "connectors", "streams", "transforms", "sinks", "status"):
        table.add_column(col, overflow="fold")
    for r in rows:
        transforms = r["transforms"]
        shown = ", ".join(transforms) if len(transforms) <= 4 else f"{len(transforms)} built-in"
        table.add_row(r["name"], r["version"] or "", ", ".join(r["connectors"]), ", ".join(r["streams"]),
                      shown, ", ".join(r["sinks"]),
                      f"[red]{r['error']}[/]" if r["error"] else "[green]ok[/]")
    console.print(table)


# --- plugins new / plugins test (plugin authors) ---
@plugins_group.command(name="new")
@click.argument("name")
@click.option("--dir", "directory", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Folder to create schemahub-NAME/ in.")
def plugins_new(name: str, directory: str) -> None:
    """Generate a venue plugin package: connector, simulated venue, mapping, tests, README.

    \b
    It passes its tests as generated; then make it speak your venue:
      pip install -e 'schemahub-NAME[test]' && pytest schemahub-NAME
      schemahub plugins test NAME
    """
    from .scaffold import ScaffoldError, new_plugin

    try:
        root = new_plugin(name, Path(directory))
    except (ScaffoldError, OSError) as exc:
        fail(str(exc))
    console.print(f"created [bold]{root}[/] (plugin {name!r})", highlight=False)
    for line in (f"pip install -e '{root}[test]'", f"pytest {root}", f"schemahub plugins test {name}",
                 f"then edit {root}/src/schemahub_{name}/connector.py for the real venue (see its README)"):
        console.print(f"  {line}", highlight=False, soft_wrap=True, markup=False)  # keep '[test]' as typed


_STATUS = {"passed": "[green]passed[/]", "failed": "[bold red]FAILED[/]", "skipped": "[yellow]skipped[/]"}


@plugins_group.command(name="test")
@click.argument("name")
@click.option("--base-url", help="Run against this server instead of the plugin's simulated venue.")
@click.option("--stream", default="trades", show_default=True)
@click.option("--symbol", help="Canonical symbol (default: the connector's first default symbol).")
@click.option("--since", help="Range start, ISO 8601 or relative (15m); default: around the simulated event, "
              "or 11 minutes ago with --base-url.")
@click.option("--until", help="Range end (exclusive).")
@click.option("--page-size", default=25, show_default=True, type=click.IntRange(min=1),
              help="The connector's page_size option: small pages exercise page joins.")
@click.option("--min-pages", default=5, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_ctx
def plugins_test(ctx: Context, name: str, base_url: str | None, stream: str, symbol: str | None, since: str | None,
                 until: str | None, page_size: int, min_pages: int, as_json: bool) -> None:
    """Run the conformance suite on an installed connector and report each check: passed or failed, why, fix.

    Exit status 1 when a check fails. Without --base-url it runs offline against the plugin's simulated
    venue (hook register_sandbox_venues), which also enables the rate-limit and no-gap checks.
    """
    import logging

    from rich.markup import escape

    from .testing.suite import check_installed

    logging.getLogger("schemahub_core.http").setLevel(logging.ERROR)  # retries are expected here: no noise
    try:
        report = check_installed(name, base_url=base_url, stream=stream, symbol=symbol, since=_when(since),
                                 until=_when(until), page_size=page_size, min_pages=min_pages,
                                 options=ctx.settings.connector_options(name), mappings_dir=ctx.settings.mappings_dir,
                                 registry=ctx.registry)
    except (KeyError, ValueError) as exc:
        fail(exc.args[0] if exc.args else str(exc))
    if as_json:
        emit_json(report.as_dict())
    else:
        table = Table(title=f"conformance: {name}.{stream} {report.symbol} on the {report.server}, "
                            f"{report.since:%Y-%m-%d %H:%M:%S} .. {report.until:%H:%M:%S}")
        for col in ("check", "result", "why", "how to fix"):
            table.add_column(col, overflow="fold")
        for r in report.results:
            table.add_row(r.name, _STATUS[r.status], escape(r.detail), escape(r.fix))  # details quote venue text
        console.print(table)
        summary = f"{sum(r.status == 'passed' for r in report.results)} passed"
        if report.failed:
            summary += f", [bold red]{len(report.failed)} failed: {', '.join(report.failed)}[/]"
        console.print(f"{name}: {summary}", highlight=False)
    if not report.passed:
        sys.exit(1)
# --- end of plugins new / plugins test ---


@cli.group()
def mappings() -> None:
    """Check and try the YAML mappings that feed unified tables."""


@mappings.command(name="validate")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per mapping.")
@pass_ctx
def mappings_validate(ctx: Context, files: tuple[str, ...], as_json: bool) -> None:
    """Validate FILES, or every mapping in config/mappings/ and those plugins register.

    Each problem is one line: file:line: key: what is wrong.
    """
    registry = ctx.registry
    results: list[dict[str, Any]] = []
    if files:
        candidates: list[Any] = list(files)
    else:
        candidates = [(origin, item) for origin, item in registry.mappings]
        mdir = ctx.settings.mappings_dir
        candidates += sorted(mdir.glob("*.y*ml")) if mdir.is_dir() else []
    for item in candidates:
        origin, source = item if isinstance(item, tuple) else ("config", item)
        label = str(source) if not hasattr(source, "path") else source.path
        try:
            mapping = source if hasattr(source, "apply") else load_mapping(source, origin=origin)
            label = mapping.path
            check_mapping(mapping, registry)
            results.append({"file": label, "origin": origin, "ok": True, "source": mapping.source,
                            "target_table": mapping.target_table, "error": None})
        except MappingError as exc:
            results.append({"file": label, "origin": origin, "ok": False, "error": str(exc)})
    if as_json:
        emit_json(results)
    else:
        for r in results:
            if r["ok"]:
                line = f"[green]ok[/]   {r['file']}  ({r['source']} -> {r['target_table']})"
                console.print(line, highlight=False, soft_wrap=True)
            else:
                err_console.print(f"[red]fail[/] {r['error']}", highlight=False, soft_wrap=True)
        if not results:
            console.print("no mappings found")
    if any(not r["ok"] for r in results):
        sys.exit(1)


@mappings.command(name="dry-run")
@click.argument("source")
@click.argument("records_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--target", "target_table", default="trades_unified", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the unified rows as JSON.")
@pass_ctx
def mappings_dry_run(ctx: Context, source: str, records_file: str, target_table: str, as_json: bool) -> None:
    """Map native records (a JSON list in RECORDS_FILE) from SOURCE (connector.stream); write nothing.

    Shows the raw cast, quarantined records and the unified rows the mapping produces.
    """
    from .raw import cast_records

    registry = ctx.registry
    try:
        found = [m for m in collect_mappings(registry, ctx.settings.mappings_dir)
                 if m.source == source and m.target_table == target_table]
        if not found:
            fail(f"no mapping from {source} to {target_table} (see `schemahub mappings validate`)")
        mapping = found[0]
        check_mapping(mapping, registry)
    except MappingError as exc:
        fail(str(exc))
    records = json.loads(Path(records_file).read_text())
    if not isinstance(records, list):
        fail(f"{records_file}: expected a JSON list of records")
    stream = registry.connectors[mapping.connector].streams[mapping.stream]
    raw, rejected = cast_records(stream, records, registry.transforms, mapping.connector)
    unified = mapping.apply(raw, registry, registry.targets[target_table].schema)
    if as_json:
        emit_json({"rows": unified.to_pylist(), "quarantined": [r.__dict__ for r in rejected]})
        return
    table = Table(title=f"{source} -> {target_table} (dry run, nothing written)")
    for name in unified.schema.names:
        table.add_column(name, overflow="fold")
    for row in unified.to_pylist():
        table.add_row(*["" if v is None else str(v) for v in row.values()])
    console.print(table)
    for r in rejected:
        console.print(f"[yellow]quarantined[/] record {r.index}: {r.reason}", highlight=False)


# --- replay (issue 5) -------------------------------------------------------------------------------------------


@cli.command()
@click.option("--at", "at", required=True, help="Window start, ISO 8601 UTC, e.g. 2024-02-08T15:12:04Z.")
@click.option("--window", default="12s", show_default=True, help="Window length: 12s, 500ms, 2m ...")
@click.option("--symbol", required=True, help="Canonical BASE-QUOTE symbol, e.g. BTC-USD (see --quote-aliases).")
@click.option("--venues", multiple=True, help="Only these venues (repeat or comma-separate), e.g. BINANCE,COINBASE.")
@click.option("--as-of", "as_of", help="Time travel: a trades_unified snapshot id, or a timestamp resolved "
              "through the snapshot log (the table as a reader saw it then).")
@click.option("--speed", default=0.2, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Playback rate, market time per wall time (0.1 = ten times slower than real time).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), help="Also write a self-contained "
              "interactive chart (plotly.js inline, opens offline) to this file.")
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
    from .replay import ReplayError, ReplayRequest, load_replay, parse_duration, parse_instant, play, render_report
    from .replay import write_html as write_replay_html

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
        console.print(f"wrote interactive chart to [bold]{written}[/] (self-contained, opens offline)", highlight=False)


# --- live (issue 6) ---


@cli.command()
@click.option("--symbols", required=True, help="Comma-separated canonical symbols compared across venues, "
              "e.g. BTC-USD,ETH-USD (see --quote-aliases).")
@click.option("--threshold-bps", default=5.0, show_default=True, type=click.FloatRange(min=0),
              help="Flag a venue whose mid is further than this from the cross-venue median.")
@click.option("--land", is_flag=True, help="Also land every quote in raw_<venue>_quotes (exactly once, "
              "micro-batches every second); `schemahub run unify quotes_unified` normalizes them.")
@click.option("--duration", help="Stop after this long (60s, 5m); default: until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="No table: stream discrepancy events as JSON lines.")
@click.option("--venues", multiple=True, help="Only these venues (repeat or comma-separate), e.g. binance,kraken.")
@click.option("--quote-aliases", default="USD,USDT,USDC", show_default=True,
              help="Quote currencies treated as one, so BTC-USD also compares Binance's BTC-USDT. "
              "Pass '' to compare the exact symbol only.")
@click.option("--stale-after", default="5s", show_default=True,
              help="A connected venue with no quote for this long is stale (left out of the median).")
@click.option("--sandbox", "use_sandbox", is_flag=True,
              help="Start the SIMULATED venues in this process and watch them (no network).")
@pass_ctx
def live(ctx: Context, symbols: str, threshold_bps: float, land: bool, duration: str | None, as_json: bool,
         venues: tuple[str, ...], quote_aliases: str, stale_after: str, use_sandbox: bool) -> None:
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

    from .live import LiveError, build_session, render_board
    from .replay import ReplayError, parse_duration

    try:
        seconds = parse_duration(duration).total_seconds() if duration else None
        stale = parse_duration(stale_after).total_seconds()
    except ReplayError as exc:
        fail(str(exc))
    server = None
    options_for = ctx.settings.connector_options
    caption = None
    if use_sandbox:
        from .sandbox import LABEL, Sandbox, SandboxConfig

        server = Sandbox(SandboxConfig.fast()).start()
        options_for = server.connector_options
        caption = LABEL
        err_console.print(f"[yellow]{LABEL}[/]", highlight=False)
    try:
        session = build_session(
            ctx.registry, [s.strip() for s in symbols.split(",") if s.strip()], options_for,
            venues=[v for item in venues for v in item.split(",")], threshold_bps=threshold_bps,
            quote_aliases=[a for a in quote_aliases.split(",") if a.strip()], stale_after=stale,
            land=(ctx.catalog(), ctx.settings.namespace) if land else None, raw_payload=ctx.settings.raw_payload)
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
    if as_json:
        if session.lander is not None:
            click.echo(json.dumps({"event": "landing", "received": session.lander.received,
                                   "landed": session.lander.landed, "commits": session.lander.commits}))
        return
    console.print()
    console.print(f"{len(ended)} discrepancy event(s) above {threshold_bps:g} bps; quotes received: "
                  + ", ".join(f"{k} {v}" for k, v in session.received.items()), highlight=False)
    for plan in session.feeds:
        feed = plan.feed
        if feed.drops or feed.failed_attempts or not feed.connects:
            err_console.print(f"[yellow]warning:[/] {plan.source}: {feed.connects} connection(s), {feed.drops} "
                              f"dropped, {feed.failed_attempts} failed attempt(s); last error: {feed.last_error}",
                              highlight=False, soft_wrap=True)
    for message in session.errors[-5:]:
        err_console.print(f"[yellow]warning:[/] {message}", highlight=False)
    if session.lander is not None:
        console.print(f"{session.lander.summary()}; normalize with `schemahub run unify quotes_unified`",
                      highlight=False)


# --- end of live ---


# --- run ingest / unify / pipeline, status (exactly-once engines: ingest.py, unify.py, pipeline.py) ---


@cli.group(name="run")
def run_group() -> None:
    """Land data exactly once: venues -> raw tables (ingest), raw -> unified tables (unify).

    Every command can be interrupted at any point and simply run again.
    """


_RUN_COLUMNS = ("fetched", "landed", "quarantined", "deduplicated", "unified", "seconds")


def _run_options(fn: Any) -> Any:
    fn = click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")(fn)
    fn = click.option("--pages-per-commit", default=1, show_default=True, type=click.IntRange(min=1),
                      help="Pages landed per Iceberg commit.")(fn)
    fn = click.option("--until", help="End (exclusive): ISO-8601 or relative, e.g. 5m.")(fn)
    fn = click.option("--since", help="Start on a first run: ISO-8601 or relative, e.g. 15m, 2h, 1d.")(fn)
    return click.option("--symbols", help="Comma-separated canonical symbols, e.g. BTC-USD,ETH-USD; "
                        "SOURCE:SYMBOL applies to one source only, e.g. binance:BTC-USDT,coinbase:BTC-USD "
                        "(default: each connector's own).")(fn)


def _run_engine(as_json: bool, work: Any) -> list[Any]:
    """Run ``work(on_progress)`` under a rich progress display; one-line errors for bad input."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from .connector import ConnectorError
    from .ingest import RunStats

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                        TextColumn("{task.fields[fetched]} fetched, {task.completed} landed"), TimeElapsedColumn(),
                        console=err_console, transient=True, disable=as_json or not err_console.is_terminal)
    tasks: dict[str, Any] = {}

    def on_progress(stats: RunStats) -> None:
        if stats.name not in tasks:
            tasks[stats.name] = progress.add_task(stats.name, total=None, fetched=0)
        done = bool(stats.seconds or stats.error)  # the engine reports once more when a stream is finished
        progress.update(tasks[stats.name], completed=stats.landed, fetched=stats.fetched,
                        total=stats.landed if done else None)

    try:
        with progress:
            result = work(on_progress)
    except (KeyError, ValueError, ConfigError, MappingError, ConnectorError) as exc:
        fail(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc))
    return result if isinstance(result, list) else [result]


def _print_run(stats: list[Any], as_json: bool) -> None:
    """The final summary (table or JSON); exit 1 if any part failed."""
    if as_json:
        emit_json([{k: v for k, v in s.as_dict().items() if k != "scanned_files"} for s in stats])
    else:
        table = Table(title="run summary")
        for col in ("step", "name", *_RUN_COLUMNS, "status"):
            table.add_column(col, justify="right" if col in _RUN_COLUMNS else "left", overflow="fold")
        for s in stats:
            status = "[red]failed[/] (see below)" if s.error else "[green]ok[/]"
            if s.dropped_batches:
                status += f" ({s.dropped_batches} dropped: concurrent writer)"
            if s.step == "unify" and not s.commits and not s.error:
                status = "[green]up to date[/] (no new snapshot)"
            table.add_row(s.step, s.name, *[str(getattr(s, c)) for c in _RUN_COLUMNS], status)
        if len(stats) > 1:  # "fetched" counts venue records; unify's raw rows read are not fetched again
            fetched = [s for s in stats if s.step == "ingest"] or stats
            totals = [str(sum(getattr(s, c) for s in (fetched if c == "fetched" else stats)))
                      for c in _RUN_COLUMNS[:-1]]
            table.add_section()
            table.add_row("", "[bold]total[/]", *totals, f"{sum(s.seconds for s in stats):.3f}", "")
        console.print(table)
    errors = [s for s in stats if s.error]
    for s in errors:
        err_console.print(f"[bold red]error:[/] {s.name}: {s.error} (rerun to resume; nothing landed twice)",
                          highlight=False, soft_wrap=True)
    if errors:
        sys.exit(1)


def _when(text: str | None) -> Any:
    from .ingest import parse_when

    return parse_when(text) if text else None


@run_group.command(name="ingest")
@click.argument("sources", nargs=-1, required=True)
@_run_options
@pass_ctx
def run_ingest_cmd(ctx: Context, sources: tuple[str, ...], symbols: str | None, since: str | None,
                   until: str | None, pages_per_commit: int, as_json: bool) -> None:
    """Land SOURCES (``binance`` or ``binance.trades``) into their raw tables, exactly once.

    Resumes from the cursor committed with the newest raw snapshot.
    """
    from .pipeline import run_ingest

    symbol_list = [s.strip() for s in symbols.split(",") if s.strip()] if symbols else None
    stats = _run_engine(as_json, lambda on_progress: run_ingest(
        ctx.settings, ctx.registry, sources, symbols=symbol_list, since=_when(since), until=_when(until),
        pages_per_commit=pages_per_commit, on_progress=on_progress, catalog=ctx.catalog()))
    _print_run(stats, as_json)


@run_group.command(name="unify")
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@pass_ctx
def run_unify_cmd(ctx: Context, target: str, as_json: bool) -> None:
    """Append the raw rows not yet in TARGET (e.g. trades_unified), deduplicated, in one commit."""
    from .pipeline import run_unify

    stats = _run_engine(as_json, lambda on_progress: run_unify(ctx.settings, ctx.registry, target,
                                                               catalog=ctx.catalog()))
    _print_run(stats, as_json)


@run_group.command(name="pipeline")
@click.argument("target")
@_run_options
@pass_ctx
def run_pipeline_cmd(ctx: Context, target: str, symbols: str | None, since: str | None, until: str | None,
                     pages_per_commit: int, as_json: bool) -> None:
    """Ingest every source mapped into TARGET, then unify it."""
    from .pipeline import run_pipeline

    symbol_list = [s.strip() for s in symbols.split(",") if s.strip()] if symbols else None
    stats = _run_engine(as_json, lambda on_progress: run_pipeline(
        ctx.settings, ctx.registry, target, symbols=symbol_list, since=_when(since), until=_when(until),
        pages_per_commit=pages_per_commit, on_progress=on_progress, catalog=ctx.catalog()))
    _print_run(stats, as_json)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@pass_ctx
def status(ctx: Context, as_json: bool) -> None:
    """Per source/symbol: cursor, last trade time, lag, rows, last snapshot; per target: what it consumed."""
    from datetime import UTC, datetime

    from .state import unify_rows, watermark_rows

    catalog = ctx.catalog()
    now = datetime.now(UTC)
    sources = watermark_rows(catalog, ctx.settings.namespace, ctx.registry)
    for r in sources:
        r["lag_seconds"] = round((now - r["last_ts"]).total_seconds(), 3) if r["last_ts"] else None
    targets = unify_rows(catalog, ctx.settings.namespace, ctx.registry)
    if as_json:
        emit_json({"sources": sources, "targets": targets})
        return
    if not sources and not targets:
        console.print("nothing ingested yet: try `schemahub run pipeline trades_unified`")
        return
    table = Table(title="sources (from raw snapshots)")
    for col in ("source", "stream", "symbol", "cursor", "last trade", "lag", "rows", "last snapshot"):
        table.add_column(col, overflow="fold")
    for r in sources:
        lag = _age(r["lag_seconds"])
        table.add_row(r["source"], r["stream"], r["symbol"], r["cursor"] or "", str(r["last_ts"] or ""), lag,
                      str(r["rows"]), str(r["snapshot_id"] or ""))
    console.print(table)
    table = Table(title="unified targets")
    for col in ("target", "source table", "consumed snapshot", "raw snapshot", "state", "target rows"):
        table.add_column(col, overflow="fold")
    for r in targets:
        table.add_row(r["target"], r["source_table"], str(r["consumed_snapshot_id"]), str(r["raw_snapshot_id"]),
                      "[green]up to date[/]" if r["up_to_date"] else "[yellow]new raw data[/]",
                      str(r["target_rows"]))
    console.print(table)


# --- end of run / status ---


# --- maintain ---


@cli.command()
@click.option("--expire-older-than", "expire_older_than", default="7d", show_default=True,
              help="Expire snapshots older than this (7d, 12h, 30m, or an ISO-8601 time); 'never' keeps all. "
                   "Snapshots holding cursors or unify's source positions are always kept.")
@click.option("--compact", "do_compact", is_flag=True, help="Also rewrite each partition's small files into one.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per table.")
@pass_ctx
def maintain(ctx: Context, expire_older_than: str, do_compact: bool, as_json: bool) -> None:
    """Compact small files and expire old snapshots so commit and scan time stay flat as history grows.

    Safe while ingest and unify run: the engine's progress is carried forward and never expired.
    """
    from .ingest import parse_when
    from .maintenance import maintain as run_maintain

    try:
        older_than = None if expire_older_than == "never" else parse_when(expire_older_than)
    except ValueError as exc:
        fail(f"--expire-older-than: {exc}")
    reports = run_maintain(ctx.catalog(), ctx.settings.namespace, older_than, do_compact)
    if as_json:
        emit_json([r.as_dict() for r in reports])
    elif not reports:
        console.print(f"namespace {ctx.settings.namespace} has no tables yet: nothing to maintain")
    else:
        table = Table(title=f"maintenance of namespace {ctx.settings.namespace}")
        for col in ("table", "snapshots", "expired", "kept for engine", "data files", "partitions compacted",
                    "status"):
            table.add_column(col, overflow="fold")
        for r in reports:
            table.add_row(r.table, str(r.snapshots_before), str(r.snapshots_expired),
                          str(r.snapshots_kept_for_engine), f"{r.files_before} -> {r.files_after}",
                          str(r.partitions_compacted), f"[red]{r.error}[/]" if r.error else "[green]ok[/]")
        console.print(table)
    if any(r.error for r in reports):
        sys.exit(1)


# --- end of maintain ---

# --- sandbox ---
@cli.command()
@click.option("--port", default=8765, show_default=True, help="Port on 127.0.0.1 for all three venues.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--seed", default=20240208, show_default=True, help="Seed of the simulated market.")
@click.option("--fast", is_flag=True, help="Generous rate limits instead of the venues' real ones.")
@click.option("--rate-limit", "rate_limits", multiple=True, metavar="VENUE=LIMIT/SECONDS",
              help="Override one venue's limit, e.g. kraken=10/1 (repeatable).")
def sandbox(port: int, host: str, seed: int, fast: bool, rate_limits: tuple[str, ...]) -> None:
    """Serve SIMULATED Binance, Coinbase and Kraken REST APIs (and plugins' venues) on one local port.

    \b
    Each venue lives under its own path prefix; point connectors at it with:
      SCHEMAHUB_BINANCE_BASE_URL=http://127.0.0.1:8765/binance
      SCHEMAHUB_COINBASE_BASE_URL=http://127.0.0.1:8765/coinbase
      SCHEMAHUB_KRAKEN_BASE_URL=http://127.0.0.1:8765/kraken
    Rate limits are the real venues' by default (Kraken: 1 request/s); --fast or
    --rate-limit relaxes them (then set SCHEMAHUB_<VENUE>_RATE_LIMIT to match).
    Faults for testing: POST /_sandbox/faults {"venue": "binance", "kind": "429"}.
    Plugins add their own simulated venues (hook register_sandbox_venues), served the same way.
    """
    from .sandbox import FAST_LIMITS, REAL_LIMITS, Limit, Sandbox, SandboxConfig, venue_apps

    limits = dict(FAST_LIMITS if fast else REAL_LIMITS)
    for spec in rate_limits:
        venue, _, value = spec.partition("=")
        try:
            number, _, seconds = value.partition("/")
            limits[venue] = Limit(int(number), float(seconds.rstrip("s") or 1))
        except ValueError:
            fail(f"--rate-limit {spec!r}: expected VENUE=LIMIT/SECONDS, e.g. kraken=10/1")
        if venue not in venue_apps():
            fail(f"--rate-limit {spec!r}: unknown venue {venue!r} (venues: {', '.join(venue_apps())})")
    server = Sandbox(SandboxConfig(seed=seed, limits=limits, fast_limits=fast))
    server.port, server.host = port, host
    info = server.describe()
    console.print(f"[bold]SchemaHub sandbox[/]: [yellow]SIMULATED market data[/], event at {info['event']}, "
                  f"clock starts {info['clock_start']}", highlight=False)
    for venue, url in server.base_urls().items():
        console.print(f"  {venue:9} {url}   limit {info['limits'][venue]}   "
                      f"SCHEMAHUB_{venue.upper()}_BASE_URL={url}", highlight=False)
    try:
        server.serve_forever(port, host)
    except OSError as exc:
        fail(f"cannot listen on {host}:{port}: {exc} (try --port)")
# --- end of sandbox ---


def _load_plugin_commands() -> None:
    pm = plugins.load_plugins()
    pm.hook.register_commands(cli=cli)


def main() -> None:
    try:
        _load_plugin_commands()
        cli(standalone_mode=True)
    except ConfigError as exc:
        fail(str(exc))


if __name__ == "__main__":
    main()
