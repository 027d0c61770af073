"""User-level stream overrides: columns a venue started sending that its plugin does not declare yet.

Venues add fields. Until the plugin author declares one, a user can: ``schemahub schema propose --apply`` writes
``config/streams/<source>.<stream>.yaml``::

    source: binance.trades
    add_columns:
      - {name: venue_flag, type: string}
      - {name: fee, type: double, cast: to_double}

and every command applies it to the registry, so raw casting, ``init`` and the raw table's schema all see the
column. ``type`` is one of ``TYPES``; ``cast`` names a registered transform, as in a plugin's ``Column``.

A unified target gets a column it does not declare the same way, ``config/targets/<target>.yaml``::

    target: trades_unified
    add_columns:
      - {name: venue_flag, type: string}

appended to the target's schema as a nullable column (``init`` and unify evolve the table in place); a mapping
in ``config/mappings/`` then fills it for the rows it unifies.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from schemahub_core.framework.config import ConfigError
from schemahub_core.framework.connector import Column
from schemahub_core.framework.registry import Registry
from schemahub_core.framework.targets import Target

TYPES: dict[str, pa.DataType] = {
    "string": pa.string(), "double": pa.float64(), "int64": pa.int64(), "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}


def type_name(dtype: pa.DataType) -> str:
    for name, t in TYPES.items():
        if t == dtype:
            return name
    return str(dtype)


def load_overrides(directory: Path) -> dict[tuple[str, str], list[Column]]:
    """(source, stream) -> the columns the override files in ``directory`` add; ConfigError names the file."""
    out: dict[tuple[str, str], list[Column]] = {}
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.yaml")):
        data = _read(path)
        source = str(data.get("source", ""))
        connector, _, stream = source.partition(".")
        if not connector or not stream:
            raise ConfigError(f"{path}: source must be <connector>.<stream>, got {source!r}")
        out.setdefault((connector, stream), []).extend(_columns(path, data))
    return out


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with add_columns")
    return data


def _columns(path: Path, data: dict[str, Any]) -> list[Column]:
    """The ``add_columns`` entries of one override file."""
    columns = []
    for i, spec in enumerate(data.get("add_columns") or []):
        if not isinstance(spec, dict) or not spec.get("name") or spec.get("type") not in TYPES:
            raise ConfigError(f"{path}: add_columns[{i}] needs a name and a type ({', '.join(TYPES)})")
        columns.append(Column(str(spec["name"]), TYPES[spec["type"]], spec.get("cast"), native=spec.get("native")))
    return columns


def load_target_overrides(directory: Path) -> dict[str, list[Column]]:
    """Target name -> the nullable columns the override files in ``directory`` add to it."""
    out: dict[str, list[Column]] = {}
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.yaml")):
        data = _read(path)
        name = str(data.get("target", ""))
        if not name:
            raise ConfigError(f"{path}: target must name a unified table")
        out.setdefault(name, []).extend(_columns(path, data))
    return out


def with_target_columns(registry: Registry, overrides: dict[str, list[Column]]) -> Registry:
    """A copy of ``registry`` whose overridden targets end with the added columns, nullable (never in place)."""
    if not overrides:
        return registry
    targets: dict[str, Target] = dict(registry.targets)
    for name, columns in overrides.items():
        target = targets.get(name)
        if target is None:
            continue  # an override for a target that is not installed changes nothing
        schema = target.schema
        for column in columns:
            if column.name not in schema.names:
                schema = schema.append(pa.field(column.name, column.type, nullable=True))
        targets[name] = replace(target, schema=schema)
    return replace(registry, targets=targets)


def apply_overrides(registry: Registry, directory: Path, targets_dir: Path | None = None) -> Registry:
    """``registry`` with the stream override files in ``directory`` and the target ones in ``targets_dir``."""
    registry = with_columns(registry, load_overrides(directory))
    return with_target_columns(registry, load_target_overrides(targets_dir)) if targets_dir else registry


def with_columns(registry: Registry, overrides: dict[tuple[str, str], list[Column]]) -> Registry:
    """A copy of ``registry`` where each overridden connector is a subclass whose stream declares the added columns.

    The registry itself is shared (cached per process), so it is never changed in place.
    """
    if not overrides:
        return registry
    registry = replace(registry, connectors=dict(registry.connectors))
    for (source, stream_name), columns in overrides.items():
        cls = registry.connectors.get(source)
        if cls is None or stream_name not in cls.streams:
            continue  # an override for a plugin that is not installed changes nothing
        stream = cls.streams[stream_name]
        have = {c.name for c in stream.columns}
        added = tuple(c for c in columns if c.name not in have)
        if not added:
            continue
        streams = {**cls.streams, stream_name: replace(stream, columns=stream.columns + added)}
        registry.connectors[source] = type(cls.__name__, (cls,), {"streams": streams, "__module__": cls.__module__})
    return registry


def write_override(directory: Path, source: str, stream: str, columns: list[dict[str, Any]]) -> Path:
    """Add ``columns`` to ``<directory>/<source>.<stream>.yaml`` (kept: columns already there)."""
    header = ("# Columns the venue sends that its plugin does not declare yet; written by\n"
              "# `schemahub schema propose --apply`. Remove a column here once the plugin declares it.\n")
    return _write(directory / f"{source}.{stream}.yaml", {"source": f"{source}.{stream}"}, columns, header)


def write_target_override(directory: Path, target: str, columns: list[dict[str, Any]]) -> Path:
    """Add nullable ``columns`` to ``<directory>/<target>.yaml`` (kept: columns already there)."""
    header = ("# Nullable columns added to a unified target that its plugin does not declare; written by\n"
              "# `schemahub schema propose --apply`. Iceberg keeps the column once added: removing it here\n"
              "# only stops unify filling it.\n")
    return _write(directory / f"{target}.yaml", {"target": target}, columns, header)


def _write(path: Path, head: dict[str, str], columns: list[dict[str, Any]], header: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (_read(path) if path.exists() else None) or {**head, "add_columns": []}
    data.setdefault("add_columns", [])
    names = {c["name"] for c in data["add_columns"]}
    data["add_columns"] += [c for c in columns if c["name"] not in names]
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))
    return path

