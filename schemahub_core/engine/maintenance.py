"""Table maintenance: compact small files and expire old snapshots, without losing the engine's place.

Every engine commit adds a snapshot, a manifest and a small data file; left alone, commit and scan
time grow with history. ``maintain`` rewrites each partition's small files into one and expires
snapshots older than a cutoff, but it never expires a snapshot the engine still needs:

- the snapshot each ``schemahub.index.<stream>.<symbol>`` table property points at: it carries that
  symbol's coverage (ingest plans from it; ``schemahub_watermarks`` points at it);
- the newest snapshot carrying any ``schemahub.*`` progress, and every snapshot above it (the
  engine walks the ancestry from the current snapshot down to it);
- on a raw table, the snapshot recorded by a unified table's ``schemahub.source.<raw>`` entry and
  every snapshot after it: unify's incremental append scan walks that whole lineage.

A compaction commit carries the table's ``schemahub.*`` progress forward unchanged and is an
``overwrite`` snapshot, which incremental append scans skip: unify never sees compacted rows as new.
Commits race with the engine safely: the tables allow no silent pyiceberg retry, so a conflicting
expiry is planned again from the fresh table, and a compaction (files rewritten once) retries only its
commit on top of the newer engine commits, carrying the progress it finds there.

``backfill`` is the same rewrite with a change: a column added to a raw table after rows landed
(``schema propose``) is filled from each row's ``_raw_payload`` in exactly the files where that fills a
null, swapped for their rewrites in one overwrite commit (``backfill.before-commit`` / ``-after-commit``
are its fault points). Rows are neither lost nor doubled (the commit deletes the files it rewrote, and
fails if another rewrite removed one first), and a rerun finds nothing left to fill.
"""

from __future__ import annotations

import itertools
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    CommitStateUnknownException,
    NoSuchNamespaceError,
    ValidationException,
)
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot, ancestors_of
from pyiceberg.table.update import AssertTableUUID, RemoveSnapshotsUpdate

from schemahub_core.engine.coverage import index_snapshots
from schemahub_core.engine.faults import fault_point
from schemahub_core.engine.raw import payload_column
from schemahub_core.engine.sink import PROGRESS_PREFIX, progress_of
from schemahub_core.engine.state import SOURCE
from schemahub_core.framework.connector import Column
from schemahub_core.framework.transforms import Transform

# marks maintenance snapshots; deliberately outside PROGRESS_PREFIX so the engine never carries it
MARKER = "schemahub-maintenance"
SMALL_FILE_BYTES = 32 * 1024 * 1024
ATTEMPTS = 5
COMMIT_ATTEMPTS = 50
RETAIN_SNAPSHOTS = 20  # the engine keeps its newest snapshots for time travel, expiring the rest


@dataclass
class TableReport:
    """What ``maintain`` did to one table."""

    table: str
    snapshots_before: int = 0
    snapshots_expired: int = 0
    snapshots_kept_for_engine: int = 0  # older than the cutoff, kept because the engine needs them
    files_before: int = 0
    files_after: int = 0
    partitions_compacted: int = 0
    error: str | None = None
    kept_snapshot_ids: list[int] = field(default_factory=list)
    orphan_files_removed: int | None = None  # None: not attempted (only ``--engine spark`` removes orphans)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _props(snapshot: Snapshot) -> dict[str, str]:
    return dict(snapshot.summary.additional_properties) if snapshot.summary else {}


def source_references(tables: Iterable[Table]) -> dict[str, set[int]]:
    """Raw table name -> the raw snapshot ids unified tables' newest progress says they consumed."""
    refs: dict[str, set[int]] = defaultdict(set)
    for table in tables:
        for key, value in progress_of(table).items():
            if key.startswith(SOURCE):
                refs[key[len(SOURCE):]].add(int(value))
    return refs


def needed_snapshots(table: Table, consumed: Iterable[int] = ()) -> set[int]:
    """Snapshot ids of ``table`` that expiry must keep (see the module docstring)."""
    lineage = list(ancestors_of(table.current_snapshot(), table.metadata))  # newest first
    keep: set[int] = {lineage[0].snapshot_id} if lineage else set()
    # the chain from the current snapshot down to the newest one carrying progress (if any does)
    carriers = [i for i, s in enumerate(lineage) if any(k.startswith(PROGRESS_PREFIX) for k in _props(s))]
    if carriers:
        keep.update(s.snapshot_id for s in lineage[: carriers[0] + 1])
    # each symbol's coverage: the snapshot the index points at
    keep |= index_snapshots(table)
    # unify's incremental scans: from each consumed snapshot (inclusive) up to the current one
    for snapshot_id in consumed:
        for snapshot in lineage:
            keep.add(snapshot.snapshot_id)
            if snapshot.snapshot_id == snapshot_id:
                break
    return keep


def trim(catalog: Catalog, namespace: str, name: str, retain: int = RETAIN_SNAPSHOTS) -> int:
    """Expire the engine's old snapshots of one table, keeping the newest ``retain`` and all it needs.

    Run by the engine itself every few commits, so metadata.json and commit time stay flat however long
    ingest runs, with nobody running ``maintain``. Best effort: a concurrent commit makes it give up
    until next time. Returns how many snapshots it expired.
    """
    table = catalog.load_table((namespace, name))
    snapshots = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms)
    if len(snapshots) <= 2 * retain:
        return 0
    others = [catalog.load_table(i) for i in catalog.list_tables(namespace) if i[-1] != name]
    keep = needed_snapshots(table, source_references(others).get(name, set()))
    keep |= {s.snapshot_id for s in snapshots[-retain:]}
    keep |= {ref.snapshot_id for ref in table.metadata.refs.values()}  # branch and tag heads, as pyiceberg keeps
    doomed = [s.snapshot_id for s in snapshots if s.snapshot_id not in keep]
    if not doomed:
        return 0
    try:  # what ``expire_snapshots().by_ids(doomed).commit()`` commits, without its metadata copy per id
        table._do_commit(updates=(RemoveSnapshotsUpdate(snapshot_ids=doomed),),  # noqa: SLF001
                         requirements=(AssertTableUUID(uuid=table.metadata.table_uuid),))
    except (CommitFailedException, CommitStateUnknownException):
        return 0
    return len(doomed)


def _partition_groups(table: Table, small_file_bytes: int) -> list[list[Any]]:
    """Scan tasks worth rewriting, grouped by partition: 2+ small files, or files written under an older spec.

    A rewrite writes with the table's current spec, so after partition evolution (``partitions suggest --apply``)
    compaction also moves old files into the new layout.
    """
    groups: dict[tuple[int, Any], list[Any]] = defaultdict(list)
    current = table.spec().spec_id
    for task in table.scan().plan_files():
        if task.delete_files or (task.file.file_size_in_bytes >= small_file_bytes and task.file.spec_id == current):
            continue
        groups[(task.file.spec_id, task.file.partition)].append(task)
    return [tasks for (spec_id, _), tasks in groups.items() if len(tasks) > 1 or spec_id != current]


def _rewrite(table: Table, groups: list[list[Any]], commit_uuid: uuid.UUID,
             change: Callable[[pa.Table], pa.Table] | None = None) -> tuple[list[Any], list[Any]]:
    """Read each group, apply ``change``, write it back as few files; (files to delete, files to add).

    Nothing is committed here; a rewrite that would change the row count raises instead.
    """
    metadata = table.metadata
    deletes, adds = [], []
    # one counter for the whole rewrite: file names are <counter>-<uuid>, so two groups writing into the same
    # partition directory (files of one partition, or an old spec's and the current spec's) never collide
    counter = itertools.count(0)
    for tasks in groups:
        data = ArrowScan(metadata, table.io, metadata.schema(), AlwaysTrue()).to_table(tasks)
        if change is not None:
            data = change(data)
        written = list(_dataframe_to_data_files(metadata, data, table.io, write_uuid=commit_uuid, counter=counter))
        rows_in = sum(task.file.record_count for task in tasks)
        rows_out = sum(f.record_count for f in written)
        if not rows_in == data.num_rows == rows_out:  # never commit a rewrite that changes the data
            raise RuntimeError(f"rewrite of {table.name()} read {data.num_rows} of {rows_in} rows and "
                               f"wrote {rows_out}; nothing committed")
        deletes += [task.file for task in tasks]
        adds += written
    return deletes, adds


def _commit_rewrite(catalog: Catalog, identifier: tuple[str, str], deletes: list[Any], adds: list[Any],
                    commit_uuid: uuid.UUID, marker: str, attempts: int) -> int | None:
    """Swap ``deletes`` for ``adds`` in one overwrite carrying the table's progress; the snapshot id, or None when
    another rewrite removed one of those files first.

    Only this cheap commit is retried when an engine commit lands first, so a busy table cannot starve a
    rewrite. Appends never touch the files being replaced, so the swap stays valid on top of them; each
    attempt carries the progress read from the table it commits onto, never an older one.
    """
    for attempt in range(attempts):
        table = catalog.load_table(identifier)
        tx = table.transaction()
        props = {**progress_of(table), MARKER: marker}
        try:
            with tx.update_snapshot(snapshot_properties=props).overwrite(commit_uuid) as rewrite:
                for data_file in deletes:
                    rewrite.delete_data_file(data_file)
                for data_file in adds:
                    rewrite.append_data_file(data_file)
            fault_point(f"{marker}.before-commit")
            committed = tx.commit_transaction()
            fault_point(f"{marker}.after-commit")
            snapshot = committed.current_snapshot()
            return snapshot.snapshot_id if snapshot is not None else None
        except ValidationException:
            return None  # some of those files are gone: another maintenance run rewrote them
        except (CommitFailedException, CommitStateUnknownException):
            if attempt == attempts - 1:
                raise
            time.sleep(random.uniform(0.01, 0.05 * (attempt + 1)))
    return None


def compact(catalog: Catalog, identifier: tuple[str, str], small_file_bytes: int = SMALL_FILE_BYTES,
            attempts: int = COMMIT_ATTEMPTS) -> int:
    """Rewrite each partition's small files into as few files as the target size allows; one commit.

    The expensive part (read, write) runs once; only the commit is retried (``_commit_rewrite``).
    Returns the number of partitions rewritten (0 if another compaction replaced those files first).
    """
    table = catalog.load_table(identifier)
    groups = _partition_groups(table, small_file_bytes)
    if not groups:
        return 0
    commit_uuid = uuid.uuid4()
    deletes, adds = _rewrite(table, groups, commit_uuid)
    if _commit_rewrite(catalog, identifier, deletes, adds, commit_uuid, "compact", attempts) is None:
        return 0
    return len(groups)


PAYLOAD = "_raw_payload"


@dataclass
class BackfillReport:
    """What ``backfill`` did to one column of one raw table."""

    table: str
    column: str
    files_checked: int = 0  # files with a null in the column (or written before it existed)
    files_rewritten: int = 0
    rows_rewritten: int = 0
    rows_filled: int = 0  # nulls that the payload filled
    snapshot_id: int | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def backfill(catalog: Catalog, identifier: tuple[str, str], column: Column, transforms: Mapping[str, Transform],
             attempts: int = COMMIT_ATTEMPTS) -> BackfillReport:
    """Fill ``column`` of a raw table from ``_raw_payload`` where it is null; rewrite exactly those files.

    Files whose statistics show no null in the column are not read; the others are probed on two columns
    (the column and the payload), and only those where the payload fills a null are rewritten, whole, in
    one overwrite commit (see the module docstring). A payload without the field leaves the null.
    """
    table = catalog.load_table(identifier)
    schema = table.schema()
    report = BackfillReport(identifier[1], column.name)
    field_id = schema.find_field(column.name).field_id
    probe = schema.select(column.name, PAYLOAD)

    def fill(data: pa.Table) -> pa.Table:
        i = data.schema.get_field_index(column.name)
        parsed = payload_column(data.column(PAYLOAD), column, transforms)
        filled = pc.coalesce(data.column(i).combine_chunks(), parsed.cast(data.schema.field(i).type))
        return data.set_column(i, data.schema.field(i), filled)

    groups = []
    for task in table.scan().plan_files() if table.current_snapshot() else []:
        f = task.file
        nulls = (f.null_value_counts or {}).get(field_id, 0) if field_id in (f.value_counts or {}) \
            else f.record_count
        if task.delete_files or not nulls:
            continue
        report.files_checked += 1
        data = ArrowScan(table.metadata, table.io, probe, AlwaysTrue()).to_table([task])
        gained = data.column(column.name).null_count - fill(data).column(column.name).null_count
        if gained > 0:
            groups.append([task])
            report.rows_filled += gained
            report.rows_rewritten += f.record_count
    if not groups:
        return report
    commit_uuid = uuid.uuid4()
    deletes, adds = _rewrite(table, groups, commit_uuid, fill)
    report.snapshot_id = _commit_rewrite(catalog, identifier, deletes, adds, commit_uuid, "backfill", attempts)
    if report.snapshot_id is None:
        report.error = "another rewrite replaced some of these files first: run backfill again"
        report.rows_filled = report.rows_rewritten = 0
        return report
    report.files_rewritten = len(groups)
    return report


def expire(table: Table, older_than: datetime, keep: set[int]) -> tuple[int, list[int]]:
    """Expire snapshots older than ``older_than`` except ``keep``; (expired count, kept-old ids)."""
    cutoff_ms = int(older_than.timestamp() * 1000)
    current = table.current_snapshot()
    old = [s.snapshot_id for s in table.metadata.snapshots if s.timestamp_ms < cutoff_ms]
    doomed = [s for s in old if s not in keep and (current is None or s != current.snapshot_id)]
    if doomed:
        table.maintenance.expire_snapshots().by_ids(doomed).commit()
    return len(doomed), sorted(set(old) - set(doomed))


def _data_files(table: Table) -> int:
    return sum(1 for _ in table.scan().plan_files()) if table.current_snapshot() else 0


def maintain_table(catalog: Catalog, identifier: tuple[str, str], older_than: datetime | None, do_compact: bool,
                   consumed: Iterable[int], small_file_bytes: int = SMALL_FILE_BYTES) -> TableReport:
    """Compact then expire one table, replanning from a fresh load when a concurrent commit wins."""
    report = TableReport(table=identifier[1])
    for attempt in range(ATTEMPTS):
        try:
            table = catalog.load_table(identifier)
            if attempt == 0:
                report.snapshots_before = len(table.metadata.snapshots)
                report.files_before = _data_files(table)
            if do_compact:
                report.partitions_compacted += compact(catalog, identifier, small_file_bytes)
                table = catalog.load_table(identifier)
            if older_than is not None:
                expired, kept = expire(table, older_than, needed_snapshots(table, consumed))
                report.snapshots_expired += expired
                report.snapshots_kept_for_engine = len(kept)
                report.kept_snapshot_ids = kept
            report.files_after = _data_files(catalog.load_table(identifier))
            report.error = None
            return report
        except (CommitFailedException, CommitStateUnknownException) as exc:
            report.error = f"{type(exc).__name__}: {exc} (gave up after {ATTEMPTS} attempts)"
    return report


def maintain(catalog: Catalog, namespace: str, older_than: datetime | None, do_compact: bool = False,
             small_file_bytes: int = SMALL_FILE_BYTES) -> list[TableReport]:
    """Maintain every table in ``namespace``; ``older_than=None`` skips expiry.

    Unified tables' progress is read once, up front: it only ever moves forward, so snapshots
    kept for an older reference are a superset of those the newer one needs.
    """
    try:
        identifiers = sorted(catalog.list_tables(namespace))
    except NoSuchNamespaceError:
        return []  # nothing created yet: nothing to maintain
    consumed = source_references(catalog.load_table(i) for i in identifiers)
    return [
        maintain_table(catalog, (namespace, i[-1]), older_than, do_compact, consumed.get(i[-1], set()),
                       small_file_bytes)
        for i in identifiers
    ]
