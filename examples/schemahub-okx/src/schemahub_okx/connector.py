"""OKX public trades (``GET /api/v5/market/history-trades``): an example third-party venue.

Written only against ``schemahub_core``'s public API, as any outside author would, from OKX's public docs:
rows come newest first as ``{"code": "0", "msg": "", "data": [{instId, tradeId, px, sz, side, ts}]}``, every
value a string; ``side`` is the taker's side; ``ts`` is epoch milliseconds. ``type=1`` pages by ``tradeId``
(``after=X``: ids < X; ``before=Y``: ids > Y; ``before`` alone returns the *latest* data, so it cannot walk
forward on its own), ``type=2`` takes a time in ms for ``after``; ``limit`` is at most 100. Public limit: 20
requests per 2 s per IP; over it, HTTP 429 with code ``50011``.

How ``fetch`` pages (cursor = ``tradeId``, which grows with time on one instrument):

1. the ceiling: the newest trade before ``until`` (``type=2&after=<until ms>&limit=1``), or the newest trade;
2. the start: the cursor, else the newest trade before ``since`` (same request), else (nothing that old is
   kept) the oldest trade kept, found by bisection on ``after``;
3. forward in id windows: ``before=<start>&after=<start + limit + 1>`` holds at most ``limit`` trades, so one
   request returns the whole window; the page's cursor is its largest ``tradeId``.

Bulk history (``schemahub backfill okx``): OKX publishes a zip of each day's trades per instrument at
``/cdn/okex/traderecords/trades/daily/YYYYMMDD/{instId}-trades-YYYY-MM-DD.zip`` on ``static.okx.com``, one CSV
inside with a header ``instrument_name,trade_id,side,price,size,created_time`` (``side`` the taker's,
``created_time`` epoch ms). No checksum is published: the engine identifies a file by the sha256 of what it
downloaded. Daily files only; this example takes their days as UTC days (check the venue's cut-off before
relying on it for coverage).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from schemahub_core import (
    ArchiveFile,
    Column,
    Connector,
    ConnectorError,
    Cursor,
    CursorKind,
    IdContinuity,
    Page,
    RateLimit,
    RetryableError,
    Stream,
    VenuePolicy,
    archive_periods,
    csv_batches,
    venue_session,
)

TS = pa.timestamp("us", tz="UTC")
BASE_URL = "https://www.okx.com"
ARCHIVE_URL = "https://static.okx.com"
ARCHIVE_COLUMNS = ("instrument_name", "trade_id", "side", "price", "size", "created_time")  # the file's header
PATH = "/api/v5/market/history-trades"
PAGE_SIZE = 100  # OKX's maximum
RETRYABLE = {"50001", "50004", "50011", "50013", "50026"}  # unavailable, timeout, rate limit, busy, system error

TRADES = Stream(
    name="trades",
    columns=(
        Column("instId", pa.string()),
        Column("tradeId", pa.int64()),  # text on the wire; the connector makes it an integer (it is the cursor)
        Column("px", pa.float64(), "to_double"),
        Column("sz", pa.float64(), "to_double"),
        Column("side", pa.string()),  # the taker's side
        Column("ts", TS, "from_ms"),
    ),
    key=("instId", "tradeId"),
    cursor_kind=CursorKind.ID,
    event_time="ts",
    ids=IdContinuity.MONOTONIC,  # grows with time per instrument; gaps are not promised
)


def _error_message(body: Any) -> str | None:
    if isinstance(body, dict) and "code" in body:
        return f"code {body.get('code')}: {body.get('msg')}"
    return None


def _check_body(response: Any, body: Any) -> None:
    """OKX reports errors as a non-zero ``code`` even in 200 answers."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise ConnectorError(f"okx: unexpected answer from {response.url}: {str(body)[:120]}")
    code = str(body.get("code"))
    if code == "0":
        return
    if code in RETRYABLE:
        raise RetryableError(f"code {code}: {body.get('msg')}")
    raise ConnectorError(f"okx: code {code}: {body.get('msg')}")


POLICY = VenuePolicy(name="okx", rate=RateLimit(20, 2), error_message=_error_message, check_body=_check_body)


class OkxConnector(Connector):
    """Options: ``base_url``, ``page_size`` (<= 100) and the session's ``rate_limit`` / ``timeout`` /
    ``max_retries``. Public market data needs no API key."""

    name = "okx"
    description = "OKX public REST (example plugin)"
    streams = {"trades": TRADES}
    default_symbols = ("BTC-USDT",)

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.base_url = str(self.options.get("base_url") or BASE_URL).rstrip("/")
        self.page_size = min(PAGE_SIZE, self.option("page_size", PAGE_SIZE, int))
        self.session = venue_session(POLICY, self.options)

    def native_symbol(self, symbol: str) -> str:
        return symbol.replace("/", "-").upper()

    # -- bulk archives: the daily trade files ---------------------------------------------------------------------
    def server_time(self) -> datetime:
        """OKX's clock (``GET /api/v5/public/time``): which days are over, hence published, and what relative
        ``--since 2h`` counts back from."""
        body, _ = self.session.get_json(f"{self.base_url}/api/v5/public/time", None)
        return datetime.fromtimestamp(int(body["data"][0]["ts"]) / 1000, UTC)

    def archive_files(self, stream: str, symbol: str, since: datetime, until: datetime) -> list[ArchiveFile]:
        """One daily file per UTC day of ``[since, until)`` that is over at the venue's clock."""
        if stream != "trades":
            raise ConnectorError(f"okx: stream {stream!r} has no archives")
        inst = self.native_symbol(symbol)
        root = str(self.options.get("archive_url") or (ARCHIVE_URL if self.base_url == BASE_URL else self.base_url))
        files = []
        for period in archive_periods(since, until, self.server_time(), monthly=False):
            name = f"{inst}-trades-{period.label}.zip"
            url = f"{root.rstrip('/')}/cdn/okex/traderecords/trades/daily/{period.start:%Y%m%d}/{name}"
            files.append(ArchiveFile(stream, symbol, name, url, period.start, period.end, period.kind))
        return files

    def archive_checksum(self, file: ArchiveFile) -> str | None:
        return None  # OKX publishes none

    def read_archive(self, file: ArchiveFile, path: Path) -> Iterator[pa.RecordBatch]:
        """The file's rows as the raw columns: the trade id as an integer (as ``fetch`` makes it), the rest as
        text for the stream's casts, exactly as they read REST's strings; each line kept as the payload."""
        names = ["instId", "tradeId", "side", "px", "sz", "ts"]  # the header's columns, in its order
        for batch in csv_batches(path, file.name, ARCHIVE_COLUMNS, types={"trade_id": pa.int64()}, header=True):
            yield pa.RecordBatch.from_arrays(batch.columns, names=[*names, "_raw_payload"])

    def close(self) -> None:
        self.session.close()

    def _rows(self, inst: str, **params: Any) -> list[dict[str, Any]]:
        body, _ = self.session.get_json(f"{self.base_url}{PATH}", {"instId": inst, **params})
        return body["data"]

    def _newest_id(self, inst: str, before_time: datetime | None) -> int | None:
        """The id of the newest trade with ``ts < before_time`` (any time when None); None if there is none."""
        params: dict[str, Any] = {"limit": 1}
        if before_time is not None:
            params.update(type=2, after=_ceil_ms(before_time))
        rows = self._rows(inst, **params)
        return _trade_id(rows[0]) if rows else None

    def _oldest_id(self, inst: str, newest: int) -> int:
        """The oldest trade still kept: bisect on ``after=X`` (is there any trade below X?)."""
        lo, hi = 0, newest  # nothing below lo+1 is unknown; something below hi+1 exists (newest itself)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._rows(inst, after=mid + 1, limit=1):
                hi = mid
            else:
                lo = mid + 1
        return lo

    def fetch_trades(
        self,
        symbol: str,
        cursor: Cursor,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[Page]:
        """Pages of trades in ascending ``tradeId`` order, ``since`` inclusive, ``until`` exclusive."""
        inst = self.native_symbol(symbol)
        since, until = _aware(since), _aware(until)
        ceiling = self._newest_id(inst, until)
        if ceiling is None:
            return
        if cursor is not None:
            start = int(cursor)
        elif since is not None:
            before_since = self._newest_id(inst, since)
            start = before_since if before_since is not None else self._oldest_id(inst, ceiling) - 1
        else:  # no position at all: the newest page
            start = ceiling - self.page_size
        while start < ceiling:
            end = min(start + self.page_size, ceiling)
            rows = self._rows(inst, before=start, after=end + 1, limit=self.page_size)
            rows.sort(key=_order)
            if rows:
                records = [{**row, "tradeId": _trade_id(row)} if isinstance(row, dict) else row for row in rows]
                ids = [r["tradeId"] for r in records if isinstance(r, dict) and isinstance(r["tradeId"], int)]
                yield Page(records, max(ids) if ids else end, [json.dumps(r, separators=(",", ":")) for r in rows])
            start = end


def _trade_id(row: Any) -> Any:
    """``tradeId`` as an integer (OKX sends text); left as is when it is not a number (quarantined later)."""
    try:
        return int(row["tradeId"])
    except (KeyError, TypeError, ValueError):
        return row.get("tradeId") if isinstance(row, dict) else None


def _order(row: Any) -> int:
    value = _trade_id(row)
    return value if isinstance(value, int) else -1


def _ceil_ms(moment: datetime) -> int:
    """Epoch milliseconds rounded up, in integers (float timestamps can be off by one at the edge)."""
    micros = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    return -(-micros // 1000)


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment
