"""Casting a page of native records: one bad record is set aside, its neighbours land unchanged.

The page is converted column by column in C++ for speed; the property below pins
that to the obvious definition, casting each record on its own.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from schemahub_core.engine.raw import cast_records
from schemahub_core.framework.connector import Column, CursorKind, Stream
from schemahub_core.framework.transforms import BUILTIN_TRANSFORMS

STREAM = Stream(
    "trades",
    (Column("id", pa.int64()), Column("price", pa.float64(), "to_double"), Column("side", pa.string()),
     Column("T", pa.timestamp("us", tz="UTC"), "from_ms")),
    key=("id",), cursor_kind=CursorKind.ID, event_time="T",
)
NOW = datetime(2026, 1, 1, tzinfo=UTC)

GOOD = st.fixed_dictionaries({
    "id": st.integers(0, 2**62),
    "price": st.one_of(st.decimals(0, 10**6, places=4).map(str), st.floats(0, 1e6, allow_nan=False)),
    "side": st.sampled_from(["buy", "sell", None]),
    "T": st.integers(0, 4_102_444_800_000),
})
RECORD = st.one_of(
    GOOD,
    GOOD.map(lambda r: {**r, "price": "not-a-price"}),
    GOOD.map(lambda r: {k: v for k, v in r.items() if k != "id"}),  # key missing
    GOOD.map(lambda r: {**r, "id": None}),
    GOOD.map(lambda r: {**r, "id": r["id"] + 0.5}),  # not an integer: must not be truncated
    GOOD.map(lambda r: {**r, "id": 2**70}),  # too large for int64
    GOOD.map(lambda r: {**r, "extra": [1, 2]}),  # unknown fields are ignored
    st.just(["not", "an", "object"]),
)


def _cast(records: list) -> tuple[list[dict], list[tuple[int, str]]]:
    table, rejected = cast_records(STREAM, records, BUILTIN_TRANSFORMS, "v", keep_payload=False, now=lambda: NOW)
    return table.to_pylist(), [(r.index, r.payload) for r in rejected]


@settings(deadline=None)  # a page of mixed JSON types casts value by value: slow on a busy machine, not wrong
@given(st.lists(RECORD, min_size=1, max_size=25))
def test_a_page_casts_as_its_records_would_one_by_one(records: list) -> None:
    rows, rejected = _cast(records)
    one_by_one = [_cast([r]) for r in records]
    assert rows == [row for single_rows, _ in one_by_one for row in single_rows]
    assert rejected == [(i, payload) for i, (_, single) in enumerate(one_by_one) for _, payload in single]
    assert len(rows) + len(rejected) == len(records)  # nothing lost, nothing doubled


def test_a_fractional_id_is_rejected_not_truncated() -> None:
    rows, rejected = _cast([{"id": 1, "price": "1", "T": 0}, {"id": 2.5, "price": "1", "T": 0}])
    assert [r["id"] for r in rows] == [1] and [i for i, _ in rejected] == [1]
