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
    """Inspect installed plugins."""


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
            "error": registry.errors.get(name),
        })
    for name, failure in sorted(plugins.failures.items()):
        rows.append({"name": name, "distribution": failure.distribution, "version": failure.version,
                     "connectors": [], "streams": [], "transforms": [], "sinks": [], "mappings": [],
                     "targets": [], "error": failure.error})
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
