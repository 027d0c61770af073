"""Kraken Spot: ``/0/public/Trades``, cursor = the nanosecond ``last`` token."""

from __future__ import annotations

import pyarrow as pa

from schemahub_core import Column, Connector, CursorKind, Stream

TS = pa.timestamp("us", tz="UTC")

TRADES = Stream(
    name="trades",
    columns=(
        Column("pair", pa.string()),  # Kraken's own result key, e.g. XXBTZUSD
        Column("price", pa.float64(), "to_double"),
        Column("volume", pa.float64(), "to_double"),
        Column("time", TS, "from_s"),  # float seconds, kept as decimal text
        Column("side", pa.string()),  # b/s: already the taker's side
        Column("ordertype", pa.string()),
        Column("misc", pa.string()),
        Column("trade_id", pa.int64()),
    ),
    key=("pair", "trade_id"),
    cursor_kind=CursorKind.TIME_NS,
    event_time="time",
)


class KrakenConnector(Connector):
    name = "kraken"
    description = "Kraken Spot REST"
    streams = {"trades": TRADES}
    default_symbols = ("BTC-USD", "ETH-USD")
