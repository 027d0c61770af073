"""The process's resident memory against a bound: when a buffer must be flushed, learned from what flushes cost.

A fixed guess of Arrow's working memory does not hold: the same unify peaked anywhere from 394 to 495 MiB
under one setting, with the allocator's and the thread pool's timing. So the gauge measures instead:
before each flush it reads the resident memory (``VmRSS``), after it the process's peak (``VmHWM``). A
flush that raised the peak cost exactly ``peak - resident before``; that cost per buffered byte is the
flush's *growth*. A buffer is flushed as soon as ``resident now + growth * buffered`` would pass the
limit (the bound less a margin), so the next flush is sized by what the last ones cost, whatever the
allocator, the key cache or the data. Growth only ever goes up: the worst flush seen so far sizes the
next, and a flush that did not raise the peak says nothing certain about its own cost.

The peak is never reset (``/proc/self/clear_refs`` could): it is what the user, a test or a benchmark
reads to check the bound, and it must stay the process's true peak. Off Linux the peak is the
``ru_maxrss`` of ``getrusage`` and resident memory falls back to it: flushes then size themselves from
the peak, more cautiously.
"""

from __future__ import annotations

import resource
import sys

import pyarrow as pa

MIB = 1 << 20
# A flush's peak above the resident memory before it, per buffered byte, until one is measured. Measured
# 0.4-6.5 over 10M rows at 70-130 MiB flushes (dedup, join, cast, sort and the Parquet writer each copy).
PRIOR_GROWTH = 7.0
# Costs are taken over at least this much buffer: a flush of a few rows still pays its fixed part (the
# Parquet writer, the day's keys in the join's hash table).
MIN_PART = 4 * MIB
MARGIN = 0.08  # of the bound, kept free for what a flush costs beyond the worst one measured
MIN_MARGIN = 16 * MIB


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _rusage_peak() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def resident_bytes() -> int:
    """This process's resident memory now (Linux), else its peak so far."""
    kib = _status_kib("VmRSS:")
    return kib * 1024 if kib is not None else _rusage_peak()


def peak_resident_bytes() -> int:
    """This process's peak resident memory so far."""
    kib = _status_kib("VmHWM:")
    return kib * 1024 if kib is not None else _rusage_peak()


class MemoryGauge:
    """Resident memory against ``bound`` bytes: is a buffer due, and what did the last flush cost."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.limit = bound - max(int(bound * MARGIN), MIN_MARGIN)
        self.start = resident_bytes()  # the floor: Python, Arrow, pyiceberg, the catalog
        self.growth = PRIOR_GROWTH
        self.flushes = 0
        self._before: tuple[int, int, int] | None = None

    @property
    def below_floor(self) -> bool:
        """The process needs more than the bound before it holds a single row: every batch is its own part."""
        return self.start >= self.limit

    def room(self) -> int:
        """Bytes between resident memory now and the limit (negative: over it)."""
        return self.limit - resident_bytes()

    def due(self, buffered: int) -> bool:
        """Flush now: what flushing ``buffered`` bytes costs would no longer fit under the limit."""
        return buffered > 0 and self.growth * max(buffered, MIN_PART) > self.room()

    def rows_per_part(self, nbytes: int, rows: int) -> int:
        """How many of a batch's ``rows`` (``nbytes``) one part may hold: all, unless flushing it alone would not fit.

        Near the floor a record batch of the raw file is split, down to ``MIN_PART`` of mapped rows a part.
        """
        fit = max(self.room() / self.growth, MIN_PART)
        return rows if nbytes <= fit else max(1, int(rows * fit / nbytes))

    def before_flush(self, buffered: int) -> None:
        self._before = (resident_bytes(), peak_resident_bytes(), buffered)

    def after_flush(self) -> None:
        """Learn the flush's cost if it raised the peak, and hand memory freed by it back to the OS."""
        if self._before is None:
            return
        resident, peak, buffered = self._before
        self._before, self.flushes = None, self.flushes + 1
        now = peak_resident_bytes()
        if now > peak:  # this flush made the process's peak: its cost is exact
            self.growth = max(self.growth, (now - resident) / max(buffered, MIN_PART))
        pa.default_memory_pool().release_unused()  # the system allocator: malloc_trim
