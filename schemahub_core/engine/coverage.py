"""Coverage: the event-time ranges of a (source, stream, symbol) already landed in raw, the only truth.

A span ``[start, end)`` (epoch microseconds) says: every record of the venue with ``start <= t < end`` is in
raw, and none before ``start``. Its end is either

- *exact* (``cursor`` is None): no record at or after ``end`` was landed with it (a fill stopped at a bound);
- *open* (``cursor`` set): records at ``t == end`` were landed too, up to the connector cursor ``cursor``. A
  fill that continues from ``end`` must resume from that cursor (never from the time), so it neither skips
  nor repeats the records sharing that timestamp. This is how forward ingest resumes exactly where it stopped
  on an id venue (``fromId = cursor + 1``) and on a time venue (its nanosecond token).

Each raw commit lands one claim of one (stream, symbol) and records, in its snapshot summary, that claim
(``schemahub.covers.<stream>.<symbol>``) and the merged coverage of that symbol after it
(``schemahub.coverage.<stream>.<symbol>``, plus ``rows`` and ``last-ts``): the summary grows with what the
symbol covers, not with every symbol of the table. The table property ``schemahub.index.<stream>.<symbol>``
names that snapshot, written in the same atomic commit, so reading a symbol's coverage is one lookup instead
of a walk through history (the walk is the fallback when the property is missing).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of

from schemahub_core.engine.sink import PROGRESS_PREFIX, Commit, progress_of
from schemahub_core.framework.connector import Cursor

COVERS = PROGRESS_PREFIX + "covers."
COVERAGE = PROGRESS_PREFIX + "coverage."
ROWS = PROGRESS_PREFIX + "rows."
LAST_TS = PROGRESS_PREFIX + "last-ts."
INDEX = PROGRESS_PREFIX + "index."  # a table property: the newest snapshot carrying the symbol's coverage
LEGACY_CURSOR = PROGRESS_PREFIX + "cursor."  # before coverage: one cursor per symbol (archives still leave one)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(moment: datetime) -> int:
    """Exact epoch microseconds (naive datetimes are UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1)


def moment(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


@dataclass(frozen=True)
class Span:
    """``[start, end)`` landed; ``cursor`` set = records at ``end`` landed up to it (see the module docstring)."""

    start: int
    end: int
    cursor: Cursor = None

    def as_list(self) -> list:
        return [self.start, self.end, self.cursor]

    def as_dict(self) -> dict:
        return {"since": moment(self.start).isoformat(), "until": moment(self.end).isoformat(),
                "cursor": None if self.cursor is None else str(self.cursor)}


@dataclass(frozen=True)
class Hole:
    """A part of a requested window not covered yet: fetch it from ``since`` (or ``cursor``) to ``until``."""

    since: int | None  # None: the venue's recent history (no coverage, no --since)
    until: int | None  # None: up to the newest data
    cursor: Cursor = None  # resume after this cursor (the open end of the span just before)


def merge(spans: Iterable[Span]) -> list[Span]:
    """Sorted, disjoint spans; touching spans become one (the later one's end and cursor)."""
    out: list[Span] = []
    for span in sorted(spans, key=lambda s: (s.start, s.end)):
        if out and span.start <= out[-1].end:
            last = out[-1]
            if span.end > last.end or (span.end == last.end and span.cursor is not None):
                out[-1] = Span(last.start, span.end, span.cursor)
        else:
            out.append(span)
    return out


def holes(spans: list[Span], since: int | None, until: int | None) -> list[Hole]:
    """The parts of ``[since, until)`` no span covers, each with the cursor to resume from.

    ``since=None`` means "from the newest covered point" (the venue's recent history when nothing is covered).
    """
    if since is None and spans:
        since = spans[-1].end
    out: list[Hole] = []
    at, cursor = since, None
    for span in spans:
        if until is not None and span.start >= until:
            break
        if at is None or span.start > at:
            out.append(Hole(at, span.start, cursor))
        if at is None or span.end >= at:
            at, cursor = span.end, span.cursor
    if until is None or at is None or at < until:
        out.append(Hole(at, until, cursor))
    return out


def conflicts(spans: list[Span], claim: Span, after: Cursor) -> bool:
    """True if ``claim`` (resumed after cursor ``after``, if any) lands anything ``spans`` already hold.

    An open end also holds records at ``end``, so it touches a span starting there; the one exception is
    the span whose open end the claim continues from (same end, same cursor).
    """
    for span in spans:
        if after is not None and span.end == claim.start and span.cursor == after:
            continue
        if span.start >= claim.start and span.start < claim.end + (claim.cursor is not None):
            return True
        if claim.start >= span.start and claim.start < span.end + (span.cursor is not None):
            return True
    return False


def encode(spans: list[Span]) -> str:
    return json.dumps([s.as_list() for s in spans], separators=(",", ":"))


def decode(text: str | None) -> list[Span]:
    return [Span(int(a), int(b), c) for a, b, c in json.loads(text)] if text else []


def key(prefix: str, stream: str, symbol: str) -> str:
    return f"{prefix}{stream}.{symbol}"


@dataclass(frozen=True)
class State:
    """A symbol's committed coverage and counters, and the snapshot that carries them."""

    spans: list[Span]
    rows: int = 0
    last_ts: datetime | None = None
    snapshot_id: int | None = None
    updated_at: datetime | None = None

    @property
    def cursor(self) -> Cursor:
        """Where forward ingest resumes: the newest span's cursor."""
        return self.spans[-1].cursor if self.spans else None


def _state(props: dict[str, str], stream: str, symbol: str, snapshot_id: int, ts_ms: int) -> State:
    last = props.get(key(LAST_TS, stream, symbol))
    return State(decode(props.get(key(COVERAGE, stream, symbol))), int(props.get(key(ROWS, stream, symbol), 0)),
                 datetime.fromisoformat(last) if last else None, snapshot_id,
                 datetime.fromtimestamp(ts_ms / 1000, UTC))


def read_state(table: Table, stream: str, symbol: str) -> State:
    """The coverage of (stream, symbol): one index lookup; a walk through history only without the index."""
    metadata = table.metadata
    wanted = key(COVERAGE, stream, symbol)
    pointer = metadata.properties.get(key(INDEX, stream, symbol))
    snapshot = metadata.snapshot_by_id(int(pointer)) if pointer else None
    candidates: Iterator = iter([snapshot]) if snapshot is not None else ancestors_of(
        table.current_snapshot(), metadata)
    for snap in candidates:
        props = snap.summary.additional_properties if snap.summary else {}
        if wanted in props:
            return _state(props, stream, symbol, snap.snapshot_id, snap.timestamp_ms)
    return _single_cursor(table, stream, symbol)


def _single_cursor(table: Table, stream: str, symbol: str) -> State:
    """A table written before coverage (one cursor per symbol, carried forward) reads as covered from the
    beginning up to that cursor: forward ingest continues exactly after it, and no window before it lands twice."""
    props = progress_of(table)
    cursor = props.get(f"{LEGACY_CURSOR}{stream}.{symbol}")
    if cursor is None:
        return State([])
    last = props.get(key(LAST_TS, stream, symbol))
    end = micros(datetime.fromisoformat(last)) if last else 0
    return State([Span(0, end, json.loads(cursor))], int(props.get(key(ROWS, stream, symbol), 0)),
                 datetime.fromisoformat(last) if last else None)


def symbols_of(table: Table, stream: str) -> list[str]:
    """Symbols of ``stream`` with coverage in ``table`` (from the index properties, else the history)."""
    prefix = key(INDEX, stream, "")
    found = {k[len(prefix):] for k in table.metadata.properties if k.startswith(prefix)}
    if not found:
        cover = key(COVERAGE, stream, "")
        for snap in table.metadata.snapshots:
            props = snap.summary.additional_properties if snap.summary else {}
            found |= {k[len(cover):] for k in props if k.startswith(cover)}
    return sorted(found)


def index_snapshots(table: Table) -> set[int]:
    """Snapshot ids the coverage index points at: expiry must keep them."""
    return {int(v) for k, v in table.metadata.properties.items() if k.startswith(INDEX)}


PER_SYMBOL = (COVERS, COVERAGE, ROWS, LAST_TS)


def claim_commit(table: Table, stream: str, symbol: str, time_column: str, claim: Span, after: Cursor,
                 rows: pa.Table, extra: dict[str, str] | None = None) -> tuple[Commit, State] | None:
    """The append that lands ``rows`` as ``claim`` on ``table`` as it is now; None if any of it is covered.

    The summary carries this symbol's claim, merged coverage and counters, plus the table's other progress
    (archive files, repair counters) forward, but never other symbols' coverage: its size follows what this
    symbol covers, not how many symbols the table has. The index property names the new snapshot.
    """
    state = read_state(table, stream, symbol)
    if conflicts(state.spans, claim, after):
        return None
    spans = merge([*state.spans, claim])
    total = state.rows + rows.num_rows
    newest = pc.max(rows.column(time_column)).as_py() if rows.num_rows else None
    seen = [t for t in (state.last_ts, newest) if t is not None]
    last_ts = max(seen) if seen else None
    carried = {k: v for k, v in progress_of(table).items() if not k.startswith(PER_SYMBOL)}
    summary = {**carried, **(extra or {}), key(COVERS, stream, symbol): json.dumps(claim.as_list()),
               key(COVERAGE, stream, symbol): encode(spans), key(ROWS, stream, symbol): str(total)}
    if last_ts is not None:
        summary[key(LAST_TS, stream, symbol)] = last_ts.isoformat()
    commit = Commit(rows, summary, lambda snapshot_id: {key(INDEX, stream, symbol): str(snapshot_id)})
    return commit, State(spans, total, last_ts)
