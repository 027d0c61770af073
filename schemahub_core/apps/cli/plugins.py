"""``schemahub plugins``: list, scaffold and conformance-test plugins."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from schemahub_core.apps.cli.context import Context, console, emit_json, fail, parse_time, pass_ctx, plain
from schemahub_core.framework import plugins
from schemahub_core.framework.registry import Registry


@click.group(name="plugins")
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
        table.add_column(col, no_wrap=col == "plugin", overflow="fold")
    for r in rows:
        transforms = r["transforms"]
        shown = ", ".join(transforms) if len(transforms) <= 4 else f"{len(transforms)} built-in"
        table.add_row(*map(plain, (r["name"], r["version"], ", ".join(r["connectors"]), ", ".join(r["streams"]),
                                   shown, ", ".join(r["sinks"]))),
                      f"[red]{plain(r['error'])}[/]" if r["error"] else "[green]ok[/]")
    console.print(table)


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
    from schemahub_core.apps.scaffold import ScaffoldError, new_plugin

    try:
        root = new_plugin(name, Path(directory))
    except (ScaffoldError, OSError) as exc:
        fail(str(exc))
    console.print(f"created [bold]{plain(root)}[/] (plugin {plain(repr(name))})", highlight=False)
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

    from schemahub_core.testing.suite import check_installed

    logging.getLogger("schemahub_core.framework.http").setLevel(logging.ERROR)  # retries are expected here: no noise
    try:
        report = check_installed(name, base_url=base_url, stream=stream, symbol=symbol, since=parse_time(since),
                                 until=parse_time(until), page_size=page_size, min_pages=min_pages,
                                 options=ctx.settings.connector_options(name), mappings_dir=ctx.settings.mappings_dir,
                                 registry=ctx.registry)
    except (KeyError, ValueError) as exc:
        fail(exc.args[0] if exc.args else str(exc))
    if as_json:
        emit_json(report.as_dict())
    else:
        table = Table(title=plain(f"conformance: {name}.{stream} {report.symbol} on the {report.server}, "
                                  f"{report.since:%Y-%m-%d %H:%M:%S} .. {report.until:%H:%M:%S}"))
        for col in ("check", "result", "why", "how to fix"):
            table.add_column(col, overflow="fold")
        for r in report.results:
            table.add_row(plain(r.name), _STATUS[r.status], plain(r.detail), plain(r.fix))  # details quote venue text
        console.print(table)
        summary = f"{sum(r.status == 'passed' for r in report.results)} passed"
        if report.failed:
            summary += f", [bold red]{len(report.failed)} failed: {plain(', '.join(report.failed))}[/]"
        console.print(f"{plain(name)}: {summary}", highlight=False)
    if not report.passed:
        sys.exit(1)
