"""``schemahub maintain``: expire snapshots and compact, keeping what the engine needs."""

from __future__ import annotations

import sys

import click
from rich.table import Table

from schemahub_core.apps.cli.context import Context, console, emit_json, fail, pass_ctx, plain


@click.command()
@click.option("--expire-older-than", "expire_older_than", default="7d", show_default=True,
              help="Expire snapshots older than this (7d, 12h, 30m, or an ISO-8601 time); 'never' keeps all. "
                   "Snapshots holding cursors or unify's source positions are always kept.")
@click.option("--compact", "do_compact", is_flag=True, help="Also rewrite each partition's small files into one.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array with one object per table.")
@pass_ctx
def maintain(ctx: Context, expire_older_than: str, do_compact: bool, as_json: bool) -> None:
    """Compact small files and expire old snapshots so commit and scan time stay flat as history grows.

    Safe while ingest and unify run: the engine's progress is carried forward and never expired.
    """
    from schemahub_core.engine.ingest import parse_when
    from schemahub_core.engine.maintenance import maintain as run_maintain

    try:
        older_than = None if expire_older_than == "never" else parse_when(expire_older_than)
    except ValueError as exc:
        fail(f"--expire-older-than: {exc}")
    reports = run_maintain(ctx.catalog(), ctx.settings.namespace, older_than, do_compact)
    if as_json:
        emit_json([r.as_dict() for r in reports])
    elif not reports:
        console.print(plain(f"namespace {ctx.settings.namespace} has no tables yet: nothing to maintain"))
    else:
        table = Table(title=plain(f"maintenance of namespace {ctx.settings.namespace}"))
        for col in ("table", "snapshots", "expired", "kept for engine", "data files", "partitions compacted",
                    "status"):
            table.add_column(col, no_wrap=col == "table", overflow="fold")
        for r in reports:
            table.add_row(plain(r.table), str(r.snapshots_before), str(r.snapshots_expired),
                          str(r.snapshots_kept_for_engine), f"{r.files_before} -> {r.files_after}",
                          str(r.partitions_compacted), f"[red]{plain(r.error)}[/]" if r.error else "[green]ok[/]")
        console.print(table)
    if any(r.error for r in reports):
        sys.exit(1)
