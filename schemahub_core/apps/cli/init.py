"""``schemahub init``: create the namespace and every table."""

from __future__ import annotations

import click
from rich.table import Table

from schemahub_core.apps.cli.context import Context, console, emit_json, fail, pass_ctx, plain
from schemahub_core.framework.config import ConfigError


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_ctx
def init(ctx: Context, as_json: bool) -> None:
    """Create the namespace and every table (raw, unified, meta). Safe to rerun."""
    from schemahub_core.engine.migrate import check as check_migrations
    from schemahub_core.engine.tables import init_tables

    try:
        check_migrations(ctx.catalog(), ctx.settings.namespace, ctx.registry)
        results = init_tables(ctx.catalog(), ctx.settings.namespace, ctx.registry)
    except (ConfigError, RuntimeError) as exc:
        fail(str(exc))
    if as_json:
        emit_json({"namespace": ctx.settings.namespace,
                   "tables": [{"name": n, "created": c} for n, c in results]})
        return
    table = Table(title=f"namespace {plain(ctx.settings.namespace)}")
    table.add_column("table")
    table.add_column("status")
    for name, created in results:
        table.add_row(plain(name), "[green]created[/]" if created else "exists")
    console.print(table)
