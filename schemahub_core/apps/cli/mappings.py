"""``schemahub mappings``: validate mappings and dry-run them on sample records."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from schemahub_core.apps.cli.context import Context, console, emit_json, err_console, fail, pass_ctx, plain
from schemahub_core.framework.mapping import (
    MappingError,
    check_mapping,
    collect_mappings,
    left_null,
    load_mapping,
    resolve,
    resolve_source,
)


@click.group()
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
            results.append({"file": label, "origin": origin, "ok": True, "source": resolve(mapping, registry).source,
                            "target_table": mapping.target_table, "error": None,
                            "left_null": left_null(mapping, registry)})
        except MappingError as exc:
            results.append({"file": label, "origin": origin, "ok": False, "error": str(exc)})
    if as_json:
        emit_json(results)
    else:
        for r in results:
            if r["ok"]:
                line = f"[green]ok[/]   {plain(r['file'])}  ({plain(r['source'])} -> {plain(r['target_table'])})"
                if r["left_null"]:
                    line += plain(f"; leaves null: {', '.join(r['left_null'])}")
                console.print(line, highlight=False, soft_wrap=True)
            else:
                err_console.print(f"[red]fail[/] {plain(r['error'])}", highlight=False, soft_wrap=True)
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
    from schemahub_core.engine.raw import cast_records

    registry = ctx.registry
    source = resolve_source(source, registry) or source
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
    table = Table(title=plain(f"{source} -> {target_table} (dry run, nothing written)"))
    for name in unified.schema.names:
        table.add_column(plain(name), overflow="fold")
    for row in unified.to_pylist():
        table.add_row(*[plain(v) for v in row.values()])
    console.print(table)
    for r in rejected:
        console.print(f"[yellow]quarantined[/] record {r.index}: {plain(r.reason)}", highlight=False)
