"""Binance Spot: individual trades (stream ``trades``, ``/api/v3/historicalTrades``, cursor = trade id), aggregate
trades (stream ``agg_trades``, ``/api/v3/aggTrades``, cursor = aggregate id) and book ticker quotes, REST and live
(WebSocket ``<symbol>@bookTicker``, ``{u,s,b,B,a,A}``, on the combined ``/stream`` endpoint).

``trades`` feeds ``trades_unified`` by default: one row per fill, keyed by Binance's own trade id (the id the
seed's mapping, the venue's ``trades`` archives and other tools use). It costs weight 25 per 1,000 trades
against 4 per 1,000 aggregates (each aggregate is one or more fills at one price), so ``agg_trades`` is kept
as its own stream for bulk history; it is landed only when named (``run ingest binance.agg_trades``).

Paging ``trades``: ``historicalTrades`` has no time parameter, so a ``since`` is reached through the first
aggregate trade at or after it (``aggTrades?startTime=``, weight 4): its first trade id ``f`` is the first
individual trade at or after ``since``. Every page then asks ``fromId = last id + 1``. Paging ``agg_trades``:
the first page starts at ``startTime`` (inclusive, ms), then ``fromId = last a + 1`` (Binance refuses ``fromId``
together with a time bound). ``until`` is exclusive and checked on the trade time. Request weight is drawn
from the shared session's bucket, and ``X-MBX-USED-WEIGHT-1M`` is tracked so the IP never reaches a 429, let
alone the 418 ban that follows one.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import requests

from schemahub_core import (
    QUOTE_SCHEMA,
    ArchiveError,
    ArchiveFile,
    Column,
    Connector,
    ConnectorError,
    Cursor,
    CursorKind,
    IdContinuity,
    LiveFeed,
    LiveQuote,
    Page,
    QuoteBatch,
    RateLimit,
    Stream,
    VenuePolicy,
    archive_periods,
    csv_batches,
    fetch_text,
    parse_checksum,
    vectorized_rows,
    venue_session,
)

TS = pa.timestamp("us", tz="UTC")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BASE_URL = "https://api.binance.com"
WS_URL = "wss://stream.binance.com:9443"
ARCHIVE_URL = "https://data.binance.vision"
MICROS_FROM = datetime(2025, 1, 1, tzinfo=UTC)  # spot archive timestamps are µs from this day on, ms before
PAGE_SIZE = 1000
WEIGHTS = {"aggTrades": 4, "historicalTrades": 25, "bookTicker": 2}
ARCHIVE_KINDS = {"trades": "trades", "agg_trades": "aggTrades"}  # stream -> data.binance.vision folder
ARCHIVE_COLUMNS = {  # each archive's CSV columns, as the stream's raw columns
    "trades": ("id", "price", "qty", "quoteQty", "time", "isBuyerMaker", "isBestMatch"),
    "agg_trades": ("a", "p", "q", "f", "l", "T", "m", "M_best_match"),
}

TRADES = Stream(  # the seed's raw_binance_trades: id STRING, symbol, price, qty, time, then the venue's other fields
    name="trades",
    columns=(
        Column("id", pa.string(), "to_string"),
        Column("symbol", pa.string()),  # added by the connector: trade rows omit it
        Column("price", pa.float64(), "to_double"),
        Column("qty", pa.float64(), "to_double"),
        Column("time", TS, "from_ms"),
        Column("quoteQty", pa.float64(), "to_double"),
        Column("isBuyerMaker", pa.bool_()),
        Column("isBestMatch", pa.bool_()),
    ),
    key=("symbol", "id"),
    cursor_kind=CursorKind.ID,
    event_time="time",
    ids=IdContinuity.CONTIGUOUS,  # trade ids are consecutive per symbol (as text, per the seed's DDL)
)

AGG_TRADES = Stream(
    name="agg_trades",
    columns=(
        Column("symbol", pa.string()),  # added by the connector: aggTrades rows omit it
        Column("a", pa.int64()),
        Column("p", pa.float64(), "to_double"),
        Column("q", pa.float64(), "to_double"),
        Column("f", pa.int64()),
        Column("l", pa.int64()),
        Column("T", TS, "from_ms"),
        Column("m", pa.bool_()),
        Column("M_best_match", pa.bool_(), native="M"),  # "was the best price match"; `m` is beside it
    ),
    key=("symbol", "a"),
    cursor_kind=CursorKind.ID,
    event_time="T",
    ids=IdContinuity.CONTIGUOUS,  # aggregate ids are consecutive per symbol
    default=False,  # the same fills as `trades`, aggregated: landed when named
    formerly=("trades",),  # until 2026-12 this stream was `trades`: old warehouses hold it in raw_binance_trades
)

QUOTES = Stream(
    name="quotes",
    columns=(
        Column("symbol", pa.string()),
        Column("bidPrice", pa.float64(), "to_double"),
        Column("bidQty", pa.float64(), "to_double"),
        Column("askPrice", pa.float64(), "to_double"),
        Column("askQty", pa.float64(), "to_double"),
        Column("time", TS, "from_us"),  # bookTicker has no time: the connector's receive time, µs
    ),
    key=("symbol", "time"),
    cursor_kind=CursorKind.TIME,
    event_time="time",
)


def _error_message(body: Any) -> str | None:
    if isinstance(body, dict) and "msg" in body:
        return f"{body['msg']} (code {body.get('code')})"
    return None


POLICY = VenuePolicy(
    name="binance",
    rate=RateLimit(6000, 60),  # request weight per minute per IP
    used_weight_header="X-MBX-USED-WEIGHT-1M",
    error_message=_error_message,
)


def archive_timestamps(text: pa.Array, file: ArchiveFile) -> pa.Array:
    """A spot archive's time column (integers, or their text) to timestamp[us, UTC]: ms before 2025-01-01, µs
    from then on.

    Instants outside the file's day or month (a day of slack) are refused: the sign of a wrong time unit.
    """
    ints = pc.cast(text, pa.int64())
    if file.start < MICROS_FROM:
        ints = pc.multiply_checked(ints, 1000)
    lo, hi = pc.min(ints).as_py(), pc.max(ints).as_py()
    first, stop = _us(file.start - timedelta(days=1)), _us(file.end + timedelta(days=1))
    if lo is not None and (lo < first or hi >= stop):
        unit = "µs" if file.start >= MICROS_FROM else "ms"
        raise ArchiveError(f"{file.name}: timestamps read as {unit} ({lo} .. {hi} µs since the epoch) fall outside "
                           f"{file.start.date()} .. {file.end.date()}: spot files use ms before 2025-01-01, "
                           "µs from then on")
    return pc.cast(ints, TS)


def _first_ms(moment: datetime) -> int:
    """The first whole ms at or after ``moment`` (never rounded down: ``since`` is inclusive)."""
    return -(-_us(moment) // 1000)


def _us(moment: datetime) -> int:
    """Exact epoch microseconds (naive datetimes are UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - EPOCH) // timedelta(microseconds=1)


class BinanceConnector(Connector):
    """Options: ``base_url``, ``api_key`` (sent as ``X-MBX-APIKEY``, optional for public data), ``page_size``,
    and the session's ``rate_limit`` / ``timeout`` / ``max_retries`` (see ``schemahub_core.framework.http``)."""

    name = "binance"
    description = "Binance Spot REST"
    streams = {"trades": TRADES, "agg_trades": AGG_TRADES, "quotes": QUOTES}
    default_symbols = ("BTC-USDT", "ETH-USDT")

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.base_url = str(self.options.get("base_url") or BASE_URL).rstrip("/")
        self.page_size = self.option("page_size", PAGE_SIZE, int)
        key = self.options.get("api_key")
        self.session = venue_session(POLICY, self.options, {"X-MBX-APIKEY": key} if key else None)

    def native_symbol(self, symbol: str) -> str:
        return symbol.replace("-", "").replace("/", "").upper()

    # -- bulk archives: data.binance.vision spot aggTrades --------------------------------------------------------
    @property
    def archive_url(self) -> str:
        """Option ``archive_url``; a ``base_url`` pointing elsewhere (the sandbox) serves the archives too."""
        explicit = self.options.get("archive_url")
        if explicit:
            return str(explicit).rstrip("/")
        return self.base_url if self.base_url != BASE_URL else ARCHIVE_URL

    def server_time(self) -> datetime:
        """The venue's clock (``/api/v3/time``, weight 1): which days and months are over, hence archived, and
        what relative ``--since 2h`` counts back from."""
        body, _ = self.session.get_json(f"{self.base_url}/api/v3/time", None, 1)
        if not isinstance(body, dict) or not isinstance(body.get("serverTime"), int):
            raise ConnectorError(f"binance: /api/v3/time returned {body!r}")
        return datetime.fromtimestamp(body["serverTime"] / 1000, UTC)

    def archive_files(self, stream: str, symbol: str, since: datetime, until: datetime) -> list[ArchiveFile]:
        """``data/spot/{monthly|daily}/{trades|aggTrades}/SYMBOL/SYMBOL-{kind}-{YYYY-MM|YYYY-MM-DD}.zip`` (``trades``
        files for the ``trades`` stream, ``aggTrades`` for ``agg_trades``): monthly files for whole past months,
        daily files for the other days up to yesterday (venue time)."""
        kind = ARCHIVE_KINDS.get(stream)
        if kind is None:
            raise ConnectorError(f"binance: stream {stream!r} has no archives (trades and agg_trades have)")
        native = self.native_symbol(symbol)
        files = []
        for period in archive_periods(since, until, self.server_time()):
            name = f"{native}-{kind}-{period.label}.zip"
            url = f"{self.archive_url}/data/spot/{period.kind}/{kind}/{native}/{name}"
            files.append(ArchiveFile(stream, symbol, name, url, period.start, period.end, period.kind,
                                     f"{url}.CHECKSUM"))
        return files

    def archive_checksum(self, file: ArchiveFile) -> str | None:
        """The sibling ``.CHECKSUM``: ``<sha256>  <zip name>`` (no trailing newline)."""
        with requests.Session() as session:
            return parse_checksum(fetch_text(session, file.checksum_url or f"{file.url}.CHECKSUM"), file.name)

    def read_archive(self, file: ArchiveFile, path: Path) -> Iterator[pa.RecordBatch]:
        """aggTrades rows ``agg id, price, qty, first id, last id, time, buyer is maker, best match`` as the
        ``agg_trades`` raw columns, or trades rows ``id, price, qty, quoteQty, time, buyer is maker, best match``
        as the ``trades`` ones (no header on spot files; a header line, as USD-M files have, is skipped).

        The CSV reader parses each column straight into its raw type (Arrow's number parser, the one the
        stream's ``to_double`` cast uses on REST text, so the values are the same); only ``trades``' id stays
        text, as REST's id is cast ``to_string``. Times are ms or µs by the file's date."""
        names = list(ARCHIVE_COLUMNS[file.stream])
        stream = self.streams[file.stream]
        raw = {c.name: c.type for c in stream.columns}
        types = {name: pa.int64() if name == stream.event_time else raw[name] for name in names}
        native = self.native_symbol(file.symbol)
        for batch in csv_batches(path, file.name, names, types=types):
            arrays = [pa.repeat(pa.scalar(native, pa.string()), batch.num_rows)]
            for name, column in zip(names, batch.columns[:len(names)], strict=True):
                arrays.append(archive_timestamps(column, file) if name == stream.event_time else column)
            arrays.append(batch.column(len(names)))
            yield pa.RecordBatch.from_arrays(arrays, names=["symbol", *names, "_raw_payload"])

    def live_feed(self, symbols: Sequence[str]) -> BinanceLiveFeed:
        """``@bookTicker`` for ``symbols`` on one combined-stream connection (option ``ws_url``)."""
        return BinanceLiveFeed(str(self.options.get("ws_url") or WS_URL),
                               {self.native_symbol(s): s.upper() for s in symbols})

    def close(self) -> None:
        self.session.close()

    def fetch_trades(
        self,
        symbol: str,
        cursor: Cursor,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[Page]:
        """Pages of individual trades (see the module docstring for the paging rules)."""
        native = self.native_symbol(symbol)
        from_id: int | None = None
        if cursor is not None:
            from_id = int(cursor) + 1
        elif since is not None:
            first = self._first_agg_at(native, since)
            if first is None:
                return  # no trade at or after `since` yet
            from_id = int(first["f"])
        yield from self._pages(native, "historicalTrades", "id", "time", cursor, until,
                               {} if from_id is None else {"fromId": from_id})

    def fetch_agg_trades(
        self,
        symbol: str,
        cursor: Cursor,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[Page]:
        """Pages of aggregate trades (see the module docstring for the paging rules)."""
        first: dict[str, Any] = {}
        if cursor is not None:
            first["fromId"] = int(cursor) + 1
        elif since is not None:
            first["startTime"] = _first_ms(since)
        yield from self._pages(self.native_symbol(symbol), "aggTrades", "a", "T", cursor, until, first)

    def _first_agg_at(self, native: str, since: datetime) -> dict[str, Any] | None:
        rows, _ = self.session.get_json(f"{self.base_url}/api/v3/aggTrades",
                                        {"symbol": native, "startTime": _first_ms(since), "limit": 1},
                                        WEIGHTS["aggTrades"])
        if not isinstance(rows, list):
            raise ConnectorError(f"binance: aggTrades for {native} returned {type(rows).__name__}, expected a list")
        if rows and not (isinstance(rows[0], dict) and isinstance(rows[0].get("f"), int)):
            raise ConnectorError(f"binance: aggTrades for {native} returned a row without a first trade id 'f'")
        return rows[0] if rows else None

    def _pages(self, native: str, endpoint: str, id_field: str, time_field: str, cursor: Cursor,
               until: datetime | None, first: dict[str, Any]) -> Iterator[Page]:
        """Page ``endpoint`` forward by ``fromId`` from the ``first`` page's parameters, stopping before ``until``."""
        params: dict[str, Any] = {"symbol": native, "limit": self.page_size, **first}
        until_ms = -(-_us(until) // 1000) if until is not None else None  # t ms >= until  <=>  t >= until_ms
        while True:
            rows, _ = self.session.get_json(f"{self.base_url}/api/v3/{endpoint}", params, WEIGHTS[endpoint],
                                            texts=True)
            if not isinstance(rows, list):
                raise ConnectorError(f"binance: {endpoint} for {native} returned {type(rows).__name__}, "
                                     "expected a list")
            texts = getattr(rows, "texts", None)  # each row's JSON as Binance sent it: its _raw_payload
            if texts is None:  # a body json.loads had to read (not UTF-8): serialize the rows instead
                texts = [json.dumps(row, separators=(",", ":")) for row in rows]
            records, last_id, done = rows, None, False
            for i, row in enumerate(rows):  # per row only what JSON cannot say in bulk: the bound, the cursor
                if not isinstance(row, dict):
                    continue
                t = row.get(time_field)
                if until_ms is not None and isinstance(t, int) and t >= until_ms:
                    records, done = rows[:i], True
                    break
                row["symbol"] = native  # the rows are this page's own parse: no copy
                row_id = row.get(id_field)
                if isinstance(row_id, int) and (last_id is None or row_id > last_id):
                    last_id = row_id
            if records:
                yield Page(list(records), last_id if last_id is not None else cursor, texts[:len(records)])
                cursor = last_id if last_id is not None else cursor
            if done or len(rows) < self.page_size or last_id is None:
                return
            params = {"symbol": native, "limit": self.page_size, "fromId": last_id + 1}

    def fetch_quotes(self, symbol: str, cursor: Cursor, since: datetime | None = None,
                     until: datetime | None = None) -> Iterator[Page]:
        """One page: the current best bid/ask (REST has no quote history)."""
        yield self._quote(symbol)

    def _quote(self, symbol: str) -> Page:
        native = self.native_symbol(symbol)
        body, _ = self.session.get_json(f"{self.base_url}/api/v3/ticker/bookTicker", {"symbol": native},
                                        WEIGHTS["bookTicker"])
        if not isinstance(body, dict):
            raise ConnectorError(f"binance: bookTicker for {native} returned {type(body).__name__}, expected an object")
        received = _us(datetime.now(UTC))
        return Page([{**body, "time": received}], received, [json.dumps(body, separators=(",", ":"))])


TICKER_MESSAGE = pa.schema([pa.field("data", pa.struct([
    pa.field("u", pa.int64()), pa.field("s", pa.string()), pa.field("b", pa.string()), pa.field("B", pa.string()),
    pa.field("a", pa.string()), pa.field("A", pa.string())]))])  # a combined-stream bookTicker message


class BinanceLiveFeed(LiveFeed):
    """Binance's book ticker stream. It carries no time: ``quote_ts`` is the receive time, as for REST."""

    exchange = "BINANCE"

    def connect_url(self) -> str:
        streams = "/".join(f"{native.lower()}@bookTicker" for native in self.symbols)
        return f"{self.url}/stream?streams={streams}"

    def parse_batch(self, messages: Sequence[str], received_us: np.ndarray) -> QuoteBatch:
        """Combined-stream ``bookTicker`` messages read at once (pyarrow's JSON reader); any other message in
        the batch (an ack, a raw-stream message, a bad one) sends the whole batch through ``parse``."""
        data = vectorized_rows(messages, TICKER_MESSAGE).column("data").combine_chunks()
        fields = {name: data.field(name) for name in "usbBaA"}
        if data.null_count or any(f.null_count for f in fields.values()):
            return super().parse_batch(messages, received_us)
        native = fields["s"]
        known = pa.array(list(self.symbols), pa.string())
        symbol = pc.coalesce(pc.take(pa.array(list(self.symbols.values()), pa.string()), pc.index_in(native, known)),
                             native)
        received = pa.array(received_us, pa.int64())
        prices = [pc.cast(fields[k], pa.float64()) for k in "bBaA"]
        quotes = pa.Table.from_arrays([native, symbol, *prices, received, received, fields["u"]], schema=QUOTE_SCHEMA)
        records = pa.table({"symbol": native, "bidPrice": fields["b"], "bidQty": fields["B"], "askPrice": fields["a"],
                            "askQty": fields["A"], "time": received})
        return QuoteBatch(self.exchange, quotes, records, pa.array(messages, pa.string()))

    def parse(self, message: str, received: datetime) -> list[LiveQuote]:
        body = json.loads(message)
        data = body.get("data", body) if isinstance(body, dict) else None
        if not isinstance(data, dict) or "u" not in data:
            return []  # e.g. {"result": null, "id": 1}
        native = data["s"]
        record = {"symbol": native, "bidPrice": data["b"], "bidQty": data["B"], "askPrice": data["a"],
                  "askQty": data["A"], "time": _us(received)}
        return [LiveQuote(self.exchange, self.symbols.get(native, native), native, float(data["b"]), float(data["B"]),
                          float(data["a"]), float(data["A"]), received, received, record, message, int(data["u"]))]
