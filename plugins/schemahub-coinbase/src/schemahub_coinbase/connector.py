"""Coinbase Exchange: ``/products/{id}/trades``, cursor = trade_id (``after``/``before``)."""

from __future__ import annotations

import pyarrow as pa

from schemahub_core import Column, Connector, CursorKind, Stream

TS = pa.timestamp("us", tz="UTC")

TRADES = Stream(
    name="trades",
    columns=(
        Column("product_id", pa.string()),  # added by the connector from the request path
        Column("trade_id", pa.int64()),
        Column("price", pa.float64(), "to_double"),
        Column("size", pa.float64(), "to_double"),
        Column("side", pa.string()),  # the MAKER's side on REST trades
        Column("time", TS, "iso8601"),
    ),
    key=("product_id", "trade_id"),
    cursor_kind=CursorKind.ID,
    event_time="time",
)


class CoinbaseConnector(Connector):
    name = "coinbase"
    description = "Coinbase Exchange REST"
    streams = {"trades": TRADES}
    default_symbols = ("BTC-USD", "ETH-USD")
