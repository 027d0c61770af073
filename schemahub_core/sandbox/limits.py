"""Server-side rate limits, as the venues enforce them (per client IP).

Binance counts request *weight* in fixed windows, reports the weight used in
``X-MBX-USED-WEIGHT-1M``, answers 429 + ``Retry-After`` over the limit and bans
(HTTP 418) a client that keeps calling before the ``Retry-After`` elapsed.
Coinbase and Kraken behave like token buckets (a steady rate with a burst).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    """``limit`` weight per ``window`` seconds; ``burst`` is the bucket size for token-bucket venues."""

    limit: int
    window: float
    burst: int | None = None

    def spec(self) -> str:
        """The ``LIMIT/SECONDS`` text a connector's ``rate_limit`` option takes."""
        return f"{self.limit}/{self.window:g}"


@dataclass
class Verdict:
    allowed: bool
    status: int = 200  # 429 or 418 when refused
    retry_after: float = 0.0
    used: int = 0  # weight used in the current window (fixed-window venues)


class FixedWindowWeight:
    """Binance: weight per fixed window aligned to the epoch; 429 then 418 for clients that ignore it."""

    def __init__(self, limit: Limit, ban_seconds: float = 120.0) -> None:
        self.limit = limit
        self.ban_seconds = ban_seconds
        self._lock = threading.Lock()
        self._window = -1
        self._used = 0
        self._cooldown_until: dict[str, float] = {}
        self._banned_until: dict[str, float] = {}

    def used(self) -> int:
        with self._lock:
            return self._used if self._window == int(time.time() // self.limit.window) else 0

    def warn(self, client: str, retry_after: float) -> None:
        """A 429 was sent (maybe injected): calling again before ``retry_after`` earns a ban."""
        with self._lock:
            self._cooldown_until[client] = time.time() + retry_after

    def admit(self, client: str, weight: int) -> Verdict:
        now = time.time()
        with self._lock:
            window = int(now // self.limit.window)
            if window != self._window:
                self._window, self._used = window, 0
            if self._banned_until.get(client, 0) > now:
                return Verdict(False, 418, self._banned_until[client] - now, self._used)
            if self._cooldown_until.get(client, 0) > now:
                self._banned_until[client] = now + self.ban_seconds
                return Verdict(False, 418, self.ban_seconds, self._used)
            self._used += weight
            if self._used > self.limit.limit:
                retry = max(1.0, math.ceil((window + 1) * self.limit.window - now))
                if self.limit.window < 5:  # short test windows: sub-second Retry-After is allowed
                    retry = round((window + 1) * self.limit.window - now, 3)
                self._cooldown_until[client] = now + retry
                return Verdict(False, 429, retry, self._used)
            return Verdict(True, 200, 0.0, self._used)


class TokenBucket:
    """Coinbase / Kraken: ``limit`` per ``window`` seconds sustained, up to ``burst`` at once."""

    def __init__(self, limit: Limit) -> None:
        self.rate = limit.limit / limit.window
        self.capacity = float(limit.burst or limit.limit)
        self._tokens = self.capacity
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def admit(self, client: str, weight: int = 1) -> Verdict:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now
            if self._tokens >= weight - 1e-9:
                self._tokens -= weight
                return Verdict(True)
            return Verdict(False, 429, (weight - self._tokens) / self.rate)
