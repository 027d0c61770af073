"""Property tests for the built-in transforms: exact, vectorized, venue formats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemahub_core.framework import transforms as t

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# 1970 .. 2100 in milliseconds
MS = st.integers(min_value=0, max_value=4_102_444_800_000)


def _micros(ts: datetime) -> int:
    return (ts - EPOCH) // timedelta(microseconds=1)


@given(st.lists(MS, min_size=1, max_size=50))
def test_from_ms_round_trips(ms: list[int]) -> None:
    out = t.from_ms(pa.array(ms))
    assert out.type == pa.timestamp("us", tz="UTC")
    assert [_micros(v) // 1000 for v in out.to_pylist()] == ms
    assert t.from_ms(pa.array([str(m) for m in ms])).equals(out)  # numeric text too


@given(st.lists(st.integers(min_value=-(10**18), max_value=4 * 10**18), min_size=1, max_size=50))
def test_from_ns_and_from_us_floor_to_the_microsecond(ns: list[int]) -> None:
    assert [_micros(v) for v in t.from_ns(pa.array(ns)).to_pylist()] == [n // 1000 for n in ns]
    us = [n // 1000 for n in ns]
    assert [_micros(v) for v in t.from_us(pa.array(us)).to_pylist()] == us


@given(st.integers(min_value=0, max_value=4_102_444_800), st.text("0123456789", max_size=9),
       st.booleans())
def test_from_s_is_exact_on_decimal_text(seconds: int, fraction: str, negative: bool) -> None:
    text = f"{'-' if negative and seconds else ''}{seconds}" + (f".{fraction}" if fraction else "")
    expected = int((Decimal(text) * 1_000_000).to_integral_value(rounding=ROUND_FLOOR))
    assert _micros(t.from_s(pa.array([text])).to_pylist()[0]) == expected


def test_from_s_kraken_float_seconds() -> None:
    out = t.from_s(pa.array(["1707405124.1234567", "1707405124.000001", "1707405124"]))
    assert [_micros(v) for v in out.to_pylist()] == [1707405124123456, 1707405124000001, 1707405124000000]
    with pytest.raises(t.TransformError, match="decimal epoch"):
        t.from_s(pa.array(["1707405124.12x"]))


@given(st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2099, 12, 31)),
       st.text("0123456789", max_size=3), st.sampled_from(["Z", "+00:00", "+0000", ""]),
       st.integers(min_value=0, max_value=9))
def test_iso8601_accepts_venue_formats_with_up_to_9_digits(when: datetime, extra: str, zone: str,
                                                           digits: int) -> None:
    full = f"{when.microsecond:06d}{extra}"[:digits]
    text = when.strftime("%Y-%m-%dT%H:%M:%S") + (f".{full}" if digits else "") + zone
    expected = when.replace(microsecond=int(full[:6].ljust(6, "0")) if digits else 0, tzinfo=UTC)
    assert t.iso8601(pa.array([text])).to_pylist() == [expected]


def test_iso8601_offsets_and_errors() -> None:
    out = t.iso8601(pa.array(["2024-02-08T16:12:04.123+01:00", "2024-02-08T15:12:04.123456Z", None]))
    assert out.to_pylist()[:2] == [datetime(2024, 2, 8, 15, 12, 4, 123000, tzinfo=UTC),
                                   datetime(2024, 2, 8, 15, 12, 4, 123456, tzinfo=UTC)]
    assert out.to_pylist()[2] is None
    with pytest.raises(t.TransformError, match="ISO-8601"):
        t.iso8601(pa.array(["08/02/2024 15:12"]))


@given(st.lists(st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.decimals(allow_nan=False, allow_infinity=False, places=8).map(str),
    st.from_regex(r"\A[0-9]{1,20}\.[0-9]{1,25}\Z"),
), min_size=1, max_size=30))
def test_to_double_is_correctly_rounded(texts: list[str]) -> None:
    assert t.to_double(pa.array(texts)).to_pylist() == [float(x) for x in texts]


ASSET = st.text("ABCDEFGHJKLMNPQRSTUVWXYZ", min_size=2, max_size=5)


@given(ASSET, st.sampled_from(["USDT", "USDC", "USD", "EUR", "BTC"]), st.sampled_from(["", "-", "/"]))
def test_canonical_symbol_splits_on_known_quotes_or_separators(base: str, quote: str, sep: str) -> None:
    out = t.canonical_symbol(pa.array([f"{base}{sep}{quote}"]), quote_assets=["USDT", "USDC", "USD", "EUR", "BTC"],
                             aliases={"XBT": "BTC"})
    want_base = "BTC" if base == "XBT" else base
    # no listed quote is a suffix of another, so the longest suffix match is `quote` itself
    assert out.to_pylist() == [f"{want_base}-{quote}"]


def test_canonical_symbol_pairs_aliases_and_failures() -> None:
    out = t.canonical_symbol(pa.array(["XXBTZUSD", "XBTUSD", "XBT/USD", None]),
                             pairs={"XXBTZUSD": "BTC-USD"}, aliases={"XBT": "BTC"}, quote_assets=["USD"])
    assert out.to_pylist() == ["BTC-USD", "BTC-USD", "BTC-USD", None]
    with pytest.raises(t.TransformError, match="BASE-QUOTE"):
        t.canonical_symbol(pa.array(["BTCXYZ"]), quote_assets=["USD"])


@given(st.lists(st.booleans(), max_size=30))
def test_sides(flags: list[bool]) -> None:
    assert t.taker_side_from_maker_flag(pa.array(flags, pa.bool_())).to_pylist() == [
        "SELL" if f else "BUY" for f in flags]
    makers = ["sell" if f else "buy" for f in flags]
    assert t.invert_side(pa.array(makers, pa.string())).to_pylist() == ["BUY" if f else "SELL" for f in flags]


def test_map_values_and_assets() -> None:
    assert t.map_values(pa.array(["b", "s"]), values={"b": "BUY", "s": "SELL"}).to_pylist() == ["BUY", "SELL"]
    with pytest.raises(t.TransformError, match="one of"):
        t.map_values(pa.array(["x"]), values={"b": "BUY"})
    pair = pa.array(["BTC-USD", "ETH-USDT"])
    assert t.base_asset(pair).to_pylist() == ["BTC", "ETH"]
    assert t.quote_asset(pair).to_pylist() == ["USD", "USDT"]
    assert t.upper(pa.array(["buy"])).to_pylist() == ["BUY"] and t.to_string(pa.array([12])).to_pylist() == ["12"]


# Idempotence: raw tables already carry the minimal casts, and the seed's mappings name them again
# (`trade_ts: from_ms` on a raw `time` that is already a timestamp, `price: to_double` on a double).
US = st.integers(min_value=-(10**15), max_value=4 * 10**15)
TIME_CASTS = ("from_ms", "from_us", "from_ns", "from_s", "iso8601")


@given(st.lists(st.one_of(US, st.none()), min_size=1, max_size=50), st.sampled_from(TIME_CASTS))
def test_time_casts_leave_a_timestamp_column_unchanged(us: list[int | None], name: str) -> None:
    column = pa.array(us, pa.timestamp("us", tz="UTC"))
    assert t.BUILTIN_TRANSFORMS[name](column).equals(column)
    naive_ms = pa.array([None if v is None else v // 1000 for v in us], pa.timestamp("ms"))  # other unit, no zone
    assert t.BUILTIN_TRANSFORMS[name](naive_ms).equals(naive_ms.cast(pa.timestamp("us")).cast(t.TS_US))


@given(st.lists(st.one_of(MS, st.none()), min_size=1, max_size=50), st.sampled_from(TIME_CASTS))
def test_a_time_cast_applied_twice_equals_applied_once(ms: list[int | None], name: str) -> None:
    once = t.from_ms(pa.array(ms, pa.int64()))
    assert t.BUILTIN_TRANSFORMS[name](once).equals(once)


@given(st.lists(st.one_of(st.floats(allow_nan=False), st.none()), min_size=1, max_size=50))
def test_to_double_on_a_double_and_to_string_on_text_are_no_ops(values: list[float | None]) -> None:
    doubles = pa.array(values, pa.float64())
    assert t.to_double(doubles).equals(doubles)
    text = pa.array([None if v is None else repr(v) for v in values], pa.string())
    assert t.to_double(t.to_double(text)).equals(doubles)
    assert t.to_string(text).equals(text)
