"""A connector's pages fetched ahead while the engine casts and commits the ones it has.

Fetched one after the other, the venue waits for each commit and each commit waits for the venue: a Binance
page takes milliseconds to arrive and a 250k-row commit a good part of a second. One thread iterates the
connector's pages into a bounded queue while the engine works, so the two overlap.

Nothing towards the venue changes: a single thread asks, one request at a time, through the connector's own
session and rate bucket, so limits, weights and retries hold exactly as before; prefetching only stops the
requests from pausing during commits. Nothing about exactly-once changes either: coverage moves only with
commits, so pages fetched ahead of a crash (or of a dropped batch) are simply fetched again by the next plan.

The thread starts only once fetching is seen to wait: pages are taken inline, a window of ``PROBE_PAGES`` at a
time, timing each in wall and in this thread's CPU seconds, and the rest go through the thread as soon as a
window spent at least ``WAIT_SHARE`` of its time (and ``MIN_WAIT_S``) waiting. A source that never waits
(pages already in memory, a venue faster than the parse) has nothing to overlap, and a second thread then
only costs: measured on the landing benchmark's pre-fetched pages, 1M trades took 2.8-3.4 s through the
thread against 2.5-2.7 s inline (both threads contend for the GIL and hand the pages' objects across).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

# Pages held ahead of the engine at most: about as many as a venue serves during one commit (a 1,000-trade
# Binance page arrives every 2-5 ms against a commit of 0.3-1 s), about 1 MB of records each.
PREFETCH_PAGES = 128
PROBE_PAGES = 8  # pages a window of inline fetching times before deciding
WAIT_SHARE = 0.3  # of a window's wall time spent waiting (not on this thread's CPU): prefetch from then on
MIN_WAIT_S = 0.002  # and at least this long: a window of microseconds says nothing

_END = object()


class _Failed:
    """What the fetching thread raised, handed over at the position it was raised."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Prefetched(Generic[T]):
    """Iterate ``items``, on a background thread at most ``depth`` ahead of the consumer once fetching waits.

    Iterating yields the items in order and re-raises, at the same position, whatever iterating ``items``
    raised. ``close`` (or leaving the ``with`` block) stops the thread after the item it is fetching, closes
    ``items`` on that thread (or here, if it never started: a generator can only be closed where it runs) and
    waits for it, so no request of this iterator is in flight afterwards.
    """

    def __init__(self, items: Iterator[T], depth: int = PREFETCH_PAGES) -> None:
        self._items = items
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None  # started once fetching is seen to wait

    @property
    def threaded(self) -> bool:
        """Whether the pages are being fetched ahead on the thread (fetching was seen to wait)."""
        return self._thread is not None

    def _inline(self) -> Iterator[T]:
        """Items taken here, timed a window at a time, until a window shows fetching waits; then the thread."""
        while True:
            wall = cpu = 0.0
            for _ in range(PROBE_PAGES):
                started, started_cpu = time.perf_counter(), time.thread_time()
                try:
                    item = next(self._items)
                except StopIteration:
                    return
                wall += time.perf_counter() - started
                cpu += time.thread_time() - started_cpu
                yield item
            waited = wall - cpu
            if waited >= MIN_WAIT_S and waited >= WAIT_SHARE * wall:
                self._thread = threading.Thread(target=self._fetch, name="schemahub-prefetch", daemon=True)
                self._thread.start()
                return

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _fetch(self) -> None:
        try:
            for item in self._items:
                if not self._put(item):
                    return
            self._put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(_Failed(exc))
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()

    def __iter__(self) -> Iterator[T]:
        yield from self._inline()
        if self._thread is None:
            return
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item

    def close(self) -> None:
        """Stop fetching, release what was fetched ahead, and wait for the thread."""
        self._stop.set()
        if self._thread is None:  # never threaded: the items are closed here, where they ran
            close = getattr(self._items, "close", None)
            if close is not None:
                close()
            return
        while self._thread.is_alive():
            try:
                while True:
                    self._queue.get_nowait()  # a put blocked on a full queue sees the stop within 0.1 s
            except queue.Empty:
                pass
            self._thread.join(timeout=0.1)

    def __enter__(self) -> Prefetched[T]:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if exc_type is not None and not issubclass(exc_type, Exception):
            self._stop.set()  # Ctrl-C, exit: the process is going; a request or retry backoff need not finish
            return
        self.close()
