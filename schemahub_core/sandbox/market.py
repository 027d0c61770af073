"""A deterministic, seeded, SIMULATED crypto market that the sandbox venues serve.

Nothing here is real market data. The latent price of each asset is a smooth
closed-form function of time (a sum of seeded sinusoids), so any instant can
be evaluated without simulating what came before; trades are generated one
hour at a time, on demand, from a per-(venue, symbol, hour) seed, so startup is
instant and a query touches only the hours it reads. Only the per-hour trade
counts (one draw each) are summed to give every trade a global, monotonic id.

The market carries one scripted event, for the replay demo: a 12-second
sell-off at 2024-02-08 15:12:04 UTC. Each venue sees the latent price with the lag
its plugin's profile declares (``Venue``), so the venue with no lag moves first; spreads widen,
trading intensifies and venues disagree by a few basis points while it lasts.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime

NS = 1_000_000_000
HOUR_NS = 3600 * NS
MARKET_START = datetime(2024, 2, 7, tzinfo=UTC)  # first simulated trade hour
MARKET_END = datetime(2024, 2, 10, tzinfo=UTC)  # the sandbox clock starts here by default
EVENT_AT = datetime(2024, 2, 8, 15, 12, 4, tzinfo=UTC)
EVENT_SECONDS = 12.0
LABEL = "SIMULATED market data (SchemaHub sandbox) - not real trades"

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


class Market:
    """The simulated market for every venue and asset, evaluated lazily."""

    def __init__(self, seed: int = 20240208) -> None:
        self.seed = seed
        rng = random.Random(seed)
        self._phases = {a: [rng.uniform(0, 2 * math.pi) for _ in _WAVES] for a in ASSETS}
        self._prefix: dict[tuple[str, str], list[int]] = {}
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
    def stress(t_ns: int) -> float:
        """0 in quiet times, 1 at the event's start, fading over ~20 s: drives spreads and disagreement."""
        u = (t_ns - EVENT_NS) / NS
        return math.exp(-u / 6) if 0 <= u <= 60 else 0.0

    def latent(self, asset: str, t_ns: int) -> float:
        """The one true (simulated) price every venue follows."""
        a = ASSETS[asset]
        t = (t_ns - EVENT_NS) / NS
        waves = sum(amp * (math.sin(2 * math.pi * t / period + ph) - math.sin(ph))
                    for (period, amp), ph in zip(_WAVES, self._phases[asset], strict=True))
        return a.price * math.exp(waves + a.drop * self.event_shape(t_ns))

    def venue_mid(self, venue: str, asset: str, t_ns: int) -> float:
        """What ``venue`` shows: the latent price seen late by the venue's lag, plus basis and disagreement."""
        v = self.venues[venue]
        lo, hi = v.lag_ms
        lag = lo + (hi - lo) * (0.5 + 0.5 * math.sin(t_ns / NS * 2 * math.pi / 3.1 + len(venue)))
        seen = t_ns - int(lag * 1_000_000)
        disagree = 0.0004 * self.stress(seen) * math.sin(seen / NS * 2 * math.pi / 0.9 + 2 * len(venue))
        return self.latent(asset, seen) * (1 + v.basis + disagree)

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
    def _count(self, venue: str, asset: str, hour: int) -> int:
        v = self.venues[venue]
        rng = random.Random(_seed(self.seed, "count", venue, asset, hour))
        mean = v.rate[asset] * 3600
        n = max(0, int(rng.gauss(mean, math.sqrt(mean))))
        if (EVENT_NS - START_NS) // HOUR_NS == hour:
            n += int(v.rate[asset] * EVENT_INTENSITY * EVENT_SECONDS)
        return n

    def _first_index(self, venue: str, asset: str, hour: int) -> int:
        """Index of the first trade of ``hour`` (hours counted from MARKET_START)."""
        prefix = self._prefix.setdefault((venue, asset), [0])
        while len(prefix) <= hour:
            prefix.append(prefix[-1] + self._count(venue, asset, len(prefix) - 1))
        return prefix[hour]

    def _generate_hour(self, venue: str, asset: str, hour: int) -> tuple[Trade, ...]:
        v = self.venues[venue]
        n = self._count(venue, asset, hour)
        rng = random.Random(_seed(self.seed, "trades", venue, asset, hour))
        start = START_NS + hour * HOUR_NS
        extra = 0
        if (EVENT_NS - START_NS) // HOUR_NS == hour:
            extra = int(v.rate[asset] * EVENT_INTENSITY * EVENT_SECONDS)
        step = v.time_step_ns
        slots = HOUR_NS // step
        times = sorted(rng.randrange(slots) for _ in range(n - extra))
        times += [(EVENT_NS - start) // step + rng.randrange(int(EVENT_SECONDS * NS) // step) for _ in range(extra)]
        times.sort()
        if step < 1_000_000:  # fine-grained venues never repeat a timestamp (venues that page on time)
            for i in range(1, len(times)):
                if times[i] <= times[i - 1]:
                    times[i] = times[i - 1] + 1
        first = self._first_index(venue, asset, hour)
        trades = []
        for j, slot in enumerate(times):
            t_ns = start + slot * step
            mid = self.venue_mid(venue, asset, t_ns)
            sell_bias = 0.5 + 0.25 * self.stress(t_ns)
            taker = "sell" if rng.random() < sell_bias else "buy"
            half = mid * self.spread(venue, t_ns) / 2
            price = round(mid - half if taker == "sell" else mid + half, 2)
            qty = round(min(25.0, rng.lognormvariate(-4.0, 1.3)) * (1 if asset == "BTC" else 15), 5) or 0.00001
            trades.append(Trade(first + j, v.first_id + first + j, t_ns, price, qty, taker))
        return tuple(trades)

    def hour_of(self, t_ns: int) -> int:
        return max(0, (t_ns - START_NS) // HOUR_NS)

    def trades_from(self, venue: str, asset: str, index: int, limit: int, until_ns: int) -> list[Trade]:
        """Up to ``limit`` trades from series position ``index`` on, none after ``until_ns``."""
        out: list[Trade] = []
        if index < 0:
            index = 0
        hour = self._hour_of_index(venue, asset, index, until_ns)
        while len(out) < limit and START_NS + hour * HOUR_NS <= until_ns:
            trades = self._hours(venue, asset, hour)
            first = self._first_index(venue, asset, hour)
            for trade in trades[max(0, index - first):]:
                if trade.time_ns > until_ns or len(out) >= limit:
                    return out
                out.append(trade)
            hour += 1
        return out

    def _hour_of_index(self, venue: str, asset: str, index: int, until_ns: int) -> int:
        """The hour holding series position ``index`` (or the first hour past ``until_ns``)."""
        last = self.hour_of(until_ns) + 1
        prefix = self._prefix.setdefault((venue, asset), [0])
        self._first_index(venue, asset, 1)
        while prefix[-1] <= index and len(prefix) <= last + 1:
            self._first_index(venue, asset, len(prefix))
        return max(0, bisect.bisect_right(prefix, index) - 1)

    def index_at(self, venue: str, asset: str, t_ns: int) -> int:
        """Series position of the first trade at or after ``t_ns``."""
        if t_ns <= START_NS:
            return 0
        hour = self.hour_of(t_ns)
        trades = self._hours(venue, asset, hour)
        times = [t.time_ns for t in trades]
        return self._first_index(venue, asset, hour) + bisect.bisect_left(times, t_ns)

    def index_of_id(self, venue: str, trade_id: int) -> int:
        return trade_id - self.venues[venue].first_id
