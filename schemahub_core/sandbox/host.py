"""What a simulated venue sees of the sandbox that hosts it: the market, the clock and the fault queue.

``VenueApp`` depends on this protocol rather than on the server, so the server can import the venues' base
class without a cycle.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Protocol

from schemahub_core.sandbox.faults import Faults
from schemahub_core.sandbox.market import Market, to_ns


class Clock:
    """Simulated "now": ``start`` plus wall time elapsed since the sandbox started, times ``speed``."""

    def __init__(self, start: datetime, speed: float = 1.0) -> None:
        self.start_ns = to_ns(start)
        self.speed = speed
        self._t0 = time.monotonic()

    def now_ns(self) -> int:
        return self.start_ns + int((time.monotonic() - self._t0) * self.speed * 1e9)


class Host(Protocol):
    """The sandbox as its venues use it (``schemahub_core.sandbox.Sandbox`` is one)."""

    market: Market
    clock: Clock
    faults: Faults
