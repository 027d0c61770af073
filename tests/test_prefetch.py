"""The page prefetcher: order, errors at their position, and a clean stop (the generator closed on its thread)."""

from __future__ import annotations

import threading
import time

import pytest

from schemahub_core.engine.prefetch import PROBE_PAGES, Prefetched


def test_items_come_in_order_and_an_error_after_those_before_it():
    def pages():
        yield from range(5)
        raise ConnectionError("venue went away")

    seen = []
    with Prefetched(pages(), depth=2) as fetched, pytest.raises(ConnectionError, match="went away"):
        for item in fetched:
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]


def test_close_stops_fetching_ahead_and_closes_the_generator_on_its_own_thread():
    fetched_upto, closed_on = [], []

    def pages():
        try:
            for i in range(10_000):
                fetched_upto.append(i)
                time.sleep(0.001)  # a venue's round trip: waiting, not CPU
                yield i
        finally:
            closed_on.append(threading.current_thread().name)

    with Prefetched(pages(), depth=3) as fetched:
        taken = iter(fetched)
        seen = [next(taken) for _ in range(PROBE_PAGES + 1)]  # the inline window, then one from the thread
        assert fetched.threaded
    assert seen == list(range(PROBE_PAGES + 1)) and closed_on == ["schemahub-prefetch"]
    # the ones taken, a full queue, the one waiting to be put
    assert len(fetched_upto) <= PROBE_PAGES + 1 + 3 + 1
    assert not any(t.name == "schemahub-prefetch" for t in threading.enumerate())


def test_a_source_that_never_waits_is_iterated_inline_without_a_thread():
    """Pages already in memory (or a venue faster than the parse) have nothing to overlap: no second thread."""
    closed_on = []

    def pages():
        try:
            yield from range(1_000)
        finally:
            closed_on.append(threading.current_thread().name)

    with Prefetched(pages()) as fetched:
        assert list(fetched) == list(range(1_000))
        assert not fetched.threaded
    assert closed_on == [threading.current_thread().name]
    assert not any(t.name == "schemahub-prefetch" for t in threading.enumerate())


def test_a_source_that_starts_waiting_later_is_prefetched_from_then_on():
    """A venue that throttles (a rate limiter's sleep) after a fast start: prefetching begins when it waits."""
    def pages():
        for i in range(60):
            if i >= 20:
                time.sleep(0.001)
            yield i

    with Prefetched(pages()) as fetched:
        assert list(fetched) == list(range(60))
        assert fetched.threaded
