"""Mappings: YAML that maps a connector stream onto a unified target table.

A mapping is validated twice before any write: against the JSON Schema shipped
in ``schemas/mapping.schema.json``, then against what is installed (the
connector's raw columns, the target's columns, the registered transforms).
Every error names the file, the line and the key.

``source`` names a stream as ``<connector>.<stream>`` or by its raw table (``raw_<connector>_<stream>``, as the
seed's own examples write it); both resolve to the same stream. ``transforms`` are keyed by target column, or
by a mapped raw column (then they apply to the target columns it maps to). Target columns that the table
allows to be null may be left out; they stay null.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import pyarrow as pa
import yaml

from schemahub_core.framework.connector import RAW_META_COLUMNS

if TYPE_CHECKING:
    from schemahub_core.framework.registry import Registry


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
        return self.source.partition(".")[2]

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

    def restricted(self, raw_columns: tuple[str, ...] | list[str]) -> Mapping:
        """This mapping cut down to what ``raw_columns`` produce (their columns, the constants and the transforms
        fed by them only): it maps the key columns alone, so an audit reads no other column."""
        columns = {r: t for r, t in self.columns.items() if r in raw_columns}
        produced = {t for targets in columns.values() for t in targets} | set(self.constants)
        transforms = {}
        for target, steps in self.transforms.items():
            have = set(produced)
            for step in steps:
                if (step.source or target) not in have:
                    break
                have.add(target)
            else:
                transforms[target] = steps
                produced.add(target)
        return replace(self, columns=columns, transforms=transforms)

    def apply(self, raw: pa.Table, registry: Registry, target_schema: pa.Schema) -> pa.Table:
        """Map raw rows to the target's columns (the ingest column and columns not produced are left null)."""
        m = resolve(self, registry)  # transforms keyed by a raw column, in target-column terms
        columns: dict[str, pa.Array] = {}
        for raw_column, targets in m.columns.items():
            for target in targets:
                columns[target] = raw.column(raw_column).combine_chunks()
        for target, steps in m.transforms.items():
            for step in steps:
                fn = registry.transforms[step.name]
                columns[target] = fn(columns[step.source or target], **step.params)
        for target, value in m.constants.items():
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


def _streams(registry: Registry) -> dict[str, str]:
    """Raw table name -> ``connector.stream`` for every installed stream."""
    return {f"raw_{c}_{s}": f"{c}.{s}" for c, cls in sorted(registry.connectors.items()) for s in cls.streams}


def resolve_source(source: str, registry: Registry) -> str | None:
    """``connector.stream`` for a source written either way; None when a raw table name matches no stream."""
    return source if "." in source else _streams(registry).get(source)


def _known_streams(registry: Registry) -> str:
    return ", ".join(f"{name} ({raw})" for raw, name in _streams(registry).items()) or "none installed"


def resolve(mapping: Mapping, registry: Registry) -> Mapping:
    """The mapping in canonical form: ``source`` as ``connector.stream``, transforms keyed by target column.

    A raw-table ``source`` that names no installed stream, or a transform key that is neither a target column
    nor a mapped raw column, is left as written for ``check_mapping`` to report.
    """
    source = resolve_source(mapping.source, registry) or mapping.source
    target = registry.targets.get(mapping.target_table)
    target_columns = set(target.schema.names) if target is not None else set()
    transforms: dict[str, tuple[Step, ...]] = {}
    lines = dict(mapping.lines)
    for key, steps in mapping.transforms.items():
        if key in target_columns or key not in mapping.columns:
            transforms[key] = transforms.get(key, ()) + steps
            continue
        for t in mapping.columns[key]:  # keyed by a raw column: applies to what that column becomes
            transforms[t] = transforms.get(t, ()) + steps
            if ("transforms", key) in lines:
                lines.setdefault(("transforms", t), lines[("transforms", key)])
    if source == mapping.source and transforms == mapping.transforms:
        return mapping
    return dataclasses.replace(mapping, source=source, transforms=transforms, lines=lines)


def left_null(mapping: Mapping, registry: Registry) -> list[str]:
    """Target columns the (checked) mapping does not produce: nullable ones, which stay null."""
    target = registry.targets[mapping.target_table]
    m = resolve(mapping, registry)
    produced = {t for targets in m.columns.values() for t in targets} | set(m.constants) | set(m.transforms)
    return [c for c in target.schema.names if c not in produced and c != target.ingest_column]


def check_mapping(mapping: Mapping, registry: Registry) -> None:
    """Check a parsed mapping against what is installed; raise the first problem."""
    if resolve_source(mapping.source, registry) is None:
        raise mapping.error(("source",), f"no installed stream has the raw table {mapping.source!r} "
                            f"(streams: {_known_streams(registry)})")
    mapping = resolve(mapping, registry)
    connector = registry.connectors.get(mapping.connector)
    if connector is None:
        raise mapping.error(("source",), f"unknown connector {mapping.connector!r} "
                            f"(installed: {', '.join(sorted(registry.connectors)) or 'none'})")
    stream = connector.streams.get(mapping.stream)
    if stream is None:
        raise mapping.error(("source",), f"connector {mapping.connector!r} has no stream {mapping.stream!r} "
                            f"(streams: {_known_streams(registry)})")
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
            raise mapping.error(("transforms", t), f"no column {t!r} in {target.name} and no mapped raw column "
                                f"{t!r} (mapped: {', '.join(mapping.columns)})")
        for step in steps:
            if step.name not in registry.transforms:
                raise mapping.error(("transforms", t), f"unknown transform {step.name!r} "
                                    f"(known: {', '.join(sorted(registry.transforms))})")
            if (step.source or t) not in produced:
                raise mapping.error(("transforms", t), f"transform {step.name!r} reads {step.source or t!r}, "
                                    "which no earlier mapping, constant or transform produces")
        produced.add(t)
    missing = [f.name for f in target.schema
               if f.name not in produced and f.name != target.ingest_column and not f.nullable]
    if missing:
        raise mapping.error((), f"does not produce {target.name} column(s) {', '.join(missing)}, which may not "
                            "be null")
    from schemahub_core.engine.tables import raw_schema

    try:  # types line up: run the mapping on an empty raw table
        mapping.apply(raw_schema(stream).empty_table(), registry, target.schema)
    except Exception as exc:
        raise mapping.error(("transforms",), f"does not type-check on {mapping.raw_table}: {exc}") from exc


def collect_mappings(registry: Registry, mappings_dir: Path | None) -> list[Mapping]:
    """Plugin mappings, overridden by the files in ``mappings_dir``.

    A file replaces every plugin mapping from the same connector into the same target, whichever of the
    connector's streams it reads: a user who maps Binance's aggregate trades into ``trades_unified`` replaces
    the plugin's individual-trades mapping instead of landing the same trades twice.
    """
    found: dict[tuple[str, str], Mapping] = {}
    for origin, item in registry.mappings:
        m = resolve(item if isinstance(item, Mapping) else load_mapping(item, origin=origin), registry)
        found[(m.source, m.target_table)] = m
    if mappings_dir is not None and mappings_dir.is_dir():
        overrides: dict[tuple[str, str], Mapping] = {}
        for p in sorted(mappings_dir.glob("*.y*ml")):
            m = resolve(load_mapping(p), registry)
            overrides[(m.source, m.target_table)] = m
        replaced = {(m.connector, m.target_table) for m in overrides.values()}
        found = {k: m for k, m in found.items() if (m.connector, m.target_table) not in replaced}
        found.update(overrides)
    return list(found.values())


def mappings_for(target: str, mappings: list[Mapping]) -> list[Mapping]:
    return [m for m in mappings if m.target_table == target]

