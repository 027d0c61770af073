"""Unify on Apache Spark: the same mappings on the executors, the same exactly-once publish on the driver.

``schemahub run unify --engine spark`` is the embedded unify (``engine/unify.py``) with its middle
distributed; its two ends are the embedded engine's own code:

1. **Plan (driver, shared).** ``plan_sources`` reads the target's progress and lists, per source, the raw
   data files appended after the consumed snapshot: the very range the embedded engine would read.
2. **Read and map (executors).** Each Spark task reads some of those files with the embedded reader
   (``read_file_batches``: pyiceberg's Arrow scan, only the mapped columns, record batch by record batch)
   and runs ``Mapping.apply`` and ``find_rejects`` on them inside ``DataFrame.mapInArrow``. The
   ``Mapping`` objects and the registry's transforms are pickled to the executors: there is no second
   mapping implementation. Rows missing a required column go back to the driver, which quarantines them
   exactly as embedded unify does.
3. **Dedup (Spark).** Rows are deduplicated on the target key within the run (``dropDuplicates``), then
   ``left_anti``-joined against the keys already in the target's affected day partitions. Those keys are
   read by executors from the target's files of those days at the snapshot the progress was read from
   (pruned by pyiceberg's planning; key and time columns only, never a table rewrite). As in the embedded
   engine, a key is checked against its own UTC day of the time column.
4. **Write (executors).** Each task writes its surviving rows as Parquet data files of the target with the
   engine's own writer (pyiceberg's, which ``IcebergSink.stage`` uses too: the target's field ids,
   partitioning and file naming, in its data location) and returns the ``DataFile`` entries. Nothing
   references these files yet.
5. **Commit (driver, shared).** ``IcebergSink.publish_staged``: ONE fast append of every file, its
   summary carrying each source's new snapshot id, committed only if the progress still holds the values
   this plan started from. A concurrent unify that moved it first makes the commit refused; the run then
   plans again from the new progress (up to ``MAX_REPLANS``), as the embedded engine does.

Why executors write with pyiceberg's writer rather than ``df.write`` plus pyiceberg ``add_files``: in
pyiceberg 0.12 ``add_files`` refuses Parquet files that carry field ids and imports files without them
through a name mapping it adds to the table; Spark's Parquet writer writes no field ids, INT96 timestamps
by default and optional columns for the target's required ones. Files from pyiceberg's writer are exactly
what embedded unify stages, so one table never holds two kinds of files, and the driver commits them on
the same path. Why not a Spark (Iceberg runtime) commit with snapshot properties: its commit cannot be
made conditional on the progress, and a check after it would leave a window in which two runs both land.

A crash anywhere before the commit leaves only unreferenced files (the rerun redoes the work; orphan
cleanup removes them); a crash after it is seen by the rerun as progress already moved. A Spark task
retried after an executor loss rewrites its files under new names; only the files of the tasks whose
results the driver collected are committed.

Dedup within a run keeps one row per key and day, as the embedded engine does; which of several rows
with the same key Spark keeps is not fixed, while embedded keeps the first read. They are the same trade
read twice (the reason dedup exists), so the target's rows are the same.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import _dataframe_to_data_files
from pyiceberg.manifest import DataFile
from pyiceberg.table import FileScanTask
from pyiceberg.table.metadata import TableMetadata

from schemahub_core.engine.faults import fault_point
from schemahub_core.engine.ingest import RunStats, ensure_tables
from schemahub_core.engine.raw import Rejected
from schemahub_core.engine.sink import IcebergSink, Sink, day_filter, progress_of
from schemahub_core.engine.state import INGEST_TS
from schemahub_core.engine.tables import QUARANTINE, QUARANTINE_SCHEMA, TableDef, target_def
from schemahub_core.engine.unify import (
    MAX_REPLANS,
    find_rejects,
    finish_rows,
    load_if_exists,
    plan_sources,
    read_file_batches,
    set_aside,
)
from schemahub_core.framework.mapping import Mapping, check_mapping
from schemahub_core.framework.registry import Registry
from schemahub_core.framework.targets import Target

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

DAY, MAPPING, REASON, PAYLOAD = "__day", "__mapping", "__reason", "__payload"
WRITE_ROWS = 1_000_000  # rows an executor task buffers before writing them as data files (~100 MB of trades)
TASKS_PER_CORE = 4  # raw files are spread over this many read tasks per core, to even out their sizes

ArrowFn = Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]


def _nullable(schema: pa.Schema) -> pa.Schema:
    """Spark must not be told a column is non-null when rejected rows carry nulls in it."""
    return pa.schema([f.with_nullable(True) for f in schema])


def _mapped_schema(target: Target) -> pa.Schema:
    return _nullable(target.schema).append(pa.field(DAY, pa.date32())).append(pa.field(MAPPING, pa.int32())) \
        .append(pa.field(REASON, pa.string())).append(pa.field(PAYLOAD, pa.string()))


def _day(target: Target, rows: pa.Table) -> pa.Array:
    """The UTC day of the time column, as the embedded engine buckets its dedup (``floor_temporal``)."""
    return pc.cast(pc.floor_temporal(rows.column(target.time_column), unit="day"), pa.date32())


def _mapper(work: list[tuple[int, TableMetadata, FileIO, FileScanTask]], mappings: Sequence[Mapping],
            registry: Registry, target: Target) -> ArrowFn:
    """Executor code: read raw files ``work[i]`` for each ``i`` it is given, map them, flag the rejects."""
    schema = _mapped_schema(target)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for ids in batches:
            for i in ids.column(0).to_pylist():
                n, metadata, io, task = work[i]
                mapping = mappings[n]
                for batch in read_file_batches(metadata, io, task, list(mapping.columns)):
                    raw = pa.Table.from_batches([batch])
                    kept, rejected = find_rejects(target, raw, mapping.apply(raw, registry, target.schema))
                    out = kept.cast(_nullable(target.schema))
                    out = out.append_column(DAY, _day(target, out)) \
                        .append_column(MAPPING, pa.repeat(pa.scalar(n, pa.int32()), out.num_rows)) \
                        .append_column(REASON, pa.nulls(out.num_rows, pa.string())) \
                        .append_column(PAYLOAD, pa.nulls(out.num_rows, pa.string()))
                    yield from out.cast(schema).to_batches()
                    for symbol, rows in rejected.items():
                        yield _rejects(schema, n, symbol, rows)
    return run


def _rejects(schema: pa.Schema, n: int, symbol: str | None, rows: list[Rejected]) -> pa.RecordBatch:
    """Rejected rows for the driver to quarantine: only mapping, symbol, reason and payload are set."""
    arrays = {f.name: pa.nulls(len(rows), f.type) for f in schema}
    if "symbol" in arrays:
        arrays["symbol"] = pa.array([symbol] * len(rows), schema.field("symbol").type)
    arrays[MAPPING] = pa.array([n] * len(rows), pa.int32())
    arrays[REASON] = pa.array([r.reason for r in rows], pa.string())
    arrays[PAYLOAD] = pa.array([r.payload for r in rows], pa.string())
    return pa.record_batch(list(arrays.values()), schema=schema)


def _key_reader(work: list[FileScanTask], metadata: TableMetadata, io: FileIO, target: Target,
                days: list[date]) -> ArrowFn:
    """Executor code: the key columns (and day) of the target's rows on ``days``, from files ``work[i]``."""
    columns = [*target.key, target.time_column]
    row_filter = day_filter(target.time_column, [datetime(d.year, d.month, d.day, tzinfo=UTC) for d in days])
    schema = _nullable(pa.schema([target.schema.field(k) for k in target.key])).append(pa.field(DAY, pa.date32()))

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for ids in batches:
            for i in ids.column(0).to_pylist():
                for batch in read_file_batches(metadata, io, work[i], columns, row_filter):
                    rows = pa.Table.from_batches([batch])
                    keys = rows.select(list(target.key)).append_column(DAY, _day(target, rows))
                    yield from keys.cast(schema).to_batches()
    return run


def _writer(metadata: TableMetadata, io: FileIO, target: Target, now: datetime) -> ArrowFn:
    """Executor code: write the rows given as data files of the target (the engine's writer); their entries."""
    def write(parts: list[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        rows = finish_rows(target, pa.Table.from_batches(parts).select(target.schema.names).cast(target.schema), now)
        files = list(_dataframe_to_data_files(table_metadata=metadata, df=rows, io=io))
        fault_point("spark.task")
        yield pa.record_batch({"file": pa.array([pickle.dumps(f) for f in files], pa.binary()),
                               "rows": pa.array([f.record_count for f in files], pa.int64())})

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        parts: list[pa.RecordBatch] = []
        buffered = 0
        for batch in batches:
            if batch.num_rows:
                parts.append(batch)
                buffered += batch.num_rows
            if buffered >= WRITE_ROWS:
                yield from write(parts)
                parts, buffered = [], 0
        if parts:
            yield from write(parts)
    return run


def _spark_schema(schema: pa.Schema) -> Any:
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def _ids(spark: SparkSession, count: int) -> DataFrame:
    """``0 .. count-1`` spread over read tasks: the work items the executors pick up."""
    cores = max(1, spark.sparkContext.defaultParallelism)
    return spark.range(count, numPartitions=max(1, min(count, cores * TASKS_PER_CORE)))


def _day_ranges(days: list[date]) -> list[tuple[date, date]]:
    """Consecutive days merged into [first, last] ranges (few, usually one: a short filter)."""
    ranges: list[tuple[date, date]] = []
    for day in sorted(days):
        if ranges and day == ranges[-1][1] + timedelta(days=1):
            ranges[-1] = (ranges[-1][0], day)
        else:
            ranges.append((day, day))
    return ranges


def _attempt(session: Callable[[], SparkSession], catalog: Catalog, namespace: str, registry: Registry, target: Target,
             mappings: Sequence[Mapping], sink: Sink, stats: RunStats) -> bool:
    """One plan / map / dedup / write / commit pass on Spark; False if another unify moved the progress first."""
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    table = load_if_exists(catalog, namespace, target.name)
    assert table is not None  # ensure_tables made it
    plan = plan_sources(catalog, namespace, mappings, progress_of(table))
    stats.fetched, stats.scanned_files, stats.quarantined = 0, [w[2].file.file_path for w in plan.work], 0
    if not plan.progress:
        return True  # nothing new: no snapshot
    spark = session()  # only now: a run with nothing new starts no JVM
    now = datetime.now(UTC)
    index = {id(m): n for n, m in enumerate(mappings)}
    work = [(index[id(mapping)], raw.metadata, raw.io, task) for mapping, raw, task in plan.work]
    mapped = _ids(spark, len(work)).mapInArrow(_mapper(work, mappings, registry, target),
                                               _spark_schema(_mapped_schema(target)))
    mapped = mapped.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        per_day = mapped.groupBy(DAY).agg(F.count(F.lit(1)).alias("n"), F.count(REASON).alias("bad")).collect()
        stats.fetched = sum(r["n"] for r in per_day)  # every raw row read maps to one row, kept or rejected
        fault_point("spark.mapped")
        if sum(r["bad"] for r in per_day):
            rejected: dict[int, dict[str | None, list[Rejected]]] = {}
            symbol = F.col("symbol") if "symbol" in target.schema.names else F.lit(None).cast("string")
            for r in mapped.where(F.col(REASON).isNotNull()).select(MAPPING, symbol.alias("s"), REASON, PAYLOAD) \
                    .collect():
                rows = rejected.setdefault(r[MAPPING], {}).setdefault(r["s"], [])
                rows.append(Rejected(len(rows), r[REASON], r[PAYLOAD]))
            for n, by_symbol in sorted(rejected.items()):
                stats.quarantined += set_aside(catalog, namespace, mappings[n], by_symbol, now)
        key = [*target.key, DAY]
        rows = mapped.where(F.col(REASON).isNull()).drop(MAPPING, REASON, PAYLOAD).dropDuplicates(key)
        days = [r[DAY] for r in per_day if r[DAY] is not None and r["n"] > r["bad"]]
        if days and table.current_snapshot() is not None:
            # the target's files of the affected days, at the snapshot the progress was read from
            snapshot_id = table.current_snapshot().snapshot_id
            tasks: list[FileScanTask] = []
            for first, last in _day_ranges(days):
                span = [datetime(first.year, first.month, first.day, tzinfo=UTC) + timedelta(days=k)
                        for k in range((last - first).days + 1)]
                tasks += table.scan(snapshot_id=snapshot_id, row_filter=day_filter(target.time_column, span),
                                    selected_fields=(*target.key, target.time_column)).plan_files()
            if tasks:
                key_schema = _nullable(pa.schema([target.schema.field(k) for k in target.key])) \
                    .append(pa.field(DAY, pa.date32()))
                known = _ids(spark, len(tasks)).mapInArrow(
                    _key_reader(tasks, table.metadata, table.io, target, days), _spark_schema(key_schema))
                rows = rows.join(known, key, "left_anti")
        written = rows.sortWithinPartitions(DAY, target.time_column) \
            .mapInArrow(_writer(table.metadata, table.io, target, now), "file binary, rows long").collect()
    finally:
        mapped.unpersist()
    files: list[DataFile] = [pickle.loads(r["file"]) for r in written]
    fault_point("unify.staged")
    snapshot = sink.publish_staged(target.name, files, {**plan.progress, INGEST_TS: now.isoformat()},  # type: ignore[attr-defined]
                                   expect=plan.expect, stage="unify")
    if snapshot is None:
        return False
    stats.unified = sum(r["rows"] for r in written)
    stats.deduplicated = stats.fetched - stats.unified - stats.quarantined
    stats.commits, stats.snapshot_id = 1, snapshot
    return True


def _is_spark_failure(exc: BaseException) -> bool:
    """A failed Spark job (lost executor, task error): the run stops, a rerun redoes it."""
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    return isinstance(exc, (Py4JError, PySparkException))


def _first_line(exc: BaseException) -> str:
    """The cause of a Spark failure in one line: Spark's own exception message, not py4j's call site."""
    lines = [line.strip().lstrip(": ") for line in str(exc).splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("org.apache.spark.", "pyspark.errors")) or "Error:" in line:
            return line[:300]
    return (lines or [type(exc).__name__])[0][:300]


def spark_unify(
    spark: SparkSession | Callable[[], SparkSession],
    catalog: Catalog,
    namespace: str,
    registry: Registry,
    target_name: str,
    mappings: Sequence[Mapping],
    *,
    sink: Sink | None = None,
) -> RunStats:
    """Unify the new raw data of every mapping into ``target_name`` on ``spark``, in one commit; see the module doc.

    The checks and the result are those of ``unify.unify``; memory is Spark's to bound (executor memory).
    ``spark`` may be a function that builds the session: it is called only when there is new raw data.
    """
    import time

    target = registry.targets.get(target_name)
    if target is None:
        raise KeyError(f"unknown target {target_name!r} (targets: {', '.join(sorted(registry.targets))})")
    mappings = [m for m in mappings if m.target_table == target_name]
    for mapping in mappings:
        check_mapping(mapping, registry)
    sink = sink or IcebergSink(catalog, namespace)
    if not all(hasattr(sink, m) for m in ("publish_staged", "progress")):
        raise ValueError(f"the Spark engine commits data files; sink {type(sink).__name__} cannot stage them "
                         "(use the iceberg sink, or --engine embedded)")
    ensure_tables(catalog, namespace, [target_def(target), TableDef(QUARANTINE, QUARANTINE_SCHEMA, None)])
    started = time.monotonic()
    stats = RunStats("unify", target_name)
    session = spark if callable(spark) else lambda: spark
    try:
        for _ in range(MAX_REPLANS):
            if _attempt(session, catalog, namespace, registry, target, mappings, sink, stats):
                break
        else:
            stats.error = f"gave up after {MAX_REPLANS} concurrent unify runs won the commit"
    except Exception as exc:
        if not _is_spark_failure(exc):
            raise
        stats.error = f"the Spark job failed, nothing was committed ({_first_line(exc)})"
        stats.commits = 0
    stats.seconds = round(time.monotonic() - started, 3)
    return stats
