"""Where each (source, stream, symbol) stands: read from Iceberg snapshots, the only truth.

Raw tables: each symbol's coverage (the event-time spans landed, ``coverage``),
carried by the snapshot summaries of the commits that land the data and indexed by
a table property. Every unify append carries ``schemahub.source.<raw_table>`` = the
raw snapshot id it has consumed up to. ``schemahub_watermarks`` is only a mirror
for people and SQL: ``rebuild_watermarks`` rewrites it from the snapshots at any time.

Keys carried forward from commit to commit (archives' per-file progress, the
cursor an archive leaves for REST, ``schemahub.repaired.<stream>.<symbol>``: rows
landed by ``audit --repair``) are read from the newest engine snapshot.
"""

from __future__ import annotations

import json

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table

from schemahub_core.engine.coverage import LAST_TS, ROWS, Span, merge, read_state, symbols_of
from schemahub_core.engine.coverage import key as coverage_key
from schemahub_core.engine.faults import fault_point
from schemahub_core.engine.sink import PROGRESS_PREFIX, progress_of, retry_transient
from schemahub_core.engine.tables import WATERMARKS, WATERMARKS_SCHEMA, raw_table_name
from schemahub_core.framework.connector import Cursor, CursorKind
from schemahub_core.framework.registry import Registry

SOURCE = PROGRESS_PREFIX + "source."
INGEST_TS = PROGRESS_PREFIX + "ingest-ts"
CURSOR = PROGRESS_PREFIX + "cursor."
REPAIRED = PROGRESS_PREFIX + "repaired."


def cursor_key(stream: str, symbol: str) -> str:
    return f"{CURSOR}{stream}.{symbol}"


def rows_key(stream: str, symbol: str) -> str:
    return coverage_key(ROWS, stream, symbol)


def last_ts_key(stream: str, symbol: str) -> str:
    return coverage_key(LAST_TS, stream, symbol)


def repaired_key(stream: str, symbol: str) -> str:
    return f"{REPAIRED}{stream}.{symbol}"


def source_key(raw_table: str) -> str:
    return f"{SOURCE}{raw_table}"


def encode_cursor(cursor: Cursor) -> str:
    """JSON keeps the cursor's type: an id stays an int, a token stays a string."""
    return json.dumps(cursor)


def decode_cursor(text: str | None) -> Cursor:
    return None if text is None else json.loads(text)


def read_cursor(table: Table, stream: str, symbol: str) -> Cursor:
    """The cursor forward ingest of (stream, symbol) resumes after: the newest covered span's."""
    return read_state(table, stream, symbol).cursor


def gaps(spans: list[Span]) -> list[Span]:
    """The holes between covered spans (what a backfill of the whole covered period would land)."""
    spans = merge(spans)
    return [Span(a.end, b.start) for a, b in zip(spans, spans[1:], strict=False)]


def _load(catalog: Catalog, namespace: str, name: str) -> Table | None:
    try:
        return retry_transient(lambda: catalog.load_table((namespace, name)))
    except NoSuchTableError:
        return None


def watermark_rows(catalog: Catalog, namespace: str, registry: Registry) -> list[dict]:
    """One row per (source, stream, symbol) with coverage: merged covered ranges and holes, from raw snapshots."""
    rows = []
    for source, cls in sorted(registry.connectors.items()):
        for stream in cls.streams.values():
            table = _load(catalog, namespace, raw_table_name(source, stream.name))
            if table is None:
                continue
            carried = progress_of(table)
            for symbol in symbols_of(table, stream.name):
                state = read_state(table, stream.name, symbol)
                cursor = state.cursor
                rows.append({
                    "source": source,
                    "stream": stream.name,
                    "symbol": symbol,
                    "last_trade_id": str(cursor) if stream.cursor_kind == CursorKind.ID and cursor is not None
                    else None,
                    "last_ts": state.last_ts,
                    "cursor": None if cursor is None else str(cursor),
                    "covered": [s.as_dict() for s in state.spans],
                    "holes": [s.as_dict() for s in gaps(state.spans)],
                    "snapshot_id": state.snapshot_id,
                    "updated_at": state.updated_at,
                    "rows": state.rows + int(carried.get(repaired_key(stream.name, symbol), 0)),
                })
    return rows


def rebuild_watermarks(catalog: Catalog, namespace: str, registry: Registry) -> int:
    """Rewrite ``schemahub_watermarks`` from the raw tables' snapshots; return its row count.

    Safe to run at any time and from several processes: the content is a pure
    function of the snapshots, so a retried or repeated overwrite is harmless.
    """
    order = [("source", "ascending"), ("stream", "ascending"), ("symbol", "ascending")]

    def write() -> int:  # retried as a whole: a concurrent rewrite fails the commit, then we look again
        rows = watermark_rows(catalog, namespace, registry)
        data = pa.Table.from_pylist([{**{k: r.get(k) for k in WATERMARKS_SCHEMA.names},
                                      "covered": json.dumps(r["covered"]), "holes": json.dumps(r["holes"])}
                                     for r in rows], WATERMARKS_SCHEMA).sort_by(order)
        mirror = catalog.load_table((namespace, WATERMARKS))
        current = mirror.scan().to_arrow().cast(WATERMARKS_SCHEMA) if mirror.current_snapshot() else None
        if (current is not None and current.sort_by(order).equals(data)) or (current is None and not rows):
            return len(rows)  # already true: no snapshot
        fault_point("watermarks.before-write")
        if current is None or current.num_rows == 0:
            mirror.append(data)  # an overwrite would warn that it deleted nothing
        else:
            mirror.overwrite(data)
        return len(rows)

    return retry_transient(write)


def unify_rows(catalog: Catalog, namespace: str, registry: Registry) -> list[dict]:
    """Per unified target and raw source: consumed snapshot, the raw table's newest, rows."""
    out = []
    for name in sorted(registry.targets):
        table = _load(catalog, namespace, name)
        if table is None:
            continue
        progress = progress_of(table)
        snapshot = table.current_snapshot()
        total = int(snapshot.summary.additional_properties.get("total-records", 0)) if snapshot and snapshot.summary \
            else 0
        for key, value in sorted(progress.items()):
            if not key.startswith(SOURCE):
                continue
            raw_name = key[len(SOURCE):]
            raw = _load(catalog, namespace, raw_name)
            newest = raw.current_snapshot() if raw is not None else None
            out.append({
                "target": name,
                "source_table": raw_name,
                "consumed_snapshot_id": int(value),
                "raw_snapshot_id": newest.snapshot_id if newest else None,
                "up_to_date": newest is None or newest.snapshot_id == int(value),
                "target_rows": total,
                "target_snapshot_id": snapshot.snapshot_id if snapshot else None,
            })
    return out
