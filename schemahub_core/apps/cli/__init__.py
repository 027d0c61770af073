"""The ``schemahub`` command line: the root group, one module per command group.

Commands are thin: the work lives in ``engine/`` and ``apps/``.
"""

from __future__ import annotations

import click

from schemahub_core.apps.cli.audit import audit
from schemahub_core.apps.cli.backfill import backfill
from schemahub_core.apps.cli.context import Context, fail
from schemahub_core.apps.cli.init import init
from schemahub_core.apps.cli.live import live
from schemahub_core.apps.cli.maintain import maintain
from schemahub_core.apps.cli.mappings import mappings
from schemahub_core.apps.cli.partitions import partitions_group
from schemahub_core.apps.cli.plugins import plugins_group
from schemahub_core.apps.cli.replay import replay
from schemahub_core.apps.cli.run import run_group
from schemahub_core.apps.cli.sandbox import sandbox
from schemahub_core.apps.cli.schema import schema_group
from schemahub_core.apps.cli.serve import serve
from schemahub_core.apps.cli.sql import sql
from schemahub_core.apps.cli.status import status
from schemahub_core.framework import plugins
from schemahub_core.framework.config import ConfigError


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



cli.add_command(init)
cli.add_command(plugins_group)
cli.add_command(mappings)
cli.add_command(replay)
cli.add_command(live)
cli.add_command(run_group)
cli.add_command(backfill)
cli.add_command(status)
cli.add_command(audit)
cli.add_command(maintain)
cli.add_command(sandbox)
cli.add_command(serve)
cli.add_command(partitions_group)
cli.add_command(schema_group)
cli.add_command(sql)


def _load_plugin_commands() -> None:
    pm = plugins.load_plugins()
    if plugins.unknown_requested:
        raise ConfigError(f"SCHEMAHUB_LOAD_PLUGINS names {', '.join(map(repr, plugins.unknown_requested))}, "
                          f"which is not installed (installed: {', '.join(plugins.installed_names()) or 'none'})")
    pm.hook.register_commands(cli=cli)


def main() -> None:
    from schemahub_core.engine.sink import storage_errno, storage_problem

    try:
        _load_plugin_commands()
        cli(standalone_mode=True)
    except ConfigError as exc:
        fail(str(exc))
    except OSError as exc:  # the warehouse refuses writes (read-only, full) outside a run's own reporting
        if storage_errno(exc) is None:
            raise
        fail(storage_problem(exc, "writing"))


if __name__ == "__main__":
    main()
