"""Deterministic venue-format workloads for the benchmarks (no network, no sandbox needed)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

START_MS = 1_707_350_400_000  # 2024-02-08T00:00:00Z


def binance_pages(n_trades: int, page_size: int = 1000, seed: int = 7, symbol: str = "BTCUSDT",
                  first_id: int = 1, start_ms: int = START_MS, span_ms: int = 86_400_000) -> list[str]:
    """aggTrades JSON bodies exactly as Binance sends them (one per page), ids consecutive."""
    rng = np.random.default_rng(seed)
    ids = np.arange(first_id, first_id + n_trades)
    ts = start_ms + np.sort(rng.integers(0, span_ms, n_trades))
    price = 43_000 + np.cumsum(rng.normal(0, 2.0, n_trades))
    qty = rng.exponential(0.05, n_trades) + 0.00001
    maker = rng.random(n_trades) < 0.5
    pages = []
    for lo in range(0, n_trades, page_size):
        hi = min(lo + page_size, n_trades)
        rows = [
            {"a": int(ids[i]), "p": f"{price[i]:.2f}", "q": f"{qty[i]:.8f}", "f": int(ids[i]) * 2,
             "l": int(ids[i]) * 2 + 1, "T": int(ts[i]), "m": bool(maker[i]), "M": True}
            for i in range(lo, hi)
        ]
        pages.append(json.dumps(rows, separators=(",", ":")))
    return pages


FLOOR_SCHEMA = pa.schema([
    ("symbol", pa.string()), ("a", pa.int64()), ("p", pa.float64()), ("q", pa.float64()), ("f", pa.int64()),
    ("l", pa.int64()), ("T", pa.timestamp("us", tz="UTC")), ("m", pa.bool_()), ("M", pa.bool_()),
])


DAY_MS = 86_400_000


def raw_binance(n: int, first_id: int = 1, start_ms: int = START_MS, span_ms: int = DAY_MS, seed: int = 11,
                symbol: str = "BTCUSDT") -> pa.Table:
    """Rows of ``raw_binance_agg_trades`` built directly (vectorized), for states the benchmark is not timing."""
    rng = np.random.default_rng(seed)
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    ts_us = (start_ms + np.sort(rng.integers(0, span_ms, n))) * 1000
    return pa.table({
        "symbol": pa.array(np.full(n, symbol, dtype=object), pa.string()),
        "a": ids,
        "p": 43_000 + np.cumsum(rng.normal(0, 2.0, n)),
        "q": rng.exponential(0.05, n) + 0.00001,
        "f": ids * 2,
        "l": ids * 2 + 1,
        "T": pa.array(ts_us, pa.timestamp("us", tz="UTC")),
        "m": rng.random(n) < 0.5,
        "M_best_match": np.ones(n, dtype=bool),
        "_source": pa.array(np.full(n, "binance", dtype=object), pa.string()),
        "_source_ingest_ts": pa.array(np.full(n, ts_us[-1] if n else 0), pa.timestamp("us", tz="UTC")),
        "_raw_payload": pa.nulls(n, pa.string()),
    })


def unified_days(days: int, per_day: int, first_day_ms: int = START_MS, first_id: int = 1,
                 exchange: str = "BINANCE", symbol: str = "BTC-USDT", seed: int = 3) -> list[pa.Table]:
    """``trades_unified`` rows, one table per day (the shape of daily ingestion)."""
    rng = np.random.default_rng(seed)
    out = []
    for d in range(days):
        ids = np.arange(first_id + d * per_day, first_id + (d + 1) * per_day)
        ts_us = (first_day_ms + d * DAY_MS + np.sort(rng.integers(0, DAY_MS, per_day))) * 1000
        out.append(pa.table({
            "exchange": pa.array(np.full(per_day, exchange, dtype=object), pa.string()),
            "symbol": pa.array(np.full(per_day, symbol, dtype=object), pa.string()),
            "trade_id": pa.array(ids.astype(str).astype(object), pa.string()),
            "side": pa.array(np.where(rng.random(per_day) < 0.5, "BUY", "SELL").astype(object), pa.string()),
            "price": 43_000 + np.cumsum(rng.normal(0, 2.0, per_day)),
            "quantity": rng.exponential(0.05, per_day),
            "trade_ts": pa.array(ts_us, pa.timestamp("us", tz="UTC")),
            "ingest_ts": pa.array(ts_us, pa.timestamp("us", tz="UTC")),
            "base_asset": pa.array(np.full(per_day, symbol.split("-")[0], dtype=object), pa.string()),
            "quote_asset": pa.array(np.full(per_day, symbol.split("-")[1], dtype=object), pa.string()),
            "native_symbol": pa.array(np.full(per_day, symbol.replace("-", ""), dtype=object), pa.string()),
        }))
    return out
