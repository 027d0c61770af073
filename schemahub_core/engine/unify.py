"""Raw -> unified, incremental and idempotent: one commit per run, covering every source.

For each mapping into the target, read only the raw rows appended after the raw
snapshot id recorded in the target's newest summary (``schemahub.source.<raw>``,
an Iceberg incremental append scan), apply the mapping, and drop rows whose key
is already in the batch or in the target's affected day partitions (an
anti-join on the key columns only; never a table rewrite). Everything goes in
ONE append whose summary records every source's new snapshot id, so the
multi-source publish is atomic and a rerun starts exactly where it stopped.
``ingest_ts`` is the commit's time (also in the summary as
``schemahub.ingest-ts``). With no new raw snapshot there is no commit at all.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table

from schemahub_core.engine.ingest import RunStats, ensure_tables
from schemahub_core.engine.sink import IcebergSink, Sink, retry_transient
from schemahub_core.engine.state import INGEST_TS, source_key
from schemahub_core.engine.tables import target_def
from schemahub_core.framework.mapping import Mapping, check_mapping
from schemahub_core.framework.registry import Registry
from schemahub_core.framework.targets import Target

MAX_REPLANS = 20


def first_per_key(batch: pa.Table, key: Sequence[str]) -> pa.Table:
    """Keep the first row of each key (vectorized: a group-by on the row index)."""
    if batch.num_rows == 0:
        return batch
    indexed = batch.select(list(key)).append_column("__row", pa.array(range(batch.num_rows), pa.int64()))
    first = indexed.group_by(list(key), use_threads=False).aggregate([("__row", "min")]).column("__row_min")
    return batch.take(first.combine_chunks())


def new_rows(raw: Table, consumed: str | None, to_snapshot_id: int) -> tuple[pa.Table, list[str]]:
    """Rows appended to ``raw`` after snapshot ``consumed`` up to ``to_snapshot_id``, and their files.

    Without a consumed id (first run), or when it was expired from the table's
    history, this reads the whole table at ``to_snapshot_id``: more work, same
    result, because the anti-join drops what is already unified.
    """
    if consumed is not None:
        try:
            scan = raw.incremental_append_scan(from_snapshot_id_exclusive=int(consumed),
                                               to_snapshot_id_inclusive=to_snapshot_id)
            files = [task.file.file_path for task in scan.plan_files()]
            return scan.to_arrow(), files
        except ValueError:
            pass  # consumed snapshot no longer in the lineage (expired): fall back to a full read
    scan = raw.scan(snapshot_id=to_snapshot_id)
    files = [task.file.file_path for task in scan.plan_files()]
    return scan.to_arrow(), files


def _load(catalog: Catalog, namespace: str, name: str) -> Table | None:
    try:
        return retry_transient(lambda: catalog.load_table((namespace, name)))
    except NoSuchTableError:
        return None


def _plan(catalog: Catalog, namespace: str, registry: Registry, target: Target, mappings: Sequence[Mapping],
          progress: dict[str, str], stats: RunStats) -> tuple[pa.Table | None, dict[str, str], dict[str, str | None]]:
    """Map the new raw rows of every source; return (batch or None, new progress, expected progress)."""
    batches, new_progress, expect = [], {}, {}
    for mapping in mappings:
        key = source_key(mapping.raw_table)
        expect[key] = progress.get(key)
        raw = _load(catalog, namespace, mapping.raw_table)
        snapshot = raw.current_snapshot() if raw is not None else None
        if snapshot is None or progress.get(key) == str(snapshot.snapshot_id):
            continue
        data, files = new_rows(raw, progress.get(key), snapshot.snapshot_id)
        stats.fetched += data.num_rows
        stats.scanned_files += files
        batches.append(mapping.apply(data, registry, target.schema))
        new_progress[key] = str(snapshot.snapshot_id)
    if not new_progress:
        return None, {}, expect
    return pa.concat_tables(batches), new_progress, expect


def _drop_known(sink: Sink, target: Target, batch: pa.Table) -> pa.Table:
    """Drop keys repeated in the batch or already in the target's affected day partitions."""
    batch = first_per_key(batch, target.key)
    if batch.num_rows == 0:
        return batch
    days = pc.unique(pc.floor_temporal(batch.column(target.time_column), unit="day")).drop_null().to_pylist()
    existing = sink.existing_keys(target.name, target.key, target.time_column, days)
    if existing.num_rows:
        batch = batch.join(existing.cast(batch.select(list(target.key)).schema), list(target.key),
                           join_type="left anti")
    return batch.select(target.schema.names).cast(target.schema)


def unify(
    catalog: Catalog,
    namespace: str,
    registry: Registry,
    target_name: str,
    mappings: Sequence[Mapping],
    *,
    sink: Sink | None = None,
) -> RunStats:
    """Unify the new raw data of every mapping into ``target_name`` in one commit; see the module doc.

    ``mappings`` are those of this target (``mapping.mappings_for``). They are
    checked before anything is read. If another unify commits first, the plan
    is redone from the new progress.
    """
    target = registry.targets.get(target_name)
    if target is None:
        raise KeyError(f"unknown target {target_name!r} (targets: {', '.join(sorted(registry.targets))})")
    mappings = [m for m in mappings if m.target_table == target_name]
    for mapping in mappings:
        check_mapping(mapping, registry)
    ensure_tables(catalog, namespace, [target_def(target)])
    sink = sink or IcebergSink(catalog, namespace)
    started = time.monotonic()
    stats = RunStats("unify", target_name)
    for _ in range(MAX_REPLANS):
        stats.fetched, stats.scanned_files = 0, []
        progress = sink.progress(target_name)
        batch, new_progress, expect = _plan(catalog, namespace, registry, target, mappings, progress, stats)
        if batch is None:
            break  # nothing new: no snapshot
        before = batch.num_rows
        batch = _drop_known(sink, target, batch)
        now = datetime.now(UTC)
        if target.ingest_column:
            i = batch.schema.get_field_index(target.ingest_column)
            batch = batch.set_column(i, batch.schema.field(i), pa.repeat(pa.scalar(now, batch.schema.field(i).type),
                                                                          batch.num_rows))
        batch = batch.sort_by(target.time_column)
        new_progress[INGEST_TS] = now.isoformat()
        snapshot_id = sink.publish(target_name, batch, new_progress, expect=expect, stage="unify")
        if snapshot_id is not None:
            stats.deduplicated, stats.unified = before - batch.num_rows, batch.num_rows
            stats.commits, stats.snapshot_id = 1, snapshot_id
            break
    else:
        stats.error = f"gave up after {MAX_REPLANS} concurrent unify runs won the commit"
    stats.seconds = round(time.monotonic() - started, 3)
    return stats
