"""A conformance suite any connector can run against a server (the sandbox, or a venue's test host).

Each ``check_*`` raises ``AssertionError`` with the reason, so it reads well
in pytest without importing it; ``assert_conformance`` runs them all::

    from schemahub_core.testing.conformance import assert_conformance
    report = assert_conformance(MyConnector(options), "trades", "BTC-USD", since, until, min_pages=20)

What a connector promises (``Connector.fetch``): pages cover ``[since, until)``
exactly once, in cursor order; the cursor after each page resumes right after
it; records carry the columns the stream declares and cast without rejects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..connector import Connector, Cursor, CursorKind, Page, Stream
from ..raw import cast_records
from ..transforms import BUILTIN_TRANSFORMS, Transform


@dataclass
class Run:
    """The pages one ``fetch`` yielded."""

    stream: Stream
    pages: list[Page]

    @property
    def records(self) -> list[dict[str, Any]]:
        return [r for p in self.pages for r in p.records]

    @property
    def keys(self) -> list[tuple]:
        return record_keys(self.stream, self.records)

    @property
    def cursors(self) -> list[Cursor]:
        return [p.cursor for p in self.pages]


def record_keys(stream: Stream, records: Iterable[Mapping[str, Any]]) -> list[tuple]:
    return [tuple(r.get(k) for k in stream.key) for r in records]


def fetch_all(connector: Connector, stream: str, symbol: str, cursor: Cursor = None, since: datetime | None = None,
              until: datetime | None = None, max_pages: int = 100_000) -> Run:
    """Drain ``connector.fetch`` (bounded, so a connector that never stops fails instead of hanging)."""
    pages = []
    for page in connector.fetch(stream, symbol, cursor, since, until):
        pages.append(page)
        assert len(pages) <= max_pages, f"{connector.name}.{stream}: more than {max_pages} pages; does fetch stop?"
    return Run(connector.streams[stream], pages)


def event_times(stream: Stream, records: Sequence[Mapping[str, Any]],
                transforms: Mapping[str, Transform] = BUILTIN_TRANSFORMS) -> list[datetime]:
    """Each record's event time as the raw cast computes it (so the check uses the real casting rules)."""
    table, rejected = cast_records(stream, records, transforms, "conformance")
    assert not rejected, f"{len(rejected)} record(s) do not cast: {rejected[0].reason}"
    return table.column(stream.event_time).to_pylist()


def check_schema(run: Run, transforms: Mapping[str, Transform] = BUILTIN_TRANSFORMS,
                 optional: Iterable[str] = (), ignored: Iterable[str] = ()) -> None:
    """Produced fields match the declared columns; every record casts; the raw table has the declared schema.

    ``optional``: declared columns a record may lack; ``ignored``: venue fields deliberately not declared
    (they stay in ``_raw_payload``).
    """
    declared = {c.name for c in run.stream.columns}
    produced: set[str] = set()
    for record in run.records:
        assert isinstance(record, Mapping), f"record is {type(record).__name__}, expected a mapping"
        produced |= set(record)
    missing = declared - produced - set(optional)
    undeclared = produced - declared - set(ignored)
    assert not missing, f"declared column(s) never produced: {sorted(missing)}"
    assert not undeclared, f"produced field(s) not declared by stream {run.stream.name!r}: {sorted(undeclared)}"
    table, rejected = cast_records(run.stream, run.records, transforms, "conformance")
    assert not rejected, f"{len(rejected)} record(s) rejected by the raw cast: {rejected[0].reason}"
    for column in run.stream.columns:
        assert table.schema.field(column.name).type == column.type, \
            f"column {column.name}: cast gives {table.schema.field(column.name).type}, declared {column.type}"


def check_exactly_once(run: Run, since: datetime | None, until: datetime | None,
                       expected_keys: Sequence[tuple] | None = None,
                       transforms: Mapping[str, Transform] = BUILTIN_TRANSFORMS) -> None:
    """No record twice, none outside ``[since, until)``, and (when known) exactly the expected ones."""
    keys = run.keys
    dupes = len(keys) - len(set(keys))
    assert dupes == 0, f"{dupes} record(s) yielded more than once"
    times = event_times(run.stream, run.records, transforms)
    if since is not None and times:
        assert min(times) >= since, f"record at {min(times)} is before since={since}"
    if until is not None and times:
        assert max(times) < until, f"record at {max(times)} is at or after until={until} (exclusive)"
    if expected_keys is not None:
        missing = set(expected_keys) - set(keys)
        extra = set(keys) - set(expected_keys)
        assert not missing and not extra, (f"{len(missing)} expected record(s) missing (e.g. {sorted(missing)[:3]}), "
                                           f"{len(extra)} unexpected (e.g. {sorted(extra)[:3]})")


def _cursor_value(kind: CursorKind, cursor: Cursor) -> Any:
    return int(cursor) if kind in (CursorKind.ID, CursorKind.TIME_NS) else cursor


def check_cursors(run: Run) -> None:
    """Cursors strictly increase page after page, and records come in cursor order."""
    kind = run.stream.cursor_kind
    values = [_cursor_value(kind, c) for c in run.cursors]
    assert all(v is not None for v in values), "a page has no cursor"
    for before, after in zip(values, values[1:], strict=False):
        assert after > before, f"cursor went from {before} to {after}: not strictly increasing"
    if kind == CursorKind.ID:
        id_column = run.stream.key[-1]
        for page, value in zip(run.pages, values, strict=True):
            ids = [r[id_column] for r in page.records]
            assert ids == sorted(ids), "records within a page are not in id order"
            assert max(ids) == value, f"page cursor {value} is not the page's last id {max(ids)}"


def check_resume(connector: Connector, run: Run, symbol: str, until: datetime | None,
                 boundaries: Iterable[int] | None = None) -> None:
    """Restarting from the cursor after page ``k`` yields exactly the records of the pages after ``k``."""
    n = len(run.pages)
    for k in boundaries if boundaries is not None else sorted({0, n // 2, n - 2}):
        if not 0 <= k < n:
            continue
        rest = fetch_all(connector, run.stream.name, symbol, cursor=run.pages[k].cursor, until=until)
        expected = record_keys(run.stream, [r for p in run.pages[k + 1:] for r in p.records])
        assert rest.keys == expected, (f"resume after page {k} (cursor {run.pages[k].cursor}): got {len(rest.keys)} "
                                       f"record(s), expected {len(expected)}")


def check_range_edges(connector: Connector, run: Run, symbol: str, since: datetime, until: datetime,
                      transforms: Mapping[str, Transform] = BUILTIN_TRANSFORMS) -> datetime:
    """Split the range at a record's exact event time: ``since`` is inclusive, ``until`` exclusive.

    Returns the split time. ``[since, t)`` + ``[t, until)`` must equal ``[since, until)``, with the record
    at exactly ``t`` on the right.
    """
    times = event_times(run.stream, run.records, transforms)
    assert times, "the range holds no records: pick a range with data"
    t = times[len(times) // 2]
    left = fetch_all(connector, run.stream.name, symbol, since=since, until=t)
    right = fetch_all(connector, run.stream.name, symbol, since=t, until=until)
    assert left.keys + right.keys == run.keys, (
        f"split at {t}: {len(left.keys)} + {len(right.keys)} record(s) != {len(run.keys)} for the whole range")
    at_t = {k for k, time in zip(run.keys, times, strict=True) if time == t}
    assert at_t <= set(right.keys), f"a record at exactly since={t} was not yielded (since is inclusive)"
    assert not at_t & set(left.keys), f"a record at exactly until={t} was yielded (until is exclusive)"
    return t


def assert_conformance(connector: Connector, stream: str, symbol: str, since: datetime, until: datetime,
                       expected_keys: Sequence[tuple] | None = None, min_pages: int = 20,
                       transforms: Mapping[str, Transform] = BUILTIN_TRANSFORMS,
                       optional: Iterable[str] = (), ignored: Iterable[str] = ()) -> dict[str, int]:
    """Every check above on one range; returns {"pages": .., "records": ..}."""
    run = fetch_all(connector, stream, symbol, since=since, until=until)
    assert len(run.pages) >= min_pages, (f"only {len(run.pages)} page(s) for the range; lower the page size "
                                         f"or widen the range to exercise >= {min_pages}")
    check_schema(run, transforms, optional, ignored)
    check_exactly_once(run, since, until, expected_keys, transforms)
    check_cursors(run)
    check_resume(connector, run, symbol, until)
    check_range_edges(connector, run, symbol, since, until, transforms)
    return {"pages": len(run.pages), "records": len(run.records)}


def map_records(stream: Stream, mapping: Any, records: Sequence[Mapping[str, Any]],
                registry: Any = None) -> tuple[list[dict[str, Any]], list[Any]]:
    """Native records -> raw cast -> ``mapping`` -> unified rows (dicts), plus the rejected records.

    The same path the engine takes, without any table: for normalization tests against hand-written rows.
    """
    from ..registry import get_registry

    registry = registry or get_registry()
    raw, rejected = cast_records(stream, records, registry.transforms, mapping.connector)
    unified = mapping.apply(raw, registry, registry.targets[mapping.target_table].schema)
    return unified.to_pylist(), rejected
