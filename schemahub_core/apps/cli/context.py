"""What every command shares: settings, registry and catalog on demand, and the one-line error style."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from schemahub_core.framework.config import Settings, load_settings
from schemahub_core.framework.registry import Registry, get_registry


def _console(stderr: bool = False) -> Console:
    """Rich console; piped (no TTY, no COLUMNS) it is wide, so table cells do not wrap mid-name at 80."""
    found = Console(stderr=stderr)
    if not found.is_terminal and "COLUMNS" not in os.environ:
        found = Console(stderr=stderr, width=200)
    return found


console = _console()
err_console = _console(stderr=True)


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
        """The installed plugins' registry, with the user's stream and target overrides (``config/streams/``,
        ``config/targets/``) applied."""
        from schemahub_core.framework.streams import apply_overrides

        return apply_overrides(get_registry(), self.settings.streams_dir, self.settings.targets_dir)

    def catalog(self):
        from schemahub_core.engine.catalog import open_catalog

        return open_catalog(self.settings)


pass_ctx = click.make_pass_decorator(Context)


def plain(value: Any) -> str:
    """``value`` as text that rich prints as typed: messages quote patterns (``[a-z]``), venue answers and file
    contents, which rich would otherwise read as markup tags and drop."""
    return escape("" if value is None else str(value))


def error_line(message: str) -> None:
    """``error: <message>`` on stderr, the message printed literally (never read as markup)."""
    err_console.print(f"[bold red]error:[/] {plain(message)}", highlight=False, soft_wrap=True)


def fail(message: str) -> None:
    """One clear line on stderr and exit 1: the house style for every user error."""
    error_line(message)
    sys.exit(1)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def parse_time(text: str | None) -> Any:
    """An ``--since``/``--until`` value (ISO 8601 or relative like ``15m``), or None when not given."""
    from schemahub_core.engine.ingest import parse_when

    return parse_when(text) if text else None


def parse_window(text: str | None) -> Any:
    """A run's ``--since``/``--until``: ISO 8601, or relative (``2h``) to each venue's own clock (an ``Ago``)."""
    from schemahub_core.engine.ingest import parse_window_time

    return parse_window_time(text) if text else None
