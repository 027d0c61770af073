"""Fault injection: make the next matching requests to a venue fail in a chosen way.

Tests (and curious people) queue faults through ``Sandbox.inject`` or
``POST /_sandbox/faults``; each fault applies to the next ``count`` requests of
its venue whose path contains ``path`` and is then used up.

``drop_ids`` is different: it stands until cleared. While it does, the venue serves its pages as if the
trades with those ids (inclusive ``[lo, hi]`` ranges, per ``symbol`` or every symbol) had never happened,
filling each page past them as a real venue with a hole would, so a client sees a silent gap.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, datetime
from typing import Any

from schemahub_core.sandbox.market import to_ns

KINDS = ("429", "5xx", "timeout", "malformed_body", "malformed_row", "rate_limit_body", "418", "drop_ids",
         "new_field")
STANDING = ("drop_ids", "new_field")  # stand until cleared instead of firing on requests


@dataclass
class Fault:
    """``kind``: 429 (with ``retry_after``), 5xx (``status``), timeout (answer after ``delay`` s),
    malformed_body (truncated JSON), malformed_row (one corrupt row), rate_limit_body (Kraken's 200 body),
    drop_ids (leave out the trades whose ids fall in ``ids``, ``[[lo, hi], ...]`` inclusive, of ``symbol``, native
    or canonical, or of every symbol when empty; stands until the faults are cleared), new_field (schema drift:
    every trade at or after ``after``, an ISO-8601 instant, carries ``field`` = ``value`` in the venue's rows;
    stands until cleared)."""

    venue: str
    kind: str
    count: int = 1
    retry_after: float = 1.0
    status: int = 503
    delay: float = 2.0
    path: str = ""
    ids: list[tuple[int, int]] = dataclass_field(default_factory=list)
    symbol: str = ""
    field: str = ""
    value: Any = None
    after: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r} (kinds: {', '.join(KINDS)})")
        try:
            self.ids = [(int(lo), int(hi)) for lo, hi in self.ids]
        except (TypeError, ValueError):
            raise ValueError(f"ids must be [lo, hi] pairs of integers, got {self.ids!r}") from None
        if self.kind == "drop_ids" and (not self.ids or any(lo > hi for lo, hi in self.ids)):
            raise ValueError("drop_ids needs ids: one or more [lo, hi] ranges with lo <= hi")
        if self.kind == "new_field":
            if not self.field:
                raise ValueError("new_field needs field (and value; after is optional)")
            try:
                self.after_ns  # noqa: B018 - validates the instant now, not at the first request
            except ValueError:
                raise ValueError(f"after must be an ISO-8601 instant, got {self.after!r}") from None

    @property
    def after_ns(self) -> int:
        if not self.after:
            return 0
        moment = datetime.fromisoformat(self.after.replace("Z", "+00:00"))
        return to_ns(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


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
                if fault.kind not in STANDING and fault.venue == venue and fault.path in path:
                    fault.count -= 1
                    if fault.count <= 0:
                        self._queue.remove(fault)
                    self.fired.append({**asdict(fault), "at_path": path})
                    return fault
        return None

    def dropped(self, venue: str, symbols: set[str]) -> list[tuple[int, int]]:
        """The id ranges ``venue`` must leave out for a symbol spelled any of ``symbols`` (standing faults)."""
        with self._lock:
            return [r for f in self._queue if f.kind == "drop_ids" and f.venue == venue
                    and (not f.symbol or f.symbol in symbols) for r in f.ids]

    def extra_fields(self, venue: str, t_ns: int) -> dict[str, Any]:
        """Fields a standing ``new_field`` fault adds to ``venue``'s trades at ``t_ns`` (schema drift)."""
        with self._lock:
            return {f.field: f.value for f in self._queue
                    if f.kind == "new_field" and f.venue == venue and t_ns >= f.after_ns}

    def pending(self) -> list[dict]:
        with self._lock:
            return [asdict(f) for f in self._queue]
