"""``schemahub maintain``: expire snapshots and compact, keeping what the engine needs."""

from __future__ import annotations

import sys
from datetime import datetime
from typing import Any

import click
from rich.table import Table

from schemahub_core.apps.cli.context import Context, console, emit_json, fail, pass_ctx, plain


@click.command()
@click.option("--expire-older-than", "expire_older_than", default="7d", show_default=True,
              help="Expire snapshots older than this (7d, 12h, 30m, or an ISO-8601 time); 'never' keeps all. "
                   "Snapshots holding cursors or unify's source positions are always kept.")
@click.option("--compact", "do_compact", is_flag=True, help="Also rewrite each partition's small files into one.")
@click.option("--engine", type=click.Choice(["embedded", "spark"]), default="embedded", show_default=True,
              help="spark: Iceberg's Spark procedures (rewrite_data_files, expire_snapshots, remove_orphan_files) "
                   "on the spark_master setting, under the same retention rules.")
@click.option("--remove-orphans-older-than", "orphans_older_than", default=None,
              help="With --engine spark: delete files no snapshot references that are older than this "
                   "(default 3d, at least 24h: a running writer's files exist before its commit); 'never' skips.")
@click.option("--migrate", "do_migrate", is_flag=True,
              help="Only move tables of streams a plugin renamed (e.g. raw_<venue>_<old stream>) to their new "
                   "names, keeping their coverage; nothing else is done. Safe to rerun.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array with one object per table.")
@pass_ctx
def maintain(ctx: Context, expire_older_than: str, do_compact: bool, engine: str, orphans_older_than: str | None,
             do_migrate: bool, as_json: bool) -> None:
    """Compact small files and expire old snapshots so commit and scan time stay flat as history grows.

    Safe while ingest and unify run: the engine's progress is carried forward and never expired.
    """
    from schemahub_core.engine.ingest import parse_when
    from schemahub_core.engine.maintenance import maintain as run_maintain

    if do_migrate:
        _migrate(ctx, as_json)
        return

    try:
        older_than = None if expire_older_than == "never" else parse_when(expire_older_than)
    except ValueError as exc:
        fail(f"--expire-older-than: {exc}")
    if engine == "embedded":
        if orphans_older_than is not None:
            fail("--remove-orphans-older-than needs --engine spark (the embedded engine leaves orphan files)")
        reports = run_maintain(ctx.catalog(), ctx.settings.namespace, older_than, do_compact)
    else:
        reports = _maintain_on_spark(ctx, older_than, do_compact, orphans_older_than or "3d")
    if as_json:
        emit_json([r.as_dict() for r in reports])
    elif not reports:
        console.print(plain(f"namespace {ctx.settings.namespace} has no tables yet: nothing to maintain"))
    else:
        table = Table(title=plain(f"maintenance of namespace {ctx.settings.namespace}"))
        orphans = any(r.orphan_files_removed is not None for r in reports)  # only Spark removes orphans
        for col in ("table", "snapshots", "expired", "kept for engine", "data files", "partitions compacted",
                    *(("orphans removed",) if orphans else ()), "status"):
            table.add_column(col, no_wrap=col == "table", overflow="fold")
        for r in reports:
            table.add_row(plain(r.table), str(r.snapshots_before), str(r.snapshots_expired),
                          str(r.snapshots_kept_for_engine), f"{r.files_before} -> {r.files_after}",
                          str(r.partitions_compacted), *((str(r.orphan_files_removed),) if orphans else ()),
                          f"[red]{plain(r.error)}[/]" if r.error else "[green]ok[/]")
        console.print(table)
    if any(r.error for r in reports):
        sys.exit(1)


def _maintain_on_spark(ctx: Context, older_than: datetime | None, do_compact: bool, orphans: str) -> list[Any]:
    """Check everything (orphan cutoff, catalog mapping, settings) before Spark starts or anything is written."""
    from schemahub_core.engine.ingest import parse_when
    from schemahub_core.engine.spark import SparkSetupError, catalog_session, settings_session, spark_catalog_conf
    from schemahub_core.engine.spark_maintenance import maintain_spark, orphan_cutoff

    settings = ctx.settings
    try:
        orphans_before = None if orphans == "never" else orphan_cutoff(parse_when(orphans))
    except ValueError as exc:
        fail(f"--remove-orphans-older-than: {exc}")
    try:
        spark_catalog_conf(settings)

        def session() -> Any:
            return catalog_session(settings, settings_session(settings, app_name="schemahub-maintain"))

        return maintain_spark(settings, ctx.catalog(), session, older_than, do_compact, orphans_before)
    except SparkSetupError as exc:
        fail(str(exc))
    return []


def _migrate(ctx: Context, as_json: bool) -> None:
    """``--migrate``: apply the pending layout migrations, one line per step."""
    from schemahub_core.engine.migrate import MigrationError, migrate
    from schemahub_core.engine.state import rebuild_watermarks

    try:
        done = migrate(ctx.catalog(), ctx.settings.namespace, ctx.registry)
        if done:
            rebuild_watermarks(ctx.catalog(), ctx.settings.namespace, ctx.registry)
    except MigrationError as exc:
        fail(str(exc))
    if as_json:
        emit_json(done)
        return
    for line in done or [f"namespace {ctx.settings.namespace}: no migration needed"]:
        console.print(plain(line), highlight=False)
