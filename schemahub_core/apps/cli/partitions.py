"""``schemahub partitions suggest``: propose (and apply) a partition spec for a unified table."""

from __future__ import annotations

import click
from rich.markup import escape
from rich.table import Table

from schemahub_core.apps.cli.context import Context, console, emit_json, fail, pass_ctx


def _size(text: str) -> int:
    units = {"": 1, "B": 1, "KB": 1024, "KIB": 1024, "MB": 1024**2, "MIB": 1024**2, "GB": 1024**3, "GIB": 1024**3}
    number = text.strip().upper().rstrip()
    for unit in sorted(units, key=len, reverse=True):
        if unit and number.endswith(unit):
            number, factor = number[: -len(unit)].strip(), units[unit]
            break
    else:
        factor = 1
    try:
        value = int(float(number) * factor)
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected a size such as 128MB or 1GiB") from None
    if value <= 0:
        raise click.BadParameter(f"{text!r}: must be positive")
    return value


@click.group(name="partitions")
def partitions_group() -> None:
    """Plan how unified tables are partitioned, from their own metadata and the queries SchemaHub runs."""


@partitions_group.command(name="suggest")
@click.option("--table", "table_name", default="trades_unified", show_default=True, help="Unified table to plan.")
@click.option("--target-file-size", "target", default="128MB", show_default=True,
              help="Size one compacted data file should reach; sets when a day is 'too large'.")
@click.option("--apply", "do_apply", is_flag=True,
              help="Evolve the table's spec (metadata only: new data uses it, old files stay until "
                   "`schemahub maintain --compact` rewrites them).")
@click.option("--json", "as_json", is_flag=True, help="Print the suggestion as one JSON object.")
@pass_ctx
def partitions_suggest(ctx: Context, table_name: str, target: str, do_apply: bool, as_json: bool) -> None:
    """Suggest a partition spec for TABLE and the files a typical replay window would scan before and after.

    \b
    Keeps day(time) while days are small; adds bucket(N, symbol) when a day holds many
    symbols and too many or too large files; uses hour(time) when one symbol alone
    fills a file per day. The estimate comes from the table's metadata (rows and bytes
    per day, hour and symbol); the current layout's figure is planned, not estimated.
    Queries run with `schemahub sql` are recorded and summarized alongside (filter
    columns, time windows, files the typical one scans now).
    """
    from pyiceberg.exceptions import NoSuchTableError

    from schemahub_core.apps.partitions import PartitionError, apply, suggest

    try:
        target_bytes = _size(target)
    except click.BadParameter as exc:
        fail(f"--target-file-size {exc.message}")
    targets = ctx.registry.targets
    if table_name not in targets:
        fail(f"unknown unified table {table_name!r} (tables: {', '.join(sorted(targets))})")
    try:
        table = ctx.catalog().load_table((ctx.settings.namespace, table_name))
    except NoSuchTableError:  # like maintain: nothing there yet is nothing to plan, not an error
        message = f"table {ctx.settings.namespace}.{table_name} does not exist yet: nothing to plan"
        if as_json:
            emit_json({"table": table_name, "exists": False, "changed": False, "applied": None, "reasons": [message]})
        else:
            console.print(f"{escape(message)} (run `schemahub init` and unify first)", highlight=False)
        return
    from schemahub_core.apps.sql import recorded_queries

    time_column = targets[table_name].time_column
    result = suggest(table, time_column=time_column, target_file_bytes=target_bytes,
                     queries=recorded_queries(ctx.settings, table_name))
    applied = None
    if do_apply and result.changed:
        try:
            applied = apply(table, result, time_column=time_column)
        except PartitionError as exc:
            fail(str(exc))
    if as_json:
        emit_json({**result.as_dict(), "applied": applied})
        return
    console.print(f"[bold]{escape(result.table)}[/]: {result.rows:,} rows in {result.data_files:,} data files over "
                  f"{result.days} day(s), {result.symbols} symbol(s)", highlight=False)
    console.print(f"  planned from   {escape('; '.join(result.inputs))}", highlight=False)
    console.print(f"  current spec   {escape(result.current_spec)}", highlight=False)
    console.print(f"  proposed spec  {escape(result.proposed_spec)}"
                  + ("" if result.changed else "  [green](keep)[/]"), highlight=False)
    for reason in result.reasons:
        console.print(f"  - {escape(reason)}", highlight=False)
    if result.now is not None:
        window = result.window
        grid = Table(title=f"a {window['seconds']:g} s replay window of {escape(window['symbol'])} at "
                           f"{escape(window['start'])}")
        for col in ("layout", "files scanned", "bytes scanned"):
            grid.add_column(col, no_wrap=col != "layout")
        for layout in (result.now, result.compacted, result.proposed):
            if layout is not None:
                grid.add_row(escape(layout.spec), f"{layout.files:,}", f"{layout.bytes:,}")
        console.print(grid)
    if applied:
        console.print(f"[green]applied[/]: {escape(result.table)} is now partitioned by {escape(applied)}; run "
                      "`schemahub maintain --compact` to move old files into it", highlight=False)
    elif result.changed and not do_apply:
        console.print("dry run: add --apply to evolve the spec", highlight=False)
