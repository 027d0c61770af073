"""``schemahub schema check|propose``: what venues send that the streams don't declare, and the change it calls for.

A proposal for each new field has three parts, as the seed's goal asks:

- the stream-schema addition: a user-level override in ``config/streams/`` (the plugin author's fix is the same
  ``Column`` in the plugin), so raw casting keeps the field from now on;
- the raw table's Iceberg schema evolution: a nullable column added at the end, no data rewritten; old rows read
  null (Iceberg semantics);
- a mapping patch for each unified target the stream maps into: a copy of the mapping in ``config/mappings/``
  that maps the field, which then wins over the plugin's. Where the target declares a column of the same name
  it maps to that; otherwise the target gets a new nullable column of that name (``config/targets/``, and the
  unified table's Iceberg evolution: a column added at the end, no data rewritten), so unify fills it for the
  rows it lands from then on and rows unified before read null.

``propose`` is a dry run; ``apply`` validates first (the override parses, the patched mapping checks against the
registry), then evolves the raw table and writes the files. ``backfill`` (``--apply --backfill``, or
``schemahub schema backfill`` later) fills the added raw columns of rows landed before from their
``_raw_payload`` (``maintenance.backfill``: a rewrite of exactly the files it fills).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError

from schemahub_core.engine.drift import FieldDrift, infer_type, report
from schemahub_core.engine.maintenance import BackfillReport
from schemahub_core.engine.maintenance import backfill as backfill_column
from schemahub_core.engine.tables import ensure_table, iceberg_field_type, raw_table_name, target_def
from schemahub_core.framework.config import Settings
from schemahub_core.framework.connector import RAW_META_COLUMNS, Column
from schemahub_core.framework.mapping import check_mapping, collect_mappings, parse_mapping
from schemahub_core.framework.registry import Registry
from schemahub_core.framework.streams import (
    TYPES,
    load_overrides,
    load_target_overrides,
    type_name,
    with_columns,
    with_target_columns,
    write_override,
    write_target_override,
)


def check(catalog: Catalog, namespace: str, registry: Registry) -> list[FieldDrift]:
    """Drift in every raw table that exists, over the snapshots each keeps."""
    found: list[FieldDrift] = []
    for source, cls in sorted(registry.connectors.items()):
        for stream in cls.streams.values():
            try:
                table = catalog.load_table((namespace, raw_table_name(source, stream.name)))
            except NoSuchTableError:
                continue
            found += report(table, source, stream)
    return found


@dataclass
class Proposal:
    source: str
    stream: str
    field: str
    column: dict[str, Any]  # the stream override entry: name, type, cast
    raw_table: str
    # {target, file, maps, from, new_column}: new_column is True where the target gets a new nullable column
    mappings: list[dict[str, Any]] = field(default_factory=list)
    not_mapped: list[str] = field(default_factory=list)  # targets the stream's mapping already fills from it

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def propose(drift: list[FieldDrift], registry: Registry, settings: Settings) -> list[Proposal]:
    """One proposal per field a venue sends that its stream does not declare."""
    out = []
    mappings = collect_mappings(registry, settings.mappings_dir)
    for item in drift:
        if item.kind != "new":
            continue
        dtype, cast = infer_type(item.example)
        column = {"name": item.field, "type": type_name(dtype), **({"cast": cast} if cast else {})}
        proposal = Proposal(item.source, item.stream, item.field, column, raw_table_name(item.source, item.stream))
        for m in mappings:
            if m.source != f"{item.source}.{item.stream}":
                continue
            target = registry.targets[m.target_table]
            mapped = {c for cols in m.columns.values() for c in cols}
            if item.field in m.columns or item.field in mapped:
                proposal.not_mapped.append(m.target_table)
                continue
            name = f"{item.source}_{item.stream}_{m.target_table}.yaml"
            proposal.mappings.append({"target": m.target_table, "file": str(settings.mappings_dir / name),
                                      "maps": f"{item.field}: {item.field}", "from": m.path,
                                      "new_column": item.field not in target.schema.names})
        out.append(proposal)
    return out


def _patched_mapping(path: str, field_name: str) -> str:
    data = yaml.safe_load(Path(path).read_text())
    data.setdefault("mappings", {})[field_name] = field_name
    return ("# Written by `schemahub schema propose --apply`: the plugin's mapping plus the new field.\n"
            + yaml.safe_dump(data, sort_keys=False))


def apply(proposals: list[Proposal], catalog: Catalog, settings: Settings, registry: Registry) -> list[str]:
    """Validate every part first, then evolve the raw and unified tables and write the override and mapping files."""
    patched: list[tuple[Path, str]] = []
    for p in proposals:
        for m in p.mappings:
            text = _patched_mapping(m["from"], p.field)
            patched.append((Path(m["file"]), text))
    # validate: the mappings must check against the registry as it will be once the columns are declared
    overrides = load_overrides(Path(settings.streams_dir))  # the overrides already there, plus the proposed
    target_overrides = load_target_overrides(Path(settings.targets_dir))
    for p in proposals:
        column = Column(p.field, TYPES[p.column["type"]], p.column.get("cast"))
        overrides.setdefault((p.source, p.stream), []).append(column)
        for m in p.mappings:
            if m["new_column"]:
                target_overrides.setdefault(m["target"], []).append(column)
    preview = with_target_columns(with_columns(registry, overrides), target_overrides)
    for path, text in patched:
        check_mapping(parse_mapping(text, str(path)), preview)
    done = []
    for p in proposals:
        table = catalog.load_table((settings.namespace, p.raw_table))
        if p.field not in table.schema().column_names:
            with table.update_schema() as update:
                update.add_column(p.field, iceberg_field_type(TYPES[p.column["type"]]), doc="added by schema propose")
                # a raw table is the stream's columns, then the engine's: the new column goes before those
                update.move_before(p.field, RAW_META_COLUMNS[0])
            done.append(f"{p.raw_table}: added nullable column {p.field} ({p.column['type']})")
        write_override(settings.streams_dir, p.source, p.stream, [p.column])
        done.append(f"{settings.streams_dir}/{p.source}.{p.stream}.yaml: declares {p.field}")
        for m in p.mappings:
            if not m["new_column"]:
                continue
            target = preview.targets[m["target"]]
            try:  # a unified column goes at the end: the same in-place evolution init does for declared columns
                had = catalog.load_table((settings.namespace, target.name)).schema().column_names
            except NoSuchTableError:
                had = []
            ensure_table(catalog, settings.namespace, target_def(target))
            if had and p.field not in had:
                done.append(f"{target.name}: added nullable column {p.field} ({p.column['type']})")
            path = write_target_override(settings.targets_dir, target.name,
                                         [{"name": p.field, "type": p.column["type"]}])
            done.append(f"{path}: {target.name} declares {p.field}")
    for path, text in patched:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        done.append(f"{path}: the mapping, now with the new field")
    return done


def backfill(catalog: Catalog, settings: Settings, registry: Registry,
             only: list[tuple[str, str, str]] | None = None) -> list[BackfillReport]:
    """Fill each column the stream overrides add (``config/streams/``) from ``_raw_payload``, where it is null.

    ``only``: (source, stream, column) triples, e.g. the proposals just applied. A raw table without the column
    yet (not evolved) is skipped.
    """
    reports = []
    for (source, stream), columns in sorted(load_overrides(Path(settings.streams_dir)).items()):
        identifier = (settings.namespace, raw_table_name(source, stream))
        try:
            names = catalog.load_table(identifier).schema().column_names
        except NoSuchTableError:
            continue
        for column in columns:
            if (only is None or (source, stream, column.name) in only) and column.name in names:
                reports.append(backfill_column(catalog, identifier, column, registry.transforms))
    return reports
