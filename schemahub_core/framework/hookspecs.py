"""The hooks a SchemaHub plugin can implement.

Every hook uses the register-callback style: the plugin receives a ``register``
function and calls it once per thing it provides. Built-ins are registered
through exactly the same hooks (see ``schemahub_core.framework.builtins``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("schemahub")
hookimpl = pluggy.HookimplMarker("schemahub")


@hookspec
def register_connectors(register: Callable[[type], None]) -> None:
    """Register connector classes, e.g. ``register(BinanceConnector)``.

    A connector is a subclass of ``schemahub_core.Connector`` that declares its
    streams (native raw schema, record key, cursor kind) and implements ``fetch``.
    Connectors only read from a venue: the engine writes the tables.
    """


@hookspec
def register_transforms(register: Callable[..., None]) -> None:
    """Register named column transforms, e.g. ``register("from_ms", from_ms)``.

    A transform is ``fn(array: pa.Array, **params) -> pa.Array`` and must be
    vectorized (pyarrow.compute). Mappings refer to transforms by name.
    """


@hookspec
def register_sinks(register: Callable[[str, type], None]) -> None:
    """Register sink classes by name, e.g. ``register("iceberg", IcebergSink)``.

    A sink is where unified batches are published. Iceberg is the built-in sink.
    """


@hookspec
def register_mappings(register: Callable[[Any], None]) -> None:
    """Register default mappings shipped by a plugin, e.g. ``register(path_to_yaml)``.

    Each mapping maps one connector stream onto a unified target table. Files
    in ``config/mappings/`` are loaded too and win over a plugin's mapping for
    the same ``source`` and ``target_table``.
    """


@hookspec
def register_targets(register: Callable[[Any], None]) -> None:
    """Register unified target tables, e.g. ``register(Target(...))``.

    A target is data: its schema, key columns, time column and partitioning.
    ``trades_unified`` and ``quotes_unified`` are built in; a plugin can add a
    new domain without touching the core.
    """


@hookspec
def register_sandbox_venues(register: Callable[[type], None]) -> None:
    """Register simulated venues for ``schemahub sandbox``, e.g. ``register(MyVenueApp)``.

    A simulated venue is a subclass of ``schemahub_core.sandbox.VenueApp`` that
    speaks the real venue's wire format on 127.0.0.1 under ``/<name>``, with its
    rate limit and the sandbox's fault injection. The core has no simulated venue
    of its own: every venue plugin registers its own this way, so tests, the demo
    and ``schemahub plugins test`` run each connector offline.
    """


@hookspec
def register_commands(cli: Any) -> None:
    """Add subcommands to the ``schemahub`` click group, e.g. ``@cli.command()``."""
