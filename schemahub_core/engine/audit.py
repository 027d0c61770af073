"""Completeness audit: per (source, symbol, day), is every trade there, exactly once, in raw and in unified?

What a stream's ids promise (``Stream.ids``, declared by its plugin) decides what can be proven:

- ``contiguous``: every integer between two landed ids must be there, so a missing one is a gap: its id range,
  count, and the times of the landed trades around it (where a repair fetches again);
- ``monotonic`` / ``none`` (and contiguous rows without an id, e.g. Kraken's before late 2022): only time can
  tell. A hole is an interval between consecutive trades longer than ``hole_factor`` times the 99th
  percentile of that symbol's intervals in the audited window (for a steady stream that is about 18 mean
  intervals: one false alarm in ~10^8 trades), and never shorter than ``MIN_HOLE``.

Duplicates are keys landed more than once, in raw and in each unified target. Reconciliation maps the raw
keys through the key columns of the source's mapping and compares them with the target's keys of that source:
every raw key unified exactly once, nothing unified without a raw row. Raw rows appended after the snapshot
unify consumed are ``pending``, not missing. Records that failed their casts never reach raw: they are in
``schemahub_quarantine`` and counted per symbol.

Only key columns (symbol, id, event time) are read (``selected_fields``; ``columns_read`` in the report is the
scan's projected schema), one day at a time: each table's files are planned once, and a day reads only the
files whose event-time bounds reach it, with that day in the row filter. Memory holds one day of one
source's key columns (raw and its unified rows), not the window. What crosses midnight is carried per
symbol: the last id (a gap across days), the last trade and the largest intervals (about 1 % of them, enough
for the exact 99th percentile). A key landed twice is found within its event day (a re-landed record keeps
its event time); reconciliation compares a day of raw with the same day of the target, so a mapping must keep
the event instant (every venue mapping copies it). The work is numpy/pyarrow.compute on whole day columns:
no per-row Python.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from collections.abc import Mapping as MappingT
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.conversions import from_bytes
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression, EqualTo, GreaterThanOrEqual, In, LessThan
from pyiceberg.io.pyarrow import ArrowScan, schema_to_pyarrow
from pyiceberg.table import FileScanTask, Table
from pyiceberg.types import TimestampType, TimestamptzType

from schemahub_core.engine.ingest import QUARANTINE_COUNT
from schemahub_core.engine.sink import progress_of, retry_transient
from schemahub_core.engine.state import source_key
from schemahub_core.engine.tables import QUARANTINE, raw_table_name
from schemahub_core.framework.connector import Connector, IdContinuity, Stream
from schemahub_core.framework.mapping import Mapping
from schemahub_core.framework.registry import Registry

HOLE_FACTOR = 4.0
MIN_HOLE = timedelta(seconds=1)


@dataclass
class Gap:
    """Trades known to be missing: ids ``first_id..last_id`` (``kind="ids"``) or a time hole (``kind="time"``).

    ``id_before``/``time_before`` and ``id_after``/``time_after`` are the landed trades on either side: a repair
    fetches from the first to the second.
    """

    source: str
    stream: str
    symbol: str
    native_symbol: str
    kind: str
    day: date
    time_before: datetime
    time_after: datetime
    id_before: int | str | None = None
    id_after: int | str | None = None
    first_id: int | None = None
    last_id: int | None = None

    @property
    def count(self) -> int | None:
        """Missing trades (id gaps only; a time hole cannot say how many)."""
        return None if self.first_id is None or self.last_id is None else self.last_id - self.first_id + 1

    def as_dict(self) -> dict:
        return {**asdict(self), "count": self.count}


@dataclass
class DayReport:
    """One (source, stream, symbol, day): what landed, what is missing or doubled, and whether raw and unified agree."""

    source: str
    stream: str
    symbol: str
    native_symbol: str
    day: date
    ids: str = IdContinuity.NONE.value
    raw_rows: int = 0
    unified_rows: int = 0
    id_min: int | str | None = None
    id_max: int | str | None = None
    missing: int = 0  # ids missing (contiguous ids only)
    missing_ranges: list[tuple[int, int]] = field(default_factory=list)
    time_holes: int = 0
    hole_seconds: float = 0.0
    raw_duplicates: int = 0  # rows beyond the first of a key
    unified_duplicates: int = 0
    not_unified: int = 0  # raw keys (already consumed by unify) that the target does not hold
    not_in_raw: int = 0  # target keys of this source with no raw row
    pending: int = 0  # raw rows unify has not consumed yet

    @property
    def problems(self) -> int:
        return (self.missing + self.time_holes + self.raw_duplicates + self.unified_duplicates + self.not_unified
                + self.not_in_raw)

    @property
    def completeness(self) -> float:
        """Landed share of what should be there: ids for contiguous streams, else time not inside a hole."""
        if self.missing:
            return self.raw_rows_distinct / (self.raw_rows_distinct + self.missing)
        if self.hole_seconds:
            return max(0.0, 1.0 - self.hole_seconds / 86_400)
        return 1.0

    @property
    def raw_rows_distinct(self) -> int:
        return self.raw_rows - self.raw_duplicates

    def as_dict(self) -> dict:
        return {**asdict(self), "problems": self.problems, "completeness": round(self.completeness, 6)}


@dataclass
class AuditReport:
    days: list[DayReport] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    quarantined: dict[str, int] = field(default_factory=dict)  # "source.stream.symbol" -> records
    hole_thresholds: dict[str, float] = field(default_factory=dict)  # "source.symbol" -> seconds
    columns_read: dict[str, list[str]] = field(default_factory=dict)  # table -> its scans' projected schema
    snapshots: dict[str, dict[str, int]] = field(default_factory=dict)  # "source.stream" -> raw snapshot audited
    rows_read: int = 0
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        return not self.gaps and all(d.problems == 0 for d in self.days)

    def completeness(self) -> dict[tuple[str, str, str], float]:
        """(source, stream, symbol) -> landed share over the audited days (what ``status`` shows)."""
        out: dict[tuple[str, str, str], list[float]] = {}
        for d in self.days:
            have, want = out.setdefault((d.source, d.stream, d.symbol), [0.0, 0.0])[:2]
            out[(d.source, d.stream, d.symbol)] = [have + d.completeness * max(1, d.raw_rows_distinct),
                                                   want + max(1, d.raw_rows_distinct)]
        return {k: v[0] / v[1] for k, v in out.items()}

    def as_dict(self) -> dict:
        return {"clean": self.clean, "days": [d.as_dict() for d in self.days], "gaps": [g.as_dict() for g in self.gaps],
                "missing": sum(d.missing for d in self.days), "time_holes": sum(d.time_holes for d in self.days),
                "raw_duplicates": sum(d.raw_duplicates for d in self.days),
                "unified_duplicates": sum(d.unified_duplicates for d in self.days),
                "not_unified": sum(d.not_unified for d in self.days),
                "not_in_raw": sum(d.not_in_raw for d in self.days),
                "quarantined": self.quarantined, "hole_thresholds": self.hole_thresholds,
                "columns_read": self.columns_read, "snapshots": self.snapshots, "rows_read": self.rows_read,
                "seconds": round(self.seconds, 3)}


def _load(catalog: Catalog, namespace: str, name: str) -> Table | None:
    try:
        return retry_transient(lambda: catalog.load_table((namespace, name)))
    except NoSuchTableError:
        return None


def _window(column: str, since: datetime | None, until: datetime | None) -> BooleanExpression:
    expr: BooleanExpression = AlwaysTrue()
    if since is not None:
        expr = And(expr, GreaterThanOrEqual(column, since.isoformat()))
    if until is not None:
        expr = And(expr, LessThan(column, until.isoformat()))
    return expr


def _days(times: pa.ChunkedArray | pa.Array) -> pa.Array:
    return pc.cast(times, pa.timestamp("us")).cast(pa.date32())


EPOCH_DAY = date(1970, 1, 1)


def _day_numbers(days: pa.Array | pa.ChunkedArray | np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 as a numpy int array (date32's own representation: a zero-copy view)."""
    if isinstance(days, np.ndarray):
        return days
    if isinstance(days, pa.ChunkedArray):
        days = days.combine_chunks()
    return pc.cast(days, pa.int32()).to_numpy(zero_copy_only=False)


def _per_day(days: pa.Array | pa.ChunkedArray | np.ndarray, mask: pa.Array | np.ndarray | None = None,
             weights: np.ndarray | None = None) -> dict[date, int]:
    """Count (or sum ``weights``) of the rows where ``mask`` holds, per day: one ``bincount``."""
    numbers = _day_numbers(days)
    if mask is not None:
        keep = mask.to_numpy(zero_copy_only=False) if isinstance(mask, pa.Array) else mask
        numbers = numbers[keep]
        weights = weights[keep] if weights is not None else None
    if len(numbers) == 0:
        return {}
    first = int(numbers.min())
    if first == int(numbers.max()):  # one day (the usual case: the audit reads a day at a time)
        total = len(numbers) if weights is None else int(weights.sum())
        return {EPOCH_DAY + timedelta(days=first): int(total)} if total else {}
    counts = np.bincount(numbers - first, weights=weights).astype(np.int64)
    return {EPOCH_DAY + timedelta(days=first + int(i)): int(counts[i]) for i in np.flatnonzero(counts)}


DAY_US = 86_400_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(times: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Event times as epoch microseconds, a numpy int64 array."""
    times = times.combine_chunks() if isinstance(times, pa.ChunkedArray) else times
    return pc.cast(pc.cast(times, pa.timestamp("us")), pa.int64()).to_numpy(zero_copy_only=False)


def _datetime(micros: int | np.integer) -> datetime:
    return EPOCH + timedelta(microseconds=int(micros))


def _repeats_np(values: np.ndarray) -> np.ndarray:
    """For a sorted array: True where a value equals the previous one (the first of each run is False)."""
    return np.concatenate(([False], values[1:] == values[:-1])) if len(values) else np.zeros(0, dtype=bool)


def _ordered(values: np.ndarray) -> np.ndarray:
    """Stable sort order of ``values``; ``None`` when they are already sorted (raw lands in id and time order)."""
    if len(values) > 1 and np.any(values[1:] < values[:-1]):
        return np.argsort(values, kind="stable")
    return None  # type: ignore[return-value]


def _codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, list]:
    """A string column as (integer code per row, -1 for null; the distinct values). Symbols are read
    dictionary-encoded from Parquet, so this is usually only a merge of the files' small dictionaries."""
    if isinstance(column, pa.ChunkedArray):
        if pa.types.is_dictionary(column.type) and column.num_chunks > 1:
            column = pa.chunked_array(column.chunks, column.type).unify_dictionaries()
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    codes = column.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, column.dictionary.to_pylist()


@dataclass
class _Rows:
    """Rows of one symbol and day as numpy columns: what the id, duplicate and time-hole checks read."""

    times: np.ndarray  # event time, epoch us
    groups: np.ndarray  # per row: bit i set when its file is pending for target i
    ids: np.ndarray | None = None  # integer ids (0 where missing); None: no id, or not an integer
    valid: np.ndarray | None = None  # ids present
    text_ids: pa.Array | None = None  # the ids as landed, when they are not integers


def _integers(column: pa.ChunkedArray | pa.Array) -> pa.Array | None:
    """``column`` as int64 when it holds integers (or integer text), else None."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_integer(column.type):
        return pc.cast(column, pa.int64())
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        try:
            return pc.cast(column, pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
    return None


def _by_symbol(data: pa.Table, sym: str, idc: str | None, tcol: str) -> dict[str, _Rows]:
    """One day's key columns per symbol: each column converted once, then a boolean mask per symbol."""
    if data.num_rows == 0:
        return {}
    codes, values = _codes(data.column(sym))
    times = _micros(data.column(tcol))
    groups = data.column("__group").combine_chunks().to_numpy(zero_copy_only=False) if "__group" in \
        data.column_names else np.zeros(data.num_rows, dtype=np.int32)
    ids = valid = text = None
    if idc is not None:
        column = data.column(idc).combine_chunks()
        as_int = _integers(column)
        if as_int is not None and as_int.null_count == 0:
            valid, ids = np.ones(len(as_int), dtype=bool), as_int.to_numpy(zero_copy_only=False)
        elif as_int is not None:
            valid = as_int.is_valid().to_numpy(zero_copy_only=False)
            ids = as_int.fill_null(0).to_numpy(zero_copy_only=False)
        else:
            text = column
    out = {}
    starts = np.concatenate(([0], np.flatnonzero(codes[1:] != codes[:-1]) + 1))
    if len(starts) <= len(values) + 1 and len(np.unique(codes[starts])) == len(starts):  # one run per symbol
        ends = np.concatenate((starts[1:], [len(codes)]))
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            if codes[a] >= 0 and values[codes[a]] is not None:
                out[values[codes[a]]] = _Rows(times[a:b], groups[a:b], ids[a:b] if ids is not None else None,
                                              valid[a:b] if valid is not None else None,
                                              text.slice(a, b - a) if text is not None else None)
        return out
    for i, value in enumerate(values):
        at = np.flatnonzero(codes == i)  # positions, then takes: several times faster than boolean masks
        if value is not None and len(at):
            out[value] = _Rows(times[at], groups[at], ids[at] if ids is not None else None,
                               valid[at] if valid is not None else None,
                               text.take(pa.array(at)) if text is not None else None)
    return out


class _QuietDictionaries(logging.Filter):
    """pyiceberg logs a warning per file read with dictionary-encoded columns (Iceberg has no dictionary type,
    so it notes that they read back as strings); the audit asks for them on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Iceberg does not have a dictionary type")


def p99_of_top(top: np.ndarray, n: int) -> float:
    """``np.percentile(steps, 99)`` (linear interpolation) of ``n`` values from only the largest of them.

    ``top`` holds the largest values, any order; it must hold at least ``n - floor(0.99 * (n - 1))`` of them
    (``top_needed``), so time holes need about 1 % of a symbol's intervals in memory, not all of them.
    """
    if n == 0:
        return 0.0
    desc = np.sort(top)[::-1]
    pos = 0.99 * (n - 1)
    lo = int(np.floor(pos))
    hi = min(lo + 1, n - 1)
    a, b = float(desc[n - 1 - lo]), float(desc[n - 1 - hi])
    return a + (pos - lo) * (b - a)


def top_needed(n: int) -> int:
    """How many of ``n`` values' largest ones ``p99_of_top`` reads (2 spare)."""
    return n - int(np.floor(0.99 * max(n - 1, 0))) + 2


@dataclass
class _Carry:
    """What one (source, symbol) carries from one day to the next: the last id (gaps across midnight), and for
    time holes the last trade plus only the largest intervals seen (enough for the exact 99th percentile)."""

    last_id: int | None = None
    last_id_time: int = 0
    last_time: int | None = None
    last_time_id: object = None
    steps: int = 0
    top: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # the largest intervals, us
    top_before: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # times around them
    top_after: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    top_ids: tuple[pa.Array, pa.Array] | None = None  # ids around them (None: the stream has no id)
    symbol: str = ""


class _Files:
    """One table's data files, planned once with the audit's filter and key columns, read one day at a time.

    Each file's day span comes from its event-time bounds (the manifest's column metrics), so a day reads
    only the files that can hold it, with the day in the row filter: memory holds one day of key columns of
    one source, never the whole window. Files without bounds make the whole window one read.
    """

    def __init__(self, table: Table, name: str, where: BooleanExpression, columns: Sequence[str],
                 time_column: str, dictionary: Sequence[str] = ()) -> None:
        scan = table.scan(row_filter=where, selected_fields=tuple(columns))
        self.table, self.name, self.where, self.time_column = table, name, where, time_column
        self.projection = scan.projection()  # the only columns a read decodes (the proof of "key columns only")
        self.dictionary = tuple(c for c in dictionary if c in self.projection.column_names)
        self.tasks: list[FileScanTask] = list(scan.plan_files()) if table.current_snapshot() else []
        source = table.schema().find_field(time_column)
        self.spans: list[tuple[int, int] | None] = []
        for task in self.tasks:
            lo, hi = task.file.lower_bounds or {}, task.file.upper_bounds or {}
            if (isinstance(source.field_type, TimestampType | TimestamptzType) and source.field_id in lo
                    and source.field_id in hi):
                self.spans.append((from_bytes(source.field_type, lo[source.field_id]) // DAY_US,
                                   from_bytes(source.field_type, hi[source.field_id]) // DAY_US))
            else:
                self.spans.append(None)

    @property
    def rows(self) -> int:
        """Rows of the planned files (all symbols): a bound on any symbol's rows."""
        return sum(t.file.record_count for t in self.tasks)

    def days(self) -> set[int] | None:
        """Day numbers the files hold; None when some file has no time bounds (then: one read of everything)."""
        if any(s is None for s in self.spans):
            return None
        return {d for lo, hi in self.spans for d in range(lo, hi + 1)}  # type: ignore[misc]

    def read(self, day: int | None, groups: Callable[[FileScanTask], int] | None = None) -> pa.Table:
        """Key columns of ``day`` (None: the whole window), plus ``__group`` (``groups`` of each row's file)."""
        tasks = [t for t, s in zip(self.tasks, self.spans, strict=True)
                 if day is None or s is None or s[0] <= day <= s[1]]
        where = self.where
        if day is not None:
            start = EPOCH + timedelta(days=day)
            where = And(where, GreaterThanOrEqual(self.time_column, start.isoformat()),
                        LessThan(self.time_column, (start + timedelta(days=1)).isoformat()))
        whole = _all_match(self.table, where)
        by_group: dict[tuple[int, bool], list[FileScanTask]] = {}
        for task in tasks:  # files whose metrics prove every row matches are read without a row filter
            by_group.setdefault((groups(task) if groups else 0, whole(task)), []).append(task)
        parts = []
        quiet = _QuietDictionaries()
        logger = logging.getLogger("pyiceberg.io.pyarrow")
        logger.addFilter(quiet)
        try:
            for (group, matches), members in sorted(by_group.items()):
                reader = ArrowScan(self.table.metadata, self.table.io, self.projection,
                                   AlwaysTrue() if matches else where, dictionary_columns=self.dictionary)
                for batch in reader.to_record_batches(members):
                    if batch.num_rows:
                        parts.append(pa.Table.from_batches([batch]).append_column(
                            "__group", pa.repeat(pa.scalar(group, pa.int32()), batch.num_rows)))
        finally:
            logger.removeFilter(quiet)
        if not parts:
            return pa.schema([*[_plain(f) for f in schema_to_pyarrow(self.projection)],
                              pa.field("__group", pa.int32())]).empty_table()
        data = pa.concat_tables(parts, promote_options="permissive")
        return data


def _all_match(table: Table, where: BooleanExpression) -> Callable[[FileScanTask], bool]:
    """Whether a file's column metrics prove that all its rows match ``where`` (then filtering each row is
    wasted work: a day-partitioned file inside the audited window). pyiceberg's strict metrics evaluator is
    not public API: without it every file is filtered."""
    try:
        from pyiceberg.expressions.visitors import _StrictMetricsEvaluator
        evaluator = _StrictMetricsEvaluator(table.schema(), where)
    except (ImportError, TypeError, ValueError):
        return lambda task: False

    def check(task: FileScanTask) -> bool:
        try:
            return not task.delete_files and bool(evaluator.eval(task.file))
        except (KeyError, TypeError, ValueError):
            return False

    return check


def _plain(f: pa.Field) -> pa.Field:
    return pa.field(f.name, f.type, f.nullable)


@dataclass
class _Target:
    """One mapping of the audited source and what reconciling it needs, set up once per audit."""

    mapping: Mapping
    files: _Files | None  # None: the target table does not exist (nothing was ever unified)
    keyed: Mapping
    key_schema: pa.Schema
    key_cols: list[str]
    sym_col: str | None
    pending_paths: set[str] | None  # raw files appended after what unify consumed; None: all of raw is pending
    integer_id: str | None | bool = False  # the target id column holding raw's integer id; False: not decided yet


class _Audit:
    """One audit run: walks each source day by day, keeping per-(source, symbol) carries and per-day reports."""

    def __init__(self, catalog: Catalog, namespace: str, registry: Registry, since: datetime | None,
                 until: datetime | None, hole_factor: float, min_hole: timedelta) -> None:
        self.catalog, self.namespace, self.registry = catalog, namespace, registry
        self.since, self.until, self.hole_factor, self.min_hole = since, until, hole_factor, min_hole
        self.report = AuditReport()
        self.days: dict[tuple[str, str, str, date], DayReport] = {}
        self.carries: dict[tuple[str, str], _Carry] = {}  # (source, native)

    def day(self, source: str, stream: Stream, symbol: str, native: str, day: date | int) -> DayReport:
        if not isinstance(day, date):
            day = EPOCH_DAY + timedelta(days=int(day))
        key = (source, stream.name, symbol, day)
        if key not in self.days:
            self.days[key] = DayReport(source, stream.name, symbol, native, day, stream.ids.value)
        return self.days[key]

    def files(self, table: Table, name: str, where: BooleanExpression, columns: Sequence[str],
              time_column: str, dictionary: Sequence[str] = ()) -> _Files:
        files = _Files(table, name, where, columns, time_column, dictionary)
        self.report.columns_read.setdefault(name, list(files.projection.column_names))
        return files

    def read(self, files: _Files, day: int | None, groups: Callable[[FileScanTask], int] | None = None) -> pa.Table:
        data = files.read(day, groups)
        self.report.rows_read += data.num_rows
        return data

    # -- one source --------------------------------------------------------------------------------------
    def source(self, source: str, stream: Stream, natives: Sequence[str] | None, canonical: _Lazy,
               mappings: Sequence[Mapping], symbols: Sequence[str] | None) -> list[str]:
        """Audit one source's stream day by day; return the native symbols found."""
        table = _load(self.catalog, self.namespace, raw_table_name(source, stream.name))
        if table is None or table.current_snapshot() is None:
            return []
        sym, idc, tcol = stream.symbol_column, stream.id_column, stream.event_time
        where = _window(tcol, self.since, self.until)
        if natives is not None:
            where = And(where, In(sym, list(natives)))
        columns = [c for c in dict.fromkeys((sym, idc, tcol)) if c is not None]
        raw = self.files(table, raw_table_name(source, stream.name), where, columns, tcol, dictionary=(sym,))
        snapshot = table.current_snapshot()
        self.report.snapshots[f"{source}.{stream.name}"] = {
            "snapshot_id": snapshot.snapshot_id, "timestamp_ms": snapshot.timestamp_ms,
            "sequence_number": snapshot.sequence_number}
        targets = [t for t in (self._target(source, stream, m, table, symbols) for m in mappings) if t is not None]
        days = raw.days()
        for t in targets:
            if t.files is not None:
                theirs = t.files.days()
                days = None if days is None or theirs is None else days | theirs
        if days is not None:  # files reaching past the window: only the window's days
            first = None if self.since is None else _micros(pa.array([self.since])).item() // DAY_US
            last = None if self.until is None else (_micros(pa.array([self.until])).item() - 1) // DAY_US
            days = {d for d in days if (first is None or d >= first) and (last is None or d <= last)}
        cap = raw.rows if self.hole_factor < 1 else top_needed(raw.rows)
        found: set[str] = set()
        pending = [t.pending_paths for t in targets]

        def group(task: FileScanTask) -> int:  # bit i: the file is pending for target i
            return sum(1 << i for i, p in enumerate(pending) if p is None or task.file.file_path in p)

        for day in sorted(days) if days is not None else [None]:
            data = self.read(raw, day, group)
            by_symbol = _by_symbol(data, sym, idc, tcol)
            found |= set(by_symbol)
            held: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
            for native, rows in by_symbol.items():
                out = self._symbol(source, stream, canonical.get(native, native), native, rows, cap)
                if out is not None:
                    held[native] = out
            for i, target in enumerate(targets):
                self._reconcile(source, stream, target, i, day, data, held, canonical)
        for (src, native), carry in self.carries.items():
            if src == source:
                self._finish_holes(source, stream, carry.symbol, native, carry)
        if any(t.files is None for t in targets):  # a target never created: all of raw waits for unify
            for report in self.days.values():
                if (report.source, report.stream) == (source, stream.name):
                    report.pending = report.raw_rows
        return sorted(found)

    def _target(self, source: str, stream: Stream, mapping: Mapping, raw_table: Table,
                symbols: Sequence[str] | None) -> _Target | None:
        target = self.registry.targets.get(mapping.target_table)
        if target is None:
            return None
        key_cols = list(dict.fromkeys((*target.key, target.time_column)))
        key_schema = pa.schema([target.schema.field(c) for c in key_cols])
        raw_cols = [c for c in dict.fromkeys((stream.symbol_column, stream.id_column, stream.event_time)) if c]
        keyed = mapping.restricted(raw_cols)
        constants = {c: v for c, v in keyed.constants.items() if c in target.key}
        sym_col = next((c for c in _symbol_targets(mapping, stream) if c in target.key and c not in constants), None)
        keyed = _only(keyed, key_cols)
        unified = _load(self.catalog, self.namespace, mapping.target_table)
        if unified is None:
            return _Target(mapping, None, keyed, key_schema, key_cols, sym_col, None)
        where = _window(target.time_column, self.since, self.until)
        for c, v in constants.items():
            where = And(where, EqualTo(c, v))
        if symbols is not None and sym_col is not None:
            where = And(where, In(sym_col, list(symbols)))
        files = self.files(unified, mapping.target_table, where, key_cols, target.time_column,
                           dictionary=[c for c in key_cols if c == sym_col or c in constants])
        consumed = progress_of(unified).get(source_key(mapping.raw_table)) if unified.current_snapshot() else None
        newest = raw_table.current_snapshot()
        paths: set[str] | None = None
        if consumed is not None:
            paths = set()
            if newest is not None and int(consumed) != newest.snapshot_id:
                try:
                    paths = {t.file.file_path for t in raw_table.incremental_append_scan(
                        from_snapshot_id_exclusive=int(consumed), to_snapshot_id_inclusive=newest.snapshot_id,
                        row_filter=_window(stream.event_time, self.since, self.until)).plan_files()}
                except ValueError:
                    pass  # the consumed snapshot was expired: nothing to tell apart
        return _Target(mapping, files, keyed, key_schema, key_cols, sym_col, paths)

    # -- raw: ids, holes, duplicates --------------------------------------------------------------------
    def _symbol(self, source: str, stream: Stream, symbol: str, native: str, rows: _Rows, cap: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """One symbol's raw rows of one day: counts, id range, duplicates, id gaps, time-hole candidates.

        Returns its integer ids sorted, with each one's day and file group (for reconciliation), or None."""
        carry = self.carries.setdefault((source, native), _Carry(symbol=symbol))
        times = rows.times
        days = times // DAY_US
        for d, n in _per_day(days).items():
            self.day(source, stream, symbol, native, d).raw_rows += n
        out = None
        untimed = np.ones(len(times), dtype=bool)
        if rows.ids is not None and rows.valid is not None:
            valid = rows.valid
            ids, t, g = (rows.ids, times, rows.groups) if valid.all() else \
                (rows.ids[valid], times[valid], rows.groups[valid])
            order = _ordered(ids)
            if order is not None:
                ids, t, g = ids[order], t[order], g[order]
            out = (ids, t // DAY_US, g)
            repeats = _repeats_np(ids)
            if len(ids) and carry.last_id is not None and ids[0] == carry.last_id:
                repeats[0] = True  # the same id as yesterday's last: landed twice
            for d, n in _per_day(t // DAY_US, repeats).items():
                self.day(source, stream, symbol, native, d).raw_duplicates += n
            if len(ids):
                self._id_range(source, stream, symbol, native, ids, t // DAY_US)
            if stream.ids == IdContinuity.CONTIGUOUS:
                self._id_gaps(source, stream, symbol, native, ids, t, carry)
                untimed = ~valid  # rows without an id: only time can tell
        elif rows.text_ids is not None:  # ids that are not integers: duplicates by key, no range
            key = pa.table({"id": rows.text_ids, "__day": pa.array(days)})
            counted = key.group_by("id", use_threads=False).aggregate([("__day", "min"), ("__day", "count")])
            extra = pc.subtract(counted.column("__day_count"), 1).to_numpy(zero_copy_only=False)
            for d, n in _per_day(counted.column("__day_min").to_numpy(zero_copy_only=False), extra > 0,
                                 extra.astype(np.float64)).items():
                self.day(source, stream, symbol, native, d).raw_duplicates += n
        if untimed.any():
            ids_of = None
            if rows.text_ids is not None:
                ids_of = rows.text_ids.filter(pa.array(untimed))
            elif rows.ids is not None and rows.valid is not None:
                ids_of = pa.array(rows.ids[untimed], mask=~rows.valid[untimed])
            self._time_steps(times[untimed], ids_of, carry, cap)
        return out

    def _id_range(self, source: str, stream: Stream, symbol: str, native: str, ids: np.ndarray,
                  days: np.ndarray) -> None:
        """Per day: the smallest and largest id (ids are sorted, so the first and last of each day's run)."""
        if np.all(days[1:] >= days[:-1]):  # ids in time order, as venues number them: runs of days
            starts = np.concatenate(([0], np.flatnonzero(days[1:] != days[:-1]) + 1))
            ends = np.concatenate((starts[1:], [len(days)])) - 1
            spans = [(int(days[a]), int(ids[a]), int(ids[b])) for a, b in zip(starts, ends, strict=True)]
        else:
            spans = [(int(d), int(ids[days == d].min()), int(ids[days == d].max())) for d in np.unique(days)]
        for d, lo, hi in spans:
            report = self.day(source, stream, symbol, native, d)
            report.id_min = lo if report.id_min is None else min(report.id_min, lo)  # type: ignore[type-var]
            report.id_max = hi if report.id_max is None else max(report.id_max, hi)  # type: ignore[type-var]

    def _id_gaps(self, source: str, stream: Stream, symbol: str, native: str, ids: np.ndarray,
                 times: np.ndarray, carry: _Carry) -> None:
        """Missing integers between consecutive landed ids, including between yesterday's last and today's first."""
        if not len(ids):
            return
        if carry.last_id is not None and ids[0] > carry.last_id + 1:
            self._gap(source, stream, symbol, native, carry.last_id, int(ids[0]), carry.last_id_time,
                      int(times[0]))
        for i in np.flatnonzero(np.diff(ids) > 1) + 1:
            self._gap(source, stream, symbol, native, int(ids[i - 1]), int(ids[i]), int(times[i - 1]),
                      int(times[i]))
        if carry.last_id is None or ids[-1] > carry.last_id:
            carry.last_id, carry.last_id_time = int(ids[-1]), int(times[-1])

    def _gap(self, source: str, stream: Stream, symbol: str, native: str, before: int, after: int, t_before: int,
             t_after: int) -> None:
        tb, ta = _datetime(t_before), _datetime(t_after)
        gap = Gap(source, stream.name, symbol, native, "ids", tb.date(), tb, ta, before, after, before + 1, after - 1)
        self.report.gaps.append(gap)
        report = self.day(source, stream, symbol, native, gap.day)
        report.missing += gap.count or 0
        report.missing_ranges.append((before + 1, after - 1))

    def _time_steps(self, times: np.ndarray, ids: pa.ChunkedArray | pa.Array | None, carry: _Carry, cap: int
                    ) -> None:
        """Intervals between consecutive trades of one day (and from yesterday's last): keep the ``cap`` largest."""
        order = _ordered(times)
        ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
        if order is not None:
            times = times[order]
            ids = ids.take(pa.array(order)) if ids is not None else None
        if carry.last_time is not None:  # the interval from yesterday's last trade
            times = np.concatenate(([carry.last_time], times))
            if ids is not None:
                ids = pa.concat_arrays([pa.array([carry.last_time_id], ids.type), ids])
        if len(times) == 0:
            return
        steps = np.diff(times)
        carry.steps += len(steps)
        keep = np.argpartition(steps, len(steps) - cap)[len(steps) - cap:] if len(steps) > cap else \
            np.arange(len(steps))
        carry.top = np.concatenate((carry.top, steps[keep]))
        carry.top_before = np.concatenate((carry.top_before, times[keep]))
        carry.top_after = np.concatenate((carry.top_after, times[keep + 1]))
        if ids is not None:
            taken = (ids.take(pa.array(keep)), ids.take(pa.array(keep + 1)))
            carry.top_ids = taken if carry.top_ids is None else (
                pa.concat_arrays([carry.top_ids[0], taken[0]]), pa.concat_arrays([carry.top_ids[1], taken[1]]))
        if len(carry.top) > cap:
            kept = np.argpartition(carry.top, len(carry.top) - cap)[len(carry.top) - cap:]
            carry.top, carry.top_before = carry.top[kept], carry.top_before[kept]
            carry.top_after = carry.top_after[kept]
            if carry.top_ids is not None:
                carry.top_ids = (carry.top_ids[0].take(pa.array(kept)), carry.top_ids[1].take(pa.array(kept)))
        carry.last_time = int(times[-1])
        carry.last_time_id = ids[len(ids) - 1].as_py() if ids is not None else None

    def _finish_holes(self, source: str, stream: Stream, symbol: str, native: str, carry: _Carry) -> None:
        """The hole threshold from the exact 99th percentile of the symbol's intervals, and the holes above it."""
        if carry.steps == 0:
            return
        threshold = max(self.hole_factor * p99_of_top(carry.top, carry.steps),
                        self.min_hole / timedelta(microseconds=1))
        self.report.hole_thresholds[f"{source}.{symbol}"] = round(threshold / 1e6, 3)
        for k in np.argsort(carry.top_before, kind="stable"):
            if carry.top[k] <= threshold:
                continue
            t_before, t_after = _datetime(carry.top_before[k]), _datetime(carry.top_after[k])
            id_before, id_after = ((carry.top_ids[0][int(k)].as_py(), carry.top_ids[1][int(k)].as_py())
                                   if carry.top_ids is not None else (None, None))
            self.report.gaps.append(Gap(source, stream.name, symbol, native, "time", t_before.date(), t_before,
                                        t_after, id_before, id_after))
            report = self.day(source, stream, symbol, native, t_before.date())
            report.time_holes += 1
            report.hole_seconds += float(carry.top[k]) / 1e6

    # -- raw <-> unified ----------------------------------------------------------------------------------
    def _reconcile(self, source: str, stream: Stream, target: _Target, index: int, day: int | None,
                   raw: pa.Table, held: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                   canonical: MappingT[str, str]) -> None:
        """One day of raw against the same day of one target: every raw key unified once, nothing else there."""
        if target.files is None:
            return  # never unified: ``source`` marks everything pending
        bit = 1 << index
        unified = self.read(target.files, day).select(target.key_cols)
        keys = self.registry.targets[target.mapping.target_table].key
        rest = [c for c in keys if c not in target.keyed.constants and c != target.sym_col]
        if target.integer_id is False and raw.num_rows:
            target.integer_id = self._integer_ids(source, stream, target.keyed, target.key_schema,
                                                  _undictionary(raw.slice(0, 1000)), rest)
        if target.integer_id and target.sym_col is not None:
            try:
                self._reconcile_ids(source, stream, target, bit, unified, held, canonical)
                return
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass  # a target id that is not the raw integer: compare the mapped keys instead
        self._reconcile_keys(source, stream, target, bit, unified, raw, canonical)

    def _integer_ids(self, source: str, stream: Stream, keyed: Mapping, key_schema: pa.Schema, raw_keys: pa.Table,
                     rest: list[str]) -> str | None:
        """The target id column when it is the raw id as an integer written as text (checked on a sample of raw's
        own rows), else None.

        Then raw and target are compared as sorted integers, which is several times cheaper than joining text
        keys; anything else goes through the mapped keys.
        """
        idc = stream.id_column
        if len(rest) != 1 or idc is None or raw_keys.num_rows == 0:
            return None
        sample = raw_keys.filter(pc.is_valid(raw_keys.column(idc)))
        try:
            raw_ids = pc.cast(sample.column(idc), pa.int64())
            back = pc.cast(keyed.apply(sample, self.registry, key_schema).column(rest[0]), pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        return rest[0] if sample.num_rows and back.equals(raw_ids) else None

    def _reconcile_ids(self, source: str, stream: Stream, target: _Target, bit: int, unified: pa.Table,
                       held: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                       canonical: MappingT[str, str]) -> None:
        """Per symbol, raw's sorted integer ids against the target's: membership by binary search, no join.
        Raises ``pa.ArrowInvalid`` (before counting anything) when a target id is not an integer."""
        idt, sym_col = str(target.integer_id), str(target.sym_col)
        tcol = self.registry.targets[target.mapping.target_table].time_column
        theirs = {}
        for symbol, rows in _by_symbol(unified, sym_col, idt, tcol).items():
            if rows.ids is None or rows.valid is None:
                raise pa.ArrowInvalid(f"{idt} is not an integer")
            theirs[symbol] = (rows.ids[rows.valid], rows.times[rows.valid] // DAY_US)
        natives = {canonical.get(n, n): n for n in held}
        inverse = {v: k for k, v in canonical.items()}
        empty = np.zeros(0, np.int64)
        for symbol in sorted(set(theirs) | set(natives)):
            native = natives.get(symbol) or inverse.get(symbol, symbol)
            ids, days = theirs.get(symbol, (empty, empty))
            raw_ids, raw_days, groups = held.get(native, (empty, empty, empty))
            order = _ordered(ids)
            if order is not None:
                ids, days = ids[order], days[order]

            def add(attr: str, at: np.ndarray, mask: np.ndarray | None = None, s: str = symbol, n: str = native
                    ) -> None:
                for d, count in _per_day(at, mask).items():
                    report = self.day(source, stream, s, n, d)
                    setattr(report, attr, getattr(report, attr) + count)

            add("unified_rows", days)
            add("unified_duplicates", days, _repeats_np(ids))
            first = ~_repeats_np(raw_ids)
            late = (groups & bit) != 0
            waiting = _member(raw_ids, raw_ids[late]) if late.any() else np.zeros(len(raw_ids), dtype=bool)
            add("pending", raw_days, first & waiting)
            add("not_unified", raw_days, first & ~waiting & ~_member(raw_ids, ids))
            add("not_in_raw", days, ~_member(ids, raw_ids))

    def _reconcile_keys(self, source: str, stream: Stream, target: _Target, bit: int, unified: pa.Table,
                        raw: pa.Table, canonical: MappingT[str, str]) -> None:
        """Raw's keys mapped through the mapping's key columns, compared with the target's by hash joins."""
        registry_target = self.registry.targets[target.mapping.target_table]
        tcol, keys, sym_col = registry_target.time_column, list(registry_target.key), target.sym_col
        held = _undictionary(unified).cast(target.key_schema)
        raw_cols = [c for c in dict.fromkeys((stream.symbol_column, stream.id_column, stream.event_time)) if c]
        plain = _undictionary(raw.select([*raw_cols, "__group"]))
        mapped = target.keyed.apply(plain.select(raw_cols), self.registry, target.key_schema)
        waiting = pc.not_equal(pc.bit_wise_and(plain.column("__group"), pa.scalar(bit, pa.int32())),
                               pa.scalar(0, pa.int32()))
        pending = mapped.filter(waiting)
        natives = {v: k for k, v in canonical.items()}

        def note(table: pa.Table, attr: str, weights: str | None = None) -> None:
            if table.num_rows == 0:
                return
            sym = table.column(sym_col) if sym_col else pa.repeat(pa.scalar(""), table.num_rows)
            t = pa.table({"s": sym, "day": _days(table.column(tcol)),
                          "w": table.column(weights) if weights else pa.repeat(pa.scalar(1, pa.int64()),
                                                                               table.num_rows)})
            g = t.group_by(["s", "day"], use_threads=False).aggregate([("w", "sum")])
            for s, d, n in zip(*(g.column(c).to_pylist() for c in ("s", "day", "w_sum")), strict=True):
                report = self.day(source, stream, s, natives.get(s, s), d)
                setattr(report, attr, getattr(report, attr) + n)

        def first_of(table: pa.Table) -> pa.Table:
            out = table.group_by(keys, use_threads=False).aggregate([(tcol, "min")])
            return out.rename_columns([tcol if c == f"{tcol}_min" else c for c in out.column_names])

        note(held, "unified_rows")
        counted = held.group_by(keys, use_threads=False).aggregate([(tcol, "min"), (tcol, "count")])
        counted = counted.rename_columns([tcol if c == f"{tcol}_min" else c for c in counted.column_names])
        extra = pc.subtract(counted.column(f"{tcol}_count"), 1)
        note(counted.append_column("extra", extra).filter(pc.greater(extra, 0)), "unified_duplicates", "extra")
        distinct, pend = first_of(mapped), first_of(pending)
        note(pend, "pending")
        missing = distinct.join(counted.select(keys), keys, join_type="left anti")
        missing = missing.join(pend.select(keys), keys, join_type="left anti")
        note(missing, "not_unified")
        note(counted.select([*keys, tcol]).join(distinct.select(keys), keys, join_type="left anti"), "not_in_raw")


def _member(values: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """``np.isin(values, pool)``: for ids dense over their range (a symbol's day), one mark per id, no sort."""
    if not len(pool) or not len(values):
        return np.zeros(len(values), dtype=bool)
    lo = min(int(values.min()), int(pool.min()))
    span = max(int(values.max()), int(pool.max())) - lo + 1
    if span > 4 * (len(values) + len(pool)) + 4096:
        return np.isin(values, pool)
    marks = np.zeros(span, dtype=bool)
    marks[pool - lo] = True
    return marks[values - lo]


def _undictionary(table: pa.Table) -> pa.Table:
    """``table`` with its dictionary-encoded columns (symbols, as read) decoded to their value type."""
    for i, f in enumerate(table.schema):
        if pa.types.is_dictionary(f.type):
            table = table.set_column(i, pa.field(f.name, f.type.value_type, f.nullable),
                                     pc.cast(table.column(i), f.type.value_type))
    return table


def _only(mapping: Mapping, columns: Sequence[str]) -> Mapping:
    """``mapping`` without the transforms that no column of ``columns`` needs (e.g. base/quote asset)."""
    needed, keep = set(columns), {}
    for target, steps in reversed(list(mapping.transforms.items())):
        if target in needed:
            keep[target] = steps
            needed |= {s.source for s in steps if s.source}
    return replace(mapping, transforms={t: s for t, s in mapping.transforms.items() if t in keep})


def _symbol_targets(mapping: Mapping, stream: Stream) -> list[str]:
    """Target columns the raw symbol column produces, directly or through transforms."""
    cut = mapping.restricted([stream.symbol_column])
    return [t for t in (*[t for ts in cut.columns.values() for t in ts], *cut.transforms) if t not in cut.constants]


def canonical_symbols(registry: Registry, mapping: Mapping | None, stream: Stream, natives: Sequence[str]
                      ) -> dict[str, str]:
    """Native symbol -> canonical, through the mapping's symbol column (identity without a mapping)."""
    out = {n: n for n in natives}
    target = registry.targets.get(mapping.target_table) if mapping is not None else None
    if mapping is None or target is None or not natives:
        return out
    cut = mapping.restricted([stream.symbol_column])
    col = next((c for c in _symbol_targets(mapping, stream) if c in target.key), None)
    if col is None:
        return out
    raw = pa.table({stream.symbol_column: pa.array(list(natives), pa.string())})
    mapped = cut.apply(raw, registry, pa.schema([target.schema.field(col)]))
    return dict(zip(natives, mapped.column(col).to_pylist(), strict=True))


def audit(
    catalog: Catalog,
    namespace: str,
    registry: Registry,
    mappings: Sequence[Mapping],
    *,
    sources: Sequence[str] | None = None,
    symbols: MappingT[str, Sequence[str] | None] | None = None,
    stream: str = "trades",
    since: datetime | None = None,
    until: datetime | None = None,
    hole_factor: float = HOLE_FACTOR,
    min_hole: timedelta = MIN_HOLE,
    reconcile: bool = True,
) -> AuditReport:
    """Audit ``stream`` of each source (default: every connector that has it); see the module doc.

    ``symbols`` maps a source to its canonical symbols (None or absent: every symbol landed).
    ``mappings`` are the installed mappings; those of ``<source>.<stream>`` are reconciled unless
    ``reconcile`` is False (raw only: gaps, holes and raw duplicates, which is all completeness needs).
    """
    started = time.monotonic()
    run = _Audit(catalog, namespace, registry, since, until, hole_factor, min_hole)
    chosen = sources or sorted(n for n, c in registry.connectors.items() if stream in c.streams)
    quarantine = _load(catalog, namespace, QUARANTINE)
    counts = progress_of(quarantine) if quarantine is not None and quarantine.current_snapshot() else {}
    for source in chosen:
        cls = registry.connectors[source]
        spec = cls.streams.get(stream)
        if spec is None:
            continue
        connector: Connector = cls({})
        wanted = (symbols or {}).get(source)
        natives = [connector.native_symbol(s) for s in wanted] if wanted is not None else None
        own = [m for m in mappings if m.source == f"{source}.{stream}"]
        canonical = _Lazy(registry, own[0] if own else None, spec,
                          {connector.native_symbol(s): s for s in wanted or ()})
        found = run.source(source, spec, natives, canonical, own if reconcile else (), wanted)
        for native in found:
            symbol = canonical.get(native, native)
            count = counts.get(f"{QUARANTINE_COUNT}{source}.{stream}.{symbol}")
            if count:
                run.report.quarantined[f"{source}.{stream}.{symbol}"] = int(count)
    run.report.days = sorted(run.days.values(), key=lambda d: (d.source, d.stream, d.symbol, d.day))
    run.report.gaps.sort(key=lambda g: (g.source, g.stream, g.symbol, g.time_before))
    run.report.seconds = time.monotonic() - started
    return run.report


class _Lazy(dict):
    """Native -> canonical symbol, computed through the mapping the first time a native symbol is asked for."""

    def __init__(self, registry: Registry, mapping: Mapping | None, stream: Stream, known: dict[str, str]) -> None:
        super().__init__(known)
        self.registry, self.mapping, self.stream = registry, mapping, stream

    def get(self, native: str, default: str | None = None) -> str:  # type: ignore[override]
        if native not in self:
            self[native] = canonical_symbols(self.registry, self.mapping, self.stream, [native])[native]
        return self[native]
