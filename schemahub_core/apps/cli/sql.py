"""``schemahub sql``: DuckDB over every SchemaHub table, with time travel and script-friendly output."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
import pyarrow as pa

from schemahub_core.apps.cli.context import Context, console, error_line, fail, pass_ctx, plain

MAX_SHOWN = 1000  # rows in the terminal table; --csv, --json and --parquet write them all


def _cell(value: Any) -> str:
    """A value as typed (never read as rich markup: it is the user's data)."""
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.10g}"
    return plain(value)


def _print_table(result: pa.Table) -> None:
    from rich.table import Table

    table = Table(show_lines=False)
    for name in result.column_names:
        table.add_column(plain(name), overflow="fold")
    shown = result.slice(0, MAX_SHOWN)
    for row in shown.to_pylist():
        table.add_row(*(_cell(v) for v in row.values()))
    console.print(table)
    more = result.num_rows - shown.num_rows
    console.print(f"{result.num_rows} row{'s' if result.num_rows != 1 else ''}"
                  + (f" ({more} not shown: use --csv, --json or --parquet)" if more else ""), highlight=False)


def _emit(result: pa.Table, as_csv: bool, as_json: bool, parquet_path: str | None) -> None:
    if parquet_path:
        import pyarrow.parquet as pq

        pq.write_table(result, parquet_path)
        console.print(f"wrote {result.num_rows} rows to {plain(parquet_path)}", highlight=False)
    elif as_csv:
        import pyarrow.csv as pcsv

        pcsv.write_csv(result, sys.stdout.buffer)
        sys.stdout.buffer.flush()
    elif as_json:
        click.echo(json.dumps(result.to_pylist(), indent=2, default=str))
    else:
        _print_table(result)


def _interactive(lake: Any) -> None:
    """A small prompt: statements end with ``;``, ``.quit`` or Ctrl-D leaves. Errors print and go on."""
    from schemahub_core.apps.sql import SqlError

    console.print(f"[bold]schemahub sql[/]: {len(lake.views)} tables ({plain(', '.join(v.name for v in lake.views))}); "
                  "end statements with ';', .quit to leave", highlight=False)
    buffer: list[str] = []
    while True:
        try:
            line = input("sql> " if not buffer else "...> ")
        except (EOFError, KeyboardInterrupt):
            console.print()
            return
        if not buffer and line.strip() in (".quit", ".exit", "quit", "exit"):
            return
        buffer.append(line)
        if not line.rstrip().endswith(";"):
            continue
        statement, buffer = "\n".join(buffer), []
        try:
            _print_table(lake.query(statement))
        except SqlError as exc:
            error_line(str(exc))


@click.command()
@click.argument("query", required=False)
@click.option("--as-of", "as_of", help="Time travel: a snapshot id (that table at it, the others as of its commit "
              "time), or an ISO 8601 time (every table as a reader saw it then).")
@click.option("--csv", "as_csv", is_flag=True, help="Write the result as CSV to stdout.")
@click.option("--json", "as_json", is_flag=True, help="Write the result as a JSON list of objects.")
@click.option("--parquet", "parquet_path", type=click.Path(dir_okay=False), help="Write the result to a Parquet file.")
@pass_ctx
def sql(ctx: Context, query: str | None, as_of: str | None, as_csv: bool, as_json: bool,
        parquet_path: str | None) -> None:
    """Run SQL (DuckDB) over every SchemaHub table, by plain name or as schemahub.<namespace>.<table>.

    \b
      schemahub sql "SELECT exchange, COUNT(*) FROM trades_unified GROUP BY exchange"
      schemahub sql --as-of 2024-02-09T00:00:00Z --csv "SELECT * FROM schemahub_watermarks"
      schemahub sql                      an interactive prompt (reads the query from stdin when piped)
    """
    from schemahub_core.apps.sql import Lake, SqlError

    if sum(bool(x) for x in (as_csv, as_json, parquet_path)) > 1:
        fail("choose one of --csv, --json, --parquet")
    interactive = query is None and sys.stdin.isatty()
    if query is None and not interactive:
        query = sys.stdin.read()
    if query is not None and not query.strip():
        fail("no query given: schemahub sql \"SELECT ...\"")
    try:
        lake = Lake(ctx.settings, ctx.catalog(), as_of, record=True)
    except SqlError as exc:
        fail(str(exc))
    try:
        if interactive:
            _interactive(lake)
            return
        try:
            result = lake.query(query or "")
        except SqlError as exc:
            fail(str(exc))
        _emit(result, as_csv, as_json, parquet_path)
    finally:
        lake.close()
