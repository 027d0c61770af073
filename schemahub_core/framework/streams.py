"""User-level stream overrides: columns a venue started sending that its plugin does not declare yet.

Venues add fields. Until the plugin author declares one, a user can: ``schemahub schema propose --apply`` writes
``config/streams/<source>.<stream>.yaml``::

    source: binance.trades
    add_columns:
      - {name: venue_flag, type: string}
      - {name: fee, type: double, cast: to_double}

and every command applies it to the registry, so raw casting, ``init`` and the raw table's schema all see the
column. ``type`` is one of ``TYPES``; ``cast`` names a registered transform, as in a plugin's ``Column``.
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
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
        source = str(data.get("source", ""))
        connector, _, stream = source.partition(".")
        if not connector or not stream:
            raise ConfigError(f"{path}: source must be <connector>.<stream>, got {source!r}")
        columns = []
        for i, spec in enumerate(data.get("add_columns") or []):
            if not isinstance(spec, dict) or not spec.get("name") or spec.get("type") not in TYPES:
                raise ConfigError(f"{path}: add_columns[{i}] needs a name and a type ({', '.join(TYPES)})")
            columns.append(Column(str(spec["name"]), TYPES[spec["type"]], spec.get("cast"),
                                  native=spec.get("native")))
        out.setdefault((connector, stream), []).extend(columns)
    return out


def apply_overrides(registry: Registry, directory: Path) -> Registry:
    """``registry`` with the override files in ``directory`` applied (see ``with_columns``)."""
    return with_columns(registry, load_overrides(directory))


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
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{source}.{stream}.yaml"
    data = yaml.safe_load(path.read_text()) if path.exists() else None
    data = data or {"source": f"{source}.{stream}", "add_columns": []}
    names = {c["name"] for c in data["add_columns"]}
    data["add_columns"] += [c for c in columns if c["name"] not in names]
    header = ("# Columns the venue sends that its plugin does not declare yet; written by\n"
              "# `schemahub schema propose --apply`. Remove a column here once the plugin declares it.\n")
    path.write_text(header + yaml.safe_dump(data, sort_keys=False))
    return path

