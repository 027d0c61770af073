"""Where each (source, stream, symbol) stands: read from Iceberg snapshots, the only truth.

Every raw append carries, in its snapshot summary (carried forward from its
parent, so the newest engine snapshot holds all of them):

- ``schemahub.cursor.<stream>.<symbol>``: the cursor after the data, JSON (``123`` or ``"1707..."``);
- ``schemahub.rows.<stream>.<symbol>``: rows landed so far for that symbol;
- ``schemahub.last-ts.<stream>.<symbol>``: the newest event time landed (ISO-8601);
- ``schemahub.repaired.<stream>.<symbol>``: rows landed by ``audit --repair`` (see ``repair``).

Every unify append carries ``schemahub.source.<raw_table>`` = the raw snapshot id
it has consumed up to. ``schemahub_watermarks`` is only a mirror for people and
SQL: ``rebuild_watermarks`` rewrites it from the snapshots at any time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table
from pyiceberg.table.snapshots import ancestors_of

from schemahub_core.engine.sink import PROGRESS_PREFIX, progress_of, retry_transient
from schemahub_core.engine.tables import WATERMARKS, WATERMARKS_SCHEMA, raw_table_name
from schemahub_core.framework.connector import Cursor, CursorKind
from schemahub_core.framework.registry import Registry

CURSOR = PROGRESS_PREFIX + "cursor."
ROWS = PROGRESS_PREFIX + "rows."
LAST_TS = PROGRESS_PREFIX + "last-ts."
REPAIRED = PROGRESS_PREFIX + "repaired."
SOURCE = PROGRESS_PREFIX + "source."
INGEST_TS = PROGRESS_PREFIX + "ingest-ts"


def cursor_key(stream: str, symbol: str) -> str:
    return f"{CURSOR}{stream}.{symbol}"


def rows_key(stream: str, symbol: str) -> str:
    return f"{ROWS}{stream}.{symbol}"


def last_ts_key(stream: str, symbol: str) -> str:
    return f"{LAST_TS}{stream}.{symbol}"


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
    """The committed cursor of (stream, symbol): where the next run resumes."""
    return decode_cursor(progress_of(table).get(cursor_key(stream, symbol)))


def _setting_snapshots(table: Table, keys: Iterable[str]) -> dict[str, int]:
    """For each key, the oldest snapshot of the newest run of equal values: the commit that set it."""
    pending = set(keys)
    newest: dict[str, tuple[str, int]] = {}
    found: dict[str, int] = {}
    for snapshot in ancestors_of(table.current_snapshot(), table.metadata):
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        if not any(k.startswith(PROGRESS_PREFIX) for k in props):
            continue  # not an engine snapshot (compaction, manual write)
        for key in list(pending):
            value = props.get(key)
            if key not in newest:
                if value is not None:
                    newest[key] = (value, snapshot.snapshot_id)
            elif value == newest[key][0]:
                newest[key] = (value, snapshot.snapshot_id)
            else:
                found[key] = newest[key][1]
                pending.discard(key)
        if not pending:
            break
    return {**{k: v[1] for k, v in newest.items()}, **found}


def _load(catalog: Catalog, namespace: str, name: str) -> Table | None:
    try:
        return retry_transient(lambda: catalog.load_table((namespace, name)))
    except NoSuchTableError:
        return None


def watermark_rows(catalog: Catalog, namespace: str, registry: Registry) -> list[dict]:
    """One row per (source, stream, symbol) with a committed cursor, from raw snapshots only."""
    rows = []
    for source, cls in sorted(registry.connectors.items()):
        for stream in cls.streams.values():
            table = _load(catalog, namespace, raw_table_name(source, stream.name))
            if table is None:
                continue
            progress = progress_of(table)
            prefix = f"{CURSOR}{stream.name}."
            symbols = sorted(k[len(prefix):] for k in progress if k.startswith(prefix))
            setters = _setting_snapshots(table, [cursor_key(stream.name, s) for s in symbols])
            for symbol in symbols:
                cursor = decode_cursor(progress[cursor_key(stream.name, symbol)])
                last_ts = progress.get(last_ts_key(stream.name, symbol))
                snapshot_id = setters.get(cursor_key(stream.name, symbol))
                snapshot = table.metadata.snapshot_by_id(snapshot_id) if snapshot_id is not None else None
                rows.append({
                    "source": source,
                    "stream": stream.name,
                    "symbol": symbol,
                    "last_trade_id": str(cursor) if stream.cursor_kind == CursorKind.ID else None,
                    "last_ts": datetime.fromisoformat(last_ts) if last_ts else None,
                    "cursor": None if cursor is None else str(cursor),
                    "snapshot_id": snapshot_id,
                    "updated_at": datetime.fromtimestamp(snapshot.timestamp_ms / 1000, UTC) if snapshot else None,
                    "rows": int(progress.get(rows_key(stream.name, symbol), 0))
                    + int(progress.get(repaired_key(stream.name, symbol), 0)),
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
        data = pa.Table.from_pylist([{k: r[k] for k in WATERMARKS_SCHEMA.names} for r in rows],
                                    WATERMARKS_SCHEMA).sort_by(order)
        mirror = catalog.load_table((namespace, WATERMARKS))
        current = mirror.scan().to_arrow().cast(WATERMARKS_SCHEMA) if mirror.current_snapshot() else None
        if current is not None and current.sort_by(order).equals(data):
            return len(rows)  # already true: no snapshot
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
