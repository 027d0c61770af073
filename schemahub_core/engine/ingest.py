"""Connector pages -> ``raw_<source>_<stream>``, exactly once.

One batch of pages is one Iceberg append whose snapshot summary carries the
cursor after that data (see ``state``), so data and progress land together or
not at all. A run starts from the newest committed cursor. Each commit is
conditional on that cursor still being the one the batch started from: if a
concurrent writer moved it, the batch is dropped (never appended twice) and the
run resumes from the writer's cursor. Records that fail their casts go to
``schemahub_quarantine`` with reason and payload before the batch commits,
deduplicated by payload, so a crash between the two never loses nor doubles one.

Time-cursor venues re-read an overlap on purpose (late trades); those repeats
may land in raw twice and are dropped by unify's key anti-join.
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

from schemahub_core.engine.drift import drift_summary
from schemahub_core.engine.raw import Rejected, cast_records
from schemahub_core.engine.sink import IcebergSink, retry_transient
from schemahub_core.engine.state import cursor_key, decode_cursor, encode_cursor, last_ts_key, rows_key
from schemahub_core.engine.tables import (
    QUARANTINE,
    QUARANTINE_SCHEMA,
    WATERMARKS,
    WATERMARKS_SCHEMA,
    TableDef,
    ensure_namespace,
    ensure_table,
    raw_schema,
    raw_table_def,
    raw_table_name,
)
from schemahub_core.framework.connector import Connector, Page, Stream
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
    scanned_files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """``--since``/``--until``: ISO-8601 (UTC if no zone) or relative to now (``15m``, ``2h``, ``1d``)."""
    match = _RELATIVE.match(text)
    if match:
        now = now or datetime.now(UTC)
        return now - timedelta(**{_UNITS[match[2]]: float(match[1])})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"cannot read time {text!r}: use ISO-8601 (2024-02-08T15:12:04Z) or 15m/2h/1d") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


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


class StreamIngest:
    """Ingest one (source, stream, symbol): fetch, cast, quarantine, commit with the cursor."""

    def __init__(
        self,
        sink: IcebergSink,
        registry: Registry,
        connector: Connector,
        stream: Stream,
        symbol: str,
        *,
        raw_payload: bool = True,
        pages_per_commit: int = 1,
        on_progress: Callable[[RunStats], None] | None = None,
    ) -> None:
        self.sink, self.registry, self.connector, self.stream, self.symbol = sink, registry, connector, stream, symbol
        self.table = raw_table_name(connector.name, stream.name)
        self.raw_payload = raw_payload
        self.pages_per_commit = max(1, pages_per_commit)
        self.on_progress = on_progress or (lambda stats: None)
        self.stats = RunStats("ingest", f"{connector.name}.{stream.name} {symbol}")
        self.keys = (cursor_key(stream.name, symbol), rows_key(stream.name, symbol), last_ts_key(stream.name, symbol))
        self.committed: dict[str, str | None] = {}

    def _read_committed(self) -> None:
        progress = self.sink.progress(self.table)
        self.committed = {k: progress.get(k) for k in self.keys}

    def _flush(self, pages: list[Page]) -> bool:
        """Commit ``pages`` with their cursor; False if a concurrent writer moved the cursor first."""
        now = datetime.now(UTC)
        tables, rejected = [], []
        for page in pages:
            raw, bad = cast_records(self.stream, page.records, self.registry.transforms, self.connector.name,
                                    page.payloads, keep_payload=self.raw_payload, now=lambda: now)
            tables.append(raw)
            rejected += bad
        batch = pa.concat_tables(tables) if tables else raw_schema(self.stream).empty_table()
        self.stats.quarantined += quarantine(self.sink, self.connector.name, self.stream.name, self.symbol,
                                             rejected, now)
        ckey, rkey, tkey = self.keys
        cursor = pages[-1].cursor
        progress = {
            ckey: encode_cursor(cursor) if cursor is not None else self.committed[ckey],
            rkey: str(int(self.committed[rkey] or 0) + batch.num_rows),
        }
        times = [pc.max(batch.column(self.stream.event_time)).as_py() if batch.num_rows else None,
                 datetime.fromisoformat(self.committed[tkey]) if self.committed[tkey] else None]
        if any(t is not None for t in times):
            progress[tkey] = max(t for t in times if t is not None).isoformat()
        progress = {k: v for k, v in progress.items() if v is not None}
        progress.update(drift_summary(self.stream, self.symbol, pages))
        snapshot_id = self.sink.publish(self.table, batch, progress, expect={ckey: self.committed[ckey]},
                                        stage="ingest")
        if snapshot_id is None:
            self.stats.dropped_batches += 1
            self.stats.deduplicated += batch.num_rows
            return False
        self.committed.update(progress)
        self.stats.landed += batch.num_rows
        self.stats.commits += 1
        self.stats.snapshot_id = snapshot_id
        return True

    def run(self, since: datetime | None = None, until: datetime | None = None) -> RunStats:
        started = time.monotonic()
        try:
            while not self._run_once(since, until):
                pass  # a concurrent writer moved the cursor: resume from where it stands now
        except Exception as exc:
            self.stats.error = f"{type(exc).__name__}: {exc}"
        self.stats.seconds = round(time.monotonic() - started, 3)
        self.on_progress(self.stats)
        return self.stats

    def _run_once(self, since: datetime | None, until: datetime | None) -> bool:
        """Fetch from the committed cursor and land page batches; False if a concurrent writer got ahead."""
        self._read_committed()
        pages = self.connector.fetch(self.stream.name, self.symbol, decode_cursor(self.committed[self.keys[0]]),
                                     since, until)
        pending: list[Page] = []
        try:
            for page in pages:
                self.stats.fetched += len(page.records)
                pending.append(page)
                if len(pending) >= self.pages_per_commit:
                    batch, pending = pending, []
                    if not self._flush(batch):
                        return False
                    self.on_progress(self.stats)
        except Exception:
            if pending:  # keep what was fetched before the failure; the cursor says where to resume
                self._flush(pending)
            raise
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()
        return self._flush(pending) if pending else True


def ingest(
    catalog: Catalog,
    namespace: str,
    registry: Registry,
    source: str,
    *,
    options: dict | None = None,
    streams: Sequence[str] | None = None,
    symbols: Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    raw_payload: bool = True,
    pages_per_commit: int = 1,
    on_progress: Callable[[RunStats], None] | None = None,
) -> list[RunStats]:
    """Ingest ``source`` (a connector name) for each stream and symbol; one ``RunStats`` each.

    A failure of one (stream, symbol) is recorded in its stats (``error``) and the
    others go on; what landed before the failure stays, and a rerun resumes.
    """
    cls = registry.connectors.get(source)
    if cls is None:
        raise KeyError(f"unknown source {source!r} (installed: {', '.join(sorted(registry.connectors)) or 'none'})")
    connector = cls(options or {})
    chosen = [cls.streams[s] for s in (streams or list(cls.streams))]
    ensure_tables(catalog, namespace, [raw_table_def(source, s) for s in chosen]
                  + [TableDef(QUARANTINE, QUARANTINE_SCHEMA, None), TableDef(WATERMARKS, WATERMARKS_SCHEMA, None)])
    sink = IcebergSink(catalog, namespace)
    return [
        StreamIngest(sink, registry, connector, stream, symbol, raw_payload=raw_payload,
                     pages_per_commit=pages_per_commit, on_progress=on_progress).run(since, until)
        for stream in chosen
        for symbol in (symbols or cls.default_symbols)
    ]
