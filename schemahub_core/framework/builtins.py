"""The core's own plugin: built-in transforms, targets and the Iceberg sink.

Registered through the same hooks as any external plugin.
"""

from __future__ import annotations

from schemahub_core.framework.hookspecs import hookimpl
from schemahub_core.framework.targets import QUOTES_UNIFIED, TRADES_UNIFIED
from schemahub_core.framework.transforms import BUILTIN_TRANSFORMS


@hookimpl
def register_transforms(register):
    for name, fn in BUILTIN_TRANSFORMS.items():
        register(name, fn)


@hookimpl
def register_targets(register):
    register(TRADES_UNIFIED)
    register(QUOTES_UNIFIED)


@hookimpl
def register_sinks(register):
    from schemahub_core.engine.sink import IcebergSink

    register("iceberg", IcebergSink)
