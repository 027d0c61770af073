"""Replay a market window tick by tick from Iceberg, pinned to a snapshot: query, frame model, rendering.

Three layers, each usable on its own:

* **query** -- ``window_scan`` reads ``trades_unified`` (and ``quotes_unified`` when it has data) with a row
  filter on symbol and time, so pyiceberg prunes the scan to the day partitions of the window; ``--as-of``
  resolves a snapshot id, or a timestamp through the table's snapshot log, and scans that snapshot (time travel).
* **frame model** -- ``Replay`` holds the window as numpy arrays and precomputes, for every trade event, each
  venue's last price, the cross-venue disagreement and the spread, so the state at any instant is one binary
  search. That is what makes a 30 fps animation, a text frame in a test and the HTML chart agree exactly.
* **rendering** -- ``render_frame`` (one rich renderable for an instant), ``play`` (rich Live animation with a
  time slider) and ``render_report`` (the non-interactive summary printed when there is no TTY). The browser
  page (``apps/serve.py``, also written by ``replay --html``) shows ``frames()``, the same precomputed state.

Venues quote the same asset against different dollars (Binance BTC-USDT, Coinbase BTC-USD); a replay across
venues is only useful if they are compared, so a symbol matches its quote-currency aliases (USD/USDT/USDC by
default). Each venue contributes one market: the requested symbol if it has it, else its busiest alias. The
USDT/USD basis is then part of the measured disagreement, which is stated rather than hidden.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import And, BooleanExpression, GreaterThanOrEqual, In, LessThan
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.table import DataScan, Table
from pyiceberg.table.snapshots import Snapshot
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table as RichTable
from rich.text import Text

from schemahub_core.apps.leadlag import DEFAULT_MAX_LAG_MS, LeadLag, lead_lag

TRADES = "trades_unified"
QUOTES = "quotes_unified"
DEFAULT_QUOTE_ALIASES = ("USD", "USDT", "USDC")
DEFAULT_LEAD_IN = timedelta(seconds=2)  # state (last prices) at the window start, and context for lead-lag
TAPE_ROWS = 8
_SYMBOL = re.compile(r"^[A-Z0-9]+-[A-Z0-9]+$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(us|ms|s|m|h)?\s*$")
_UNITS_US = {"us": 1, "ms": 1_000, "s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000}


class ReplayError(ValueError):
    """A user error (no data, unknown symbol, missing snapshot...); the message is one line."""


@dataclass(frozen=True)
class ReplayRequest:
    """What to replay. ``start`` is the window start (``--at``); the window is [start, start + window)."""

    symbol: str
    start: datetime
    window: timedelta
    venues: tuple[str, ...] = ()
    as_of: str | None = None
    quote_aliases: tuple[str, ...] = DEFAULT_QUOTE_ALIASES
    lead_in: timedelta = DEFAULT_LEAD_IN
    max_lag_ms: int = DEFAULT_MAX_LAG_MS

    @property
    def end(self) -> datetime:
        return self.start + self.window


# ---------------------------------------------------------------------------------------------------- parsing


def parse_duration(text: str) -> timedelta:
    """``12s``, ``500ms``, ``1.5s``, ``2m``, ``1h`` (a bare number is seconds)."""
    m = _DURATION.match(text)
    if not m:
        raise ReplayError(f"bad duration {text!r}: use e.g. 12s, 500ms, 2m")
    us = round(float(m.group(1)) * _UNITS_US[m.group(2) or "s"])
    if us <= 0:
        raise ReplayError(f"duration {text!r} must be positive")
    return timedelta(microseconds=us)


def parse_instant(text: str) -> datetime:
    """ISO 8601 instant; ``Z`` or an offset allowed, naive means UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ReplayError(f"bad time {text!r}: use ISO 8601, e.g. 2024-02-08T15:12:04Z") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def matching_symbols(symbol: str, quote_aliases: tuple[str, ...] = DEFAULT_QUOTE_ALIASES) -> list[str]:
    """The canonical symbols compared as one market: ``BTC-USD`` -> BTC-USD, BTC-USDT, BTC-USDC."""
    symbol = symbol.strip().upper()
    if not _SYMBOL.match(symbol):
        raise ReplayError(f"unknown symbol {symbol!r}: expected canonical BASE-QUOTE, e.g. BTC-USD")
    base, quote = symbol.split("-")
    aliases = [a.strip().upper() for a in quote_aliases if a.strip()]
    if quote not in aliases:
        return [symbol]
    return [symbol] + [f"{base}-{a}" for a in aliases if a != quote]


def _us(t: datetime) -> int:
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _iso(us: int | float) -> str:
    """``2024-02-08T15:12:04.000Z``: millisecond precision is what a tick replay is about."""
    stamp = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(us))
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _clock(us: int | float) -> str:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=int(us))).strftime("%H:%M:%S.%f")[:-3]


def fmt_price(p: float) -> str:
    """Price with enough decimals for its magnitude (2 for BTC, up to 8 for sub-dollar assets)."""
    if not np.isfinite(p):
        return "—"
    return f"{p:,.2f}" if p >= 100 else f"{p:,.4f}" if p >= 1 else f"{p:.8f}"


# ------------------------------------------------------------------------------------------------------ query


def load_table(catalog: Catalog, namespace: str, name: str) -> Table | None:
    try:
        return catalog.load_table((namespace, name))
    except NoSuchTableError:
        return None


def resolve_snapshot(table: Table, as_of: str | None) -> Snapshot | None:
    """The snapshot to read: current, a snapshot id (all digits), or the one current at a timestamp.

    Timestamps go through the table's snapshot log (``snapshot_as_of_timestamp``), i.e. "what a reader saw
    then", not the snapshot whose data covers that time.
    """
    if as_of is None:
        return table.current_snapshot()
    text = as_of.strip()
    if re.fullmatch(r"-?\d+", text):
        snap = table.snapshot_by_id(int(text))
        if snap is None:
            known = [s.snapshot_id for s in table.snapshots()][-3:]
            raise ReplayError(f"snapshot {text} does not exist in {table.name()[-1]} "
                              f"(latest: {', '.join(map(str, known)) or 'none'})")
        return snap
    ts = parse_instant(text)
    snap = table.snapshot_as_of_timestamp(_us(ts) // 1000)
    if snap is None:
        first = table.history()[0].timestamp_ms if table.history() else None
        hint = f"first snapshot at {_iso(first * 1000)}" if first is not None else "the table has no snapshots"
        raise ReplayError(f"no snapshot of {table.name()[-1]} at or before {ts.isoformat()} ({hint})")
    return snap


def window_filter(time_column: str, symbols: list[str], start_us: int, end_us: int,
                  venues: tuple[str, ...] = ()) -> BooleanExpression:
    """Symbol + time (+ venue) predicate; the time bounds let pyiceberg prune to the day partitions."""
    expr: BooleanExpression = And(In("symbol", symbols), And(GreaterThanOrEqual(time_column, start_us),
                                                             LessThan(time_column, end_us)))
    if venues:
        expr = And(expr, In("exchange", list(venues)))
    return expr


def window_scan(table: Table, symbols: list[str], start_us: int, end_us: int, *, venues: tuple[str, ...] = (),
                snapshot_id: int | None = None, time_column: str = "trade_ts",
                columns: tuple[str, ...] = ("*",)) -> DataScan:
    """The pruned scan of a window (exposed so a caller can ``plan_files()`` it)."""
    return table.scan(row_filter=window_filter(time_column, symbols, start_us, end_us, venues),
                      selected_fields=columns, snapshot_id=snapshot_id)


def read_scan(scan: DataScan) -> tuple[pa.Table, int]:
    """Plan once, then read exactly the planned files: the rows and how many data files were touched."""
    tasks = list(scan.plan_files())
    reader = ArrowScan(scan.table_metadata, scan.io, scan.projection(), scan.row_filter, scan.case_sensitive,
                       scan.limit)
    return plain_strings(reader.to_table(tasks)), len(tasks)


def plain_strings(tbl: pa.Table) -> pa.Table:
    """large_string columns as string: files written by other tools read back large, and the compute here mixes
    columns with string literals."""
    schema = pa.schema([f.with_type(pa.string()) if pa.types.is_large_string(f.type) else f for f in tbl.schema])
    return tbl if schema.equals(tbl.schema) else tbl.cast(schema)


def _pick_markets(tbl: pa.Table, symbols: list[str]) -> dict[str, str]:
    """One market per venue: the requested symbol if the venue trades it, otherwise its busiest alias."""
    counts = tbl.group_by(["exchange", "symbol"]).aggregate([("symbol", "count")]).to_pylist()
    rank = {s: i for i, s in enumerate(symbols)}
    chosen: dict[str, tuple[int, int, str]] = {}
    for row in counts:
        key = (0 if rank[row["symbol"]] == 0 else 1, -row["symbol_count"], row["symbol"])
        if row["exchange"] not in chosen or key < chosen[row["exchange"]]:
            chosen[row["exchange"]] = key
    return {venue: key[2] for venue, key in sorted(chosen.items())}


def _keep_markets(tbl: pa.Table, markets: dict[str, str]) -> pa.Table:
    wanted = pa.array([f"{v}\x00{s}" for v, s in markets.items()])
    key = pc.binary_join_element_wise(tbl["exchange"], tbl["symbol"], "\x00")
    return tbl.filter(pc.is_in(key, value_set=wanted))


def _symbol_hint(table: Table, snapshot_id: int | None, symbols: list[str], start_us: int, end_us: int) -> str | None:
    """None if the symbol exists anywhere in the table, else the symbols present on the window's days."""
    found = table.scan(row_filter=In("symbol", symbols), selected_fields=("symbol",), snapshot_id=snapshot_id,
                       limit=1).to_arrow()
    if found.num_rows:
        return None
    day = 86_400_000_000
    present = table.scan(row_filter=And(GreaterThanOrEqual("trade_ts", start_us // day * day),
                                        LessThan("trade_ts", (end_us // day + 1) * day)),
                         selected_fields=("symbol",), snapshot_id=snapshot_id).to_arrow()["symbol"]
    names = sorted(pc.unique(present).to_pylist())
    return ", ".join(names[:12]) + (" ..." if len(names) > 12 else "") if names else "none"


def load_replay(catalog: Catalog, namespace: str, request: ReplayRequest) -> Replay:
    """Read the window (pruned scan, pinned snapshot), validate it, and build the frame model."""
    symbols = matching_symbols(request.symbol, request.quote_aliases)
    venues = tuple(v.strip().upper() for v in request.venues if v.strip())
    table = load_table(catalog, namespace, TRADES)
    if table is None:
        raise ReplayError(f"table {namespace}.{TRADES} does not exist: run `schemahub init` and ingest first")
    snap = resolve_snapshot(table, request.as_of)
    snapshot_id = snap.snapshot_id if snap else None
    start_us, end_us = _us(request.start), _us(request.end)
    load_from = start_us - request.lead_in // timedelta(microseconds=1)
    scan = window_scan(table, symbols, load_from, end_us, venues=venues, snapshot_id=snapshot_id,
                       columns=("exchange", "symbol", "side", "price", "quantity", "trade_ts"))
    if snap is None:
        raise ReplayError(f"{TRADES} has no data yet: land some with `schemahub run pipeline {TRADES}`")
    trades, files_scanned = read_scan(scan)
    where = f"{TRADES}" + (f" at snapshot {snapshot_id}" if request.as_of else "")
    in_window = (pc.sum(pc.greater_equal(trades["trade_ts"].cast(pa.int64()), start_us)).as_py() or 0
                 if trades.num_rows else 0)
    if not in_window:
        hint = _symbol_hint(table, snapshot_id, symbols, start_us, end_us)
        if hint is not None:
            raise ReplayError(f"unknown symbol {request.symbol.upper()}: no {'/'.join(symbols)} trades in {where} "
                              f"(symbols on those days: {hint})")
        vtxt = f" from {', '.join(venues)}" if venues else ""
        raise ReplayError(f"no {request.symbol.upper()} trades{vtxt} between {_iso(start_us)} and {_iso(end_us)} "
                          f"in {where}")
    trades = trades.filter(pc.and_(pc.is_valid(trades["price"]), pc.greater(trades["price"], 0.0)))
    markets = _pick_markets(trades, symbols)
    missing = [v for v in venues if v not in markets]
    if missing:
        raise ReplayError(f"no {request.symbol.upper()} trades from {', '.join(missing)} in the window "
                          f"(venues with data: {', '.join(markets)})")
    trades = _keep_markets(trades, markets)
    quotes = None
    qtable = load_table(catalog, namespace, QUOTES)
    if qtable is not None and qtable.current_snapshot() is not None:
        qsnap = (qtable.snapshot_as_of_timestamp(snap.timestamp_ms) if request.as_of
                 else qtable.current_snapshot())
        if qsnap is not None:
            q = window_scan(qtable, symbols, load_from, end_us, venues=tuple(markets), snapshot_id=qsnap.snapshot_id,
                            time_column="quote_ts",
                            columns=("exchange", "symbol", "bid_price", "ask_price", "quote_ts")).to_arrow()
            q = plain_strings(q)
            q = _keep_markets(q, markets)
            quotes = q if q.num_rows else None
    return Replay(request=request, symbols=tuple(symbols), markets=markets, trades=trades, quotes=quotes,
                  snapshot_id=snapshot_id, snapshot_ms=snap.timestamp_ms,
                  start_us=start_us, end_us=end_us, files_scanned=files_scanned)


# ------------------------------------------------------------------------------------------------ frame model


def _last_index(positions: np.ndarray, n: int) -> np.ndarray:
    """For each event 0..n-1, the index (into ``positions``) of the last position <= event, or -1."""
    return np.searchsorted(positions, np.arange(n), side="right") - 1


def _gather(values: np.ndarray, positions: np.ndarray, n: int) -> np.ndarray:
    k = _last_index(positions, n)
    return np.where(k >= 0, values[positions[np.maximum(k, 0)]] if len(positions) else np.nan, np.nan)


@dataclass(frozen=True)
class FrameState:
    """Everything shown at one instant."""

    t_us: int
    prices: np.ndarray  # per venue, NaN before its first trade
    deviation_bps: np.ndarray  # per venue vs the cross-venue median
    spread_bps: np.ndarray  # per venue
    trades_so_far: np.ndarray  # per venue, counted from the window start
    last_trade_age_ms: np.ndarray  # per venue
    disagreement_bps: float
    peak_bps: float
    peak_at_us: int | None
    tape: list[tuple[int, str, str, float, float]]  # (t_us, venue, side, price, quantity), newest last


@dataclass
class Replay:
    """The window as arrays plus per-event precomputed state (see the module docstring)."""

    request: ReplayRequest
    symbols: tuple[str, ...]
    markets: dict[str, str]  # venue -> the symbol it contributes
    trades: pa.Table
    quotes: pa.Table | None
    snapshot_id: int | None
    snapshot_ms: int | None
    start_us: int
    end_us: int
    files_scanned: int = 0
    venues: tuple[str, ...] = field(init=False)
    _lead_lag: LeadLag | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        tbl = self.trades.sort_by([("trade_ts", "ascending"), ("exchange", "ascending")])
        self.venues = tuple(self.markets)
        self.t = tbl["trade_ts"].cast(pa.int64()).to_numpy()
        self.price = tbl["price"].to_numpy()
        self.qty = pc.fill_null(tbl["quantity"], 0.0).to_numpy()
        self.side = pc.fill_null(pc.utf8_upper(tbl["side"]), "").to_numpy(zero_copy_only=False)
        self.venue_idx = pc.index_in(tbl["exchange"], value_set=pa.array(self.venues)).to_numpy().astype(np.int64)
        n, nv = len(self.t), len(self.venues)
        self.positions = [np.flatnonzero(self.venue_idx == j) for j in range(nv)]  # each venue's events
        self.last = np.full((n, nv), np.nan)
        self.count = np.zeros((n, nv), dtype=np.int64)
        trade_spread = np.full((n, nv), np.nan)
        for j, pos in enumerate(self.positions):
            self.last[:, j] = _gather(self.price, pos, n)
            self.count[:, j] = _last_index(pos, n) + 1
            buy = _gather(self.price, np.flatnonzero((self.venue_idx == j) & (self.side == "BUY")), n)
            sell = _gather(self.price, np.flatnonzero((self.venue_idx == j) & (self.side == "SELL")), n)
            trade_spread[:, j] = np.abs(buy - sell) / ((buy + sell) / 2) * 1e4
        self.trade_spread = trade_spread
        self.disagreement = self._disagreement(self.last)
        self.k0 = int(np.searchsorted(self.t, self.start_us, side="left")) - 1  # state at the window start
        base = max(self.k0, 0)
        d = np.where(np.isnan(self.disagreement[base:]), -np.inf, self.disagreement[base:])
        self.peak_run = np.maximum.accumulate(d) if len(d) else d
        with np.errstate(invalid="ignore"):  # -inf - -inf while fewer than two venues have traded
            rises = np.flatnonzero(np.diff(self.peak_run) > 0) + 1
        self.peak_idx = base + np.concatenate([[0], rises]).astype(np.int64)
        self.count_at_start = self.count[self.k0] if self.k0 >= 0 else np.zeros(nv, dtype=np.int64)
        self._quotes_prepared = self._prepare_quotes()

    @staticmethod
    def _disagreement(prices: np.ndarray) -> np.ndarray:
        """(max - min) / median of the venues' last prices, in bps; NaN while fewer than two venues traded."""
        valid = np.sum(~np.isnan(prices), axis=1)
        out = np.full(len(prices), np.nan)
        ok = valid >= 2
        if ok.any():
            p = prices[ok]
            out[ok] = (np.nanmax(p, axis=1) - np.nanmin(p, axis=1)) / np.nanmedian(p, axis=1) * 1e4
        return out

    def _prepare_quotes(self) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Per venue with quotes in the window: (quote_ts, bid, ask, spread bps), sorted by time."""
        if self.quotes is None:
            return {}
        q = self.quotes.sort_by("quote_ts")
        t = q["quote_ts"].cast(pa.int64()).to_numpy()
        bid = pc.fill_null(q["bid_price"], np.nan).to_numpy()
        ask = pc.fill_null(q["ask_price"], np.nan).to_numpy()
        spread = (ask - bid) / ((ask + bid) / 2) * 1e4
        venue = np.array(q["exchange"].to_pylist())
        return {j: (t[venue == v], bid[venue == v], ask[venue == v], spread[venue == v])
                for j, v in enumerate(self.venues) if np.any(venue == v)}

    def spread_source_of(self, venue: str) -> str:
        """``quotes`` when the venue has best bid/ask in the window, else ``trades`` (last buy vs last sell)."""
        return "quotes" if self.venues.index(venue) in self._quotes_prepared else "trades"

    @property
    def spread_source(self) -> str:
        """``quotes``, ``trades``, or ``quotes/trades`` when only some venues have quotes."""
        sources = {self.spread_source_of(v) for v in self.venues}
        return "quotes/trades" if len(sources) > 1 else sources.pop() if sources else "trades"

    def quote_arrays(self, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """Venue ``j``'s (quote_ts, bid, ask, spread bps), or None when it has no quotes."""
        return self._quotes_prepared.get(j)

    def quote_at(self, j: int, t_us: int) -> tuple[float, float, float]:
        """Venue ``j``'s (bid, ask, spread bps) of its last quote at or before ``t_us`` (NaN if none)."""
        q = self._quotes_prepared.get(j)
        i = int(np.searchsorted(q[0], t_us, side="right")) - 1 if q is not None else -1
        return (float(q[1][i]), float(q[2][i]), float(q[3][i])) if q is not None and i >= 0 else (np.nan,) * 3

    def frames(self) -> dict[str, np.ndarray]:
        """The precomputed state per trade event from the window's start state on (event ``max(k0, 0)``):
        what ``state_at`` returns at any instant whose last event is that row, as columns (the web page's
        payload). ``last``/``deviation_bps``/``trade_spread_bps``/``last_trade_us``/``trades_so_far`` are
        (events x venues)."""
        base = max(self.k0, 0)
        last = self.last[base:]
        n, nv = last.shape
        with np.errstate(all="ignore"):
            finite = np.isfinite(last).any(axis=1)
            median = np.full(n, np.nan)
            if finite.any():
                median[finite] = np.nanmedian(last[finite], axis=1)
            deviation = (last - median[:, None]) / median[:, None] * 1e4
        last_trade = np.full((n, nv), np.nan)
        for j, pos in enumerate(self.positions):
            c = self.count[base:, j]
            if len(pos):
                last_trade[:, j] = np.where(c > 0, self.t[pos[np.maximum(c - 1, 0)]], np.nan)
        peak = np.where(np.isfinite(self.peak_run), self.peak_run, np.nan) if len(self.peak_run) else np.zeros(0)
        at = self.peak_idx[np.searchsorted(self.peak_idx, np.arange(base, base + n), side="right") - 1] if n else []
        peak_at = np.where(np.isfinite(peak), np.maximum(self.t[at], self.start_us), np.nan) if n else np.zeros(0)
        return {"t": self.t[base:], "venue": self.venue_idx[base:], "price": self.price[base:],
                "side": self.side[base:], "qty": self.qty[base:], "last": last, "deviation_bps": deviation,
                "trade_spread_bps": self.trade_spread[base:], "last_trade_us": last_trade,
                "trades_so_far": np.maximum(self.count[base:] - self.count_at_start, 0),
                "disagreement_bps": self.disagreement[base:], "peak_bps": peak, "peak_at_us": peak_at}

    @property
    def lead_lag(self) -> LeadLag:
        """Lead–lag over the lead-in plus the window (computed once, on first use); taker sides remove bounce."""
        if self._lead_lag is None:
            sign = np.where(self.side == "BUY", 1.0, np.where(self.side == "SELL", -1.0, 0.0))
            series = {v: (self.t[self.venue_idx == j], self.price[self.venue_idx == j], sign[self.venue_idx == j])
                      for j, v in enumerate(self.venues)}
            self._lead_lag = lead_lag(series, max_lag_ms=self.request.max_lag_ms)
        return self._lead_lag

    @property
    def window_mask(self) -> np.ndarray:
        return self.t >= self.start_us

    def index_at(self, t_us: int) -> int:
        """Index of the last event at or before ``t_us`` (-1 if none)."""
        return int(np.searchsorted(self.t, t_us, side="right")) - 1

    def state_at(self, t_us: int) -> FrameState:
        """The state of the replay at instant ``t_us`` (epoch microseconds)."""
        nv = len(self.venues)
        k = self.index_at(t_us)
        prices = self.last[k] if k >= 0 else np.full(nv, np.nan)
        with np.errstate(all="ignore"):
            median = np.nanmedian(prices) if np.isfinite(prices).any() else np.nan
            deviation = (prices - median) / median * 1e4
        spread = self.trade_spread[k].copy() if k >= 0 else np.full(nv, np.nan)
        for j in self._quotes_prepared:  # a venue with quotes: its quoted spread, else the spread from trades
            spread[j] = self.quote_at(j, t_us)[2]
        counts = (self.count[k] if k >= 0 else np.zeros(nv, dtype=np.int64)) - self.count_at_start
        ages = np.full(nv, np.nan)
        if k >= 0:
            for j in range(nv):
                c = self.count[k, j]
                if c:
                    ages[j] = (t_us - self.t[self.positions[j][c - 1]]) / 1000
        base = max(self.k0, 0)
        peak, peak_at = float("nan"), None
        if k >= base and len(self.peak_run):
            peak = float(self.peak_run[k - base])
            if np.isfinite(peak):
                at = self.peak_idx[np.searchsorted(self.peak_idx, k, side="right") - 1]
                peak_at = max(int(self.t[at]), self.start_us)
            else:
                peak = float("nan")
        lo = max(k - TAPE_ROWS + 1, 0)
        tape = [(int(self.t[i]), self.venues[self.venue_idx[i]], str(self.side[i]), float(self.price[i]),
                 float(self.qty[i])) for i in range(lo, k + 1) if self.t[i] >= self.start_us]
        return FrameState(t_us=t_us, prices=prices, deviation_bps=deviation, spread_bps=spread,
                          trades_so_far=np.maximum(counts, 0), last_trade_age_ms=ages,
                          disagreement_bps=float(self.disagreement[k]) if k >= 0 else float("nan"),
                          peak_bps=peak, peak_at_us=peak_at, tape=tape)

    def summary(self) -> dict[str, Any]:
        """Everything ``--json`` prints: window, snapshot, per-venue figures, disagreement peak, lead–lag."""
        w = self.window_mask
        venues = []
        for j, v in enumerate(self.venues):
            sel = w & (self.venue_idx == j)
            p = self.price[sel]
            if j in self._quotes_prepared:
                qt, _, _, qs = self._quotes_prepared[j]
                sp = qs[qt >= self.start_us]
            else:
                sp = self.trade_spread[w, j]
            sp = sp[np.isfinite(sp)] if len(sp) else sp
            venues.append({
                "venue": v, "symbol": self.markets[v], "trades": int(sel.sum()),
                "first": float(p[0]) if len(p) else None, "last": float(p[-1]) if len(p) else None,
                "low": float(p.min()) if len(p) else None, "high": float(p.max()) if len(p) else None,
                "range_bps": float((p.max() - p.min()) / p[0] * 1e4) if len(p) else None,
                "max_spread_bps": float(sp.max()) if len(sp) else None, "spread_source": self.spread_source_of(v),
            })
        end_state = self.state_at(self.end_us - 1)
        d = self.disagreement[max(self.k0, 0):]
        d = d[np.isfinite(d)]
        return {
            "symbol": self.request.symbol.upper(),
            "matched_symbols": list(self.symbols),
            "window": {"start": _iso(self.start_us), "end": _iso(self.end_us),
                       "lead_in_ms": self.request.lead_in // timedelta(milliseconds=1)},
            "snapshot": {"id": self.snapshot_id, "committed_at": _iso(self.snapshot_ms * 1000)
                         if self.snapshot_ms is not None else None, "as_of": self.request.as_of},
            "trades": int(w.sum()),
            "files_scanned": self.files_scanned,
            "venues": venues,
            "spread_source": self.spread_source,
            "disagreement": {
                "peak_bps": None if not np.isfinite(end_state.peak_bps) else round(end_state.peak_bps, 4),
                "peak_at": _iso(end_state.peak_at_us) if end_state.peak_at_us is not None else None,
                "mean_bps": round(float(d.mean()), 4) if len(d) else None,
            },
            "lead_lag": self.lead_lag.to_dict(),
        }


# -------------------------------------------------------------------------------------------------- rendering


def _slider(replay: Replay, t_us: int, width: int = 48) -> Text:
    frac = min(max((t_us - replay.start_us) / max(replay.end_us - replay.start_us, 1), 0.0), 1.0)
    pos = round(frac * width)
    text = Text()
    text.append(_clock(replay.start_us) + " ", style="dim")
    text.append("━" * pos, style="cyan")
    text.append("●", style="bold cyan")
    text.append("─" * (width - pos), style="dim")
    text.append(" " + _clock(replay.end_us), style="dim")
    text.append(f"   t={_clock(t_us)}  +{(t_us - replay.start_us) / 1000:,.0f} ms", style="bold")
    return text


def _bps(x: float, signed: bool = False) -> str:
    if not np.isfinite(x):
        return "—"
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def _lag_lines(replay: Replay) -> Text:
    ll = replay.lead_lag
    text = Text("lead–lag", style="bold")
    for line in ll.headlines() or ["one venue only"]:
        text.append("\n  " + line, style="magenta")
    return text


def render_frame(replay: Replay, t_us: int) -> RenderableType:
    """The terminal view at instant ``t_us``: slider, venue table, disagreement and its peak, lead–lag, tape."""
    s = replay.state_at(t_us)
    snap = f"snapshot {replay.snapshot_id}" if replay.snapshot_id is not None else "no snapshot"
    header = Text(f"{replay.request.symbol.upper()} replay  {_iso(replay.start_us)} → {_iso(replay.end_us)}\n",
                  style="bold")
    header.append(snap + (f" (as of {replay.request.as_of})" if replay.request.as_of else ""), style="cyan")
    venues = RichTable(box=None, pad_edge=False, header_style="bold")
    for col, justify in (("venue", "left"), ("symbol", "left"), ("last", "right"), ("vs median bps", "right"),
                         (f"spread bps ({replay.spread_source})", "right"), ("trades", "right"),
                         ("last trade", "right")):
        venues.add_column(col, justify=justify)  # type: ignore[arg-type]
    newest = int(np.nanargmin(s.last_trade_age_ms)) if np.isfinite(s.last_trade_age_ms).any() else -1
    for j, v in enumerate(replay.venues):
        dev = s.deviation_bps[j]
        style = "red" if np.isfinite(dev) and abs(dev) >= 10 else "yellow" if np.isfinite(dev) and abs(dev) >= 3 else ""
        age = s.last_trade_age_ms[j]
        venues.add_row(Text(v, style="bold green" if j == newest else ""), Text(replay.markets[v]),
                       fmt_price(s.prices[j]), Text(_bps(dev, signed=True), style=style), _bps(s.spread_bps[j]),
                       str(s.trades_so_far[j]),
                       f"{age:,.0f} ms ago" if np.isfinite(age) else "—")
    dis = Text("disagreement ", style="bold")
    dis.append(f"{_bps(s.disagreement_bps)} bps", style="bold yellow")
    dis.append("   peak ")
    dis.append(f"{_bps(s.peak_bps)} bps", style="bold red")
    if s.peak_at_us is not None:
        dis.append(f" at {_clock(s.peak_at_us)}")
    tape = RichTable(title="tape", box=None, pad_edge=False, title_justify="left", header_style="dim")
    for col in ("time", "venue", "side", "price", "qty"):
        tape.add_column(col, justify="right" if col in ("price", "qty") else "left")
    for ts, venue, side, price, qty in reversed(s.tape):
        tape.add_row(_clock(ts), Text(venue), Text(side, style="green" if side == "BUY" else "red"), fmt_price(price),
                     f"{qty:g}")
    return Group(header, _slider(replay, t_us), Text(), venues, Text(), dis, _lag_lines(replay), Text(), tape)


def render_report(replay: Replay, steps: int = 12, *, include_frame: bool = True) -> RenderableType:
    """Non-interactive output: the final frame, a timeline of ``steps`` + 1 frames, the peak, per-venue summary.

    After an animation the final frame is already on screen, hence ``include_frame``.
    """
    summary = replay.summary()
    timeline = RichTable(title=escape(f"{replay.request.symbol.upper()} timeline "
                                      f"({', '.join(f'{v} {s}' for v, s in replay.markets.items())})"),
                         header_style="bold", title_justify="left", box=box.SIMPLE_HEAD)
    timeline.add_column("time")
    for v in replay.venues:
        timeline.add_column(escape(v), justify="right")
    timeline.add_column("disagr. bps", justify="right")
    timeline.add_column("peak bps", justify="right")
    instants = np.linspace(replay.start_us, replay.end_us - 1, steps + 1).astype(np.int64)
    for t in instants:
        s = replay.state_at(int(t))
        timeline.add_row(_clock(t), *[fmt_price(p) for p in s.prices], _bps(s.disagreement_bps), _bps(s.peak_bps))
    per_venue = RichTable(title=f"venues in the window (range and max spread in bps, spread from "
                                f"{replay.spread_source})", header_style="bold", title_justify="left",
                          box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("venue", "symbol", "n", "last", "low", "high", "range", "spread"):
        per_venue.add_column(col, justify="left" if col in ("venue", "symbol") else "right", no_wrap=True)
    for v in summary["venues"]:
        per_venue.add_row(Text(v["venue"]), Text(v["symbol"]), str(v["trades"]),
                          *[fmt_price(v[k]) if v[k] is not None else "—" for k in ("last", "low", "high")],
                          _bps(v["range_bps"] or float("nan")), _bps(v["max_spread_bps"] or float("nan")))
    d = summary["disagreement"]
    peak = Text(f"peak disagreement {_bps(d['peak_bps'] or float('nan'))} bps at {d['peak_at'] or '—'}; "
                f"mean {_bps(d['mean_bps'] or float('nan'))} bps; {summary['trades']} trades read from "
                f"{summary['files_scanned']} data file(s)", style="bold")
    parts: list[RenderableType] = [render_frame(replay, replay.end_us - 1), Text()] if include_frame else [Text()]
    return Group(*parts, timeline, per_venue, peak)


def play(replay: Replay, console: Console, speed: float = 0.2, fps: int = 30) -> None:
    """Animate the window in place (rich Live). ``speed`` is market time per wall time (0.1 = 10x slower)."""
    span = replay.end_us - replay.start_us
    with Live(render_frame(replay, replay.start_us), console=console, refresh_per_second=fps,
              auto_refresh=False) as live:
        began = time.monotonic()
        while True:
            t = replay.start_us + int((time.monotonic() - began) * speed * 1e6)
            live.update(render_frame(replay, min(t, replay.end_us - 1)), refresh=True)
            if t >= replay.start_us + span:
                break
            time.sleep(1 / fps)
