"""Mappings: YAML that maps a connector stream onto a unified target table.

A mapping is validated twice before any write: against the JSON Schema shipped
in ``schemas/mapping.schema.json``, then against what is installed (the
connector's raw columns, the target's columns, the registered transforms).
Every error names the file, the line and the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import pyarrow as pa
import yaml

if TYPE_CHECKING:
    from schemahub_core.framework.registry import Registry

RAW_META_COLUMNS = ("_source", "_source_ingest_ts", "_raw_payload")


class MappingError(ValueError):
    """One problem in one mapping, printable as ``file:line: key: message``."""

    def __init__(self, path: str, line: int | None, key: str, message: str) -> None:
        self.path, self.line, self.key, self.message = path, line, key, message
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")


@dataclass(frozen=True)
class Step:
    name: str
    source: str | None = None  # target column to read; None = the step's own column
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Mapping:
    source: str
    target_table: str
    columns: dict[str, tuple[str, ...]]  # raw column -> target columns
    constants: dict[str, Any]
    transforms: dict[str, tuple[Step, ...]]
    path: str = "<memory>"
    lines: dict[tuple[str, ...], int] = field(default_factory=dict, compare=False, repr=False)
    origin: str = "config"  # plugin name or "config"

    @property
    def connector(self) -> str:
        return self.source.split(".", 1)[0]

    @property
    def stream(self) -> str:
        return self.source.split(".", 1)[1]

    @property
    def raw_table(self) -> str:
        return f"raw_{self.connector}_{self.stream}"

    def error(self, key_path: tuple[str, ...], message: str) -> MappingError:
        line = None
        for n in range(len(key_path), -1, -1):
            if key_path[:n] in self.lines:
                line = self.lines[key_path[:n]]
                break
        return MappingError(self.path, line, ".".join(key_path), message)

    def apply(self, raw: pa.Table, registry: Registry, target_schema: pa.Schema) -> pa.Table:
        """Map raw rows to the target's columns (the ingest column is left null)."""
        columns: dict[str, pa.Array] = {}
        for raw_column, targets in self.columns.items():
            for target in targets:
                columns[target] = raw.column(raw_column).combine_chunks()
        for target, steps in self.transforms.items():
            for step in steps:
                fn = registry.transforms[step.name]
                columns[target] = fn(columns[step.source or target], **step.params)
        for target, value in self.constants.items():
            columns[target] = pa.repeat(pa.scalar(value), raw.num_rows)
        arrays = []
        for f in target_schema:
            arr = columns.get(f.name)
            arrays.append(pa.nulls(raw.num_rows, f.type) if arr is None else arr.cast(f.type))
        return pa.Table.from_arrays(arrays, schema=target_schema)


def _schema() -> dict[str, Any]:
    text = resources.files("schemahub_core.schemas").joinpath("mapping.schema.json").read_text()
    return json.loads(text)


def _lines(node: yaml.Node, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """Line (1-based) of every key path in a composed YAML document."""
    out = {path: node.start_mark.line + 1}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, str(key.value))
            out[child] = key.start_mark.line + 1
            out.update({k: v for k, v in _lines(value, child).items() if k != child})
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out.update(_lines(item, (*path, str(i))))
    return out


def _steps(spec: Any) -> tuple[Step, ...]:
    items = spec if isinstance(spec, list) else [spec]
    return tuple(
        Step(s) if isinstance(s, str) else Step(s["name"], s.get("from"), dict(s.get("params") or {}))
        for s in items
    )


def parse_mapping(text: str, path: str = "<memory>", origin: str = "config") -> Mapping:
    """Parse and schema-check one mapping document (no registry needed)."""
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise MappingError(path, mark.line + 1 if mark else None, "", f"invalid YAML: {exc}") from exc
    if node is None or not isinstance(data, dict):
        raise MappingError(path, 1, "", "a mapping must be a YAML object with source, target_table, mappings")
    lines = _lines(node)
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        err = jsonschema.exceptions.best_match(errors)
        key_path = tuple(str(p) for p in err.absolute_path)
        message = err.message
        if err.validator == "additionalProperties" and not key_path:
            extra = sorted(set(data) - set(_schema()["properties"]))
            key_path, message = (extra[0],), f"unknown key (allowed: {', '.join(_schema()['properties'])})"
        line = next((lines[key_path[:n]] for n in range(len(key_path), -1, -1) if key_path[:n] in lines), None)
        raise MappingError(path, line, ".".join(key_path), message)
    columns = {
        str(raw): tuple(targets) if isinstance(targets, list) else (targets,)
        for raw, targets in data["mappings"].items()
    }
    transforms = {str(t): _steps(s) for t, s in (data.get("transforms") or {}).items()}
    return Mapping(
        source=data["source"],
        target_table=data["target_table"],
        columns=columns,
        constants=dict(data.get("constants") or {}),
        transforms=transforms,
        path=path,
        lines=lines,
        origin=origin,
    )


def load_mapping(path: str | Path, origin: str = "config") -> Mapping:
    p = Path(path)
    return parse_mapping(p.read_text(), str(p), origin)


def check_mapping(mapping: Mapping, registry: Registry) -> None:
    """Check a parsed mapping against what is installed; raise the first problem."""
    connector = registry.connectors.get(mapping.connector)
    if connector is None:
        raise mapping.error(("source",), f"unknown connector {mapping.connector!r} "
                            f"(installed: {', '.join(sorted(registry.connectors)) or 'none'})")
    stream = connector.streams.get(mapping.stream)
    if stream is None:
        raise mapping.error(("source",), f"connector {mapping.connector!r} has no stream {mapping.stream!r} "
                            f"(streams: {', '.join(sorted(connector.streams))})")
    target = registry.targets.get(mapping.target_table)
    if target is None:
        raise mapping.error(("target_table",), f"unknown target table {mapping.target_table!r} "
                            f"(targets: {', '.join(sorted(registry.targets))})")
    raw_columns = {c.name for c in stream.columns} | set(RAW_META_COLUMNS)
    target_columns = set(target.schema.names)
    produced: set[str] = set()
    for raw_column, targets in mapping.columns.items():
        if raw_column not in raw_columns:
            raise mapping.error(("mappings", raw_column), f"no raw column {raw_column!r} in {mapping.raw_table} "
                                f"(columns: {', '.join(sorted(raw_columns))})")
        for t in targets:
            if t not in target_columns:
                raise mapping.error(("mappings", raw_column), f"no column {t!r} in {target.name}")
            produced.add(t)
    for t in mapping.constants:
        if t not in target_columns:
            raise mapping.error(("constants", t), f"no column {t!r} in {target.name}")
        produced.add(t)
    for t, steps in mapping.transforms.items():
        if t not in target_columns:
            raise mapping.error(("transforms", t), f"no column {t!r} in {target.name}")
        for step in steps:
            if step.name not in registry.transforms:
                raise mapping.error(("transforms", t), f"unknown transform {step.name!r} "
                                    f"(known: {', '.join(sorted(registry.transforms))})")
            if (step.source or t) not in produced:
                raise mapping.error(("transforms", t), f"transform {step.name!r} reads {step.source or t!r}, "
                                    "which no earlier mapping, constant or transform produces")
        produced.add(t)
    missing = [c for c in target.schema.names if c not in produced and c != target.ingest_column]
    if missing:
        raise mapping.error((), f"does not produce {target.name} column(s): {', '.join(missing)}")
    from schemahub_core.engine.tables import raw_schema

    try:  # types line up: run the mapping on an empty raw table
        mapping.apply(raw_schema(stream).empty_table(), registry, target.schema)
    except Exception as exc:
        raise mapping.error(("transforms",), f"does not type-check on {mapping.raw_table}: {exc}") from exc


def collect_mappings(registry: Registry, mappings_dir: Path | None) -> list[Mapping]:
    """Plugin mappings, overridden by files in ``mappings_dir`` with the same source and target."""
    found: dict[tuple[str, str], Mapping] = {}
    for origin, item in registry.mappings:
        m = item if isinstance(item, Mapping) else load_mapping(item, origin=origin)
        found[(m.source, m.target_table)] = m
    if mappings_dir is not None and mappings_dir.is_dir():
        for p in sorted(mappings_dir.glob("*.y*ml")):
            m = load_mapping(p)
            found[(m.source, m.target_table)] = m
    return list(found.values())


def mappings_for(target: str, mappings: list[Mapping]) -> list[Mapping]:
    return [m for m in mappings if m.target_table == target]

