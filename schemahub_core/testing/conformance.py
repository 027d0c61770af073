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

from schemahub_core.engine.raw import cast_records
from schemahub_core.framework.connector import Connector, Cursor, CursorKind, Page, Stream, check_column_names
from schemahub_core.framework.transforms import BUILTIN_TRANSFORMS, Transform


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
    return [tuple(r.get(stream.column(k).record_key) for k in stream.key) for r in records]


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
    declared = {c.record_key for c in run.stream.columns}
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
    from schemahub_core.framework.registry import get_registry

    registry = registry or get_registry()
    raw, rejected = cast_records(stream, records, registry.transforms, mapping.connector)
    unified = mapping.apply(raw, registry, registry.targets[mapping.target_table].schema)
    return unified.to_pylist(), rejected


# -- the checks beyond paging: rate limits, the mapping, sides and times ----------------------------------------

def check_rate_limit(connector: Connector, run: Run, symbol: str, since: datetime | None, until: datetime | None,
                     sandbox: Any, venue: str) -> str:
    """Against a sandbox venue with a tight limit and two injected faults (a 429 with ``Retry-After``, a 503),
    the connector stays under the limit, retries both, and returns the same records as ``run``."""
    app = sandbox.venues[venue]
    sandbox.inject(venue, "429", retry_after=0.2)
    sandbox.inject(venue, "5xx", status=503)
    refused, requests = app.stats.refused, app.stats.requests
    again = fetch_all(connector, run.stream.name, symbol, since=since, until=until)
    refused, requests = app.stats.refused - refused, app.stats.requests - requests
    pending = sandbox.faults.pending()
    sandbox.faults.clear()
    assert not pending, "the fetch ended before the injected 429/503 were even reached"
    assert again.keys == run.keys, (f"with a 429 and a 503 on the way the fetch returned {len(again.keys)} record(s) "
                                    f"instead of {len(run.keys)}: an error answer was taken for data")
    assert refused == 0, (f"the venue refused {refused} of {requests} request(s) over its limit "
                          f"{app.limit.spec()}: the client does not pace itself")
    return f"{requests} requests under {app.limit.spec()}, an injected 429 and 503 retried, same records"


def check_mapping_output(stream: Stream, mapping: Any, records: Sequence[Mapping[str, Any]], registry: Any) -> list:
    """The mapping validates, maps every record without rejects, and fills every target column (but ingest time)."""
    from schemahub_core.framework.mapping import check_mapping

    check_mapping(mapping, registry)
    rows, rejected = map_records(stream, mapping, records, registry)
    assert not rejected, f"{len(rejected)} record(s) rejected by the mapping: {rejected[0].reason}"
    target = registry.targets[mapping.target_table]
    for column in target.schema.names:
        if column == target.ingest_column:
            continue
        nulls = sum(1 for r in rows if r.get(column) is None)
        assert nulls == 0, f"{mapping.target_table}.{column} is null in {nulls} of {len(rows)} row(s)"
    return rows


def check_sides(rows: Sequence[Mapping[str, Any]], min_rows: int = 20, keys: Sequence[tuple] | None = None,
                taker: Mapping[tuple, str] | None = None) -> str:
    """Sides are ``BUY``/``SELL``, a busy range shows both, and (when the venue's truth ``taker`` is known, by the
    raw record ``keys`` of ``rows``) each is the TAKER's side."""
    sides = [r.get("side") for r in rows]
    odd = sorted({str(s) for s in sides if s not in ("BUY", "SELL")})
    assert not odd, f"side values {odd[:5]} are not BUY/SELL"
    counts = {s: sides.count(s) for s in ("BUY", "SELL")}
    assert len(rows) < min_rows or all(counts.values()), (
        f"all {len(rows)} trades are {max(counts, key=counts.get)}: the side is read from a constant field "
        "or mapped wrongly")
    if taker is None or keys is None:
        return f"{counts['BUY']} BUY, {counts['SELL']} SELL (no taker truth known)"
    known = [(side, taker[k]) for side, k in zip(sides, keys, strict=True) if k in taker]
    wrong = sum(side != truth for side, truth in known)
    assert not wrong, (f"{wrong} of {len(known)} trade(s) carry the maker's side, not the taker's"
                       + (" (every one: the side is inverted)" if wrong == len(known) else ""))
    return f"{counts['BUY']} BUY, {counts['SELL']} SELL, each the taker's side"


def check_times(rows: Sequence[Mapping[str, Any]], time_column: str, since: datetime | None,
                until: datetime | None) -> str:
    """Unified event times fall in ``[since, until)`` (a wrong epoch unit lands in 1970 or far in the future)."""
    times = [r[time_column] for r in rows]
    if since is not None:
        early = [t for t in times if t < since]
        assert not early, f"{len(early)} {time_column} value(s) before since={since}, e.g. {early[0]}: wrong unit?"
    if until is not None:
        late = [t for t in times if t >= until]
        assert not late, f"{len(late)} {time_column} value(s) at or after until={until}, e.g. {late[0]}: wrong unit?"
    return f"{len(times)} {time_column} values in range" if times else "no rows"


# -- structured results, for `schemahub plugins test` -----------------------------------------------------------

FIXES = {
    "column_names": "give every raw column a name unique ignoring case (Spark, Glue and Athena fold case): "
                    "Column('M_best_match', ..., native='M') lands the record's 'M' beside its 'm'",
    "fetch": "fetch() must yield Page(records, cursor) and end; run it under a debugger with the same arguments",
    "pages": "pass a small page_size option (plugins test --page-size) or widen --since/--until",
    "schema": "declare every field the records carry in Stream.columns (or leave it out of the record), and give "
              "each column the cast its JSON needs (to_double, from_ms, iso8601...)",
    "exactly_once": "yield each record once and only those with since <= event time < until; when the venue's "
                    "page bounds are inclusive, drop the record equal to the bound",
    "cursors": "give each Page the cursor that resumes after it: for id cursors its largest id, records sorted by "
               "id; the cursor must grow page after page",
    "resume": "fetch(cursor=C) must start right AFTER C (ids > C): pass C + 1 to an inclusive 'from' parameter",
    "range_edges": "compare event times as since <= t < until; mind millisecond venues (round until up, not down)",
    "rate_limit": "send requests through venue_session(POLICY, options).get_json: it paces to the venue's rate "
                  "(option rate_limit) and retries 429 / 5xx / timeouts with backoff",
    "mapping": "ship mappings/<target>.yaml for the stream (register_mappings) and check it with "
               "`schemahub mappings validate`; every target column but ingest_ts must be produced",
    "side": "map the venue's side to the TAKER's side: invert_side when the venue reports the maker's, "
            "taker_side_from_maker_flag for an is-buyer-maker flag, upper otherwise",
    "timestamps": "cast the event time with the transform for its unit (from_ms, from_us, from_s, from_ns, iso8601)",
}


@dataclass
class CheckResult:
    """One check's verdict: ``status`` is passed, failed or skipped; ``detail`` says what was seen."""

    name: str
    status: str
    detail: str = ""

    @property
    def fix(self) -> str:
        return FIXES.get(self.name, "") if self.status == "failed" else ""

    def as_dict(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


def _attempt(results: list[CheckResult], name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one check into ``results``; its return value, or None when it failed."""
    try:
        value = fn(*args, **kwargs)
    except AssertionError as exc:
        results.append(CheckResult(name, "failed", str(exc) or "assertion failed"))
        return None
    except Exception as exc:  # a crashing connector or mapping is a failed check, never a crashed report
        results.append(CheckResult(name, "failed", f"{type(exc).__name__}: {exc}"))
        return None
    results.append(CheckResult(name, "passed", value if isinstance(value, str) else ""))
    return value if value is not None else True


def run_suite(connector: Connector, stream: str, symbol: str, since: datetime, until: datetime, *,
              expected_keys: Sequence[tuple] | None = None, min_pages: int = 5, registry: Any = None,
              mappings: Sequence[Any] = (), limited: tuple[Connector, Any, str] | None = None,
              taker_sides: Mapping[tuple, str] | None = None) -> list[CheckResult]:
    """Every check on one range, as results instead of a first failure (what ``schemahub plugins test`` prints).

    ``limited`` is (connector, sandbox, venue) for the rate-limit check: the same connector class pointed at a
    sandbox whose venue has a tight limit; without it that check is skipped. ``taker_sides`` (record key -> taker
    side, from the simulated venue) lets the side check catch a maker/taker inversion.
    """
    from schemahub_core.framework.registry import get_registry

    registry = registry or get_registry()
    transforms = registry.transforms
    results: list[CheckResult] = []
    declared = connector.streams[stream]
    _attempt(results, "column_names", lambda: check_column_names(connector.name, declared)
             or f"{len(declared.columns)} raw column names, unique ignoring case")
    run = _attempt(results, "fetch", fetch_all, connector, stream, symbol, since=since, until=until)
    if run is None:
        names = ("pages", "schema", "exactly_once", "cursors", "resume", "range_edges", "rate_limit", "mapping",
                 "side", "timestamps")
        return results + [CheckResult(n, "skipped", "the fetch failed") for n in names]
    results[-1].detail = f"{len(run.pages)} page(s), {len(run.records)} record(s) from {since} to {until}"

    def pages() -> str:
        assert len(run.pages) >= min_pages, (f"only {len(run.pages)} page(s) for the range: fewer than {min_pages} "
                                             "cannot show how pages join")
        return f"{len(run.pages)} pages"

    def exactly_once() -> str:
        check_exactly_once(run, since, until, expected_keys, transforms)
        truth = "matches the venue's truth" if expected_keys is not None else "no truth known: no gap check"
        return f"no duplicate, all in range; {truth}"

    _attempt(results, "pages", pages)
    _attempt(results, "schema", lambda: check_schema(run, transforms) or f"{len(run.stream.columns)} columns cast")
    _attempt(results, "exactly_once", exactly_once)
    _attempt(results, "cursors", lambda: check_cursors(run) or f"{run.stream.cursor_kind.value} cursor increases")
    _attempt(results, "resume", lambda: check_resume(connector, run, symbol, until) or
             "resuming after pages 0, n/2, n-2 gives the rest exactly")
    def range_edges() -> str:
        return f"split at {check_range_edges(connector, run, symbol, since, until, transforms)}: since in, until out"

    _attempt(results, "range_edges", range_edges)
    if limited is None:
        results.append(CheckResult("rate_limit", "skipped", "needs the plugin's simulated venue (no --base-url)"))
    else:
        _attempt(results, "rate_limit", check_rate_limit, limited[0], run, symbol, since, until, limited[1],
                 limited[2])
    stream_obj = connector.streams[stream]
    if not mappings:
        results.append(CheckResult("mapping", "failed", f"no mapping for {connector.name}.{stream}"))
    rows_by_target = {}
    for mapping in mappings:
        rows = _attempt(results, "mapping", check_mapping_output, stream_obj, mapping, run.records, registry)
        if rows is not None:
            results[-1].detail = f"{mapping.target_table}: {len(rows)} row(s), every column filled"
            rows_by_target[mapping.target_table] = rows
    with_side = [rows for t, rows in rows_by_target.items() if "side" in registry.targets[t].schema.names]
    if with_side:
        _attempt(results, "side", check_sides, with_side[0], keys=run.keys, taker=taker_sides)
    else:
        results.append(CheckResult("side", "skipped", "no mapped target with a side column"))
    if rows_by_target:
        target = next(iter(rows_by_target))
        _attempt(results, "timestamps", check_times, rows_by_target[target], registry.targets[target].time_column,
                 since, until)
    else:
        results.append(CheckResult("timestamps", "skipped", "no mapped rows"))
    return results
