"""Unified target tables as data: schema, key, time column, partitioning.

``trades_unified`` and ``quotes_unified`` are registered by the built-in plugin
through ``register_targets``, exactly as a plugin would add another domain.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Target:
    name: str
    schema: pa.Schema  # column order is the table's column order
    key: tuple[str, ...]
    time_column: str  # partitioned by day(time_column)
    ingest_column: str | None = "ingest_ts"  # set by the engine to the commit time
    description: str = ""
    required: tuple[str, ...] = ()  # a mapped row without one of these goes to quarantine (default: non-nullable)

    @property
    def required_columns(self) -> tuple[str, ...]:
        names = self.required or tuple(f.name for f in self.schema if not f.nullable)
        return tuple(n for n in names if n != self.ingest_column)


def _fields(*spec: tuple[str, pa.DataType], required: tuple[str, ...]) -> pa.Schema:
    return pa.schema([pa.field(n, t, nullable=n not in required) for n, t in spec])


TRADES_UNIFIED = Target(
    name="trades_unified",
    schema=_fields(
        ("exchange", pa.string()),
        ("symbol", pa.string()),
        ("trade_id", pa.string()),
        ("side", pa.string()),
        ("price", pa.float64()),
        ("quantity", pa.float64()),
        ("trade_ts", TS),
        ("ingest_ts", TS),
        ("base_asset", pa.string()),
        ("quote_asset", pa.string()),
        ("native_symbol", pa.string()),
        required=("exchange", "symbol", "trade_id", "trade_ts"),
    ),
    key=("exchange", "symbol", "trade_id"),
    time_column="trade_ts",
    description="Trades from every venue, taker side, canonical BASE-QUOTE symbols.",
    required=("exchange", "symbol", "trade_id", "price", "quantity", "trade_ts"),
)

QUOTES_UNIFIED = Target(
    name="quotes_unified",
    schema=_fields(
        ("exchange", pa.string()),
        ("symbol", pa.string()),
        ("bid_price", pa.float64()),
        ("bid_qty", pa.float64()),
        ("ask_price", pa.float64()),
        ("ask_qty", pa.float64()),
        ("quote_ts", TS),
        ("ingest_ts", TS),
        ("base_asset", pa.string()),
        ("quote_asset", pa.string()),
        ("native_symbol", pa.string()),
        required=("exchange", "symbol", "quote_ts"),
    ),
    key=("exchange", "symbol", "quote_ts"),
    time_column="quote_ts",
    description="Best bid/ask from every venue, canonical BASE-QUOTE symbols.",
    required=("exchange", "symbol", "bid_price", "ask_price", "quote_ts"),
)
