"""OKX public trades (``/api/v5/market/history-trades``): an example third-party venue.

Written only against ``schemahub_core``'s public API, as any outside author would.
"""

from __future__ import annotations

import pyarrow as pa

from schemahub_core import Column, Connector, CursorKind, Stream

TS = pa.timestamp("us", tz="UTC")

TRADES = Stream(
    name="trades",
    columns=(
        Column("instId", pa.string()),
        Column("tradeId", pa.int64()),
        Column("px", pa.float64(), "to_double"),
        Column("sz", pa.float64(), "to_double"),
        Column("side", pa.string()),  # the taker's side
        Column("ts", TS, "from_ms"),
    ),
    key=("instId", "tradeId"),
    cursor_kind=CursorKind.ID,
    event_time="ts",
)


class OkxConnector(Connector):
    name = "okx"
    description = "OKX public REST (example plugin)"
    streams = {"trades": TRADES}
    default_symbols = ("BTC-USDT",)
