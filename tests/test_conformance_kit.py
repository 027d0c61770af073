"""The conformance kit catches the classic paging bugs (run against a deliberately broken Binance connector)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from schemahub_binance.connector import BinanceConnector

from schemahub_core import Page
from schemahub_core.sandbox import EVENT_AT
from schemahub_core.testing.conformance import assert_conformance, check_cursors, fetch_all
from schemahub_core.testing.sandbox import _clear_sandbox_faults, sandbox  # noqa: F401

SINCE, UNTIL = EVENT_AT - timedelta(minutes=2), EVENT_AT + timedelta(minutes=1)


class RepeatsPageEdges(BinanceConnector):
    """Resumes *at* the cursor instead of after it: every page boundary record comes twice."""

    def fetch(self, stream, symbol, cursor, since=None, until=None) -> Iterator[Page]:
        yield from super().fetch(stream, symbol, None if cursor is None else int(cursor) - 1, since, until)


class IgnoresUntil(BinanceConnector):
    def fetch(self, stream, symbol, cursor, since=None, until=None) -> Iterator[Page]:
        pages = super().fetch(stream, symbol, cursor, since, None)
        for _ in range(30):
            yield next(pages)


class LosesTheCursor(BinanceConnector):
    def fetch(self, stream, symbol, cursor, since=None, until=None) -> Iterator[Page]:
        for page in super().fetch(stream, symbol, cursor, since, until):
            yield Page(page.records, 1, page.payloads)


def _options(sandbox) -> dict:  # noqa: F811
    return sandbox.connector_options("binance", page_size=25)


def test_the_real_connector_passes(sandbox):  # noqa: F811
    assert assert_conformance(BinanceConnector(_options(sandbox)), "trades", "BTC-USDT", SINCE, UNTIL)["pages"] >= 20


def test_resuming_at_instead_of_after_the_cursor_is_caught(sandbox):  # noqa: F811
    with pytest.raises(AssertionError, match="resume after page"):
        assert_conformance(RepeatsPageEdges(_options(sandbox)), "trades", "BTC-USDT", SINCE, UNTIL)


def test_records_past_until_are_caught(sandbox):  # noqa: F811
    with pytest.raises(AssertionError, match="is at or after until"):  # 30 pages overrun a 1-minute range
        assert_conformance(IgnoresUntil(_options(sandbox)), "trades", "BTC-USDT", SINCE, SINCE + timedelta(minutes=1))


def test_a_cursor_that_does_not_advance_is_caught(sandbox):  # noqa: F811
    run = fetch_all(LosesTheCursor(_options(sandbox)), "trades", "BTC-USDT", since=SINCE, until=UNTIL)
    with pytest.raises(AssertionError, match="not strictly increasing"):
        check_cursors(run)


def test_too_few_pages_is_reported_not_silently_passed(sandbox):  # noqa: F811
    connector = BinanceConnector(sandbox.connector_options("binance"))
    with pytest.raises(AssertionError, match=r"only \d+ page\(s\)"):
        assert_conformance(connector, "trades", "BTC-USDT", SINCE, UNTIL, min_pages=20)
