"""``schemahub live``: every venue's best bid/ask side by side, disagreements as they happen, optionally landed.

The pieces, in the order quotes flow through them:

- ``plan_markets``: which market each venue contributes to a requested symbol. BTC-USD on Coinbase and
  Kraken is compared with BTC-USDT on Binance, through replay's quote-currency aliases
  (``matching_symbols``): a venue contributes the exact symbol if it lists it, else its first listed alias.
- the venues' ``LiveFeed``s (see ``livefeed``): quotes arrive normalized; reconnects happen there.
- ``Board``: the latest quote per venue, staleness, each mid's deviation from the cross-venue median (bps)
  and discrepancy events (start, peak, end, duration) for deviations above the threshold. Times are the
  quotes' receive times: the one clock every venue shares.
- ``Lander`` (``--land``): micro-batches into ``raw_<venue>_<stream>`` through ``StreamIngest``, the same
  exactly-once commit path as ``run ingest`` (cursor = the last landed quote's receive time, in the snapshot).
- ``LiveSession``: the asyncio loop tying them together; ``render_board`` draws the rich table.

The core knows no venue: feeds come from whatever connectors implement ``live_feed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from schemahub_core.apps.replay import DEFAULT_QUOTE_ALIASES, fmt_price, matching_symbols
from schemahub_core.engine.ingest import RunStats, StreamIngest, ensure_tables
from schemahub_core.engine.sink import IcebergSink
from schemahub_core.engine.state import rebuild_watermarks
from schemahub_core.engine.tables import (
    QUARANTINE,
    QUARANTINE_SCHEMA,
    WATERMARKS,
    WATERMARKS_SCHEMA,
    TableDef,
    raw_table_def,
)
from schemahub_core.framework.connector import Connector, Page, Stream
from schemahub_core.framework.livefeed import LiveFeed, LiveQuote, QuoteBatch
from schemahub_core.framework.registry import Registry

DEFAULT_THRESHOLD_BPS = 5.0
DEFAULT_STALE_AFTER = 5.0  # seconds without a quote before a connected venue counts as stale


class LiveError(ValueError):
    """Bad live options (unknown venue, no venue with a live feed...): one line for the CLI."""


# --------------------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Market:
    """One venue's contribution to a compared symbol: ``group`` BTC-USD <- binance BTC-USDT."""

    group: str
    source: str
    symbol: str


def live_connectors(connectors: Mapping[str, type[Connector]]) -> dict[str, type[Connector]]:
    """The installed connectors that implement ``live_feed``."""
    return {n: c for n, c in sorted(connectors.items()) if c.live_feed is not Connector.live_feed}


def plan_markets(connectors: Mapping[str, type[Connector]], symbols: Sequence[str],
                 quote_aliases: Sequence[str] = DEFAULT_QUOTE_ALIASES) -> list[Market]:
    """For each requested symbol and venue: the exact symbol if the venue lists it (``default_symbols``),
    else its first listed quote alias (BTC-USD -> BTC-USDT on Binance), else the exact symbol."""
    out = []
    for symbol in symbols:
        candidates = matching_symbols(symbol, tuple(quote_aliases))
        for name, cls in connectors.items():
            listed = [c for c in candidates if c in cls.default_symbols]
            out.append(Market(candidates[0], name, listed[0] if listed else candidates[0]))
    return out


# ------------------------------------------------------------------------------------------------------ board


@dataclass
class Discrepancy:
    """One venue's mid away from the cross-venue median by more than the threshold, from start to end."""

    group: str
    exchange: str
    symbol: str
    start: datetime
    peak_bps: float
    peak_at: datetime
    threshold_bps: float
    end: datetime | None = None
    reason: str | None = None  # why it ended: converged, stale, stopped

    @property
    def duration_ms(self) -> float | None:
        return None if self.end is None else (self.end - self.start).total_seconds() * 1000

    def as_dict(self, event: str) -> dict[str, Any]:
        return {"event": event, "group": self.group, "exchange": self.exchange, "symbol": self.symbol,
                "start": self.start.isoformat(), "peak_bps": round(self.peak_bps, 3),
                "peak_at": self.peak_at.isoformat(), "end": self.end.isoformat() if self.end else None,
                "duration_ms": None if self.duration_ms is None else round(self.duration_ms, 3),
                "reason": self.reason, "threshold_bps": self.threshold_bps}


@dataclass
class Row:
    """What the board knows about one venue's market in one compared group."""

    group: str
    source: str
    symbol: str
    exchange: str = ""
    quote: LiveQuote | None = None
    connected: bool = False
    deviation_bps: float | None = None

    def age_ms(self, now: datetime) -> float | None:
        return None if self.quote is None else (now - self.quote.ingest_ts).total_seconds() * 1000

    def stale(self, now: datetime, stale_after: float) -> bool:
        age = self.age_ms(now)
        return not self.connected or age is None or age > stale_after * 1000


EventCallback = Callable[[str, Discrepancy], None]


class Board:
    """Latest quotes per (group, venue), deviations from the median of the live venues, discrepancy events."""

    def __init__(self, markets: Iterable[Market], threshold_bps: float = DEFAULT_THRESHOLD_BPS,
                 stale_after: float = DEFAULT_STALE_AFTER, history: int = 200) -> None:
        self.threshold_bps = threshold_bps
        self.stale_after = stale_after
        self.rows: dict[tuple[str, str], Row] = {(m.group, m.source): Row(m.group, m.source, m.symbol)
                                                 for m in markets}
        self.open: dict[tuple[str, str], Discrepancy] = {}
        self.closed: deque[Discrepancy] = deque(maxlen=history)
        self.on_event: EventCallback | None = None

    def groups(self) -> list[str]:
        return list(dict.fromkeys(g for g, _ in self.rows))

    def _emit(self, kind: str, event: Discrepancy) -> None:
        if self.on_event is not None:
            self.on_event(kind, event)

    def update_batch(self, source: str, batch: QuoteBatch) -> None:
        """Quotes that arrived together (one read): each market is evaluated once, at its newest quote.

        They share the read's instant (receive times a microsecond apart), so the newest one per market is
        what the view shows; a deviation that starts and ends inside one read lasts no time and is not an event.
        """
        for i in batch.newest_per_symbol():
            self.update(source, batch.quote(i))

    def update(self, source: str, quote: LiveQuote) -> None:
        """A new quote from ``source``: store it in every group it belongs to and re-evaluate them."""
        for (group, src), row in self.rows.items():
            if src == source and row.symbol == quote.symbol:
                row.quote, row.exchange, row.connected = quote, quote.exchange, True
                self.evaluate(group, quote.ingest_ts)

    def set_connected(self, source: str, exchange: str, connected: bool, now: datetime) -> None:
        for (group, src), row in self.rows.items():
            if src == source:
                row.connected, row.exchange = connected, row.exchange or exchange
                self.evaluate(group, now)

    def tick(self, now: datetime) -> None:
        """Re-evaluate every group at ``now``: venues that went quiet become stale."""
        for group in self.groups():
            self.evaluate(group, now)

    def evaluate(self, group: str, now: datetime) -> None:
        rows = [r for (g, _), r in self.rows.items() if g == group]
        live = [r for r in rows if not r.stale(now, self.stale_after) and r.quote is not None]
        median = statistics.median(r.quote.mid for r in live if r.quote) if len(live) >= 2 else None
        for row in rows:
            key = (group, row.source)
            if median is None or row not in live or row.quote is None:
                row.deviation_bps = None
                self._close(key, now, "stale" if row.stale(now, self.stale_after) else "too few venues")
                continue
            dev = (row.quote.mid - median) / median * 1e4
            row.deviation_bps = dev
            event = self.open.get(key)
            if abs(dev) > self.threshold_bps:
                if event is None:
                    self.open[key] = event = Discrepancy(group, row.exchange, row.symbol, now, dev, now,
                                                         self.threshold_bps)
                    self._emit("start", event)
                elif abs(dev) > abs(event.peak_bps):
                    event.peak_bps, event.peak_at = dev, now
            elif event is not None:
                self._close(key, now, "converged")

    def _close(self, key: tuple[str, str], now: datetime, reason: str) -> None:
        event = self.open.pop(key, None)
        if event is not None:
            event.end, event.reason = now, reason
            self.closed.append(event)
            self._emit("end", event)

    def close_all(self, now: datetime, reason: str = "stopped") -> None:
        for key in list(self.open):
            self._close(key, now, reason)


def _num(value: float | None, fmt: str = "{:+.2f}") -> str:
    return "" if value is None else fmt.format(value)


BOARD_COLUMNS = ("symbol", "venue", "market", "bid", "ask", "mid", "spread bps", "dev bps", "age ms", "status")


def board_view(board: Board, now: datetime | None = None, *, lander: Lander | None = None,
               events: int = 6) -> dict[str, Any]:
    """What the live table shows at ``now``, as data: the terminal table and the web page both draw this.

    Each row has its formatted ``cells`` (``BOARD_COLUMNS``), its ``status`` and whether it is an ``alert``
    (a discrepancy, drawn red) or ``stale`` (dimmed); ``events`` are the open discrepancies, then the most
    recent closed ones, each with its one-line ``text``.
    """
    now = now or datetime.now(UTC)
    rows = []
    for (group, source), row in board.rows.items():
        q = row.quote
        stale = row.stale(now, board.stale_after)
        if not row.connected:
            status = "stale (reconnecting)" if q is not None else "connecting"
        else:
            status = "stale (quiet)" if stale else "ok"
        alert = row.deviation_bps is not None and abs(row.deviation_bps) > board.threshold_bps
        if alert:
            status = "DISCREPANCY"
        age = row.age_ms(now)
        rows.append({
            "group": group, "source": source, "venue": row.exchange or source.upper(), "market": row.symbol,
            "bid": q.bid_price if q else None, "ask": q.ask_price if q else None, "mid": q.mid if q else None,
            "spread_bps": q.spread_bps if q else None, "deviation_bps": row.deviation_bps, "age_ms": age,
            "status": status, "alert": alert, "stale": stale,
            "cells": [group, row.exchange or source.upper(), row.symbol,
                      fmt_price(q.bid_price) if q else "", fmt_price(q.ask_price) if q else "",
                      fmt_price(q.mid) if q else "", _num(q.spread_bps if q else None, "{:.2f}"),
                      _num(row.deviation_bps), _num(age, "{:.0f}"), status],
        })
    recent = sorted(board.open.values(), key=lambda e: e.start) + list(board.closed)[-events:][::-1]
    listed = []
    for e in recent[:events]:
        when = e.start.strftime("%H:%M:%S.%f")[:-3]
        if e.end is None:
            text = f"! {e.exchange} {e.symbol} {e.peak_bps:+.2f} bps peak, since {when}"
        else:
            text = (f"- {e.exchange} {e.symbol} {e.peak_bps:+.2f} bps peak, {e.duration_ms:.0f} ms from {when} "
                    f"({e.reason})")
        listed.append({**e.as_dict("open" if e.end is None else "end"), "text": text})
    return {"title": f"live best bid/ask; dev = mid vs cross-venue median, threshold {board.threshold_bps:g} bps",
            "threshold_bps": board.threshold_bps, "now": now.isoformat(), "columns": list(BOARD_COLUMNS),
            "rows": rows, "events": listed, "landing": lander.summary() if lander is not None else None}


def render_board(board: Board, now: datetime | None = None, *, lander: Lander | None = None,
                 events: int = 6, caption: str | None = None) -> RenderableType:
    """The live table (one row per venue and compared symbol) and the latest discrepancy events.

    ``caption`` labels the data under the table (the sandbox's "SIMULATED market data").
    """
    view = board_view(board, now, lander=lander, events=events)
    table = Table(title=view["title"], title_justify="left", caption=caption, caption_justify="left",
                  caption_style="yellow")
    for name in BOARD_COLUMNS:
        text = name in ("symbol", "venue", "market", "status")
        table.add_column(name, justify="left" if text else "right", no_wrap=True,
                         min_width=9 if name in ("bid", "ask", "mid") else None)
    for row in view["rows"]:
        table.add_row(*map(Text, row["cells"]), style="bold red" if row["alert"] else "dim" if row["stale"] else None)
    parts: list[RenderableType] = [table]
    for e in view["events"]:
        parts.append(Text("  " + e["text"], style="bold red" if e["end"] is None else ""))
    if view["landing"] is not None:
        parts.append(Text(view["landing"], style="cyan"))
    return Group(*parts)


# ---------------------------------------------------------------------------------------------------- landing


class _Received(Connector):
    """Received, not yet landed quotes offered to ``StreamIngest`` the way a connector offers pages.

    ``fetch`` skips what the committed cursor says has landed (the cursor is a quote's receive time, unique
    per feed): so a batch whose commit response was lost is never landed twice, and a batch dropped because
    another writer moved the cursor is offered again on top of it. The page is columns (``Page.table``): no
    object per quote between the socket and the Parquet file.
    """

    def __init__(self, name: str, stream: Stream, quotes: QuoteBatch) -> None:
        super().__init__()
        self.name = name  # type: ignore[misc]
        self.streams = {stream.name: stream}  # type: ignore[misc]
        self.quotes = quotes

    def fetch(self, stream: str, symbol: str, cursor: Any, since: datetime | None = None,
              until: datetime | None = None) -> Iterator[Page]:
        quotes = after_cursor(self.quotes, cursor)
        if quotes.num_rows:
            cursors = quotes.quotes.column("ingest_us")
            yield Page([], cursors[-1].as_py(), quotes.payloads, table=quotes.records)


def after_cursor(quotes: QuoteBatch, cursor: Any) -> QuoteBatch:
    """The quotes after the one whose cursor is ``cursor`` (all of them if none is)."""
    if not isinstance(cursor, int) or not quotes.num_rows:
        return quotes
    hits = np.flatnonzero(quotes.quotes.column("ingest_us").to_numpy() == cursor)
    return quotes.slice(int(hits[-1]) + 1) if len(hits) else quotes


class Lander:
    """Micro-batches live quotes into ``raw_<source>_<stream>`` exactly once, through ``StreamIngest``.

    ``add`` is called from the event loop; ``flush`` from one worker thread at a time. Quotes stay pending
    until a commit's cursor covers them, so a failed commit is retried by the next flush, never lost.
    """

    def __init__(self, catalog: Catalog, namespace: str, registry: Registry, connectors: Mapping[str, Connector],
                 streams: Mapping[str, str], *, raw_payload: bool = True) -> None:
        self.catalog, self.namespace, self.registry = catalog, namespace, registry
        self.connectors = dict(connectors)
        self.streams = {source: type(self.connectors[source]).streams[name] for source, name in streams.items()}
        self.raw_payload = raw_payload
        self.sink = IcebergSink(catalog, namespace)
        ensure_tables(catalog, namespace, [raw_table_def(src, s) for src, s in self.streams.items()]
                      + [TableDef(QUARANTINE, QUARANTINE_SCHEMA, None), TableDef(WATERMARKS, WATERMARKS_SCHEMA, None)])
        self._pending: dict[tuple[str, str], list[QuoteBatch]] = {}
        self._pending_rows = 0
        self._lock = threading.Lock()  # guards _pending (the event loop adds while a flush runs)
        self._flushing = threading.Lock()  # one flush at a time (a last flush may follow a cancelled one)
        self.received = self.landed = self.commits = self.quarantined = self.dropped_batches = 0
        self.last_error: str | None = None

    def add(self, source: str, quote: LiveQuote) -> None:
        self.add_batch(source, QuoteBatch.from_quotes(quote.exchange, [quote]))

    def add_batch(self, source: str, batch: QuoteBatch) -> None:
        """Queue ``batch`` for landing, split per symbol (one Iceberg append per symbol)."""
        symbols = batch.quotes.column("symbol")
        parts = [(symbols[0].as_py(), batch)] if pc.count_distinct(symbols).as_py() == 1 else [
            (s, batch.filter(pc.equal(symbols, s))) for s in pc.unique(symbols).to_pylist()]
        with self._lock:
            for symbol, part in parts:
                self._pending.setdefault((source, symbol), []).append(part)
            self.received += batch.num_rows
            self._pending_rows += batch.num_rows

    def pending(self) -> int:
        with self._lock:
            return self._pending_rows

    def flush(self) -> list[RunStats]:
        """Commit everything pending, one Iceberg append per (source, symbol); the run stats of each."""
        with self._flushing:
            return self._flush()

    def _flush(self) -> list[RunStats]:
        with self._lock:
            batches = {key: (QuoteBatch.concat(parts), len(parts)) for key, parts in self._pending.items() if parts}
        out = []
        for (source, symbol), (quotes, parts) in batches.items():
            stream = self.streams[source]
            ingest = StreamIngest(self.sink, self.registry, _Received(source, stream, quotes), stream, symbol,
                                  raw_payload=self.raw_payload)
            stats = ingest.run()
            committed = ingest.state.cursor
            left = after_cursor(quotes, committed).num_rows
            with self._lock:  # drop what the committed cursor covers; quotes received meanwhile stay
                pending = self._pending[(source, symbol)]
                del pending[:parts]
                if left:
                    pending.insert(0, quotes.slice(quotes.num_rows - left))
                self._pending_rows -= quotes.num_rows - left
            self.landed += stats.landed
            self.commits += stats.commits
            self.quarantined += stats.quarantined
            self.dropped_batches += stats.dropped_batches
            if stats.error:
                self.last_error = f"{source} {symbol}: {stats.error}"
            out.append(stats)
        return out

    def close(self) -> None:
        """Last flush, then refresh ``schemahub_watermarks`` from the snapshots."""
        self.flush()
        rebuild_watermarks(self.catalog, self.namespace, self.registry)

    def summary(self) -> str:
        text = (f"landing: {self.received} received, {self.landed} landed in {self.commits} commits, "
                f"{self.pending()} pending")
        if self.quarantined:
            text += f", {self.quarantined} quarantined"
        return text + (f"; last error: {self.last_error}" if self.last_error else "")


# ---------------------------------------------------------------------------------------------------- session


QuoteCallback = Callable[[str, LiveQuote], None]


@dataclass
class FeedPlan:
    source: str
    feed: LiveFeed
    stream: str


@dataclass
class LiveSession:
    """Feeds -> board (and lander); runs until ``duration`` or ``stop``. Never lets one venue stop the rest."""

    feeds: list[FeedPlan]
    board: Board
    lander: Lander | None = None
    flush_every: float = 1.0
    on_quote: QuoteCallback | None = None
    received: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    no_data_timeout: float | None = None  # stop when no quote at all arrived in this long (``gave_up`` says why)
    max_pending: int = 200_000  # quotes received, not landed yet: above it, reading waits for landing (memory)
    paused: int = 0  # how often reading waited for landing
    gave_up: str | None = None
    _changed: asyncio.Event | None = None
    _stopped: asyncio.Event | None = None

    def no_data_reason(self, seconds: float) -> str:
        """Why nothing arrived: no venue reachable, or reachable venues sending nothing for these symbols."""
        if not any(p.feed.connects for p in self.feeds):
            where = "; ".join(f"{p.source} {p.feed.url}: {p.feed.last_error or 'no answer'}" for p in self.feeds)
            return f"no venue could be reached in {seconds:.0f} s ({where}): is the network (or the sandbox) up?"
        reported = "; ".join(f"{p.source}: {p.feed.last_error}" for p in self.feeds if p.feed.last_error)
        return (f"no quote for {', '.join(self.board.groups())} from any venue in {seconds:.0f} s: does any venue list "
                "it? (`schemahub plugins list` shows the venues, their default symbols are a safe start)"
                + (f" ({reported})" if reported else ""))

    async def _watchdog(self, timeout: float) -> None:
        started = time.monotonic()
        while not any(self.received.values()):
            if time.monotonic() - started >= timeout:
                self.gave_up = self.no_data_reason(timeout)
                assert self._stopped is not None
                self._stopped.set()
                return
            await asyncio.sleep(0.1)

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        """Wait until ``predicate()`` holds, re-checking after every quote or status change."""
        async with asyncio.timeout(timeout):
            while not predicate():
                assert self._changed is not None, "the session is not running"
                self._changed.clear()
                if predicate():
                    return
                await self._changed.wait()

    async def _consume(self, plan: FeedPlan) -> None:
        def on_status(feed: LiveFeed, status: str) -> None:
            self.board.set_connected(plan.source, feed.exchange, status == "connected", datetime.now(UTC))
            self._notify()

        plan.feed.on_status = on_status
        self.received.setdefault(plan.source, 0)
        try:
            async for batch in plan.feed.batches():
                try:
                    if self.lander is not None:
                        self.lander.add_batch(plan.source, batch)
                    self.received[plan.source] += batch.num_rows
                    self.board.update_batch(plan.source, batch)
                    if self.on_quote is not None:
                        for quote in batch.to_quotes():
                            self.on_quote(plan.source, quote)
                except Exception as exc:  # never let one bad batch stop the view
                    self.errors.append(f"{plan.source}: {type(exc).__name__}: {exc}")
                self._notify()
                if self.lander is not None and self.lander.pending() > self.max_pending:
                    await self._wait_for_landing()  # bounded memory: stop reading until landing catches up
                else:
                    await asyncio.sleep(0)  # let the view and the other feeds run between reads
        except Exception as exc:  # a broken feed (plugin bug, bad URL) stops itself only, visibly
            self.errors.append(f"{plan.source}: feed stopped: {type(exc).__name__}: {exc}")
            plan.feed.last_error = self.errors[-1]
            on_status(plan.feed, "disconnected")

    async def _wait_for_landing(self) -> None:
        assert self.lander is not None
        self.paused += 1
        while self.lander.pending() > self.max_pending // 2:
            await asyncio.sleep(0.01)

    async def _tick(self, refresh: Callable[[], None] | None, every: float) -> None:
        while True:
            try:
                self.board.tick(datetime.now(UTC))
                if refresh is not None:
                    refresh()
            except Exception as exc:  # a drawing bug must not freeze the view: note it, draw again next tick
                self.errors.append(f"view: {type(exc).__name__}: {exc}")
            self._notify()
            await asyncio.sleep(every)

    async def _flush_loop(self) -> None:
        assert self.lander is not None
        while True:
            await asyncio.sleep(self.flush_every)
            try:
                await asyncio.to_thread(self.lander.flush)
            except Exception as exc:  # e.g. the catalog is unreachable: quotes stay pending, the next flush retries
                self.lander.last_error = f"{type(exc).__name__}: {exc}"
            self._notify()

    async def run(self, duration: float | None = None, *, until: Callable[[LiveSession], Any] | None = None,
                  refresh: Callable[[], None] | None = None, refresh_every: float = 0.125) -> None:
        """Run for ``duration`` seconds, or until the coroutine ``until(self)`` returns (tests script here)."""
        self._changed, self._stopped = asyncio.Event(), asyncio.Event()
        tasks = [asyncio.create_task(self._consume(p), name=f"feed-{p.source}") for p in self.feeds]
        tasks.append(asyncio.create_task(self._tick(refresh, refresh_every), name="tick"))
        if self.no_data_timeout is not None:
            tasks.append(asyncio.create_task(self._watchdog(self.no_data_timeout), name="watchdog"))
        if self.lander is not None:
            tasks.append(asyncio.create_task(self._flush_loop(), name="flush"))
        try:
            if until is not None:
                await asyncio.wait_for(until(self), duration)
            elif duration is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), duration)
            else:
                await self._stopped.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.board.close_all(datetime.now(UTC))
            if self.lander is not None:
                await asyncio.to_thread(self.lander.close)


def build_session(registry: Registry, symbols: Sequence[str], options_for: Callable[[str], dict[str, Any]], *,
                  venues: Sequence[str] = (), quote_aliases: Sequence[str] = DEFAULT_QUOTE_ALIASES,
                  threshold_bps: float = DEFAULT_THRESHOLD_BPS, stale_after: float = DEFAULT_STALE_AFTER,
                  land: tuple[Catalog, str] | None = None, raw_payload: bool = True) -> LiveSession:
    """A session over every installed live feed (or ``venues``); ``land=(catalog, namespace)`` lands quotes."""
    available = live_connectors(registry.connectors)
    if not available:
        raise LiveError("no installed connector has a live feed (see `schemahub plugins list`)")
    chosen = [v.strip().lower() for v in venues if v.strip()]
    unknown = [v for v in chosen if v not in available]
    if unknown:
        raise LiveError(f"venue {unknown[0]!r} has no live feed (live venues: {', '.join(available)})")
    connectors_cls = {n: c for n, c in available.items() if not chosen or n in chosen}
    try:
        markets = plan_markets(connectors_cls, symbols, quote_aliases)
    except ValueError as exc:
        raise LiveError(str(exc)) from None
    connectors = {name: cls(options_for(name)) for name, cls in connectors_cls.items()}
    plans = []
    for name, connector in connectors.items():
        feed = connector.live_feed(list(dict.fromkeys(m.symbol for m in markets if m.source == name)))
        plans.append(FeedPlan(name, feed, feed.stream))
    lander = None
    if land is not None:
        catalog, namespace = land
        lander = Lander(catalog, namespace, registry, connectors, {p.source: p.stream for p in plans},
                        raw_payload=raw_payload)
    return LiveSession(plans, Board(markets, threshold_bps, stale_after), lander)
