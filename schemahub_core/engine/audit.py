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

Only key columns (symbol, id, event time) are read (``selected_fields``), and all the work is pyarrow.compute
on whole columns: no per-row Python.
"""

from __future__ import annotations

import time
from collections.abc import Mapping as MappingT
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression, EqualTo, GreaterThanOrEqual, In, LessThan
from pyiceberg.table import Table

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
    columns_read: dict[str, list[str]] = field(default_factory=dict)  # table -> the only columns scanned
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
                "columns_read": self.columns_read, "rows_read": self.rows_read, "seconds": round(self.seconds, 3)}


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


def _is_sorted(values: pa.Array | pa.ChunkedArray) -> bool:
    """True when ``values`` never decrease (raw is landed in id and time order, so sorting is mostly skipped)."""
    if len(values) < 2:
        return True
    values = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if pa.types.is_timestamp(values.type):
        values = pc.cast(pc.cast(values, pa.timestamp("us")), pa.int64())
    if pa.types.is_integer(values.type):
        return pc.min(pc.pairwise_diff(values)).as_py() >= 0
    return bool(pc.all(pc.less_equal(values.slice(0, len(values) - 1), values.slice(1))).as_py())


def _sorted(table: pa.Table, column: str) -> pa.Table:
    """``table`` in ``column`` order. A scan returns each data file's rows in order but the files in any order:
    putting the record batches in order of their first value (per batch, not per row) is usually enough."""
    batches = [b for b in table.to_batches() if b.num_rows]
    if len(batches) > 1 and all(b.column(column)[0].is_valid for b in batches):
        batches.sort(key=lambda b: b.column(column)[0].as_py())
        table = pa.Table.from_batches(batches, schema=table.schema)
    if _is_sorted(table.column(column)):
        return table
    return table.take(pc.sort_indices(table, [(column, "ascending")]))


def _repeats(values: pa.Array) -> pa.Array:
    """For a sorted array: True where a value equals the previous one (the first of each run is False)."""
    n = len(values)
    if n < 2:
        return pa.array([False] * n)
    return pa.concat_arrays([pa.array([False]), pc.fill_null(pc.equal(values.slice(1), values.slice(0, n - 1)),
                                                           False)])


class _Audit:
    """One audit run; collects the per-day reports while walking sources and mappings."""

    def __init__(self, catalog: Catalog, namespace: str, registry: Registry, since: datetime | None,
                 until: datetime | None, hole_factor: float, min_hole: timedelta) -> None:
        self.catalog, self.namespace, self.registry = catalog, namespace, registry
        self.since, self.until, self.hole_factor, self.min_hole = since, until, hole_factor, min_hole
        self.report = AuditReport()
        self.days: dict[tuple[str, str, str, date], DayReport] = {}
        self.ordered: dict[tuple[str, str], tuple[pa.Array, pa.Array]] = {}  # (source, native) -> sorted ids, days

    def day(self, source: str, stream: Stream, symbol: str, native: str, day: date) -> DayReport:
        key = (source, stream.name, symbol, day)
        if key not in self.days:
            self.days[key] = DayReport(source, stream.name, symbol, native, day, stream.ids.value)
        return self.days[key]

    def scan(self, table: Table, name: str, row_filter: BooleanExpression, columns: Sequence[str],
             snapshot_id: int | None = None) -> pa.Table:
        self.report.columns_read.setdefault(name, list(columns))
        data = table.scan(row_filter=row_filter, selected_fields=tuple(columns), snapshot_id=snapshot_id).to_arrow()
        self.report.rows_read += data.num_rows
        return data

    # -- raw: ids, holes, duplicates --------------------------------------------------------------------
    def raw(self, source: str, stream: Stream, natives: Sequence[str] | None, canonical: MappingT[str, str]
            ) -> pa.Table | None:
        table = _load(self.catalog, self.namespace, raw_table_name(source, stream.name))
        if table is None or table.current_snapshot() is None:
            return None
        sym, idc, tcol = stream.symbol_column, stream.id_column, stream.event_time
        where = _window(tcol, self.since, self.until)
        if natives is not None:
            where = And(where, In(sym, list(natives)))
        columns = [c for c in dict.fromkeys((sym, idc, tcol)) if c is not None]
        data = self.scan(table, raw_table_name(source, stream.name), where, columns)
        for native in pc.unique(data.column(sym)).drop_null().to_pylist():
            rows = data.filter(pc.equal(data.column(sym), native))
            self._symbol(source, stream, canonical.get(native, native), native, rows)
        return data

    def _symbol(self, source: str, stream: Stream, symbol: str, native: str, rows: pa.Table) -> None:
        idc, tcol = stream.id_column, stream.event_time
        if idc is not None and pa.types.is_string(rows.schema.field(idc).type):  # ids kept as text (a DDL's choice)
            try:
                rows = rows.set_column(rows.schema.get_field_index(idc), idc, pc.cast(rows.column(idc), pa.int64()))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass  # not integer text: duplicates by key, holes found by time
        times = _micros(rows.column(tcol))
        days = times // DAY_US
        for d, n in _per_day(days).items():
            self.day(source, stream, symbol, native, d).raw_rows += n
        untimed = np.zeros(len(times), dtype=bool)
        if idc is not None and pa.types.is_integer(rows.schema.field(idc).type):
            column = rows.column(idc).combine_chunks()
            valid = column.is_valid().to_numpy(zero_copy_only=False)
            ids = column.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)[valid]
            t = times[valid]
            if len(ids) > 1 and np.any(ids[1:] < ids[:-1]):
                order = np.argsort(ids, kind="stable")
                ids, t = ids[order], t[order]
            self.ordered[(source, native)] = (ids, t // DAY_US)
            repeats = np.concatenate(([False], ids[1:] == ids[:-1])) if len(ids) else np.zeros(0, dtype=bool)
            for d, n in _per_day(t // DAY_US, repeats).items():
                self.day(source, stream, symbol, native, d).raw_duplicates += n
            if len(ids):
                self._id_range(source, stream, symbol, native, ids, t // DAY_US)
            if stream.ids == IdContinuity.CONTIGUOUS:
                self._id_gaps(source, stream, symbol, native, ids, t)
                untimed = ~valid  # rows without an id: only time can tell
            else:
                untimed = np.ones(len(times), dtype=bool)
        else:
            untimed = np.ones(len(times), dtype=bool)
            if idc is not None:  # ids that are not integers: duplicates by key, no range
                key = rows.select([idc]).append_column("__day", pa.array(days))
                g = key.group_by(idc, use_threads=False).aggregate([("__day", "min"), ("__day", "count")])
                extra = pc.subtract(g.column("__day_count"), 1).to_numpy(zero_copy_only=False)
                for d, n in _per_day(g.column("__day_min").to_numpy(zero_copy_only=False), extra > 0,
                                     extra.astype(np.float64)).items():
                    self.day(source, stream, symbol, native, d).raw_duplicates += n
        if untimed.sum() > 1:
            ids = pc.filter(rows.column(idc), pa.array(untimed)) if idc is not None else None
            self._time_holes(source, stream, symbol, native, times[untimed], ids)

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
            report = self.day(source, stream, symbol, native, EPOCH_DAY + timedelta(days=d))
            report.id_min, report.id_max = lo, hi

    def _id_gaps(self, source: str, stream: Stream, symbol: str, native: str, ids: np.ndarray,
                 times: np.ndarray) -> None:
        if len(ids) < 2:
            return
        after = np.flatnonzero(np.diff(ids) > 1) + 1
        for i in after:
            t_before, t_after = _datetime(times[i - 1]), _datetime(times[i])
            gap = Gap(source, stream.name, symbol, native, "ids", t_before.date(), t_before, t_after,
                      int(ids[i - 1]), int(ids[i]), int(ids[i - 1]) + 1, int(ids[i]) - 1)
            self.report.gaps.append(gap)
            report = self.day(source, stream, symbol, native, gap.day)
            report.missing += gap.count or 0
            report.missing_ranges.append((gap.first_id, gap.last_id))

    def _time_holes(self, source: str, stream: Stream, symbol: str, native: str, times: np.ndarray,
                    ids: pa.ChunkedArray | pa.Array | None) -> None:
        order = np.argsort(times, kind="stable") if np.any(times[1:] < times[:-1]) else np.arange(len(times))
        times = times[order]
        step = np.diff(times)
        p99 = float(np.percentile(step, 99)) if len(step) else 0.0
        threshold = max(self.hole_factor * p99, self.min_hole / timedelta(microseconds=1))
        self.report.hole_thresholds[f"{source}.{symbol}"] = round(threshold / 1e6, 3)
        for i in np.flatnonzero(step > threshold) + 1:
            t_before, t_after = _datetime(times[i - 1]), _datetime(times[i])
            id_before = ids[int(order[i - 1])].as_py() if ids is not None else None
            id_after = ids[int(order[i])].as_py() if ids is not None else None
            self.report.gaps.append(Gap(source, stream.name, symbol, native, "time", t_before.date(), t_before,
                                        t_after, id_before, id_after))
            report = self.day(source, stream, symbol, native, t_before.date())
            report.time_holes += 1
            report.hole_seconds += float(step[i - 1]) / 1e6

    # -- raw <-> unified ----------------------------------------------------------------------------------
    def reconcile(self, source: str, stream: Stream, mapping: Mapping, raw_keys: pa.Table,
                  canonical: MappingT[str, str], symbols: Sequence[str] | None) -> None:
        target = self.registry.targets.get(mapping.target_table)
        unified = _load(self.catalog, self.namespace, mapping.target_table) if target is not None else None
        raw_table = _load(self.catalog, self.namespace, mapping.raw_table)
        if target is not None and raw_table is not None and unified is None:  # never unified: all of it waits
            for report in self.days.values():
                if (report.source, report.stream) == (source, stream.name):
                    report.pending = report.raw_rows
            return
        if target is None or unified is None or raw_table is None:
            return
        key_cols = list(dict.fromkeys((*target.key, target.time_column)))
        key_schema = pa.schema([target.schema.field(c) for c in key_cols])
        keyed = mapping.restricted(list(raw_keys.column_names))
        constants = {c: v for c, v in keyed.constants.items() if c in target.key}
        sym_col = next((c for c in _symbol_targets(mapping, stream) if c in target.key and c not in constants), None)
        where = _window(target.time_column, self.since, self.until)
        for c, v in constants.items():
            where = And(where, EqualTo(c, v))
        if symbols is not None and sym_col is not None:
            where = And(where, In(sym_col, list(symbols)))
        held = self.scan(unified, mapping.target_table, where, key_cols) if unified.current_snapshot() else \
            key_schema.empty_table()
        held = held.select(key_cols).cast(key_schema)
        keyed = _only(keyed, key_cols)
        idt = self._integer_ids(source, stream, keyed, key_schema, raw_keys, [c for c in target.key
                                                                               if c not in constants and c != sym_col])
        if idt is not None and sym_col is not None:
            try:
                self._reconcile_ids(source, stream, raw_table, unified, mapping, held, canonical, sym_col, idt,
                                    target.time_column)
                return
            except (pa.ArrowInvalid, ValueError):
                pass  # a target id that is not the raw integer: compare the mapped keys instead
        mapped = keyed.apply(raw_keys, self.registry, key_schema)
        consumed = progress_of(unified).get(source_key(mapping.raw_table)) if unified.current_snapshot() else None
        newest = raw_table.current_snapshot()
        pending = mapped.slice(0, 0)
        if consumed is None:
            pending = mapped
        elif newest is not None and int(consumed) != newest.snapshot_id:
            try:
                scan = raw_table.incremental_append_scan(
                    from_snapshot_id_exclusive=int(consumed), to_snapshot_id_inclusive=newest.snapshot_id,
                    row_filter=_window(stream.event_time, self.since, self.until),
                    selected_fields=tuple(raw_keys.column_names))
                pending = keyed.apply(scan.to_arrow().select(raw_keys.column_names), self.registry, key_schema)
            except ValueError:
                pending = mapped.slice(0, 0)  # the consumed snapshot was expired: nothing to tell apart
        tcol, keys = target.time_column, list(target.key)
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

        note(held, "unified_rows")
        counted = held.group_by(keys, use_threads=False).aggregate([(tcol, "min"), (tcol, "count")])
        counted = counted.rename_columns([tcol if c == f"{tcol}_min" else c for c in counted.column_names])
        extra = pc.subtract(counted.column(f"{tcol}_count"), 1)
        note(counted.append_column("extra", extra).filter(pc.greater(extra, 0)), "unified_duplicates", "extra")
        distinct = mapped.group_by(keys, use_threads=False).aggregate([(tcol, "min")])
        distinct = distinct.rename_columns([tcol if c == f"{tcol}_min" else c for c in distinct.column_names])
        pend = pending.group_by(keys, use_threads=False).aggregate([(tcol, "min")])
        pend = pend.rename_columns([tcol if c == f"{tcol}_min" else c for c in pend.column_names])
        note(pend, "pending")
        missing = distinct.join(counted.select(keys), keys, join_type="left anti")
        missing = missing.join(pend.select(keys), keys, join_type="left anti")
        note(missing, "not_unified")
        note(counted.select([*keys, tcol]).join(distinct.select(keys), keys, join_type="left anti"), "not_in_raw")


    def _integer_ids(self, source: str, stream: Stream, keyed: Mapping, key_schema: pa.Schema, raw_keys: pa.Table,
                     rest: list[str]) -> str | None:
        """The target id column when it is the raw integer id written as text (checked on a sample), else None.

        Then raw and target are compared as sorted integers, which is several times cheaper than joining text
        keys; anything else goes through the mapped keys.
        """
        idc = stream.id_column
        if len(rest) != 1 or idc is None or not pa.types.is_integer(raw_keys.schema.field(idc).type):
            return None
        sample = raw_keys.slice(0, 1000).filter(pc.is_valid(raw_keys.slice(0, 1000).column(idc)))
        if sample.num_rows == 0:
            return None
        try:
            back = pc.cast(keyed.apply(sample, self.registry, key_schema).column(rest[0]), pa.int64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        return rest[0] if back.equals(pc.cast(sample.column(idc), pa.int64())) else None

    def _reconcile_ids(self, source: str, stream: Stream, raw_table: Table, unified: Table, mapping: Mapping,
                       held: pa.Table, canonical: MappingT[str, str], sym_col: str, idt: str, tcol: str) -> None:
        """Raw ids against target ids per symbol by counting each id on both sides (``np.bincount`` over the
        id range: no sort, no hash join). Raises ``ValueError`` when the ids are too sparse for that."""
        consumed = progress_of(unified).get(source_key(mapping.raw_table)) if unified.current_snapshot() else None
        newest = raw_table.current_snapshot()
        pending: dict[str, np.ndarray] = {}
        sym, idc = stream.symbol_column, stream.id_column
        if consumed is not None and newest is not None and int(consumed) != newest.snapshot_id:
            try:
                scan = raw_table.incremental_append_scan(
                    from_snapshot_id_exclusive=int(consumed), to_snapshot_id_inclusive=newest.snapshot_id,
                    row_filter=_window(stream.event_time, self.since, self.until), selected_fields=(sym, idc))
                new = scan.to_arrow()
                for native in pc.unique(new.column(sym)).drop_null().to_pylist():
                    ids = new.filter(pc.equal(new.column(sym), native)).column(idc).drop_null()
                    pending[native] = pc.cast(ids, pa.int64()).to_numpy()
            except ValueError:
                pass  # the consumed snapshot was expired: nothing to tell apart
        held = held.filter(pc.is_valid(held.column(idt)))
        held = held.set_column(held.schema.get_field_index(idt), idt, pc.cast(held.column(idt), pa.int64()))
        plan = []  # everything is checked (and may raise) before anything is counted
        symbols = held.column(sym_col)
        for native, (raw_ids, raw_days) in [(n, v) for (src, n), v in self.ordered.items() if src == source]:
            symbol = canonical.get(native, native)
            rows = held.filter(pc.equal(symbols, symbol))
            ids = rows.column(idt).combine_chunks().to_numpy(zero_copy_only=False)
            days = _micros(rows.column(tcol)) // DAY_US
            both = np.concatenate((raw_ids, ids))
            lo = int(both.min()) if len(both) else 0
            span = int(both.max()) - lo + 1 if len(both) else 0
            if span > 4 * len(both) + 1_000_000:
                raise ValueError("ids too sparse to count")
            plan.append((native, symbol, raw_ids, raw_days, ids, days, lo, span))
        for native, symbol, raw_ids, raw_days, ids, days, lo, span in plan:
            def day(d: date, s: str = symbol, n: str = native) -> DayReport:
                return self.day(source, stream, s, n, d)

            raw_at, at = raw_ids - lo, ids - lo
            in_raw = np.bincount(raw_at, minlength=span)
            in_target = np.bincount(at, minlength=span)
            for d, n in _per_day(days).items():
                day(d).unified_rows += n
            doubled = np.flatnonzero(in_target > 1)
            if len(doubled):  # rows beyond the first of an id, on the day of each extra row
                rows_of = np.flatnonzero(np.isin(ids, doubled + lo))
                order = rows_of[np.argsort(ids[rows_of], kind="stable")]
                extra = order[np.concatenate(([False], ids[order][1:] == ids[order][:-1]))]
                for d, n in _per_day(days[extra]).items():
                    day(d).unified_duplicates += n
            first = np.concatenate(([True], raw_ids[1:] != raw_ids[:-1])) if len(raw_ids) else np.zeros(0, bool)
            waiting = np.zeros(span, dtype=bool)
            late_ids = pending.get(native)
            if late_ids is not None:
                late_ids = late_ids[(late_ids >= lo) & (late_ids < lo + span)]
                waiting[late_ids - lo] = True
                for d, n in _per_day(raw_days, first & waiting[raw_at]).items():
                    day(d).pending += n
            absent = first & (in_target[raw_at] == 0)
            if late_ids is not None:
                absent &= ~waiting[raw_at]
            for d, n in _per_day(raw_days, absent).items():
                day(d).not_unified += n
            for d, n in _per_day(days, in_raw[at] == 0).items():
                day(d).not_in_raw += n
        natives = {v: k for k, v in canonical.items()}
        seen = {symbol for _, symbol, *_ in plan}
        for symbol in set(pc.unique(symbols).drop_null().to_pylist()) - seen:  # target rows raw has no symbol for
            rows = held.filter(pc.equal(symbols, symbol))
            for d, n in _per_day(_micros(rows.column(tcol)) // DAY_US).items():
                self.day(source, stream, symbol, natives.get(symbol, symbol), d).not_in_raw += n


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
        canonical = {connector.native_symbol(s): s for s in wanted or ()}
        data = run.raw(source, spec, natives, _Lazy(registry, own[0] if own else None, spec, canonical))
        if data is None:
            continue
        found = pc.unique(data.column(spec.symbol_column)).drop_null().to_pylist()
        canonical = {**canonical_symbols(registry, own[0] if own else None, spec, found), **canonical}
        for mapping in own if reconcile else ():
            run.reconcile(source, spec, mapping, data, canonical, wanted)
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
