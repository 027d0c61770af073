"""Plugin discovery: built-ins, then the ``schemahub`` entry-point group.

``SCHEMAHUB_LOAD_PLUGINS=binance,kraken`` restricts loading to those entry
points (an empty value loads none), which helps tests and isolating a bad plugin.
A plugin that fails to import is recorded in ``failures`` and never stops the CLI.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from importlib import metadata

import pluggy

from schemahub_core.framework import hookspecs

ENTRY_POINT_GROUP = "schemahub"
BUILTIN_PLUGINS = ("schemahub_core.framework.builtins",)

pm = pluggy.PluginManager("schemahub")
pm.add_hookspecs(hookspecs)


@dataclass(frozen=True)
class PluginFailure:
    name: str
    distribution: str | None
    version: str | None
    error: str


failures: dict[str, PluginFailure] = {}
unknown_requested: list[str] = []  # names in SCHEMAHUB_LOAD_PLUGINS that no installed plugin has
distributions: dict[str, tuple[str, str]] = {}  # plugin name -> (distribution, version)
_loaded = False


def load_plugins() -> pluggy.PluginManager:
    global _loaded
    if _loaded:
        return pm
    _loaded = True
    for module_name in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(module_name), name="schemahub-core")
    distributions["schemahub-core"] = ("schemahub-core", _version("schemahub-core"))
    wanted = os.environ.get("SCHEMAHUB_LOAD_PLUGINS")
    allowed = None if wanted is None else {n.strip() for n in wanted.split(",") if n.strip()}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if (allowed is not None and ep.name not in allowed) or pm.has_plugin(ep.name):
            continue
        dist = ep.dist.name if ep.dist else None
        version = ep.dist.version if ep.dist else None
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:  # a broken plugin must not break the CLI
            failures[ep.name] = PluginFailure(ep.name, dist, version, f"{type(exc).__name__}: {exc}")
            continue
        distributions[ep.name] = (dist or ep.name, version or "")
    if allowed is not None:
        unknown_requested[:] = sorted(allowed - set(installed_names()))
    return pm


def installed_names() -> list[str]:
    """The names of the installed plugins (entry points of the ``schemahub`` group), loaded or not."""
    return sorted({ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)})


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""
