"""A Binance connector that serves pre-fetched JSON pages: the engine's cost without the network's."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import datetime

from schemahub_binance.connector import BinanceConnector

from schemahub_core import Cursor, Page
from schemahub_core.engine.ingest import RunStats, StreamIngest
from schemahub_core.engine.sink import IcebergSink
from schemahub_core.framework.registry import Registry

from .warehouse import Warehouse


class PrefetchedBinance(BinanceConnector):
    """Parses each page body exactly as the real connector does, then yields it."""

    pages: list[str] = []

    def fetch(self, stream: str, symbol: str, cursor: Cursor, since: datetime | None = None,
              until: datetime | None = None) -> Iterator[Page]:
        native = self.native_symbol(symbol)
        for body in self.pages:
            rows = json.loads(body)
            if cursor is not None and rows[-1]["a"] <= int(cursor):
                continue
            yield Page([{**row, "symbol": native} for row in rows], rows[-1]["a"])


def prefetched_registry(base: Registry, pages: list[str]) -> Registry:
    connector = type("PrefetchedBinance", (PrefetchedBinance,), {"pages": pages})
    return dataclasses.replace(base, connectors={**base.connectors, "binance": connector})


def land(wh: Warehouse, pages: list[str], raw_payload: bool = False, **limits: int) -> RunStats:
    """Land ``pages`` (aggTrades bodies) into ``raw_binance_agg_trades`` through the exactly-once engine, at its
    default commit size unless ``limits`` (``max_rows``, ``max_seconds``, ``pages_per_commit``) say otherwise."""
    registry = prefetched_registry(wh.registry, pages)
    cls = registry.connectors["binance"]
    stats = StreamIngest(IcebergSink(wh.catalog, wh.namespace), registry, cls({}), cls.streams["agg_trades"],
                         "BTC-USDT", raw_payload=raw_payload, **limits).run()
    if stats.error:
        raise RuntimeError(stats.error)
    return stats
