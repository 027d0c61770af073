"""The connector contract: what a venue plugin implements.

A connector reads; it never writes tables. It declares its streams (native raw
schema, record key, cursor kind) and yields the pages of one bounded range
(``since``/``until``, or resuming after a ``cursor``), each page with the cursor
that resumes *after* it. The engine commits a batch's rows with the time span they
cover in one Iceberg snapshot, which is what makes ingestion exactly-once.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import pyarrow as pa

from schemahub_core.framework.config import ConfigError, option_problem

if TYPE_CHECKING:
    from pathlib import Path
    from typing import BinaryIO

    from schemahub_core.framework.archives import ArchiveFile
    from schemahub_core.framework.livefeed import LiveFeed


class CursorKind(enum.StrEnum):
    """How a stream's position is expressed.

    ``id``: a monotonic record id (Binance ``a``, Coinbase ``trade_id``).
    ``time_ns``: an opaque nanosecond time token (Kraken ``last``).
    ``time``: an event time; overlapping windows plus key dedup handle late data.
    """

    ID = "id"
    TIME_NS = "time_ns"
    TIME = "time"


class IdContinuity(enum.StrEnum):
    """How a stream's record ids behave: what ``schemahub audit`` can prove about completeness.

    ``contiguous``: consecutive integers per symbol, so a missing integer is a missing record (Binance
    aggregate ids, Coinbase ``trade_id``); ``monotonic``: ids grow with time but may legitimately skip, so
    only time holes are checked; ``none``: nothing to rely on but time (the default).
    """

    CONTIGUOUS = "contiguous"
    MONOTONIC = "monotonic"
    NONE = "none"


@dataclass(frozen=True)
class Column:
    """One raw column: its name (the native one), its Arrow type, and the cast from JSON.

    ``cast`` names a registered transform (e.g. ``to_double``, ``from_ms``)
    applied to the JSON values; ``None`` keeps the value as it comes.
    ``native`` is the record's key when the column cannot keep the native name: no
    two columns of a raw table may differ only by case (Spark, Glue, Athena and
    Trino fold case), so Binance's ``M`` lands as ``Column("M_best_match", ...,
    native="M")`` beside ``m``. Tables made before such a rename are migrated by
    an Iceberg column rename when opened (no data is rewritten).
    """

    name: str
    type: pa.DataType
    cast: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    native: str | None = None

    @property
    def record_key(self) -> str:
        """Where the value is in a native record."""
        return self.native or self.name


# the engine's bookkeeping columns after a stream's own in every raw table
RAW_META_COLUMNS = ("_source", "_source_ingest_ts", "_raw_payload")


class StreamDefinitionError(ValueError):
    """A stream a connector declares cannot become a raw table (the message names the columns and the fix)."""


def check_column_names(source: str, stream: Stream, engine_columns: Sequence[str] = RAW_META_COLUMNS) -> None:
    """Raise unless the raw table's column names are unique ignoring case.

    Case-insensitive engines (Spark by default, Glue, Athena, Trino) cannot tell ``m`` from ``M``:
    a query on either fails as ambiguous, so such a table is unusable there.
    """
    seen: dict[str, str] = {}
    for name in [c.name for c in stream.columns] + list(engine_columns):
        other = seen.get(name.lower())
        seen[name.lower()] = name
        if other is None:
            continue
        if other == name:
            raise StreamDefinitionError(f"{source}.{stream.name}: raw column {name!r} is declared twice")
        raise StreamDefinitionError(
            f"{source}.{stream.name}: raw columns {other!r} and {name!r} differ only by case, which "
            "case-insensitive engines (Spark, Glue, Athena) cannot tell apart; rename one and keep the "
            f"record's key: Column({name + '_<meaning>'!r}, ..., native={name!r})")


@dataclass(frozen=True)
class Stream:
    """A stream of native records of one kind (``trades``, ``quotes``...)."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    cursor_kind: CursorKind
    event_time: str  # raw column used for day partitioning and time ranges
    ids: IdContinuity = IdContinuity.NONE  # how the id (the key's last column) behaves per symbol
    default: bool = True  # ingested when the source is named alone (`run ingest binance`); else only by name
    # names this stream had before (its raw table was raw_<source>_<old>): such a table is detected by its
    # columns and moved with `schemahub maintain --migrate`, its coverage and progress kept
    formerly: tuple[str, ...] = ()

    @property
    def symbol_column(self) -> str:
        """The key column naming the symbol (the key's first column)."""
        return self.key[0]

    @property
    def id_column(self) -> str | None:
        """The key column holding the record id (the key's last), None for a one-column key."""
        return self.key[-1] if len(self.key) > 1 else None

    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type) for c in self.columns])

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


Cursor = str | int | None
T = TypeVar("T")


@dataclass(frozen=True)
class Page:
    """Native records (dicts keyed by the stream's column names) and the cursor after them.

    ``payloads`` are the original JSON texts per record when the connector keeps
    them (for ``_raw_payload`` and quarantine); ``None`` means "serialize the record".
    A page may carry its records as columns instead (``table``, one column per record key, in the venue's
    form; ``records`` then empty and ``payloads`` a string array or None): no object per record, for feeds
    that arrive by the ten thousand a second.
    """

    records: list[dict[str, Any]]
    cursor: Cursor
    payloads: Sequence[str] | pa.Array | None = None
    table: pa.Table | None = None

    @property
    def size(self) -> int:
        """How many records the page holds."""
        return self.table.num_rows if self.table is not None else len(self.records)


class ConnectorError(RuntimeError):
    """A venue answered with an error that retrying will not fix (bad symbol, bad request).

    ``retryable`` is True when the venue was only unavailable (retries ran out on 5xx, timeouts, 429):
    a rerun later resumes. False (the default) means a rerun fails the same way until something is fixed.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class VenueUnreachable(ConnectorError):
    """Nothing listens at the venue's address (connection refused, unknown host): retrying will not help,
    and every other symbol of the venue would fail the same way, so the run stops asking it."""


class Connector:
    """Base class for venue connectors.

    Subclasses set ``name`` and ``streams`` and implement ``fetch``. ``options``
    come from ``config/schemahub.yaml`` (``connectors.<name>``) and environment
    variables such as ``SCHEMAHUB_<NAME>_BASE_URL``.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    streams: ClassVar[Mapping[str, Stream]]
    default_symbols: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        self.options: dict[str, Any] = dict(options or {})

    def option(self, key: str, default: T, kind: Callable[[Any], T] = str) -> T:  # type: ignore[assignment]
        """Option ``key`` converted by ``kind`` (``int``, ``float``...), ``default`` when unset or empty.

        A value ``kind`` refuses is a ``ConfigError`` naming the option and where to set it, raised when the
        connector is built: the engine builds every connector of a run before it writes anything.
        """
        value = self.options.get(key)
        if value is None or value == "":
            return default
        try:
            return kind(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(option_problem(self.name, key, value, exc)) from None

    def native_symbol(self, symbol: str) -> str:
        """The venue's spelling of a canonical ``BASE-QUOTE`` symbol."""
        return symbol

    def fetch(
        self,
        stream: str,
        symbol: str,
        cursor: Cursor,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[Page]:
        """Yield pages of ``stream`` for canonical ``symbol`` after ``cursor``.

        The core dispatches here, so no connector repeats it: stream ``trades`` is fetched by the connector's
        ``fetch_trades``, ``quotes`` by ``fetch_quotes``, any declared stream ``x`` by ``fetch_x``, each with
        ``(symbol, cursor, since, until)``: one bounded range. The engine asks for the holes in what it has
        landed, so a range may lie before, between or after earlier ones:

        - ``cursor`` set: resume strictly after that record (a page cursor this connector yielded before);
          ``since`` is then only a hint and may be ignored;
        - else ``since`` set: start at the first record with event time ``>= since``;
        - neither: the venue's recent history (a first run without ``--since``);
        - ``until`` set: stop before the first record with event time ``>= until`` (exclusive); else at the
          newest data.

        Yield pages in ascending event-time order, each with the cursor after its last record. Records at or
        before ``cursor`` must not be yielded.
        """
        if stream not in self.streams:
            raise ConnectorError(f"{self.name}: unknown stream {stream!r} (streams: {', '.join(self.streams)})")
        method = getattr(self, f"fetch_{stream}", None)
        if method is None:
            raise NotImplementedError(f"{type(self).__name__} declares stream {stream!r} but has no fetch_{stream}")
        return method(symbol, cursor, since, until)

    def server_time(self) -> datetime | None:
        """Now on the venue's clock (its server-time endpoint), or None when the connector cannot tell it.

        Optional. Relative ``--since``/``--until`` (``2h``) count back from it, so they mean the venue's last
        two hours even when its clock is not the wall clock (the sandbox's is in 2024); with None they count
        from the wall clock. Raise ``ConnectorError`` (or let the session's errors through) when the venue
        answers badly: the run of this source then fails with that line instead of guessing a clock.
        """
        return None

    def live_feed(self, symbols: Sequence[str]) -> LiveFeed:
        """The venue's WebSocket best bid/ask feed for canonical ``symbols`` (``schemahub live``).

        Optional: a connector without one raises ``NotImplementedError`` and is
        left out of live views. The URL comes from the ``ws_url`` option, so tests
        and the sandbox override it like ``base_url``.
        """
        raise NotImplementedError(f"{self.name} has no live feed")

    # -- bulk archives (optional; ``schemahub backfill``, see ``schemahub_core.framework.archives``) ---------------
    def archive_files(self, stream: str, symbol: str, since: datetime, until: datetime) -> list[ArchiveFile]:
        """The venue's archive files covering ``[since, until)`` of ``stream`` for canonical ``symbol``, oldest first.

        Optional: a connector without archives raises ``NotImplementedError``. Use
        ``archive_periods`` to take monthly files for whole past months and daily ones for the rest.
        """
        raise NotImplementedError(f"{self.name} has no bulk archives")

    def archive_checksum(self, file: ArchiveFile) -> str | None:
        """The sha256 (hex) the venue publishes for ``file``, or None when it publishes none.

        The engine refuses a download that does not match it; with None the file's own sha256 identifies it.
        """
        return None

    def download_archive(self, file: ArchiveFile, out: BinaryIO, on_bytes: Callable[[int, int | None], None]) -> None:
        """Write ``file``'s bytes into ``out``, calling ``on_bytes(done, total)`` as they arrive.

        The default is a streamed GET of ``file.url``; a 404 raises ``ArchiveMissing``.
        """
        import requests

        from schemahub_core.framework.archives import download

        with requests.Session() as session:
            session.headers["User-Agent"] = "schemahub"
            download(session, file.url, out, on_bytes)

    def read_archive(self, file: ArchiveFile, path: Path) -> Iterator[pa.RecordBatch]:
        """Stream the rows of the downloaded ``file`` at ``path`` as record batches, in file order.

        Columns: the stream's raw columns, either already of their raw type or in the form the column's
        ``cast`` reads from the venue's REST answers (so an archive row equals the REST row for the same
        record), plus ``_raw_payload``, the original line. Raise ``ArchiveError`` for an unreadable file.
        """
        raise NotImplementedError(f"{self.name} has no bulk archives")
