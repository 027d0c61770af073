"""Lead–lag between venues from tick data: who moves first, and by how many milliseconds.

Why this estimator: trades arrive asynchronously and at very different rates per venue, so correlating
forward-filled returns on a grid smears a sparse venue's moves over its inter-trade gaps and biases the lag by
about half a gap. Instead we take the *best-aligned shift*: for every candidate lag ``l`` on a 1 ms grid we
compare each follower trade price at time ``t`` with the reference venue's price at ``t - l`` (linearly
interpolated between the reference's trades) and measure the variance of the log-price residual. For an
efficient price that is a random walk the residual variance is V-shaped in ``l`` with its tip at the true lag
(``noise + sigma^2 * |l - L|``), whatever the follower's trade rate; subtracting the mean residual makes a
constant basis (BTC-USDT against BTC-USD) irrelevant. Maximising the cross-covariance of the two price paths
sampled at the follower's trades is the same criterion. When latency jitters the tip of the V is flat, so
the curve is smoothed over ``SMOOTH_MS`` before taking its minimum (sub-millisecond by a parabola through it).

Trade prices bounce between the bid and the ask, and during a volatility event spreads widen many times over,
so before aligning each venue's log prices are corrected for that bounce when the taker side is known: taker
buys print at the ask and sells at the bid, so a Roll-style regression of price changes on side changes,
``beta = cov(dlog p, ds) / var(ds)``, estimates the half spread, and ``log p - beta * side`` is the mid.

The confidence figure comes from a block bootstrap over consecutive follower trades: the share of resampled
estimates within ``tolerance_ms`` of the point estimate, plus a 90 % interval. A flat objective (a quiet
market, nothing to align) spreads the bootstrap out and the confidence drops, which is what a reader needs to
know before believing "A leads B by N ms". An estimate is only *reliable* (reported as "A leads B by N ms")
when it rests on at least ``MIN_RELIABLE_TICKS`` follower trades, its tip is not at the edge of the search
(``|lag| < max_lag_ms - SMOOTH_MS``: a boundary minimum means the true lag may be outside it, or there is
nothing to align), and its 90 % interval does not contain zero (then who leads is not known); otherwise the
headline says "no reliable estimate" and why, and the leader is chosen among reliable estimates only.
Everything is vectorised with numpy: one interpolation over a
(trades x lags) matrix per block group, one matrix product for all bootstrap replicates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULT_MAX_LAG_MS = 1000
MIN_TICKS = 10
MIN_RELIABLE_TICKS = 50  # fewer follower trades than this: the bootstrap cannot be trusted either
SMOOTH_MS = 11  # box filter over the lag axis: the tip of the V is flat when latency jitters
_CELL_BUDGET = 8_000_000  # trades x lags evaluated at once, bounds memory (~64 MB per float matrix)


@dataclass(frozen=True)
class LagEstimate:
    """Lag of ``venue`` behind ``reference`` (positive: ``venue`` moves later)."""

    venue: str
    reference: str
    lag_ms: float | None
    ci_low_ms: float | None = None
    ci_high_ms: float | None = None
    confidence: float = 0.0
    n_ticks: int = 0
    note: str = ""
    reliable: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LeadLag:
    """The leader of a set of venues and every other venue's lag behind it."""

    leader: str | None
    lags: tuple[LagEstimate, ...]
    max_lag_ms: int = DEFAULT_MAX_LAG_MS

    def lag_of(self, venue: str) -> LagEstimate | None:
        return next((e for e in self.lags if e.venue == venue), None)

    def headlines(self) -> list[str]:
        """One human sentence per follower, e.g. ``BINANCE leads COINBASE by ~78 ms (90% CI 71–86 ms, ...)``."""
        lines = []
        for e in self.lags:
            if e.lag_ms is None:
                lines.append(f"{e.venue} vs {e.reference or 'the others'}: no reliable estimate ({e.note})")
            elif not e.reliable:
                lines.append(f"{e.venue} vs {e.reference}: no reliable estimate ({e.note}; best shift "
                             f"{e.lag_ms:+.0f} ms, 90% CI {e.ci_low_ms:.0f}–{e.ci_high_ms:.0f} ms, {e.n_ticks} ticks)")
            else:
                lines.append(f"{e.reference} leads {e.venue} by ~{e.lag_ms:.0f} ms "
                             f"(90% CI {e.ci_low_ms:.0f}–{e.ci_high_ms:.0f} ms, confidence {e.confidence:.2f}, "
                             f"{e.n_ticks} ticks)")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {"leader": self.leader, "max_lag_ms": self.max_lag_ms, "min_reliable_ticks": MIN_RELIABLE_TICKS,
                "lags": [e.to_dict() for e in self.lags], "headlines": self.headlines()}


def debounce(log_price: np.ndarray, side: np.ndarray | None) -> tuple[np.ndarray, float]:
    """Remove bid–ask bounce from log trade prices given the taker side (+1 buy, -1 sell, 0 unknown).

    Returns the corrected log prices and the estimated half spread (log units, >= 0). Without sides, or when
    the sides never change, the prices are returned unchanged.
    """
    if side is None or len(side) < 3:
        return log_price, 0.0
    s = np.asarray(side, dtype=np.float64)
    ds = np.diff(s)
    denom = float(np.dot(ds, ds))
    if denom == 0:
        return log_price, 0.0
    beta = max(0.0, float(np.dot(np.diff(log_price), ds)) / denom)
    return log_price - beta * s, beta


def _last_per_timestamp(t_ms: np.ndarray, logp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the last trade of each timestamp so interpolation sees strictly increasing times."""
    last = np.r_[t_ms[1:] != t_ms[:-1], True]
    return t_ms[last], logp[last]


def estimate_lag(
    ref_t_us: np.ndarray,
    ref_price: np.ndarray,
    t_us: np.ndarray,
    price: np.ndarray,
    *,
    ref_side: np.ndarray | None = None,
    side: np.ndarray | None = None,
    max_lag_ms: int = DEFAULT_MAX_LAG_MS,
    n_boot: int = 200,
    tolerance_ms: float = 10.0,
    seed: int = 0,
) -> tuple[float | None, float | None, float | None, float, int, str]:
    """Lag (ms) of the series (``t_us``, ``price``) behind the reference series, with its uncertainty.

    Inputs are trade times in epoch microseconds (sorted), prices and optionally taker sides (+1 buy, -1 sell,
    0 unknown) used to remove bid–ask bounce. Returns
    ``(lag_ms, ci_low_ms, ci_high_ms, confidence, n_ticks_used, note)``; ``lag_ms`` is None when there is not
    enough data (the note says why).
    """
    ref_t = np.asarray(ref_t_us, dtype=np.int64)
    t = np.asarray(t_us, dtype=np.int64)
    if len(ref_t) < MIN_TICKS or len(t) < MIN_TICKS:
        return None, None, None, 0.0, int(len(t)), f"fewer than {MIN_TICKS} ticks"
    x_t, x = _last_per_timestamp(ref_t / 1000.0, debounce(np.log(np.asarray(ref_price, dtype=np.float64)),
                                                          ref_side)[0])
    y_t = t / 1000.0
    y = debounce(np.log(np.asarray(price, dtype=np.float64)), side)[0]
    # only follower trades whose every shifted time falls inside the reference's span (no extrapolation)
    inside = (y_t - max_lag_ms >= x_t[0]) & (y_t + max_lag_ms <= x_t[-1])
    y_t, y = y_t[inside], y[inside]
    n = len(y)
    if n < MIN_TICKS:
        return None, None, None, 0.0, int(n), f"fewer than {MIN_TICKS} ticks overlap the reference ±{max_lag_ms} ms"
    lags = np.arange(-max_lag_ms, max_lag_ms + 1, dtype=np.float64)
    center = float(np.median(y - np.interp(y_t, x_t, x)))  # removes the basis before squaring

    n_blocks = int(min(50, n))
    starts = np.linspace(0, n, n_blocks + 1).astype(np.int64)
    counts = np.diff(starts).astype(np.float64)
    s1 = np.empty((n_blocks, len(lags)))
    s2 = np.empty((n_blocks, len(lags)))
    rows_per_group = max(1, _CELL_BUDGET // len(lags))
    b = 0
    while b < n_blocks:  # groups of whole blocks, each group one (rows x lags) matrix
        e = b + 1
        while e < n_blocks and starts[e + 1] - starts[b] <= rows_per_group:
            e += 1
        lo, hi = starts[b], starts[e]
        resid = (y[lo:hi, None] - center) - np.interp(y_t[lo:hi, None] - lags[None, :], x_t, x)
        offsets = starts[b:e] - lo
        s1[b:e] = np.add.reduceat(resid, offsets, axis=0)
        s2[b:e] = np.add.reduceat(resid * resid, offsets, axis=0)
        b = e

    def best(weights: np.ndarray) -> np.ndarray:
        """Sub-millisecond argmin of the residual variance for each row of block weights."""
        total = weights @ counts
        mean = (weights @ s1) / total[:, None]
        var = (weights @ s2) / total[:, None] - mean * mean
        half = SMOOTH_MS // 2
        csum = np.cumsum(np.pad(var, ((0, 0), (half + 1, half)), mode="edge"), axis=1)
        var = (csum[:, 2 * half + 1:] - csum[:, : -(2 * half + 1)]) / (2 * half + 1)
        k = np.clip(np.argmin(var, axis=1), 1, len(lags) - 2)
        rows = np.arange(len(k))
        left, mid, right = var[rows, k - 1], var[rows, k], var[rows, k + 1]
        curvature = left - 2 * mid + right
        with np.errstate(divide="ignore", invalid="ignore"):
            shift = np.where(curvature > 0, 0.5 * (left - right) / curvature, 0.0)
        return lags[k] + np.clip(shift, -0.5, 0.5)

    lag = float(best(np.ones((1, n_blocks)))[0])
    rng = np.random.default_rng(seed)
    draws = best(rng.multinomial(n_blocks, np.full(n_blocks, 1.0 / n_blocks), size=n_boot).astype(np.float64))
    low, high = np.percentile(draws, [5, 95])
    confidence = float(np.mean(np.abs(draws - lag) <= tolerance_ms))
    return lag, float(low), float(high), confidence, n, unreliable_because(lag, float(low), float(high), n,
                                                                           max_lag_ms)


def unreliable_because(lag_ms: float, ci_low_ms: float, ci_high_ms: float, n_ticks: int, max_lag_ms: int) -> str:
    """Why an estimate must not be reported as a lead ("" when it can be): see the module docstring."""
    reasons = []
    if n_ticks < MIN_RELIABLE_TICKS:
        reasons.append(f"only {n_ticks} ticks, fewer than {MIN_RELIABLE_TICKS}")
    if abs(lag_ms) >= max_lag_ms - SMOOTH_MS:
        reasons.append(f"at the ±{max_lag_ms} ms search boundary")
    if ci_low_ms <= 0 <= ci_high_ms:
        reasons.append("90% interval spans zero")
    return "; ".join(reasons)


def lead_lag(
    series: Mapping[str, tuple[np.ndarray, ...]],
    *,
    max_lag_ms: int = DEFAULT_MAX_LAG_MS,
    n_boot: int = 200,
    seed: int = 0,
) -> LeadLag:
    """Find the leader among venues (``{venue: (t_us, price[, side])}``) and each other venue's lag behind it.

    First every venue is measured against the busiest one (the best-sampled reference); the venue with the
    smallest lag is the leader, and if that is not the reference the lags are measured again against it, so
    every figure reported is a direct pairwise estimate against the leader.
    """
    usable = {v: s for v, s in series.items() if len(s[0]) >= MIN_TICKS}
    if not usable:
        return LeadLag(None, tuple(LagEstimate(v, "", None, note=f"fewer than {MIN_TICKS} ticks")
                                   for v in series), max_lag_ms)

    def against(ref: str) -> dict[str, LagEstimate]:
        out = {}
        r = usable[ref]
        for venue, s in series.items():
            if venue == ref:
                continue
            lag, lo, hi, conf, n, note = estimate_lag(
                r[0], r[1], s[0], s[1], ref_side=r[2] if len(r) > 2 else None, side=s[2] if len(s) > 2 else None,
                max_lag_ms=max_lag_ms, n_boot=n_boot, seed=seed)
            out[venue] = LagEstimate(venue, ref, lag, lo, hi, conf, n, note, reliable=lag is not None and not note)
        return out

    reference = max(usable, key=lambda v: len(usable[v][0]))
    first = against(reference)
    offsets = {reference: 0.0} | {v: e.lag_ms for v, e in first.items() if e.lag_ms is not None and e.reliable}
    leader = min(offsets, key=lambda v: offsets[v])
    estimates = first if leader == reference else against(leader)
    return LeadLag(leader, tuple(estimates[v] for v in series if v != leader), max_lag_ms)
