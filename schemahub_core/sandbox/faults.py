"""Fault injection: make the next matching requests to a venue fail in a chosen way.

Tests (and curious people) queue faults through ``Sandbox.inject`` or
``POST /_sandbox/faults``; each fault applies to the next ``count`` requests of
its venue whose path contains ``path`` and is then used up.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass

KINDS = ("429", "5xx", "timeout", "malformed_body", "malformed_row", "rate_limit_body", "418")


@dataclass
class Fault:
    """``kind``: 429 (with ``retry_after``), 5xx (``status``), timeout (answer after ``delay`` s),
    malformed_body (truncated JSON), malformed_row (one corrupt row), rate_limit_body (Kraken's 200 body)."""

    venue: str
    kind: str
    count: int = 1
    retry_after: float = 1.0
    status: int = 503
    delay: float = 2.0
    path: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r} (kinds: {', '.join(KINDS)})")


class Faults:
    def __init__(self) -> None:
        self._queue: list[Fault] = []
        self._lock = threading.Lock()
        self.fired: list[dict] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._queue.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def take(self, venue: str, path: str) -> Fault | None:
        """The fault for this request, if one is queued (and count it down)."""
        with self._lock:
            for fault in self._queue:
                if fault.venue == venue and fault.path in path:
                    fault.count -= 1
                    if fault.count <= 0:
                        self._queue.remove(fault)
                    self.fired.append({**asdict(fault), "at_path": path})
                    return fault
        return None

    def pending(self) -> list[dict]:
        with self._lock:
            return [asdict(f) for f in self._queue]
