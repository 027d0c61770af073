"""``schemahub run ingest|unify|pipeline``: the exactly-once engines."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.table import Table

from schemahub_core.apps.cli.context import (
    Context,
    console,
    emit_json,
    err_console,
    error_line,
    fail,
    parse_window,
    pass_ctx,
    plain,
)
from schemahub_core.engine.limits import MAX_ROWS_PER_COMMIT, MAX_SECONDS_PER_COMMIT
from schemahub_core.framework.config import ConfigError
from schemahub_core.framework.mapping import MappingError


@click.group(name="run")
def run_group() -> None:
    """Land data exactly once: venues -> raw tables (ingest), raw -> unified tables (unify).

    Every command can be interrupted at any point and simply run again.
    """


_RUN_COLUMNS = ("fetched", "landed", "quarantined", "deduplicated", "unified", "seconds")


def _run_options(fn: Any) -> Any:
    fn = click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")(fn)
    fn = click.option("--pages-per-commit", default=None, type=click.IntRange(min=1),
                      help="Also commit after this many venue pages (default: no page limit).")(fn)
    fn = click.option("--commit-seconds", default=MAX_SECONDS_PER_COMMIT, show_default=True,
                      type=click.FloatRange(min=0), help="Commit at the latest after this many seconds of "
                      "fetching (a crash refetches at most one uncommitted batch).")(fn)
    fn = click.option("--commit-rows", default=MAX_ROWS_PER_COMMIT, show_default=True, type=click.IntRange(min=1),
                      help="Commit at the latest after this many fetched rows.")(fn)
    fn = click.option("--until", help="End (exclusive): ISO-8601 or relative, e.g. 5m (back from each venue's own "
                      "clock when it publishes one, else yours). Lands only what is not covered yet.")(fn)
    fn = click.option("--since", help="Start: ISO-8601 or relative, e.g. 15m, 2h, 1d (back "
                      "from each venue's own clock when it publishes one, else yours). With --until, lands exactly "
                      "the parts of [since, until) not covered yet (a backfill); without --since a run continues "
                      "from the newest covered point.")(fn)
    return click.option("--symbols", help="Comma-separated canonical symbols, e.g. BTC-USD,ETH-USD; "
                        "SOURCE:SYMBOL applies to one source only, e.g. BTC-USD,<venue>:BTC-USDT "
                        "(default: each connector's own).")(fn)


def _run_engine(as_json: bool, work: Any) -> list[Any]:
    """Run ``work(on_progress)`` under a rich progress display; one-line errors for bad input."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from schemahub_core.engine.ingest import RunStats
    from schemahub_core.engine.spark import SparkSetupError
    from schemahub_core.framework.connector import ConnectorError

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
    except (KeyError, ValueError, ConfigError, MappingError, ConnectorError, SparkSetupError) as exc:
        fail(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc))
    return result if isinstance(result, list) else [result]


def _print_run(stats: list[Any], as_json: bool) -> None:
    """The final summary (table or JSON); exit 1 if any part failed."""
    if as_json:
        emit_json([{k: v for k, v in s.as_dict().items() if k != "scanned_files"} for s in stats])
    else:
        table = Table(title="run summary")
        for col in ("step", "name", *_RUN_COLUMNS, "status"):
            table.add_column(col, justify="right" if col in _RUN_COLUMNS else "left", overflow="fold",
                             no_wrap=col == "name")
        for s in stats:
            status = "[red]failed[/] (see below)" if s.error else "[green]ok[/]"
            if s.dropped_batches:
                status += f" ({s.dropped_batches} dropped: concurrent writer)"
            if s.step == "unify" and not s.commits and not s.error:
                status = "[green]up to date[/] (no new snapshot)"
            table.add_row(plain(s.step), plain(s.name), *[str(getattr(s, c)) for c in _RUN_COLUMNS], status)
        if len(stats) > 1:  # "fetched" counts venue records; unify's raw rows read are not fetched again
            fetched = [s for s in stats if s.step == "ingest"] or stats
            totals = [str(sum(getattr(s, c) for s in (fetched if c == "fetched" else stats)))
                      for c in _RUN_COLUMNS[:-1]]
            table.add_section()
            table.add_row("", "[bold]total[/]", *totals, f"{sum(s.seconds for s in stats):.3f}", "")
        console.print(table)
    errors = [s for s in stats if s.error]
    for s in errors:
        hint = " (rerun to resume; nothing landed twice)" if s.resumable and "rerun" not in s.error else ""
        error_line(f"{s.name}: {s.error}{hint}")
    if errors:
        sys.exit(1)


@run_group.command(name="ingest")
@click.argument("sources", nargs=-1, required=True)
@_run_options
@click.option("--shard", "shard_text", metavar="I/N",
              help="Run only shard I of N (1 <= I <= N): the (source, stream, symbol) units are split by a "
                   "stable hash, so N processes or hosts on a shared catalog each land their part.")
@pass_ctx
def run_ingest_cmd(ctx: Context, sources: tuple[str, ...], symbols: str | None, since: str | None,
                   until: str | None, commit_rows: int, commit_seconds: float, pages_per_commit: int | None,
                   as_json: bool, shard_text: str | None) -> None:
    """Land SOURCES (``binance`` or ``binance.trades``) into their raw tables, exactly once.

    Without --since, continues forward from the newest covered point; with --since/--until, lands exactly
    the parts of that window not covered yet (see `schemahub status` for covered ranges and holes).
    """
    from schemahub_core.apps.pipeline import run_ingest
    from schemahub_core.engine.shards import Shard

    try:
        shard = Shard.parse(shard_text) if shard_text is not None else None
    except ConfigError as exc:
        fail(str(exc))
    symbol_list = [s.strip() for s in symbols.split(",") if s.strip()] if symbols else None
    stats = _run_engine(as_json, lambda on_progress: run_ingest(
        ctx.settings, ctx.registry, sources, symbols=symbol_list, since=parse_window(since),
        until=parse_window(until),
        pages_per_commit=pages_per_commit, commit_rows=commit_rows, commit_seconds=commit_seconds,
        on_progress=on_progress, shard=shard))
    _print_run(stats, as_json)


def _engine_option(fn: Any) -> Any:
    return click.option("--engine", type=click.Choice(["embedded", "spark"]), default="embedded", show_default=True,
                        help="Where the unify step runs: in this process, or on Spark (the spark_master and "
                             "spark_conf settings; same mappings, same exactly-once commit).")(fn)


def _memory_option(fn: Any) -> Any:
    return click.option("--memory-mb", type=click.IntRange(min=1), default=None,
                        help="Peak memory of the unify step in MiB, whatever the backlog "
                             "(default: the unify_memory_mb setting, 1024).")(fn)


@run_group.command(name="unify")
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@_memory_option
@_engine_option
@pass_ctx
def run_unify_cmd(ctx: Context, target: str, as_json: bool, memory_mb: int | None, engine: str) -> None:
    """Append the raw rows not yet in TARGET (e.g. trades_unified), deduplicated, in one commit."""
    from schemahub_core.apps.pipeline import run_unify

    stats = _run_engine(as_json, lambda on_progress: run_unify(ctx.settings, ctx.registry, target,
                                                               catalog=ctx.catalog(), memory_mb=memory_mb,
                                                               engine=engine))
    _print_run(stats, as_json)


@run_group.command(name="pipeline")
@click.argument("target")
@_run_options
@_memory_option
@_engine_option
@pass_ctx
def run_pipeline_cmd(ctx: Context, target: str, symbols: str | None, since: str | None, until: str | None,
                     commit_rows: int, commit_seconds: float, pages_per_commit: int | None,
                     as_json: bool, memory_mb: int | None, engine: str) -> None:
    """Ingest every source mapped into TARGET, then unify it (ingest in this process, unify on --engine)."""
    from schemahub_core.apps.pipeline import run_pipeline

    symbol_list = [s.strip() for s in symbols.split(",") if s.strip()] if symbols else None
    stats = _run_engine(as_json, lambda on_progress: run_pipeline(
        ctx.settings, ctx.registry, target, symbols=symbol_list, since=parse_window(since),
        until=parse_window(until),
        pages_per_commit=pages_per_commit, commit_rows=commit_rows, commit_seconds=commit_seconds,
        on_progress=on_progress, memory_mb=memory_mb, engine=engine))
    _print_run(stats, as_json)
