"""Sinks publish batches together with the progress they cover, exactly once.

A sink must make the batch and its progress visible atomically: that is what
lets ingest and unify resume exactly where the last publish stopped. Iceberg
does it with one snapshot whose summary carries the progress
(``schemahub.*`` properties, carried forward so the newest engine snapshot
always holds all of it).

The retry loop lives here, not in pyiceberg: the engine's tables set
``commit.retry.num-retries=0`` because pyiceberg's own retry rebases an append
onto whatever landed meanwhile, which lands a page twice when two writers
fetched it. Before every attempt the sink re-reads the committed progress and
publishes only if the keys it was told to ``expect`` still hold the values the
batch was computed from; after an error whose outcome is unknown (lost
response, ``database is locked``) it looks for its own snapshot id before
trying again.
"""

from __future__ import annotations

import errno
import itertools
import random
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, CommitStateUnknownException
from pyiceberg.expressions import AlwaysFalse, And, BooleanExpression, GreaterThanOrEqual, LessThan, Or
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import (
    _check_pyarrow_schema_compatible,
    _dataframe_to_data_files,
    bin_pack_arrow_table,
    pyarrow_to_schema,
    write_file,
)
from pyiceberg.manifest import DataFile
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
from pyiceberg.table import Table, TableProperties, WriteTask
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import ancestors_of

from schemahub_core.engine.append_snapshot import stage_append
from schemahub_core.engine.faults import fault_point

PROGRESS_PREFIX = "schemahub."
MAX_ATTEMPTS = 40

T = TypeVar("T")


class Sink(Protocol):
    def progress(self, target: str) -> dict[str, str]:
        """The progress recorded by the newest publish to ``target`` (empty if none)."""

    def publish(
        self,
        target: str,
        batch: pa.Table,
        progress: Mapping[str, str],
        expect: Mapping[str, str | None] | None = None,
        stage: str = "unify",
    ) -> int | None:
        """Append ``batch`` and ``progress`` atomically if ``expect`` still holds; its id, or None if not."""

    def existing_keys(self, target: str, key: Iterable[str], time_column: str, days: Iterable[datetime]) -> pa.Table:
        """The ``key`` columns of the rows already in ``target`` on the given UTC days."""


class StagingSink(Sink, Protocol):
    """A sink that can write data files ahead of one commit, so a large publish needs no large batch in memory.

    Unify streams through it: ``stage`` writes each flushed part as data files (nothing visible yet),
    ``staged_keys`` reads the key columns back from them, ``publish_staged`` commits them all at once.
    """

    def stage(self, target: str, batch: pa.Table, write: Mapping[str, str] | None = None) -> list[DataFile]:
        """Write ``batch`` as data files of ``target`` without committing them (``write``: writer properties
        for these files only, over the table's)."""

    def staged_keys(self, target: str, files: Iterable[DataFile], key: Iterable[str]) -> pa.Table:
        """The ``key`` columns of staged ``files``."""

    def publish_staged(
        self,
        target: str,
        files: list[DataFile],
        progress: Mapping[str, str],
        expect: Mapping[str, str | None] | None = None,
        stage: str = "unify",
    ) -> int | None:
        """Commit staged ``files`` and ``progress`` as one snapshot if ``expect`` still holds (as ``publish``)."""


def progress_of(table: Table) -> dict[str, str]:
    """``schemahub.*`` summary properties of the newest snapshot that has any.

    Snapshots written by others (compaction, a manual append) carry none and are
    skipped, so maintenance never makes the engine forget where it stood.
    """
    for snapshot in ancestors_of(table.current_snapshot(), table.metadata):
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        found = {k: v for k, v in props.items() if k.startswith(PROGRESS_PREFIX)}
        if found:
            return found
    return {}


# The warehouse refuses writes until a person acts (read-only, full, no permission): retrying only hides it.
STORAGE_ERRNOS = {errno.EROFS: "read-only", errno.ENOSPC: "no space left", errno.EDQUOT: "quota exceeded",
                  errno.EACCES: "permission denied", errno.EPERM: "not permitted"}
_ERRNO_TEXT = re.compile(r"\[errno (\d+)\]", re.IGNORECASE)


def storage_errno(exc: BaseException) -> int | None:
    """The errno of a storage fault a retry cannot fix (``STORAGE_ERRNOS``), else None.

    pyarrow's file errors carry it in the message (``[errno 30] Read-only file system``) when not as ``errno``.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            number = seen.errno
            if number is None and (found := _ERRNO_TEXT.search(str(seen))):
                number = int(found.group(1))
            if number in STORAGE_ERRNOS:
                return number
        seen = seen.__cause__ or seen.__context__
    return None


class StorageError(OSError):
    """The warehouse cannot be written (read-only, disk full...): one line for people, no retries."""


def storage_problem(exc: BaseException, doing: str) -> str:
    number = storage_errno(exc)
    why = STORAGE_ERRNOS.get(number or 0, "cannot write")
    return (f"storage {why} while {doing} ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
            "fix the warehouse, then rerun to resume (nothing landed twice)")


def is_transient(exc: BaseException) -> bool:
    """A commit error worth retrying: a conflict, an unknown outcome, a busy SQLite catalog, a network blip."""
    if storage_errno(exc) is not None:
        return False
    if isinstance(exc, (CommitFailedException, CommitStateUnknownException, OSError)):
        return True
    return _sqlite_busy(exc)  # SQLAlchemy wraps the driver's error: _sqlite_busy looks at .orig


def _sqlite_busy(exc: BaseException) -> bool:
    cause = getattr(exc, "orig", exc)
    return isinstance(cause, sqlite3.OperationalError) and any(w in str(cause) for w in ("locked", "busy"))


def backoff(attempt: int) -> None:
    time.sleep(min(1.0, 0.02 * 2 ** min(attempt, 6)) * random.uniform(0.5, 1.5))


def retry_transient(fn: Callable[[], T], attempts: int = MAX_ATTEMPTS) -> T:
    """Run an idempotent catalog operation (load, create, overwrite) through transient errors."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc) or attempt == attempts - 1:
                raise
            backoff(attempt)
    raise AssertionError("unreachable")


def day_filter(column: str, days: Iterable[datetime]) -> BooleanExpression:
    """``column`` within any of the UTC ``days``: prunes to those day partitions."""
    expr: BooleanExpression = AlwaysFalse()
    for day in sorted(set(days)):
        start, end = day.isoformat(), (day + timedelta(days=1)).isoformat()
        expr = Or(expr, And(GreaterThanOrEqual(column, start), LessThan(column, end)))
    return expr


@dataclass(frozen=True)
class Commit:
    """One planned append: rows, their snapshot summary, and table properties set in the same commit."""

    batch: pa.Table | None
    summary: Mapping[str, str]
    properties: Callable[[int], dict[str, str]] | None = None  # from the staged snapshot id
    files: list[DataFile] | None = None  # data files written ahead (``stage``); default: write ``batch``


def data_files(metadata: TableMetadata, batch: pa.Table, io: FileIO) -> list[DataFile]:
    """Write ``batch`` as data files of the table ``metadata`` describes (not committed).

    pyiceberg's writer, minus its per-partition copy of the batch (a filter, then ``combine_chunks``) when the
    whole batch falls in one partition, as an archive day or a day's unify flush does: that copy is a tenth
    of the write. Any other batch goes through pyiceberg's own split.
    """
    key = _only_partition(metadata, batch)
    if key is None:
        return list(_dataframe_to_data_files(table_metadata=metadata, df=batch, io=io))
    schema = pyarrow_to_schema(batch.schema, name_mapping=metadata.schema().name_mapping,
                               format_version=metadata.format_version)
    target = int(metadata.properties.get(TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
                                         TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT))
    write_uuid, counter = uuid.uuid4(), itertools.count(0)
    tasks = (WriteTask(write_uuid=write_uuid, task_id=next(counter), record_batches=batches, partition_key=key,
                       schema=schema) for batches in bin_pack_arrow_table(batch, target))
    return list(write_file(io=io, table_metadata=metadata, tasks=tasks))


def _only_partition(metadata: TableMetadata, batch: pa.Table) -> PartitionKey | None:
    """The partition every row of ``batch`` belongs to, if it is one (None: several, or unpartitioned)."""
    spec, schema = metadata.spec(), metadata.schema()
    if spec.is_unpartitioned() or batch.num_rows == 0:
        return None
    values = []
    for field in spec.fields:
        name = schema.find_column_name(field.source_id)
        if name is None or name not in batch.column_names:
            return None
        transformed = field.transform.pyarrow_transform(schema.find_field(field.source_id).field_type)(
            batch.column(name))
        bounds = pc.min_max(transformed)
        if transformed.null_count or bounds["min"] != bounds["max"]:
            return None
        values.append(PartitionFieldValue(field=field, value=bounds["min"].as_py()))
    return PartitionKey(field_values=values, partition_spec=spec, schema=schema)


def batch_files(metadata: TableMetadata, batch: pa.Table, io: FileIO) -> list[DataFile]:
    """``batch`` as data files of the table, after pyiceberg's schema check (what ``tx.append`` writes; a batch in
    one partition, an ingest commit of a day, skips pyiceberg's per-partition filter and copy: ``data_files``)."""
    _check_pyarrow_schema_compatible(metadata.schema(), provided_schema=batch.schema,
                                     format_version=metadata.format_version)
    return data_files(metadata, batch, io) if batch.num_rows else []


class IcebergSink:
    """The built-in sink: one Iceberg append per publish, progress in the snapshot summary."""

    def __init__(self, catalog: Catalog, namespace: str) -> None:
        self.catalog = catalog
        self.namespace = namespace

    def _load(self, target: str) -> Table:
        return retry_transient(lambda: self.catalog.load_table((self.namespace, target)))

    def progress(self, target: str) -> dict[str, str]:
        return progress_of(self._load(target))

    def publish(
        self,
        target: str,
        batch: pa.Table,
        progress: Mapping[str, str],
        expect: Mapping[str, str | None] | None = None,
        stage: str = "unify",
    ) -> int | None:
        return self._commit(target, batch, None, progress, expect, stage)

    def stage(self, target: str, batch: pa.Table, write: Mapping[str, str] | None = None) -> list[DataFile]:
        if batch.num_rows == 0:
            return []
        table = self._load(target)
        metadata = table.metadata
        if write:  # pyiceberg's writer reads its options from the metadata's properties: a copy, not a commit
            metadata = metadata.model_copy(update={"properties": {**metadata.properties, **write}})
        return data_files(metadata, batch, table.io)

    def staged_keys(self, target: str, files: Iterable[DataFile], key: Iterable[str]) -> pa.Table:
        table = self._load(target)
        parts = []
        for data_file in files:
            with table.io.new_input(data_file.file_path).open() as stream:
                parts.append(pq.read_table(stream, columns=list(key)))
        return pa.concat_tables(parts) if parts else pa.table({})

    def publish_staged(
        self,
        target: str,
        files: list[DataFile],
        progress: Mapping[str, str],
        expect: Mapping[str, str | None] | None = None,
        stage: str = "unify",
    ) -> int | None:
        return self._commit(target, None, files, progress, expect, stage)

    def _commit(
        self,
        target: str,
        batch: pa.Table | None,
        files: list[DataFile] | None,
        progress: Mapping[str, str],
        expect: Mapping[str, str | None] | None,
        stage: str,
    ) -> int | None:
        """The conditional commit loop of the module doc, appending ``batch`` or the staged ``files``."""
        expect = dict(expect or {})

        def plan(table: Table) -> Commit | None:
            current = progress_of(table)
            if any(current.get(k) != v for k, v in expect.items()):
                return None  # another writer moved the progress this batch started from
            return Commit(batch, {**current, **progress}, files=files)

        return self.publish_planned(target, plan, stage)

    def publish_planned(self, target: str, plan: Callable[[Table], Commit | None], stage: str) -> int | None:
        """Commit what ``plan`` makes of the freshly loaded table (None: drop); the snapshot id or None.

        ``plan`` runs again on every attempt, on the table as it is then, so a conditional commit
        (unify's progress, ingest's coverage) is always checked against the newest state.
        """
        snapshot_id: int | None = None
        for attempt in range(MAX_ATTEMPTS):
            try:
                table = self.catalog.load_table((self.namespace, target))
                if snapshot_id is not None and table.metadata.snapshot_by_id(snapshot_id) is not None:
                    return snapshot_id  # the previous attempt landed; its response was lost
                commit = plan(table)
                if commit is None:
                    return None
                files = commit.files if commit.files is not None else (
                    batch_files(table.metadata, commit.batch, table.io) if commit.batch is not None else [])
                snapshot_id = table.metadata.new_snapshot_id()
                staged = stage_append(table, files, commit.summary, snapshot_id=snapshot_id,
                                      properties=commit.properties(snapshot_id) if commit.properties else None)
                fault_point(f"{stage}.before-commit")
                staged.commit()
                fault_point(f"{stage}.after-commit")
                return snapshot_id
            except Exception as exc:
                if not is_transient(exc) or attempt == MAX_ATTEMPTS - 1:
                    raise
                if _sqlite_busy(exc):
                    self._drop_connections()
                backoff(attempt)
        raise AssertionError("unreachable")

    def _drop_connections(self) -> None:
        """Close the catalog's pooled connections after SQLite said "database is locked" at COMMIT.

        That failed COMMIT leaves its transaction open on the pooled connection: the next load through it
        reads the uncommitted row, so the look for our own snapshot took the failed attempt for landed
        (the run reported rows that no snapshot holds, measured with a reader holding the lock for 7 s).
        Fresh connections read only what is committed.
        """
        engine = getattr(self.catalog, "engine", None)
        if engine is not None:
            engine.dispose()

    def existing_keys(self, target: str, key: Iterable[str], time_column: str, days: Iterable[datetime]) -> pa.Table:
        table = self._load(target)
        return table.scan(row_filter=day_filter(time_column, days), selected_fields=tuple(key)).to_arrow()
