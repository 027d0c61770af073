"""Repair what an audit found missing: fetch each gap's window again and land what raw lacks, exactly once.

A gap lies between two landed trades. Its window is fetched through the connector like any ingest: by id
where the stream's cursor is an id (cursor = the id before the gap, so ``fromId`` / ``before=`` style
paging starts right after it), otherwise by time (``since`` = the trade before, ``until`` just after the
trade after). Rows are cast as ingest casts them (rejects go to quarantine), cut to the window, and
anti-joined with the raw keys already in it, so only missing records are appended.

Exactly once: the append is conditional on the per-(stream, symbol) counter
``schemahub.repaired.<stream>.<symbol>`` (rows landed by repairs) still holding the value the anti-join was
computed under. A concurrent repair that lands first moves it, and the check is redone against what it
landed. Forward ingest is unaffected: the repair carries every cursor forward unchanged, and it never lands a
record newer than the gap's far edge, which is older than the committed cursor.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from itertools import groupby

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysFalse, And, BooleanExpression, EqualTo, GreaterThanOrEqual, LessThan, Or

from schemahub_core.engine.audit import Gap
from schemahub_core.engine.ingest import ensure_tables, quarantine
from schemahub_core.engine.raw import cast_records
from schemahub_core.engine.sink import IcebergSink, retry_transient
from schemahub_core.engine.state import repaired_key
from schemahub_core.engine.tables import QUARANTINE, QUARANTINE_SCHEMA, TableDef, raw_schema, raw_table_name
from schemahub_core.engine.unify import first_per_key
from schemahub_core.framework.connector import Connector, CursorKind, Stream
from schemahub_core.framework.registry import Registry

STEP = timedelta(microseconds=1)


@dataclass
class RepairStats:
    """One repaired (source, stream, symbol): gaps asked for, records fetched, rows landed."""

    source: str
    stream: str
    symbol: str
    gaps: int = 0
    fetched: int = 0
    landed: int = 0
    quarantined: int = 0
    commits: int = 0
    seconds: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def _fetch(connector: Connector, stream: Stream, gap: Gap) -> Iterable:
    """The pages of the gap's window: by id when the cursor is an id, else by time."""
    until = gap.time_after + STEP
    if stream.cursor_kind == CursorKind.ID and isinstance(gap.id_before, int):
        return connector.fetch(stream.name, gap.symbol, gap.id_before, None, until)
    return connector.fetch(stream.name, gap.symbol, None, gap.time_before, until)


def _windows(stream: Stream, native: str, gaps: Sequence[Gap]) -> BooleanExpression:
    expr: BooleanExpression = AlwaysFalse()
    for g in gaps:
        expr = Or(expr, And(GreaterThanOrEqual(stream.event_time, g.time_before.isoformat()),
                            LessThan(stream.event_time, (g.time_after + STEP).isoformat())))
    return And(EqualTo(stream.symbol_column, native), expr)


def _inside(batch: pa.Table, stream: Stream, gaps: Sequence[Gap]) -> pa.Table:
    """Rows of ``batch`` whose event time falls in one of the gaps' windows (never past a far edge)."""
    t = batch.column(stream.event_time)
    mask = pa.repeat(pa.scalar(False), batch.num_rows)
    for g in gaps:
        lo, hi = pa.scalar(g.time_before, t.type), pa.scalar(g.time_after, t.type)
        mask = pc.or_(mask, pc.and_(pc.greater_equal(t, lo), pc.less_equal(t, hi)))
    return batch.filter(pc.fill_null(mask, False))


class SymbolRepair:
    """Repair the gaps of one (source, stream, symbol)."""

    def __init__(self, sink: IcebergSink, registry: Registry, connector: Connector, stream: Stream, symbol: str,
                 native: str, *, raw_payload: bool = True) -> None:
        self.sink, self.registry, self.connector, self.stream = sink, registry, connector, stream
        self.symbol, self.native, self.raw_payload = symbol, native, raw_payload
        self.table = raw_table_name(connector.name, stream.name)
        self.stats = RepairStats(connector.name, stream.name, symbol)

    def run(self, gaps: Sequence[Gap]) -> RepairStats:
        started = time.monotonic()
        self.stats.gaps = len(gaps)
        try:
            self._land(gaps, self._fetch_all(gaps))
        except Exception as exc:
            self.stats.error = f"{type(exc).__name__}: {exc}"
        self.stats.seconds = round(time.monotonic() - started, 3)
        return self.stats

    def _fetch_all(self, gaps: Sequence[Gap]) -> pa.Table:
        now = datetime.now(UTC)
        tables, rejected = [], []
        for gap in gaps:
            pages = _fetch(self.connector, self.stream, gap)
            try:
                for page in pages:
                    self.stats.fetched += len(page.records)
                    raw, bad = cast_records(self.stream, page.records, self.registry.transforms, self.connector.name,
                                            page.payloads, keep_payload=self.raw_payload, now=lambda: now)
                    tables.append(_inside(raw, self.stream, [gap]))
                    rejected += bad
            finally:
                close = getattr(pages, "close", None)
                if close is not None:
                    close()
        self.stats.quarantined += quarantine(self.sink, self.connector.name, self.stream.name, self.symbol,
                                             rejected, now)
        batch = pa.concat_tables(tables) if tables else raw_schema(self.stream).empty_table()
        return first_per_key(batch, self.stream.key)

    def _land(self, gaps: Sequence[Gap], batch: pa.Table) -> None:
        if batch.num_rows == 0:
            return
        key = repaired_key(self.stream.name, self.symbol)
        keys = list(self.stream.key)
        while True:
            count = self.sink.progress(self.table).get(key)
            table = retry_transient(lambda: self.sink.catalog.load_table((self.sink.namespace, self.table)))
            have = table.scan(row_filter=_windows(self.stream, self.native, gaps), selected_fields=tuple(keys)) \
                .to_arrow()
            have = have.select(keys)  # a scan returns the table's column order, not the key's
            new = batch.join(have.cast(batch.select(keys).schema), keys, join_type="left anti") \
                .select(batch.column_names).cast(batch.schema)
            if new.num_rows == 0:
                return
            total = str(int(count or 0) + new.num_rows)
            if self.sink.publish(self.table, new, {key: total}, expect={key: count}, stage="repair") is not None:
                self.stats.landed += new.num_rows
                self.stats.commits += 1
                return


def repair(
    catalog: Catalog,
    namespace: str,
    registry: Registry,
    gaps: Sequence[Gap],
    *,
    options_for: Callable[[str], dict],
    raw_payload: bool = True,
) -> list[RepairStats]:
    """Fetch and land every gap's window, one conditional commit per (source, stream, symbol)."""
    sink = IcebergSink(catalog, namespace)
    out: list[RepairStats] = []
    order = sorted(gaps, key=lambda g: (g.source, g.stream, g.symbol, g.time_before))
    for (source, stream_name, symbol), group in groupby(order, key=lambda g: (g.source, g.stream, g.symbol)):
        chosen = list(group)
        cls = registry.connectors[source]
        stream = cls.streams[stream_name]
        ensure_tables(catalog, namespace, [TableDef(QUARANTINE, QUARANTINE_SCHEMA, None)])
        connector = cls(options_for(source))
        try:
            out.append(SymbolRepair(sink, registry, connector, stream, symbol, chosen[0].native_symbol,
                                    raw_payload=raw_payload).run(chosen))
        finally:
            close = getattr(connector, "close", None)
            if close is not None:
                close()
    return out
