"""Binance Spot: aggregated trades (``/api/v3/aggTrades``), cursor = aggregate trade id."""

from __future__ import annotations

import pyarrow as pa

from schemahub_core import Column, Connector, CursorKind, Stream

TS = pa.timestamp("us", tz="UTC")

TRADES = Stream(
    name="trades",
    columns=(
        Column("symbol", pa.string()),  # added by the connector: aggTrades rows omit it
        Column("a", pa.int64()),
        Column("p", pa.float64(), "to_double"),
        Column("q", pa.float64(), "to_double"),
        Column("f", pa.int64()),
        Column("l", pa.int64()),
        Column("T", TS, "from_ms"),
        Column("m", pa.bool_()),
        Column("M", pa.bool_()),
    ),
    key=("symbol", "a"),
    cursor_kind=CursorKind.ID,
    event_time="T",
)


class BinanceConnector(Connector):
    name = "binance"
    description = "Binance Spot REST"
    streams = {"trades": TRADES}
    default_symbols = ("BTC-USDT", "ETH-USDT")

    def native_symbol(self, symbol: str) -> str:
        return symbol.replace("-", "").upper()
