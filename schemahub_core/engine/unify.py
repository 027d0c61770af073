"""Raw -> unified, incremental and idempotent, in bounded memory: one commit per run, covering every source.

For each mapping into the target, read only the raw data files appended after the raw
snapshot id recorded in the target's newest summary (``schemahub.source.<raw>``, an
Iceberg incremental append scan), one Arrow record batch at a time and only the columns
the mapping reads. Each batch is mapped, and rows whose key is already in the run or in
the target's day partition are dropped (an anti-join on the key columns only; never a
table rewrite). Surviving rows are buffered and, whenever the buffer reaches its share of
the memory bound, written as data files that nothing references yet ("staged"). At the
end ONE append adds every staged file, and its summary records every source's new
snapshot id, so the multi-source publish is atomic and a rerun starts exactly where the
last commit stopped. A crash before that commit leaves only unreferenced files (the next
run redoes the work); nothing is split across commits.

The keys a batch is checked against, per UTC day of the target's time column, are the
target's committed keys of that day plus the keys this run staged for it (read back from
the staged files). They are cached per day within a share of the bound and evicted
least-recently used, so memory holds a few days of key columns whatever the backlog;
raw files are read in day order so each day is loaded once.

``memory_mb`` bounds the unify process's peak resident memory (default
``DEFAULT_MEMORY_MB``, setting ``unify_memory_mb``, option ``--memory-mb``), held by
measurement (``engine/memory.py``): the buffer is flushed when one more batch would bring
resident memory plus what the worst flush so far cost per buffered byte past the bound
less a margin; the key cache takes an eighth of the room and gives days up when the room
is gone. The process's floor (Python, Arrow, pyiceberg, the catalog) is about 190 MiB and
unify at its smallest parts (record batches split to 4 MiB of mapped rows) peaks near 260:
a bound below that cannot be met, and the run then stages part by part, slower but just
as exact.
``ingest_ts`` is the run's time (also in the summary as ``schemahub.ingest-ts``). With
no new raw snapshot there is no commit at all.
"""

from __future__ import annotations

import functools
import json
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import ArrowScan, _read_all_delete_files
from pyiceberg.manifest import DataFile
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.metadata import TableMetadata

from schemahub_core.engine.faults import fault_point
from schemahub_core.engine.ingest import RunStats, ensure_tables, quarantine
from schemahub_core.engine.memory import MIB, MemoryGauge
from schemahub_core.engine.raw import Rejected
from schemahub_core.engine.sink import IcebergSink, Sink, retry_transient
from schemahub_core.engine.state import INGEST_TS, source_key
from schemahub_core.engine.tables import QUARANTINE, QUARANTINE_SCHEMA, TableDef, target_def
from schemahub_core.framework.mapping import Mapping, check_mapping
from schemahub_core.framework.registry import Registry
from schemahub_core.framework.targets import Target

MAX_REPLANS = 20
DEFAULT_MEMORY_MB = 1024
KEY_SHARE = 8  # the key cache may use an eighth of the room between the floor and the limit (raw files come in
# day order, so a day is rarely needed again once the next has begun; 1M trades a day are 16-29 MiB of keys)
Day = datetime | None  # a UTC day of the target's time column (None: rows without a time)


def first_per_key(batch: pa.Table, key: Sequence[str]) -> pa.Table:
    """Keep the first row of each key (vectorized: a group-by on the row index)."""
    if batch.num_rows == 0:
        return batch
    indexed = batch.select(list(key)).append_column("__row", pa.array(np.arange(batch.num_rows, dtype=np.int64)))
    first = indexed.group_by(list(key), use_threads=False).aggregate([("__row", "min")]).column("__row_min")
    return batch.take(first.combine_chunks())


def new_files(raw: Table, consumed: str | None, to_snapshot_id: int) -> list[FileScanTask]:
    """The data files appended to ``raw`` after snapshot ``consumed`` up to ``to_snapshot_id``.

    Without a consumed id (first run), or when it was expired from the table's
    history, these are all files of the table at ``to_snapshot_id``: more work, same
    result, because the anti-join drops what is already unified.
    """
    if consumed is not None:
        try:
            return list(raw.incremental_append_scan(from_snapshot_id_exclusive=int(consumed),
                                                    to_snapshot_id_inclusive=to_snapshot_id).plan_files())
        except ValueError:
            pass  # consumed snapshot no longer in the lineage (expired): fall back to a full read
    return list(raw.scan(snapshot_id=to_snapshot_id).plan_files())


def read_batches(raw: Table, task: FileScanTask, columns: Sequence[str]) -> Iterator[pa.RecordBatch]:
    """The record batches of one data file, only ``columns``, read lazily in this thread.

    pyiceberg's own batch reader maps whole files ahead on a thread pool and holds them,
    which is what a bounded unify must avoid.
    """
    yield from read_file_batches(raw.metadata, raw.io, task, columns)


def read_file_batches(metadata: TableMetadata, io: FileIO, task: FileScanTask, columns: Sequence[str],
                      row_filter: BooleanExpression | None = None) -> Iterator[pa.RecordBatch]:
    """``read_batches`` from a table's metadata and file IO alone: what a Spark executor has (no catalog)."""
    scan = ArrowScan(metadata, io, metadata.schema().select(*columns), row_filter or AlwaysTrue())
    yield from scan._record_batches_from_scan_tasks_and_deletes([task], _read_all_delete_files(io, [task]))


def _partition_order(task: FileScanTask) -> tuple[int, str]:
    partition = task.file.partition
    first = partition[0] if len(partition) else None
    return (first if isinstance(first, int) else -1, task.file.file_path)


def load_if_exists(catalog: Catalog, namespace: str, name: str) -> Table | None:
    try:
        return retry_transient(lambda: catalog.load_table((namespace, name)))
    except NoSuchTableError:
        return None


def find_rejects(target: Target, raw: pa.Table, mapped: pa.Table) -> tuple[pa.Table, dict[str | None, list[Rejected]]]:
    """Mapped rows missing a required column (a trade without a price), by symbol; and the rest.

    Pure (no catalog), so the Spark engine runs it on its executors and quarantines on the driver.
    """
    required = [n for n in target.required_columns if n in mapped.column_names]
    if not required or mapped.num_rows == 0:
        return mapped, {}
    missing = [mapped.column(n).is_null() for n in required]
    bad = missing[0] if len(missing) == 1 else functools.reduce(pc.or_, missing)
    if not pc.any(bad).as_py():
        return mapped, {}
    rows = pc.indices_nonzero(bad).to_pylist()
    payloads = raw.column("_raw_payload").to_pylist() if "_raw_payload" in raw.column_names else [None] * raw.num_rows
    native = [c for c in raw.column_names if not c.startswith("_")]
    symbols = mapped.column("symbol").to_pylist() if "symbol" in mapped.column_names else [None] * mapped.num_rows
    by_symbol: dict[str | None, list[Rejected]] = {}
    for i in rows:
        absent = [n for n, m in zip(required, missing, strict=True) if m[i].as_py()]
        payload = payloads[i] or json.dumps(raw.select(native).slice(i, 1).to_pylist()[0], default=str)
        by_symbol.setdefault(symbols[i], []).append(
            Rejected(i, f"{target.name}: required column(s) {', '.join(absent)} missing after mapping", payload))
    return mapped.filter(pc.invert(bad)), by_symbol


def set_aside(catalog: Catalog, namespace: str, mapping: Mapping, rejected: dict[str | None, list[Rejected]],
              now: datetime) -> int:
    """Quarantine rejected rows; how many were new.

    Quarantine dedups by payload, so a unify redone after a crash never sets a row aside twice.
    """
    sink = IcebergSink(catalog, namespace)
    return sum(quarantine(sink, mapping.connector, mapping.stream, symbol or "", rows, now)
               for symbol, rows in rejected.items())


def _set_aside(catalog: Catalog, namespace: str, target: Target, mapping: Mapping, raw: pa.Table,
               mapped: pa.Table) -> tuple[pa.Table, int]:
    """Quarantine mapped rows missing a required column; return the rest and how many were set aside."""
    kept, rejected = find_rejects(target, raw, mapped)
    return kept, set_aside(catalog, namespace, mapping, rejected, datetime.now(UTC)) if rejected else 0


def finish_rows(target: Target, rows: pa.Table, now: datetime) -> pa.Table:
    """New target rows as committed: ``ingest_ts`` is the run's time, rows sorted by the time column."""
    column = target.ingest_column
    if column:
        i = rows.schema.get_field_index(column)
        rows = rows.set_column(i, rows.schema.field(i), pa.repeat(pa.scalar(now, rows.schema.field(i).type),
                                                                  rows.num_rows))
    return rows.sort_by(target.time_column)


class _Writer:
    """Buffers mapped batches; each flush dedups them against known keys and stages the survivors (one part)."""

    def __init__(self, sink: Sink, target: Target, gauge: MemoryGauge, now: datetime) -> None:
        self.sink, self.target, self.now, self.gauge = sink, target, now, gauge
        self.key = list(target.key)
        self.key_schema = pa.schema([target.schema.field(k) for k in self.key])
        self.staging = all(hasattr(sink, m) for m in ("stage", "staged_keys", "publish_staged"))
        self.key_bytes = max(0, gauge.limit - gauge.start) // KEY_SHARE
        self.known: OrderedDict[Day, pa.Table] = OrderedDict()
        self.staged: dict[Day, list[DataFile]] = {}
        self.buffer: list[pa.Table] = []
        self.buffered = 0
        self.unified = 0
        self.parts: list[pa.Table] = []  # a sink that cannot stage: published as one batch at the end

    def _known(self, day: Day) -> pa.Table:
        """Keys of ``day`` committed in the target or staged by this run (cached, least recently used out)."""
        if day in self.known:
            self.known.move_to_end(day)
            return self.known[day]
        parts = [self.key_schema.empty_table()]
        if day is not None:
            parts.append(self.sink.existing_keys(self.target.name, self.key, self.target.time_column, [day]))
        if self.staged.get(day):
            parts.append(self.sink.staged_keys(self.target.name, self.staged[day], self.key))  # type: ignore[attr-defined]
        keys = pa.concat_tables([p.select(self.key).cast(self.key_schema) for p in parts])
        if self.staging:  # every cached key is in the target or a staged file, so it can be read back later
            used = sum(t.nbytes for t in self.known.values())
            while self.known and (used + keys.nbytes > self.key_bytes or self.gauge.room() < keys.nbytes):
                used -= self.known.popitem(last=False)[1].nbytes
        self.known[day] = keys
        return keys

    def add(self, mapped: pa.Table) -> None:
        if mapped.num_rows == 0:  # every row of the batch was set aside (or none was mapped): nothing to buffer
            return
        rows = self.gauge.rows_per_part(mapped.nbytes, mapped.num_rows) if self.staging else mapped.num_rows
        for start in range(0, mapped.num_rows, rows):
            part = mapped.slice(start, rows)
            self.buffer.append(part)
            self.buffered += part.nbytes
            if self.gauge.due(self.buffered + part.nbytes):  # one more part like this one would not fit
                self.flush()

    def flush(self) -> None:
        """Dedup the buffer day by day and stage the new rows as data files: one part, invisible until commit."""
        if not self.buffer:
            return
        self.gauge.before_flush(self.buffered)
        batch = pa.concat_tables(self.buffer)
        self.buffer, self.buffered = [], 0
        days = pc.floor_temporal(batch.column(self.target.time_column), unit="day")
        rows = batch.slice(0, 0)
        for day in sorted(pc.unique(days).to_pylist(), key=lambda d: (d is not None, d)):
            mask = pc.is_null(days) if day is None else pc.equal(days, pa.scalar(day, days.type))
            rows = first_per_key(batch.filter(mask), self.key)
            known = self._known(day)
            if known.num_rows:
                rows = known.join(rows, self.key, join_type="right anti").select(self.target.schema.names)
            if rows.num_rows == 0:
                continue
            # the join drops the columns' nullability
            rows = finish_rows(self.target, rows.cast(self.target.schema), self.now)
            self.unified += rows.num_rows
            if self.staging:
                self.staged.setdefault(day, []).extend(self.sink.stage(self.target.name, rows))  # type: ignore[attr-defined]
            else:
                self.parts.append(rows)
            self.known[day] = pa.concat_tables([known, rows.select(self.key).cast(self.key_schema)])
        del batch, days, rows  # freed before the gauge hands memory back to the OS
        self.gauge.after_flush()
        if self.staging:
            fault_point("unify.staged")

    def publish(self, progress: dict[str, str], expect: dict[str, str | None]) -> int | None:
        self.flush()
        if self.staging:
            files = [f for day in self.staged.values() for f in day]
            return self.sink.publish_staged(self.target.name, files, progress,  # type: ignore[attr-defined]
                                            expect=expect, stage="unify")
        batch = pa.concat_tables(self.parts) if self.parts else self.target.schema.empty_table()
        return self.sink.publish(self.target.name, batch, progress, expect=expect, stage="unify")


@dataclass
class Plan:
    """What one unify attempt reads: per source, the progress it expects and the raw files after it."""

    expect: dict[str, str | None] = field(default_factory=dict)  # source key -> the consumed snapshot id
    progress: dict[str, str] = field(default_factory=dict)  # source key -> the raw snapshot id read up to
    work: list[tuple[Mapping, Table, FileScanTask]] = field(default_factory=list)  # in day order


def plan_sources(catalog: Catalog, namespace: str, mappings: Sequence[Mapping], progress: dict[str, str]) -> Plan:
    """The raw files each mapping has not unified yet, given the target's ``progress`` (both engines use it)."""
    plan = Plan()
    work: list[tuple[tuple[int, str], int, Mapping, Table, FileScanTask]] = []
    for n, mapping in enumerate(mappings):
        key = source_key(mapping.raw_table)
        plan.expect[key] = progress.get(key)
        raw = load_if_exists(catalog, namespace, mapping.raw_table)
        snapshot = raw.current_snapshot() if raw is not None else None
        if raw is None or snapshot is None or progress.get(key) == str(snapshot.snapshot_id):
            continue
        plan.progress[key] = str(snapshot.snapshot_id)
        for task in new_files(raw, progress.get(key), snapshot.snapshot_id):
            work.append((_partition_order(task), n, mapping, raw, task))
    # day order: each day's keys load once
    plan.work = [(mapping, raw, task) for _, _, mapping, raw, task in sorted(work, key=lambda w: (w[0], w[1]))]
    return plan


def _attempt(catalog: Catalog, namespace: str, registry: Registry, target: Target, mappings: Sequence[Mapping],
             sink: Sink, gauge: MemoryGauge, stats: RunStats) -> bool:
    """One plan-read-stage-commit pass; False if another unify moved the progress first."""
    plan = plan_sources(catalog, namespace, mappings, sink.progress(target.name))
    expect, new_progress = plan.expect, plan.progress
    stats.fetched, stats.scanned_files, stats.quarantined = 0, [w[2].file.file_path for w in plan.work], 0
    if not new_progress:
        return True  # nothing new: no snapshot
    now = datetime.now(UTC)
    writer = _Writer(sink, target, gauge, now)
    for mapping, raw, task in plan.work:
        for batch in read_batches(raw, task, list(mapping.columns)):
            stats.fetched += batch.num_rows
            raw_rows = pa.Table.from_batches([batch])
            mapped, aside = _set_aside(catalog, namespace, target, mapping, raw_rows,
                                           mapping.apply(raw_rows, registry, target.schema))
            stats.quarantined += aside
            writer.add(mapped)
    new_progress[INGEST_TS] = now.isoformat()
    snapshot_id = writer.publish(new_progress, expect)
    if snapshot_id is None:
        return False
    stats.unified, stats.deduplicated = writer.unified, stats.fetched - writer.unified - stats.quarantined
    stats.commits, stats.snapshot_id = 1, snapshot_id
    return True


def unify(
    catalog: Catalog,
    namespace: str,
    registry: Registry,
    target_name: str,
    mappings: Sequence[Mapping],
    *,
    sink: Sink | None = None,
    memory_mb: int = DEFAULT_MEMORY_MB,
) -> RunStats:
    """Unify the new raw data of every mapping into ``target_name`` in one commit; see the module doc.

    ``mappings`` are those of this target (``mapping.mappings_for``). They are
    checked before anything is read. If another unify commits first, the plan
    is redone from the new progress.
    """
    target = registry.targets.get(target_name)
    if target is None:
        raise KeyError(f"unknown target {target_name!r} (targets: {', '.join(sorted(registry.targets))})")
    if memory_mb <= 0:
        raise ValueError(f"unify memory bound must be positive, got {memory_mb} MiB")
    mappings = [m for m in mappings if m.target_table == target_name]
    for mapping in mappings:
        check_mapping(mapping, registry)
    ensure_tables(catalog, namespace, [target_def(target), TableDef(QUARANTINE, QUARANTINE_SCHEMA, None)])
    sink = sink or IcebergSink(catalog, namespace)
    started = time.monotonic()
    stats = RunStats("unify", target_name)
    gauge = MemoryGauge(memory_mb * MIB)
    for _ in range(MAX_REPLANS):
        if _attempt(catalog, namespace, registry, target, mappings, sink, gauge, stats):
            break
    else:
        stats.error = f"gave up after {MAX_REPLANS} concurrent unify runs won the commit"
    stats.seconds = round(time.monotonic() - started, 3)
    return stats
