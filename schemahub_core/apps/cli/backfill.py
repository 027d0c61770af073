"""``schemahub backfill VENUE``: history from the venue's bulk archive files, exactly once per file."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

import click
from rich.table import Table

from schemahub_core.apps.cli.context import Context, console, emit_json, err_console, fail, parse_time, pass_ctx


@click.command()
@click.argument("venue")
@click.option("--symbols", help="Comma-separated canonical symbols, e.g. BTC-USDT,ETH-USDT (default: the venue's).")
@click.option("--since", required=True, help="First day (UTC), e.g. 2024-02-07; a time is floored to its day.")
@click.option("--until", required=True, help="End day (UTC, exclusive), e.g. 2024-02-10; rounded up to a day.")
@click.option("--stream", default="trades", show_default=True, help="The venue's stream to backfill.")
@click.option("--rows-per-commit", type=click.IntRange(min=1), default=None,
              help="Rows per Iceberg commit (default 500000): a crash re-reads at most this many.")
@click.option("--json", "as_json", is_flag=True, help="Print the per-file summary as JSON.")
@pass_ctx
def backfill(ctx: Context, venue: str, symbols: str | None, since: str, until: str, stream: str,
             rows_per_commit: int | None, as_json: bool) -> None:
    """Land VENUE's archive files for [--since, --until) into its raw table (the same table as REST).

    Monthly files for whole past months, daily files for the other days. Each file's
    checksum is verified before anything of it lands; a file already landed (same name
    and checksum) is skipped, a replaced one lands only its new rows. Afterwards
    `schemahub run ingest VENUE` continues where the archives end.
    """
    from schemahub_core.engine.archives import ROWS_PER_COMMIT, FileStats
    from schemahub_core.engine.archives import backfill as run_backfill
    from schemahub_core.engine.migrate import check as check_migrations
    from schemahub_core.framework.connector import ConnectorError

    start, end = parse_time(since), parse_time(until)
    if start >= end:
        fail(f"--since {since} is not before --until {until}")
    symbol_list = [s.strip() for s in symbols.split(",") if s.strip()] if symbols else None
    progress, on_plan, on_progress = _progress(as_json)

    try:
        check_migrations(ctx.catalog(), ctx.settings.namespace, ctx.registry, [venue])
        with progress:
            results: list[FileStats] = run_backfill(
                ctx.catalog(), ctx.settings.namespace, ctx.registry, venue, since=start, until=end,
                symbols=symbol_list, stream=stream, options=ctx.settings.connector_options(venue),
                raw_payload=ctx.settings.raw_payload, rows_per_commit=rows_per_commit or ROWS_PER_COMMIT,
                on_plan=on_plan, on_progress=on_progress)
    except (KeyError, ValueError, ConnectorError) as exc:
        fail(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc))
    _summary(results, as_json, start, end)


def _progress(as_json: bool) -> tuple[Any, Any, Any]:
    """A rich progress bar per file: bytes downloaded, then rows read and landed."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                        TextColumn("{task.fields[rows]:,} rows read, {task.fields[landed]:,} landed"),
                        TimeElapsedColumn(), console=err_console, transient=False,
                        disable=as_json or not err_console.is_terminal)
    tasks: dict[str, Any] = {}

    def on_plan(files: list) -> None:
        for f in files:
            tasks[f.name] = progress.add_task(f.name, total=None, rows=0, landed=0)

    def on_progress(stats: Any) -> None:
        task = tasks.get(stats.file)
        if task is None:
            task = tasks[stats.file] = progress.add_task(stats.file, total=None, rows=0, landed=0)
        progress.update(task, completed=stats.bytes, total=stats.total_bytes, rows=stats.rows, landed=stats.landed)

    return progress, on_plan, on_progress


def _summary(results: list[Any], as_json: bool, start: datetime, end: datetime) -> None:
    if as_json:
        emit_json([r.as_dict() for r in results])
    elif not results:
        console.print(f"no archive files for {start.date()} .. {end.date()} (days not over yet are not archived; "
                      "use `schemahub run ingest`)")
    else:
        table = Table(title="backfill summary (per archive file; --json adds sha256, commits, bytes)")
        dup = any(r.deduplicated for r in results)
        columns = ("file", "status", "rows", "landed", *(("already there",) if dup else ()), "MB", "s")
        for col in columns:  # numbers never wrap; a long file name folds
            table.add_column(col, justify="left" if col in ("file", "status") else "right", no_wrap=col != "file",
                             overflow="fold")
        colors = {"landed": "green", "skipped": "green", "replaced": "yellow", "failed": "red"}
        for r in results:
            table.add_row(r.file, f"[{colors.get(r.status, 'white')}]{r.status}[/]", f"{r.rows:,}", f"{r.landed:,}",
                          *((f"{r.deduplicated:,}",) if dup else ()), f"{r.bytes / 1e6:.1f}", f"{r.seconds:.1f}")
        console.print(table)
    failed = [r for r in results if r.error]
    for r in failed:
        err_console.print(f"[bold red]error:[/] {r.error}", highlight=False, soft_wrap=True)
    if failed:
        sys.exit(1)
