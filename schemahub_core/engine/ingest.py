"""Connector pages -> ``raw_<source>_<stream>``, exactly once, as coverage (see ``coverage``).

The committed state of a (source, stream, symbol) is the set of event-time spans
already landed, carried by the snapshot summaries of the commits that land the
data. A run with ``since``/``until`` lands exactly the parts of the window not yet
covered (before, between or after what is there); a run without bounds continues
forward from the newest covered point. Each commit lands one claim (a span) and is
conditional: if a concurrent writer covered any of it meanwhile, the batch is
dropped (never appended twice) and the run plans again. A commit covers at most
``MAX_ROWS_PER_COMMIT`` rows or ``MAX_SECONDS_PER_COMMIT`` of fetching. Records
that fail their casts go to ``schemahub_quarantine`` with reason and payload
before the batch commits, deduplicated by payload, so a crash between the two
never loses nor doubles one. Records outside the claim (a time venue's overlap,
repeats) are not landed: raw holds exactly the records its coverage says.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import And, EqualTo
from pyiceberg.table import Table

from schemahub_core.engine.coverage import Hole, Span, State, claim_commit, holes, micros, moment, read_state
from schemahub_core.engine.drift import drift_summary
from schemahub_core.engine.limits import MAX_ROWS_PER_COMMIT, MAX_SECONDS_PER_COMMIT
from schemahub_core.engine.maintenance import trim
from schemahub_core.engine.prefetch import Prefetched
from schemahub_core.engine.raw import Rejected, cast_pages, cast_table
from schemahub_core.engine.shards import Shard
from schemahub_core.engine.sink import Commit, IcebergSink, retry_transient, storage_errno, storage_problem
from schemahub_core.engine.tables import (
    QUARANTINE,
    QUARANTINE_SCHEMA,
    WATERMARKS,
    WATERMARKS_SCHEMA,
    TableDef,
    ensure_namespace,
    ensure_table,
    raw_table_def,
    raw_table_name,
)
from schemahub_core.framework.connector import Connector, ConnectorError, Cursor, Page, Stream, VenueUnreachable
from schemahub_core.framework.registry import Registry

QUARANTINE_COUNT = "schemahub.quarantined."


@dataclass
class RunStats:
    """One line of a run's summary: an ingested (source, stream, symbol) or a unified target."""

    step: str  # "ingest" or "unify"
    name: str
    fetched: int = 0  # records received from the venue (ingest) or raw rows scanned (unify)
    landed: int = 0  # raw rows committed
    quarantined: int = 0
    deduplicated: int = 0  # rows dropped: a concurrent writer landed them (ingest), already unified (unify)
    unified: int = 0  # rows appended to the unified table
    commits: int = 0
    dropped_batches: int = 0
    seconds: float = 0.0
    snapshot_id: int | None = None
    error: str | None = None
    resumable: bool = True  # after an error: a plain rerun resumes (False: something must be fixed first)
    stop: str | None = None  # after an error: "source" (the venue is unreachable) or "run" (storage refuses writes)
    scanned_files: list[str] = field(default_factory=list)

    def failed(self, exc: BaseException) -> None:
        """Record why this step failed, and whether the rest of the run should go on."""
        if isinstance(exc, VenueUnreachable):
            self.error, self.resumable, self.stop = str(exc), False, "source"
        elif isinstance(exc, ConnectorError):
            self.error, self.resumable = str(exc), exc.retryable
        elif storage_errno(exc) is not None:
            self.error, self.resumable, self.stop = storage_problem(exc, f"writing {self.name}"), True, "run"
        else:
            self.error = f"{type(exc).__name__}: {exc}"

    def as_dict(self) -> dict:
        return asdict(self)


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class Ago:
    """A relative ``--since``/``--until`` (``2h``): resolved per source against that venue's clock.

    Venues' clocks are not the wall clock everywhere (the sandbox's runs in 2024), so ``2h`` is kept as a span
    until the run knows whose last two hours it means (``resolve_window``).
    """

    delta: timedelta
    text: str

    def at(self, now: datetime) -> datetime:
        return now - self.delta

    def __str__(self) -> str:
        return self.text


When = datetime | Ago  # an absolute time, or one relative to the venue's clock


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """``--since``/``--until``: ISO-8601 (UTC if no zone) or relative to ``now`` (default: the wall clock)."""
    when = parse_window_time(text)
    return when.at(now or datetime.now(UTC)) if isinstance(when, Ago) else when


def parse_window_time(text: str) -> When:
    """``--since``/``--until`` of a run: ISO-8601 (UTC if no zone), or ``15m``/``2h``/``1d`` as an ``Ago``."""
    match = _RELATIVE.match(text)
    if match:
        return Ago(timedelta(**{_UNITS[match[2]]: float(match[1])}), text.strip())
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"cannot read time {text!r}: use ISO-8601 (2024-02-08T15:12:04Z) or 15m/2h/1d") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def venue_now(connector: Connector) -> datetime:
    """Now on the venue's clock when its connector tells it (``Connector.server_time``), else the wall clock."""
    told = connector.server_time()
    if told is None:
        return datetime.now(UTC)
    return told if told.tzinfo else told.replace(tzinfo=UTC)


def resolve_window(connector: Connector, since: When | None, until: When | None
                   ) -> tuple[datetime | None, datetime | None]:
    """``since``/``until`` as times, relative ones counted back from this venue's clock (asked once, only then)."""
    if not isinstance(since, Ago) and not isinstance(until, Ago):
        return since, until
    now = venue_now(connector)
    return (since.at(now) if isinstance(since, Ago) else since), (until.at(now) if isinstance(until, Ago) else until)


def ensure_tables(catalog: Catalog, namespace: str, defs: Iterable[TableDef]) -> None:
    """Create what a run writes, tolerating another process doing the same at once."""
    retry_transient(lambda: ensure_namespace(catalog, namespace))
    for d in defs:
        retry_transient(lambda d=d: ensure_table(catalog, namespace, d))


def quarantine(
    sink: IcebergSink, source: str, stream: str, symbol: str, rejected: Sequence[Rejected], now: datetime
) -> int:
    """Append rejects not already quarantined (by payload); return how many were new.

    The payload check and the append are made atomic by a per-(source, stream,
    symbol) counter in the summary: a concurrent writer that appended in between
    changes it, and the check is redone.
    """
    if not rejected:
        return 0
    key = f"{QUARANTINE_COUNT}{source}.{stream}.{symbol}"
    rows = pa.Table.from_pydict({
        "source": [source] * len(rejected),
        "stream": [stream] * len(rejected),
        "symbol": [symbol] * len(rejected),
        "reason": [r.reason for r in rejected],
        "payload": [r.payload for r in rejected],
        "ts": [now] * len(rejected),
    }, schema=QUARANTINE_SCHEMA)
    others = [n for n in QUARANTINE_SCHEMA.names if n != "payload"]  # one row per payload
    firsts = rows.group_by("payload", use_threads=False).aggregate([(n, "first") for n in others])
    rows = firsts.rename_columns([n.removesuffix("_first") for n in firsts.column_names]) \
        .select(QUARANTINE_SCHEMA.names).cast(QUARANTINE_SCHEMA)
    while True:
        count = sink.progress(QUARANTINE).get(key)
        where = And(EqualTo("source", source), EqualTo("stream", stream), EqualTo("symbol", symbol))
        table = retry_transient(lambda: sink.catalog.load_table((sink.namespace, QUARANTINE)))
        seen = table.scan(row_filter=where, selected_fields=("payload",)).to_arrow().cast(
            pa.schema([pa.field("payload", pa.string())]))
        new = rows.join(seen, "payload", join_type="left anti").select(QUARANTINE_SCHEMA.names).cast(QUARANTINE_SCHEMA)
        if new.num_rows == 0:
            return 0
        total = str(int(count or 0) + new.num_rows)
        if sink.publish(QUARANTINE, new, {key: total}, expect={key: count}, stage="quarantine") is not None:
            return new.num_rows


# The engine expires its own snapshots every this many commits of a stream (and at the end of a run).
TRIM_EVERY = 50


class StreamIngest:
    """Ingest one (source, stream, symbol): fill the holes of a window in its coverage, one claim per commit.

    A commit lands the records of one claim (a time span) and the symbol's merged coverage after it. It is
    conditional: the coverage is re-read on the table each attempt commits onto, and if a concurrent writer
    covered any of the claim meanwhile the batch is dropped (never appended twice) and the run plans again.
    """

    def __init__(
        self,
        sink: IcebergSink,
        registry: Registry,
        connector: Connector,
        stream: Stream,
        symbol: str,
        *,
        raw_payload: bool = True,
        max_rows: int = MAX_ROWS_PER_COMMIT,
        max_seconds: float = MAX_SECONDS_PER_COMMIT,
        pages_per_commit: int | None = None,
        on_progress: Callable[[RunStats], None] | None = None,
    ) -> None:
        self.sink, self.registry, self.connector, self.stream, self.symbol = sink, registry, connector, stream, symbol
        self.table = raw_table_name(connector.name, stream.name)
        self.raw_payload = raw_payload
        self.max_rows, self.max_seconds = max(1, max_rows), max_seconds
        self.pages_per_commit = pages_per_commit
        self.on_progress = on_progress or (lambda stats: None)
        self.stats = RunStats("ingest", f"{connector.name}.{stream.name} {symbol}")
        self.state = State([])
        self._start: int | None = None  # where the next claim of the current fill starts
        self._after: Cursor = None  # the cursor the current fill resumed after
        self._since_trim = 0

    def _flush(self, pages: list[Page], hole: Hole, final: bool) -> bool:
        """Commit ``pages`` as the next claim of ``hole``; False if a concurrent writer covered part of it."""
        now = datetime.now(UTC)
        record_pages = [page for page in pages if page.table is None]
        cast = cast_pages(self.stream, record_pages, self.registry.transforms, self.connector.name,
                          keep_payload=self.raw_payload, now=lambda: now)  # the pages of records: one cast
        tables, rejected = [cast.table], list(cast.rejected)
        for page in pages:
            if page.table is not None:  # records as columns: a cast per column of each page
                raw, bad = cast_table(self.stream, page.table, self.registry.transforms, self.connector.name,
                                      page.payloads, keep_payload=self.raw_payload, now=lambda: now)
                tables.append(raw)
                rejected += bad
        batch = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        self.stats.quarantined += quarantine(self.sink, self.connector.name, self.stream.name, self.symbol,
                                             rejected, now)
        times = batch.column(self.stream.event_time).cast(pa.int64())
        start = self._start
        if start is None:  # nothing covered, no --since: coverage starts at the first record the venue returned
            if not batch.num_rows or pc.min(times).as_py() is None:
                return True
            start = pc.min(times).as_py()
        keep = pc.greater_equal(times, start)
        if hole.until is not None:
            keep = pc.and_(keep, pc.less(times, hole.until))
        landed = batch.filter(pc.fill_null(keep, False))
        newest = pc.max(landed.column(self.stream.event_time).cast(pa.int64())).as_py() if landed.num_rows else None
        cursor = pages[-1].cursor if pages else None
        if final and hole.until is not None:
            claim = Span(start, hole.until)  # exact end: every record before the bound was fetched
        elif newest is not None:
            # open end: records at `newest` landed up to the page cursor; the next fill resumes from it
            claim = Span(start, newest, cursor) if cursor is not None else Span(start, newest + 1)
        else:
            self._start = start
            return True  # nothing in the window yet: nothing to claim
        committed: dict[str, State] = {}
        # records with exactly the declared keys have drifted from nothing: no second pass over them
        drift = {} if cast.exact_keys else drift_summary(self.stream, self.symbol,
                                                          [r for p in pages for r in p.records])

        def plan(table: Table) -> Commit | None:
            planned = claim_commit(table, self.stream.name, self.symbol, self.stream.event_time, claim,
                                   self._after, landed, extra=drift)
            if planned is None:
                return None
            commit, committed["state"] = planned
            return commit

        snapshot_id = self.sink.publish_planned(self.table, plan, stage="ingest")
        if snapshot_id is None:
            self.stats.dropped_batches += 1
            self.stats.deduplicated += landed.num_rows
            return False
        self.state = committed["state"]
        self._start, self._after = claim.end, claim.cursor
        self.stats.landed += landed.num_rows
        self.stats.commits += 1
        self.stats.snapshot_id = snapshot_id
        self._since_trim += 1
        if self._since_trim >= TRIM_EVERY:
            self._trim()
        return True

    def _trim(self) -> None:
        self._since_trim = 0
        trim(self.sink.catalog, self.sink.namespace, self.table)

    def run(self, since: datetime | None = None, until: datetime | None = None) -> RunStats:
        """Land the parts of ``[since, until)`` not covered yet; no ``since``: forward from the newest covered."""
        started = time.monotonic()
        try:
            while not self._run_once(since, until):
                pass  # a concurrent writer covered part of a batch: plan again from the coverage as it is now
            if self.stats.commits:
                self._trim()
        except Exception as exc:
            self.stats.failed(exc)
        self.stats.seconds = round(time.monotonic() - started, 3)
        self.on_progress(self.stats)
        return self.stats

    def _run_once(self, since: datetime | None, until: datetime | None) -> bool:
        """Fill every hole of the window in the committed coverage; False if a concurrent writer got ahead."""
        table = retry_transient(lambda: self.sink.catalog.load_table((self.sink.namespace, self.table)))
        self.state = read_state(table, self.stream.name, self.symbol)
        window = holes(self.state.spans, micros(since) if since else None, micros(until) if until else None)
        return all(self._fill(hole) for hole in window)

    def _fill(self, hole: Hole) -> bool:
        """Fetch one hole and land it in bounded batches (rows, seconds); False if a batch was dropped.

        The pages are fetched ahead on a thread (``Prefetched``) while a batch casts and commits; the batch
        boundaries, and what a crash loses (the batch not committed yet, fetched again), stay the same.
        """
        self._start, self._after = hole.since, hole.cursor
        pages = self.connector.fetch(self.stream.name, self.symbol, hole.cursor,
                                     moment(hole.since) if hole.since is not None else None,
                                     moment(hole.until) if hole.until is not None else None)
        pending: list[Page] = []
        rows, opened = 0, time.monotonic()
        with Prefetched(pages) as fetched:
            try:
                for page in fetched:
                    self.stats.fetched += page.size
                    pending.append(page)
                    rows += page.size
                    if rows >= self.max_rows or time.monotonic() - opened >= self.max_seconds or (
                            self.pages_per_commit is not None and len(pending) >= self.pages_per_commit):
                        batch, pending, rows = pending, [], 0
                        if not self._flush(batch, hole, final=False):
                            return False
                        opened = time.monotonic()
                        self.on_progress(self.stats)
            except Exception:
                if pending:  # keep what was fetched before the failure; the coverage says where to resume
                    self._flush(pending, hole, final=False)
                raise
        return self._flush(pending, hole, final=True)


def ingest(
    catalog: Catalog,
    namespace: str,
    registry: Registry,
    source: str,
    *,
    options: dict | None = None,
    streams: Sequence[str] | None = None,
    symbols: Sequence[str] | None = None,
    since: When | None = None,
    until: When | None = None,
    raw_payload: bool = True,
    max_rows: int = MAX_ROWS_PER_COMMIT,
    max_seconds: float = MAX_SECONDS_PER_COMMIT,
    pages_per_commit: int | None = None,
    on_progress: Callable[[RunStats], None] | None = None,
    shard: Shard | None = None,
) -> list[RunStats]:
    """Ingest ``source`` (a connector name) for each stream and symbol; one ``RunStats`` each.

    A failure of one (stream, symbol) is recorded in its stats (``error``) and the
    others go on; what landed before the failure stays, and a rerun resumes. With ``shard``,
    only the (stream, symbol) units that shard owns run (see ``engine/shards.py``).
    """
    cls = registry.connectors.get(source)
    if cls is None:
        raise KeyError(f"unknown source {source!r} (installed: {', '.join(sorted(registry.connectors)) or 'none'})")
    connector = cls(options or {})
    chosen = [cls.streams[s] for s in (streams or [n for n, st in cls.streams.items() if st.default])]
    units = [(stream, symbol) for stream in chosen for symbol in symbols or cls.default_symbols
             if shard is None or shard.owns(source, stream.name, symbol)]
    if shard is not None:  # create only the tables this shard writes; none if other shards own it all
        chosen = [stream for stream in chosen if any(s is stream for s, _ in units)]
        if not chosen:
            return []
    try:
        start, end = resolve_window(connector, since, until)
    except Exception as exc:  # the venue's clock could not be read: this source fails with that line
        failed = RunStats("ingest", raw_table_name(source, chosen[0].name) if chosen else source)
        failed.failed(exc)
        failed.error = f"reading {source}'s clock for --since/--until: {failed.error}"
        return [failed]
    if start is not None and end is not None and start >= end:
        failed = RunStats("ingest", source, resumable=False)
        failed.error = (f"--since {since} is {start.isoformat()} on {source}'s clock, not before --until {until} "
                        f"({end.isoformat()}): the window is empty")
        return [failed]
    ensure_tables(catalog, namespace, [raw_table_def(source, s) for s in chosen]
                  + [TableDef(QUARANTINE, QUARANTINE_SCHEMA, None), TableDef(WATERMARKS, WATERMARKS_SCHEMA, None)])
    sink = IcebergSink(catalog, namespace)
    out: list[RunStats] = []
    for stream, symbol in units:
        out.append(StreamIngest(sink, registry, connector, stream, symbol, raw_payload=raw_payload,
                                max_rows=max_rows, max_seconds=max_seconds, pages_per_commit=pages_per_commit,
                                on_progress=on_progress).run(start, end))
        if out[-1].stop:  # unreachable venue or unwritable warehouse: the next symbol would fail the same way
            return out
    return out
