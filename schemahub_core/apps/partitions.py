"""Partition planning: suggest a partition spec for a unified table from its own metadata and the queries we run.

Inputs are what the table already knows about itself (data files, their rows and bytes per partition, rows per
symbol per day and hour) and the query SchemaHub runs most: a replay window (one symbol, 12 s). The rules:

- keep ``day(<time>)`` while a day of data is small: one compacted file per day is then the cheapest layout;
- add ``bucket(N, symbol)`` when a day holds many symbols and more bytes than one target-size file, or too many
  files: a replay of one symbol then reads only its bucket's file instead of every symbol's;
- use ``hour(<time>)`` instead of ``day`` when one symbol alone fills more than a target-size file per day: a 12 s
  window then reads one hour.

Queries run through ``schemahub sql`` are recorded (``apps/sql.py``: per table, the columns filtered and the time
window bounded) and read here alongside replay windows: the suggestion says how many recorded queries filter on
``symbol`` (and so gain from a bucket) and bound the time column, and how many files the typical recorded window
scans today. They are reported, not weighted: the rules above decide from the data and the replay window.

The expected effect is estimated from the same metadata: files and bytes a typical replay window scans now, after
``maintain --compact`` with the current spec, and after it with the proposed spec (compaction rewrites old files
into the table's current spec; new data uses the new spec at once). ``apply`` is Iceberg partition evolution:
metadata only, old data untouched.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.conversions import from_bytes
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan
from pyiceberg.table import Table
from pyiceberg.transforms import BucketTransform, DayTransform, HourTransform, Transform
from pyiceberg.types import StringType

from schemahub_core.apps.replay import window_filter

TARGET_FILE_BYTES = 128 * 1024 * 1024  # what one compacted data file should hold
WRITE_TARGET_DEFAULT = 512 * 1024 * 1024  # Iceberg's default write.target-file-size-bytes
MAX_FILES_PER_DAY = 32  # more than this per day partition: too many files for one window's planning
MIN_SYMBOLS_FOR_BUCKET = 4  # below this, buckets would hold one symbol each and save nothing
MAX_BUCKETS = 16
REPLAY_WINDOW_US = 12_000_000  # the replay demo's window
DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000


class PartitionError(RuntimeError):
    """The table cannot be planned or evolved as asked (one line for the user)."""


@dataclass
class Layout:
    """Files and bytes a typical replay window scans under one layout."""

    spec: str
    files: int
    bytes: int


@dataclass
class Suggestion:
    table: str
    current_spec: str
    proposed_spec: str
    changes: list[str]
    reasons: list[str]
    rows: int
    data_files: int
    data_bytes: int
    days: int
    symbols: int
    busiest_day: str | None
    busiest_symbol: str | None
    window: dict[str, Any] = field(default_factory=dict)
    now: Layout | None = None
    compacted: Layout | None = None
    proposed: Layout | None = None
    buckets: int | None = None
    hourly: bool = False
    inputs: list[str] = field(default_factory=list)  # what the suggestion read
    queries: dict[str, Any] = field(default_factory=dict)  # the recorded sql queries on this table, summarized

    @property
    def changed(self) -> bool:
        return bool(self.changes)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "changed": self.changed}


def spec_text(table: Table) -> str:
    """The table's current spec as Iceberg writes it in DDL: ``day(trade_ts), bucket(16, symbol)``."""
    schema = table.schema()
    parts = []
    for f in table.spec().fields:
        name = schema.find_field(f.source_id).name
        parts.append(_transform_text(f.transform, name))
    return ", ".join(parts) or "unpartitioned"


def _transform_text(transform: Transform, column: str) -> str:
    if isinstance(transform, BucketTransform):
        return f"bucket({transform.num_buckets}, {column})"
    text = str(transform).lower()
    return column if text == "identity" else f"{text}({column})"


def _profile(table: Table, time_column: str) -> pa.Table:
    """Rows per (day, hour, symbol): two columns read, nothing else."""
    data = table.scan(selected_fields=("symbol", time_column)).to_arrow()
    if data.num_rows == 0:
        return pa.table({"day": pa.array([], pa.int64()), "hour": pa.array([], pa.int64()),
                         "symbol": pa.array([], pa.string()), "rows": pa.array([], pa.int64())})
    us = pc.cast(pc.cast(data[time_column], pa.timestamp("us")), pa.int64())
    day = pc.divide(us, DAY_US)
    hour = pc.divide(us, HOUR_US)
    grouped = pa.table({"day": day, "hour": hour, "symbol": pc.cast(data["symbol"], pa.string())}).group_by(
        ["day", "hour", "symbol"]).aggregate([([], "count_all")])
    return grouped.rename_columns(["day", "hour", "symbol", "rows"])


def _bucket_of(num_buckets: int) -> Any:
    return BucketTransform(num_buckets).transform(StringType())


def _files_for(nbytes: float, target: int) -> int:
    return 0 if nbytes <= 0 else max(1, math.ceil(nbytes / target))


def _micros(text: str) -> int:
    moment = datetime.fromisoformat(text)
    return int((moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1))


def query_profile(table: Table, queries: list[dict[str, Any]], time_column: str) -> dict[str, Any]:
    """The recorded sql queries on ``table`` summarized: filter columns, time windows, files the typical one scans."""
    columns = Counter(c for q in queries for c in q.get("columns") or [])
    bounded = [q["window"] for q in queries if (q.get("window") or {}).get("column") == time_column]
    closed = sorted((_micros(w["end"]) - _micros(w["start"]), w) for w in bounded if w.get("start") and w.get("end"))
    profile: dict[str, Any] = {"recorded": len(queries), "filter_columns": dict(columns.most_common()),
                               "filter_symbol": columns["symbol"], "time_window": len(bounded),
                               "median_window_seconds": None, "median_window_files_now": None}
    if closed:
        length, window = closed[(len(closed) - 1) // 2]
        planned = list(table.scan(row_filter=And(GreaterThanOrEqual(time_column, _micros(window["start"])),
                                                 LessThan(time_column, _micros(window["end"])))).plan_files())
        profile["median_window_seconds"] = length / 1e6
        profile["median_window_files_now"] = len(planned)
    return profile


def suggest(table: Table, *, time_column: str = "trade_ts", target_file_bytes: int = TARGET_FILE_BYTES,
            max_files_per_day: int = MAX_FILES_PER_DAY, queries: list[dict[str, Any]] | None = None) -> Suggestion:
    """What spec this table's data and a replay window call for, and the files a window scans before and after.

    ``queries``: the recorded sql queries on this table (``sql.recorded_queries``), reported alongside.
    """
    tasks = list(table.scan().plan_files())
    data_bytes = sum(t.file.file_size_in_bytes for t in tasks)
    rows_total = sum(t.file.record_count for t in tasks)
    profile = _profile(table, time_column)
    current = spec_text(table)
    base = Suggestion(table=table.name()[-1], current_spec=current, proposed_spec=current, changes=[], reasons=[],
                      rows=rows_total, data_files=len(tasks), data_bytes=data_bytes, days=0, symbols=0,
                      busiest_day=None, busiest_symbol=None)
    queries = queries or []
    base.inputs = ["table metadata: data files, rows and bytes per day, hour and symbol",
                   f"replay windows: one symbol, {REPLAY_WINDOW_US // 1_000_000} s",
                   f"{len(queries)} recorded `schemahub sql` quer{'y' if len(queries) == 1 else 'ies'} on this table"
                   if queries else "no `schemahub sql` queries recorded on this table"]
    if queries:
        base.queries = query_profile(table, queries, time_column)
    if profile.num_rows == 0:
        base.reasons.append("the table is empty: nothing to plan yet")
        return base
    bytes_per_row = data_bytes / max(rows_total, 1)
    days = profile.group_by("day").aggregate([("rows", "sum"), ("symbol", "count_distinct")])
    per_day_symbol = profile.group_by(["day", "symbol"]).aggregate([("rows", "sum")])
    # files per day partition, from the data files' time bounds (any spec: day, hour or bucketed)
    files_per_day: dict[int, int] = defaultdict(int)
    time_field = table.schema().find_field(time_column)
    ftype = time_field.field_type
    for t in tasks:
        lo = t.file.lower_bounds.get(time_field.field_id) if t.file.lower_bounds else None
        hi = t.file.upper_bounds.get(time_field.field_id) if t.file.upper_bounds else None
        if lo is None or hi is None:
            continue
        for d in range(from_bytes(ftype, lo) // DAY_US, from_bytes(ftype, hi) // DAY_US + 1):
            files_per_day[d] += 1
    busiest = per_day_symbol.sort_by([("rows_sum", "descending")]).slice(0, 1).to_pylist()[0]
    day_rows = dict(zip(days["day"].to_pylist(), days["rows_sum"].to_pylist(), strict=True))
    day_symbols = dict(zip(days["day"].to_pylist(), days["symbol_count_distinct"].to_pylist(), strict=True))
    base.days, base.symbols = days.num_rows, len(pc.unique(profile["symbol"]))
    base.busiest_day = _day_text(busiest["day"])
    base.busiest_symbol = busiest["symbol"]

    # the decision, on the busiest day
    d = busiest["day"]
    day_bytes = day_rows[d] * bytes_per_row
    symbol_day_bytes = busiest["rows_sum"] * bytes_per_row
    hourly = symbol_day_bytes > target_file_bytes
    many_symbols = day_symbols[d] >= MIN_SYMBOLS_FOR_BUCKET
    too_big = day_bytes > target_file_bytes
    too_many = files_per_day.get(d, 0) > max_files_per_day
    buckets = None
    if many_symbols and (too_big or too_many):
        buckets = min(MAX_BUCKETS, 2 ** math.ceil(math.log2(max(2, day_symbols[d] / 2))))
    changes, reasons = [], []
    if hourly:
        changes.append(f"replace day({time_column}) with hour({time_column})")
        reasons.append(f"{busiest['symbol']} alone holds ~{_size(symbol_day_bytes)} on {base.busiest_day}, more "
                       f"than one {_size(target_file_bytes)} file: a {REPLAY_WINDOW_US // 1_000_000} s window "
                       "should read one hour, not the day")
    if buckets:
        changes.append(f"add bucket({buckets}, symbol)")
        why = (f"~{_size(day_bytes)} in one day" if too_big else f"{files_per_day.get(d, 0)} files in one day")
        reasons.append(f"{base.busiest_day} has {day_symbols[d]} symbols and {why}: a replay of one symbol "
                       f"should read its bucket only (1/{buckets} of the day)")
    if not changes:
        reasons.append(f"the busiest day holds ~{_size(day_bytes)} in {files_per_day.get(d, 0)} file(s) for "
                       f"{day_symbols[d]} symbol(s): day({time_column}) with compaction is already the cheapest")
    proposed = ", ".join(([f"hour({time_column})"] if hourly else [f"day({time_column})"])
                         + ([f"bucket({buckets}, symbol)"] if buckets else []))
    base.changes, base.reasons, base.buckets, base.hourly = changes, reasons, buckets, hourly
    base.proposed_spec = proposed if changes else current

    if queries:
        q = base.queries
        median = q["median_window_seconds"]
        reasons.append(f"{q['recorded']} recorded sql quer{'y' if q['recorded'] == 1 else 'ies'}: {q['filter_symbol']} "
                       f"filter symbol, {q['time_window']} bound {time_column}"
                       + (f" (median window {median:g} s, {q['median_window_files_now']} file(s) scanned now)"
                          if median is not None else ""))
        if buckets:
            reasons.append(f"bucket({buckets}, symbol) serves the {q['filter_symbol']} recorded quer"
                           f"{'y' if q['filter_symbol'] == 1 else 'ies'} that filter symbol; the other "
                           f"{q['recorded'] - q['filter_symbol']} read every bucket of the days they touch")
    # expected effect for a typical window: the busiest symbol, mid-way through its busiest hour
    hours = profile.filter(pc.and_(pc.equal(profile["day"], d), pc.equal(profile["symbol"], busiest["symbol"])))
    peak = hours.sort_by([("rows", "descending")]).slice(0, 1).to_pylist()[0]
    start_us = peak["hour"] * HOUR_US + HOUR_US // 2
    window = window_filter(time_column, [busiest["symbol"]], start_us, start_us + REPLAY_WINDOW_US)
    planned = list(table.scan(row_filter=window).plan_files())
    base.window = {"symbol": busiest["symbol"], "start": _us_text(start_us), "seconds": REPLAY_WINDOW_US / 1e6}
    base.now = Layout(current, len(planned), sum(t.file.file_size_in_bytes for t in planned))
    # compaction writes files of the table's own target size (pyiceberg's write.target-file-size-bytes)
    write_target = int(table.properties.get("write.target-file-size-bytes", WRITE_TARGET_DEFAULT))
    compacted_bytes = day_bytes
    base.compacted = Layout(f"{current}, compacted", _files_for(compacted_bytes, write_target),
                            int(compacted_bytes))
    # under the proposed spec, after compaction: the window's partition only
    rows_in_partition = float(day_rows[d])
    if hourly:
        hour_rows = profile.filter(pc.equal(profile["hour"], peak["hour"]))
        rows_in_partition = float(pc.sum(hour_rows["rows"]).as_py())
        scope = hour_rows
    else:
        scope = profile.filter(pc.equal(profile["day"], d))
    if buckets:
        bucket = _bucket_of(buckets)
        mine = bucket(busiest["symbol"])
        same = [s for s in pc.unique(scope["symbol"]).to_pylist() if bucket(s) == mine]
        rows_in_partition = float(pc.sum(scope.filter(pc.is_in(scope["symbol"], pa.array(same)))["rows"]).as_py())
    if changes:
        nbytes = rows_in_partition * bytes_per_row
        base.proposed = Layout(f"{proposed}, compacted", _files_for(nbytes, write_target), int(nbytes))
        if base.proposed.bytes >= base.now.bytes:
            base.reasons.append(
                f"today's uncompacted files are small time slices, so this window reads less now "
                f"(~{_size(base.now.bytes)}) than it would after any compaction; the proposal is for the layout "
                f"`maintain --compact` leaves (~{_size(base.compacted.bytes)} per window with today's spec)")
    return base


def apply(table: Table, suggestion: Suggestion, *, time_column: str = "trade_ts", attempts: int = 5) -> str:
    """Evolve the table's spec to the suggestion (metadata only: old files keep their spec); the new spec text."""
    if not suggestion.changed:
        return spec_text(table)
    for attempt in range(attempts):
        fresh = table.refresh()
        schema = fresh.schema()
        try:
            with fresh.update_spec() as update:
                existing = {(schema.find_field(f.source_id).name, type(f.transform)): f.name
                            for f in fresh.spec().fields}
                if suggestion.hourly:
                    day_field = existing.get((time_column, DayTransform))
                    if day_field is not None:
                        update.remove_field(day_field)
                    if (time_column, HourTransform) not in existing:
                        update.add_field(time_column, HourTransform(), f"{time_column}_hour")
                if suggestion.buckets and (("symbol", BucketTransform) not in existing):
                    update.add_field("symbol", BucketTransform(suggestion.buckets), "symbol_bucket")
            return spec_text(fresh.refresh())
        except CommitFailedException:
            if attempt == attempts - 1:
                raise PartitionError(f"{suggestion.table}: another writer kept committing; rerun --apply") from None
    raise AssertionError("unreachable")


def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} TiB"


def _day_text(day: int) -> str:
    return _us_text(day * DAY_US)[:10]


def _us_text(us: int) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)).isoformat().replace("+00:00", "Z")
