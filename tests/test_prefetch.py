"""The page prefetcher: order, errors at their position, and a clean stop (the generator closed on its thread)."""

from __future__ import annotations

import threading

import pytest

from schemahub_core.engine.prefetch import Prefetched


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
                yield i
        finally:
            closed_on.append(threading.current_thread().name)

    with Prefetched(pages(), depth=3) as fetched:
        first = next(iter(fetched))
    assert first == 0 and closed_on == ["schemahub-prefetch"]
    assert len(fetched_upto) <= 1 + 3 + 1  # the one taken, a full queue, the one waiting to be put
    assert not any(t.name == "schemahub-prefetch" for t in threading.enumerate())
