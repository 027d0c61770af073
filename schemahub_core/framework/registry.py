"""What the loaded plugins provide, gathered through their ``register_*`` hooks.

Each hook implementation is called on its own so that every connector,
transform, sink, mapping and target is attributed to the plugin that gave it
(for ``schemahub plugins list``), and so that one plugin's failing hook is
reported by name instead of breaking the others.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemahub_core.framework import plugins
from schemahub_core.framework.connector import Connector, check_column_names
from schemahub_core.framework.targets import Target
from schemahub_core.framework.transforms import Transform


@dataclass
class Registry:
    connectors: dict[str, type[Connector]] = field(default_factory=dict)
    transforms: dict[str, Transform] = field(default_factory=dict)
    sinks: dict[str, type] = field(default_factory=dict)
    mappings: list[tuple[str, Any]] = field(default_factory=list)  # (plugin, path or Mapping)
    targets: dict[str, Target] = field(default_factory=dict)
    sandbox_venues: dict[str, type] = field(default_factory=dict)  # name -> sandbox.VenueApp subclass
    provided: dict[str, dict[str, list[str]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(list)))
    errors: dict[str, str] = field(default_factory=dict)  # plugin -> error raised by one of its hooks


def _collect(registry: Registry) -> None:
    pm = plugins.load_plugins()

    def run(hook_name: str, make_register: Any) -> None:
        for impl in getattr(pm.hook, hook_name).get_hookimpls():
            try:
                impl.function(register=make_register(impl.plugin_name))
            except Exception as exc:  # attribute the failure, keep going
                registry.errors[impl.plugin_name] = f"{hook_name}: {type(exc).__name__}: {exc}"

    def connectors(plugin: str):
        def register(cls: type[Connector]) -> None:
            for stream in cls.streams.values():  # a raw table engines cannot query is refused up front
                check_column_names(cls.name, stream)
            registry.connectors[cls.name] = cls
            registry.provided[plugin]["connectors"].append(cls.name)
            registry.provided[plugin]["streams"].extend(f"{cls.name}.{s}" for s in cls.streams)
        return register

    def transforms(plugin: str):
        def register(name: str, fn: Transform) -> None:
            registry.transforms[name] = fn
            registry.provided[plugin]["transforms"].append(name)
        return register

    def sinks(plugin: str):
        def register(name: str, cls: type) -> None:
            registry.sinks[name] = cls
            registry.provided[plugin]["sinks"].append(name)
        return register

    def mappings(plugin: str):
        def register(item: Any) -> None:
            registry.mappings.append((plugin, item))
            label = Path(item).name if isinstance(item, (str, Path)) else f"{item.source}->{item.target_table}"
            registry.provided[plugin]["mappings"].append(label)
        return register

    def targets(plugin: str):
        def register(target: Target) -> None:
            registry.targets[target.name] = target
            registry.provided[plugin]["targets"].append(target.name)
        return register

    def sandbox_venues(plugin: str):
        def register(cls: type) -> None:
            registry.sandbox_venues[cls.name] = cls
            registry.provided[plugin]["sandbox_venues"].append(cls.name)
        return register

    run("register_transforms", transforms)
    run("register_targets", targets)
    run("register_sinks", sinks)
    run("register_connectors", connectors)
    run("register_mappings", mappings)
    run("register_sandbox_venues", sandbox_venues)


@functools.cache
def get_registry() -> Registry:
    registry = Registry()
    _collect(registry)
    return registry
