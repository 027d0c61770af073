"""Table definitions: raw, unified and meta tables, their Iceberg schemas and partitions.

Arrow schemas are the source of truth (connectors and targets declare them);
this module turns them into Iceberg schemas with ``day(<time>)`` partitioning
and the table properties the exactly-once engine relies on.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import DayTransform
from pyiceberg.types import (
    BinaryType,
    BooleanType,
    DateType,
    DoubleType,
    IcebergType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    TimestampType,
    TimestamptzType,
)

from schemahub_core.framework.connector import Stream
from schemahub_core.framework.registry import Registry
from schemahub_core.framework.targets import TS, Target

# pyiceberg silently rebases and retries a conflicting append (4 times by
# default), which would land a page twice when two writers race. The engine
# retries itself, after re-reading the committed coverage. Old metadata files are
# deleted on commit (only the newest few kept), and the engine expires its own old
# snapshots (``maintenance.trim``), so metadata stays small with nobody running maintain.
METADATA_VERSIONS_MAX = 10
ENGINE_TABLE_PROPERTIES = {
    "commit.retry.num-retries": "0",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": str(METADATA_VERSIONS_MAX),
}

WATERMARKS = "schemahub_watermarks"
QUARANTINE = "schemahub_quarantine"

WATERMARKS_SCHEMA = pa.schema([
    pa.field("source", pa.string(), nullable=False),
    pa.field("stream", pa.string(), nullable=False),
    pa.field("symbol", pa.string(), nullable=False),
    pa.field("last_trade_id", pa.string()),
    pa.field("last_ts", TS),
    pa.field("cursor", pa.string()),
    pa.field("snapshot_id", pa.int64()),
    pa.field("updated_at", TS),
    pa.field("covered", pa.string()),  # JSON [{"since", "until", "cursor"}...], merged
    pa.field("holes", pa.string()),  # JSON: the gaps between covered ranges
])

QUARANTINE_SCHEMA = pa.schema([
    pa.field("source", pa.string(), nullable=False),
    pa.field("stream", pa.string(), nullable=False),
    pa.field("symbol", pa.string()),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("payload", pa.string()),
    pa.field("ts", TS, nullable=False),
])


@dataclass(frozen=True)
class TableDef:
    name: str
    schema: pa.Schema
    partition_column: str | None  # day(<column>) or unpartitioned
    # (old, new) column names: a table still using the old name is migrated by an Iceberg rename
    renames: tuple[tuple[str, str], ...] = ()


def raw_table_name(connector: str, stream: str) -> str:
    return f"raw_{connector}_{stream}"


def raw_schema(stream: Stream) -> pa.Schema:
    """The stream's native columns plus the engine's bookkeeping columns."""
    return stream.schema().append(pa.field("_source", pa.string())).append(
        pa.field("_source_ingest_ts", TS)).append(pa.field("_raw_payload", pa.string()))


def raw_table_def(source: str, stream: Stream) -> TableDef:
    """A stream's raw table; columns that left their native name (``Column.native``) were once named by it."""
    renames = tuple((c.native, c.name) for c in stream.columns if c.native and c.native != c.name)
    return TableDef(raw_table_name(source, stream.name), raw_schema(stream), stream.event_time, renames)


def table_defs(registry: Registry) -> list[TableDef]:
    """Every table ``schemahub init`` creates for what is installed."""
    defs = [raw_table_def(name, s) for name, cls in sorted(registry.connectors.items()) for s in cls.streams.values()]
    defs += [TableDef(t.name, t.schema, t.time_column) for t in registry.targets.values()]
    defs += [TableDef(WATERMARKS, WATERMARKS_SCHEMA, None), TableDef(QUARANTINE, QUARANTINE_SCHEMA, None)]
    return defs


def target_def(target: Target) -> TableDef:
    return TableDef(target.name, target.schema, target.time_column)


_PRIMITIVES: list[tuple[object, IcebergType]] = [
    (pa.types.is_string, StringType()),
    (pa.types.is_large_string, StringType()),
    (pa.types.is_float64, DoubleType()),
    (pa.types.is_int64, LongType()),
    (pa.types.is_int32, IntegerType()),
    (pa.types.is_boolean, BooleanType()),
    (pa.types.is_date32, DateType()),
    (pa.types.is_binary, BinaryType()),
]


def _iceberg_type(t: pa.DataType) -> IcebergType:
    if pa.types.is_timestamp(t):
        if t.unit != "us":
            raise TypeError(f"timestamps must be microseconds, got {t}")
        return TimestamptzType() if t.tz else TimestampType()
    for test, iceberg in _PRIMITIVES:
        if test(t):  # type: ignore[operator]
            return iceberg
    raise TypeError(f"unsupported column type {t}")


def iceberg_field_type(dtype: pa.DataType) -> IcebergType:
    """The Iceberg type a raw or unified column of Arrow type ``dtype`` gets (also for columns added later)."""
    return _iceberg_type(dtype)


def iceberg_schema(schema: pa.Schema) -> Schema:
    return Schema(*[
        NestedField(i, f.name, _iceberg_type(f.type), required=not f.nullable)
        for i, f in enumerate(schema, start=1)
    ])


def partition_spec(schema: Schema, column: str | None) -> PartitionSpec:
    if column is None:
        return PartitionSpec()
    source = schema.find_field(column)
    return PartitionSpec(PartitionField(source.field_id, 1000, DayTransform(), f"{column}_day"))


def ensure_table(catalog: Catalog, namespace: str, table: TableDef) -> tuple[Table, bool]:
    """Create the table if missing; if present, check it still has the declared columns."""
    identifier = (namespace, table.name)
    try:
        existing = catalog.load_table(identifier)
    except NoSuchTableError:
        schema = iceberg_schema(table.schema)
        try:
            created = catalog.create_table(
                identifier,
                schema=schema,
                partition_spec=partition_spec(schema, table.partition_column),
                properties=ENGINE_TABLE_PROPERTIES,
            )
            return created, True
        except TableAlreadyExistsError:  # another process won the race
            existing = catalog.load_table(identifier)
    if table.renames:
        existing = migrate_renames(catalog, identifier, existing, table.renames)
    have = [f.name for f in existing.schema().fields]
    want = list(table.schema.names)
    if want[: len(have)] == have and len(want) > len(have):  # columns added since: evolve in place
        with existing.update_schema() as update:
            update.union_by_name(iceberg_schema(table.schema))
        existing = catalog.load_table(identifier)
        have = [f.name for f in existing.schema().fields]
    if any(existing.properties.get(k) != v for k, v in ENGINE_TABLE_PROPERTIES.items()):
        existing.transaction().set_properties(ENGINE_TABLE_PROPERTIES).commit_transaction()
        existing = catalog.load_table(identifier)
    if have[: len(want)] != want:
        raise RuntimeError(
            f"table {namespace}.{table.name} exists with columns {have}, expected {want}; "
            "drop it or point SCHEMAHUB_HOME at a fresh warehouse"
        )
    return existing, False


def migrate_renames(catalog: Catalog, identifier: tuple[str, str], table: Table,
                    renames: tuple[tuple[str, str], ...], attempts: int = 5) -> Table:
    """Rename columns still under an old name: a metadata-only commit (Iceberg columns are ids, so
    the data files keep their old names and every reader maps them by id).

    Two processes may migrate at once: a conflicting commit reloads and looks again.
    """
    for attempt in range(attempts):
        names = set(table.schema().column_names)
        todo = [(old, new) for old, new in renames if old in names and new not in names]
        if not todo:
            return table
        try:
            with table.update_schema() as update:
                for old, new in todo:
                    update.rename_column(old, new)
            return catalog.load_table(identifier)
        except CommitFailedException:
            if attempt == attempts - 1:
                raise
            table = catalog.load_table(identifier)
    return table


def ensure_namespace(catalog: Catalog, namespace: str) -> bool:
    """Create ``namespace`` unless it exists; True when this call created it.

    pyiceberg's SQL catalog checks for the namespace and then inserts it, so a process
    that loses the race between the two gets the database's unique-key error rather
    than ``NamespaceAlreadyExistsError``. The namespace then exists, which is all we want.
    """
    try:
        catalog.create_namespace(namespace)
        return True
    except NamespaceAlreadyExistsError:
        return False
    except Exception:
        if catalog.namespace_exists(namespace):  # another process created it meanwhile
            return False
        raise


def init_tables(catalog: Catalog, namespace: str, registry: Registry) -> list[tuple[str, bool]]:
    ensure_namespace(catalog, namespace)
    return [(d.name, ensure_table(catalog, namespace, d)[1]) for d in table_defs(registry)]
