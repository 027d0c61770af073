"""A deterministic, seeded, SIMULATED crypto market that the sandbox venues serve.

Nothing here is real market data. The latent price of each asset is a smooth
closed-form function of time (a sum of seeded sinusoids), so any instant can
be evaluated without simulating what came before; trades are generated one
hour at a time, on demand, from a per-(venue, symbol, hour) seed, so startup is
instant and a query touches only the hours it reads (vectorized with numpy, so a
busy symbol's 40k trades of an hour take milliseconds). Only the per-hour trade
counts (one draw each) are summed, once, into cached prefix sums that give every
trade a global, monotonic id.

The market spans ``days`` (default 120) up to ``MARKET_END``, where the sandbox
clock starts by default, and goes on as the clock runs. Series positions (and so
trade ids) count from ``ANCHOR`` (2024-02-07), whatever the span: a trade keeps its
id when the market starts earlier, and trades before the anchor have negative
positions. ``intensity`` scales every venue's trade rate: 1 keeps the demo fast,
``REALISTIC_INTENSITY`` gives a busy symbol about 1M trades a day, for benchmarks.

The market carries one scripted event, for the replay demo: a 12-second
sell-off at 2024-02-08 15:12:04 UTC. Each venue sees the latent price with the lag
its plugin's profile declares (``Venue``), so the venue with no lag moves first; spreads widen,
trading intensifies and venues disagree by a few basis points while it lasts.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

NS = 1_000_000_000
HOUR_NS = 3600 * NS
ANCHOR = datetime(2024, 2, 7, tzinfo=UTC)  # series position 0: trade ids count from here
MARKET_END = datetime(2024, 2, 10, tzinfo=UTC)  # the sandbox clock starts here by default
DEFAULT_DAYS = 120
MARKET_START = MARKET_END - timedelta(days=DEFAULT_DAYS)  # first simulated trade hour by default
REALISTIC_INTENSITY = 4.0  # the busiest symbol (3 trades/s at 1x) then trades about 1.04M times a day
EVENT_AT = datetime(2024, 2, 8, 15, 12, 4, tzinfo=UTC)
EVENT_SECONDS = 12.0
LABEL = "SIMULATED market data (SchemaHub sandbox) - not real trades"

ANCHOR_NS = int(ANCHOR.timestamp()) * NS
START_NS = int(MARKET_START.timestamp()) * NS
EVENT_NS = int(EVENT_AT.timestamp()) * NS


def to_ns(moment: datetime) -> int:
    """An aware datetime to epoch nanoseconds (exact to the microsecond)."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * NS + delta.microseconds * 1_000


@dataclass(frozen=True)
class Asset:
    name: str
    price: float  # level around the event
    drop: float  # size of the event's sell-off (log return)


ASSETS = {"BTC": Asset("BTC", 45_200.0, 0.012), "ETH": Asset("ETH", 2_460.0, 0.018)}


@dataclass(frozen=True)
class Venue:
    """How one venue sees the latent market: its lag, basis, spread and activity."""

    name: str
    lag_ms: tuple[float, float]  # min, max delay behind the latent price
    basis: float  # quote-currency premium (USDT vs USD), as a fraction
    spread_bps: float  # quiet-time spread
    rate: dict[str, float]  # trades per second per asset
    time_step_ns: int  # timestamp resolution of the venue's trades
    first_id: int  # id of the first simulated trade


EVENT_INTENSITY = 8.0  # trades per second multiplier during the event

_WAVES = ((7 * 86_400, 0.02), (86_400, 0.008), (10_800, 0.004), (2_220, 0.002), (300, 0.0008), (47, 0.0003),
          (7.3, 0.0001))


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True)
class Trade:
    """One simulated trade. ``taker`` is the aggressor side, ``buy`` or ``sell``."""

    index: int  # position in the venue/symbol series (0-based)
    id: int
    time_ns: int
    price: float
    qty: float
    taker: str


@dataclass(frozen=True)
class Quote:
    time_ns: int
    bid: float
    bid_qty: float
    ask: float
    ask_qty: float


@dataclass(frozen=True)
class _Hour:
    """One hour's trades of one venue/asset, as arrays (``Trade`` objects are made only for what is served)."""

    first: int  # series position of the first trade
    times: np.ndarray  # int64 ns, ascending
    prices: np.ndarray
    qtys: np.ndarray
    sells: np.ndarray  # bool: the taker sold


@dataclass(frozen=True)
class TradeColumns:
    """Trades of one venue/asset as arrays, oldest first: what a venue renders a page from at the speed of a
    real one (a ``Trade`` object per row costs more than the whole page's JSON)."""

    index: np.ndarray  # int64 series positions (ascending; gaps where a fault dropped trades)
    ids: np.ndarray  # int64 trade ids
    times: np.ndarray  # int64 ns
    prices: np.ndarray
    qtys: np.ndarray
    sells: np.ndarray  # bool: the taker sold

    def __len__(self) -> int:
        return len(self.index)

    def where(self, keep: np.ndarray) -> TradeColumns:
        """The trades ``keep`` (a boolean mask or positions) selects."""
        return TradeColumns(self.index[keep], self.ids[keep], self.times[keep], self.prices[keep], self.qtys[keep],
                            self.sells[keep])

    def trades(self) -> list[Trade]:
        return [Trade(j, i, t, p, q, "sell" if s else "buy") for j, i, t, p, q, s in zip(
            self.index.tolist(), self.ids.tolist(), self.times.tolist(), self.prices.tolist(), self.qtys.tolist(),
            self.sells.tolist(), strict=True)]

    @staticmethod
    def concat(parts: list[TradeColumns]) -> TradeColumns:
        if len(parts) == 1:
            return parts[0]
        if not parts:
            empty = np.zeros(0, np.int64)
            return TradeColumns(empty, empty, empty, np.zeros(0), np.zeros(0), np.zeros(0, bool))
        return TradeColumns(*(np.concatenate([getattr(p, name) for p in parts])
                              for name in ("index", "ids", "times", "prices", "qtys", "sells")))


class Market:
    """The simulated market for every venue and asset, evaluated lazily."""

    def __init__(self, seed: int = 20240208, start: datetime = MARKET_START, intensity: float = 1.0) -> None:
        if intensity <= 0:
            raise ValueError(f"market intensity must be positive, got {intensity}")
        self.seed = seed
        self.start = start
        self.intensity = intensity
        self.start_hour = -(-(to_ns(start) - ANCHOR_NS) // HOUR_NS)  # first whole hour, counted from ANCHOR
        rng = random.Random(seed)
        self._phases = {a: [rng.uniform(0, 2 * math.pi) for _ in _WAVES] for a in ASSETS}
        self._prefix: dict[tuple[str, str], np.ndarray] = {}  # trades before each hour, from start_hour on
        self._hours = functools.lru_cache(maxsize=96)(self._generate_hour)
        self.venues: dict[str, Venue] = {}  # venue plugins add theirs (``add_venue``)

    def add_venue(self, profile: Venue) -> None:
        """Let a plugin's simulated venue trade in this market (``VenueApp.market_profile``)."""
        if self.venues.get(profile.name, profile) != profile:
            raise ValueError(f"market venue {profile.name!r} is already defined differently")
        self.venues[profile.name] = profile

    # -- prices ---------------------------------------------------------------------------------
    @staticmethod
    def event_shape(t_ns: int) -> float:
        """Log-price move of the scripted event (0 before it): fast drop, partial rebound, slow decay."""
        u = (t_ns - EVENT_NS) / NS
        if u <= 0:
            return 0.0
        drop = -0.5 * (1 - math.exp(-u / 0.06)) - 0.5 * (1 - math.exp(-u / 1.2))  # a jump, then a slide
        rebound = 0.4 * (1 - math.exp(-max(0.0, u - 4) / 2))
        wobble = 0.15 * math.sin(2 * math.pi * u / 1.7) * math.exp(-u / 6)
        return (drop + rebound + wobble) * math.exp(-max(0.0, u - EVENT_SECONDS) / 900)

    @staticmethod
    def _event_shapes(t_ns: np.ndarray) -> np.ndarray:
        """``event_shape`` over an array of times."""
        u = (t_ns - EVENT_NS) / NS
        after = u > 0
        if not after.any():
            return np.zeros(len(u))
        v = np.where(after, u, 0.0)
        drop = -0.5 * (1 - np.exp(-v / 0.06)) - 0.5 * (1 - np.exp(-v / 1.2))
        rebound = 0.4 * (1 - np.exp(-np.maximum(0.0, v - 4) / 2))
        wobble = 0.15 * np.sin(2 * math.pi * v / 1.7) * np.exp(-v / 6)
        return np.where(after, (drop + rebound + wobble) * np.exp(-np.maximum(0.0, v - EVENT_SECONDS) / 900), 0.0)

    @staticmethod
    def stress(t_ns: int) -> float:
        """0 in quiet times, 1 at the event's start, fading over ~20 s: drives spreads and disagreement."""
        u = (t_ns - EVENT_NS) / NS
        return math.exp(-u / 6) if 0 <= u <= 60 else 0.0

    @staticmethod
    def _stresses(t_ns: np.ndarray) -> np.ndarray:
        u = (t_ns - EVENT_NS) / NS
        return np.where((u >= 0) & (u <= 60), np.exp(-np.clip(u, 0, 60) / 6), 0.0)

    def latent(self, asset: str, t_ns: int) -> float:
        """The one true (simulated) price every venue follows."""
        a = ASSETS[asset]
        t = (t_ns - EVENT_NS) / NS
        waves = sum(amp * (math.sin(2 * math.pi * t / period + ph) - math.sin(ph))
                    for (period, amp), ph in zip(_WAVES, self._phases[asset], strict=True))
        return a.price * math.exp(waves + a.drop * self.event_shape(t_ns))

    def _latents(self, asset: str, t_ns: np.ndarray) -> np.ndarray:
        a = ASSETS[asset]
        t = (t_ns - EVENT_NS) / NS
        waves = np.zeros(len(t))
        for (period, amp), ph in zip(_WAVES, self._phases[asset], strict=True):
            waves += amp * (np.sin(2 * math.pi * t / period + ph) - math.sin(ph))
        return a.price * np.exp(waves + a.drop * self._event_shapes(t_ns))

    def venue_mid(self, venue: str, asset: str, t_ns: int) -> float:
        """What ``venue`` shows: the latent price seen late by the venue's lag, plus basis and disagreement."""
        v = self.venues[venue]
        lo, hi = v.lag_ms
        lag = lo + (hi - lo) * (0.5 + 0.5 * math.sin(t_ns / NS * 2 * math.pi / 3.1 + len(venue)))
        seen = t_ns - int(lag * 1_000_000)
        disagree = 0.0004 * self.stress(seen) * math.sin(seen / NS * 2 * math.pi / 0.9 + 2 * len(venue))
        return self.latent(asset, seen) * (1 + v.basis + disagree)

    def _venue_mids(self, venue: str, asset: str, t_ns: np.ndarray) -> np.ndarray:
        v = self.venues[venue]
        lo, hi = v.lag_ms
        lag = lo + (hi - lo) * (0.5 + 0.5 * np.sin(t_ns / NS * 2 * math.pi / 3.1 + len(venue)))
        seen = t_ns - (lag * 1_000_000).astype(np.int64)
        disagree = 0.0004 * self._stresses(seen) * np.sin(seen / NS * 2 * math.pi / 0.9 + 2 * len(venue))
        return self._latents(asset, seen) * (1 + v.basis + disagree)

    def spread(self, venue: str, t_ns: int) -> float:
        """Relative bid/ask spread; widens up to ~25x during the event."""
        return self.venues[venue].spread_bps * 1e-4 * (1 + 24 * self.stress(t_ns))

    def quote(self, venue: str, asset: str, t_ns: int) -> Quote:
        mid = self.venue_mid(venue, asset, t_ns)
        half = mid * self.spread(venue, t_ns) / 2
        rng = random.Random(_seed(self.seed, venue, asset, t_ns // 1_000_000))
        tick = 0.01
        bid = math.floor((mid - half) / tick) * tick
        ask = max(bid + tick, math.ceil((mid + half) / tick) * tick)
        return Quote(t_ns, round(bid, 2), round(rng.uniform(0.01, 3.0), 5), round(ask, 2),
                     round(rng.uniform(0.01, 3.0), 5))

    # -- trades ---------------------------------------------------------------------------------
    def _event_extra(self, venue: str, asset: str, hour: int) -> int:
        if (EVENT_NS - ANCHOR_NS) // HOUR_NS != hour:
            return 0
        return int(self.venues[venue].rate[asset] * self.intensity * EVENT_INTENSITY * EVENT_SECONDS)

    def _count(self, venue: str, asset: str, hour: int) -> int:
        """Trades of ``hour`` (counted from ANCHOR): one seeded draw, so a trade's position never depends on others."""
        v = self.venues[venue]
        rng = random.Random(_seed(self.seed, "count", venue, asset, hour))
        mean = v.rate[asset] * self.intensity * 3600
        return max(0, int(rng.gauss(mean, math.sqrt(mean)))) + self._event_extra(venue, asset, hour)

    def _prefix_to(self, venue: str, asset: str, hour: int) -> np.ndarray:
        """Prefix sums of the hourly counts from ``start_hour`` through at least ``hour`` (a week at a time)."""
        prefix = self._prefix.get((venue, asset))
        have = self.start_hour - 1 if prefix is None else self.start_hour + len(prefix) - 2  # last hour counted
        if hour > have:
            upto = max(hour, have + 24 * 7)
            counts = [self._count(venue, asset, h) for h in range(have + 1, upto + 1)]
            base = np.zeros(1, np.int64) if prefix is None else prefix
            prefix = np.concatenate([base, base[-1] + np.cumsum(counts, dtype=np.int64)])
            self._prefix[(venue, asset)] = prefix
        return prefix

    def first_index(self, venue: str, asset: str) -> int:
        """Series position of the market's first trade (negative when the market starts before ANCHOR)."""
        return self._first_index(venue, asset, self.start_hour)

    def _first_index(self, venue: str, asset: str, hour: int) -> int:
        """Index of the first trade of ``hour`` (hours counted from ANCHOR; index 0 is ANCHOR's first trade)."""
        hour = max(hour, self.start_hour)
        prefix = self._prefix_to(venue, asset, max(hour, 0))
        return int(prefix[hour - self.start_hour] - prefix[-self.start_hour]) if self.start_hour <= 0 else \
            int(prefix[hour - self.start_hour])

    def _generate_hour(self, venue: str, asset: str, hour: int) -> _Hour:
        v = self.venues[venue]
        n = self._count(venue, asset, hour)
        extra = self._event_extra(venue, asset, hour)
        rng = np.random.default_rng(_seed(self.seed, "trades", venue, asset, hour))
        start = ANCHOR_NS + hour * HOUR_NS
        step = v.time_step_ns
        slots = rng.integers(0, HOUR_NS // step, n - extra, dtype=np.int64)
        if extra:
            window = int(EVENT_SECONDS * NS) // step
            slots = np.concatenate([slots, (EVENT_NS - start) // step + rng.integers(0, window, extra)])
        slots.sort()
        if step < 1_000_000 and n:  # fine-grained venues never repeat a timestamp (venues that page on time)
            rank = np.arange(n, dtype=np.int64)
            slots = np.maximum.accumulate(slots - rank) + rank
        times = start + slots * step
        mid = self._venue_mids(venue, asset, times)
        sells = rng.random(n) < 0.5 + 0.25 * self._stresses(times)
        half = mid * v.spread_bps * 1e-4 * (1 + 24 * self._stresses(times)) / 2
        prices = np.round(np.where(sells, mid - half, mid + half), 2)
        qtys = np.round(np.minimum(25.0, rng.lognormal(-4.0, 1.3, n)) * (1 if asset == "BTC" else 15), 5)
        qtys[qtys == 0] = 0.00001
        return _Hour(self._first_index(venue, asset, hour), times, prices, qtys, sells)

    def _columns(self, venue: str, hour: _Hour, lo: int, hi: int) -> TradeColumns:
        index = np.arange(hour.first + lo, hour.first + hi, dtype=np.int64)
        return TradeColumns(index, index + self.venues[venue].first_id, hour.times[lo:hi], hour.prices[lo:hi],
                            hour.qtys[lo:hi], hour.sells[lo:hi])

    def hour_of(self, t_ns: int) -> int:
        return max(self.start_hour, (t_ns - ANCHOR_NS) // HOUR_NS)

    def trades_from(self, venue: str, asset: str, index: int, limit: int, until_ns: int) -> list[Trade]:
        """Up to ``limit`` trades from series position ``index`` on, none after ``until_ns``."""
        return self.trade_columns(venue, asset, index, limit, until_ns).trades()

    def trade_columns(self, venue: str, asset: str, index: int, limit: int, until_ns: int) -> TradeColumns:
        """``trades_from`` as arrays."""
        out: list[TradeColumns] = []
        count = 0
        index = max(index, self.first_index(venue, asset))
        hour = self._hour_of_index(venue, asset, index, until_ns)
        while count < limit and ANCHOR_NS + hour * HOUR_NS <= until_ns:
            generated = self._hours(venue, asset, hour)
            lo = max(0, index - generated.first)
            hi = min(len(generated.times), lo + limit - count)
            hi = lo + int(np.searchsorted(generated.times[lo:hi], until_ns, side="right"))
            if hi > lo:
                out.append(self._columns(venue, generated, lo, hi))
                count += hi - lo
            if hi < len(generated.times) and count < limit:
                break  # the next trade is after ``until_ns``
            hour += 1
        return TradeColumns.concat(out)

    def _hour_of_index(self, venue: str, asset: str, index: int, until_ns: int) -> int:
        """The hour holding series position ``index`` (or the first hour past ``until_ns``)."""
        last = self.hour_of(until_ns) + 1
        prefix = self._prefix_to(venue, asset, max(self.start_hour, 0))
        origin = int(prefix[-self.start_hour]) if self.start_hour <= 0 else 0
        while prefix[-1] - origin <= index and self.start_hour + len(prefix) - 2 < last:
            prefix = self._prefix_to(venue, asset, self.start_hour + len(prefix) - 1)  # a week further
        position = int(np.searchsorted(prefix, index + origin, side="right")) - 1
        return min(self.start_hour + max(0, position), last)

    def index_at(self, venue: str, asset: str, t_ns: int) -> int:
        """Series position of the first trade at or after ``t_ns``."""
        if t_ns <= ANCHOR_NS + self.start_hour * HOUR_NS:
            return self.first_index(venue, asset)
        hour = self.hour_of(t_ns)
        generated = self._hours(venue, asset, hour)
        return generated.first + int(np.searchsorted(generated.times, t_ns, side="left"))

    def index_of_id(self, venue: str, trade_id: int) -> int:
        return trade_id - self.venues[venue].first_id
