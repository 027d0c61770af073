"""A scriptable, deterministic test venue: exact pages from a seed, faults on demand.

The engines' exactly-once claims are tested against this connector, so it is a
real plugin (hooks, mappings, entry point via ``testing.entry_points``), not a
mock. Two venues, ``scripted`` and ``scripted_b``, exist so multi-source unify
is exercised. Options (config ``connectors.<name>`` or env
``SCHEMAHUB_SCRIPTED_<OPTION>``, strings accepted):

- ``seed`` (0), ``trades`` per symbol (50), ``page_size`` (10): the data;
- ``malformed``: comma-separated trade ids whose price is garbage (-> quarantine);
- ``null_price``: comma-separated trade ids whose price is JSON null (casts fine; unify quarantines it);
- ``fail_at_page``: raise a ``ConnectionError`` when the n-th page is due;
- ``slow_ms``: sleep before each page (long runs, races);

Trades start at 2024-02-08 23:59:50 UTC and cross midnight, so they span two day
partitions. ``trades_for`` gives the exact records a venue serves.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from schemahub_core.framework.connector import Column, Connector, Cursor, CursorKind, Page, Stream
from schemahub_core.framework.hookspecs import hookimpl
from schemahub_core.framework.mapping import Mapping as MappingSpec
from schemahub_core.framework.mapping import parse_mapping
from schemahub_core.framework.registry import Registry

TS = pa.timestamp("us", tz="UTC")
START_MS = 1_707_436_790_000  # 2024-02-08T23:59:50Z

TRADES = Stream(
    name="trades",
    columns=(
        Column("symbol", pa.string()),
        Column("id", pa.int64()),
        Column("price", pa.float64(), "to_double"),
        Column("qty", pa.float64(), "to_double"),
        Column("time", TS, "from_ms"),
        Column("is_buyer_maker", pa.bool_()),
    ),
    key=("symbol", "id"),
    cursor_kind=CursorKind.ID,
    event_time="time",
)

MAPPING = """\
source: {name}.trades
target_table: trades_unified
mappings:
  symbol: [native_symbol, symbol]
  id: trade_id
  price: price
  qty: quantity
  time: trade_ts
  is_buyer_maker: side
constants:
  exchange: {exchange}
transforms:
  trade_id: to_string
  side: taker_side_from_maker_flag
  symbol: {{name: canonical_symbol, params: {{quote_assets: [USDT, USD]}}}}
  base_asset: {{name: base_asset, from: symbol}}
  quote_asset: {{name: quote_asset, from: symbol}}
"""


def micros(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def native(symbol: str) -> str:
    return symbol.replace("-", "")


def trades_for(name: str, seed: int, symbol: str, count: int, malformed: frozenset[int] = frozenset(),
               null_price: frozenset[int] = frozenset()) -> list[dict]:
    """The exact trades venue ``name`` serves for ``symbol``: a pure function of its arguments."""
    rng = random.Random(f"{name}:{seed}:{symbol}")
    first_id = 100 + rng.randrange(900)
    t = START_MS
    out = []
    for i in range(count):
        t += rng.randrange(50, 900)
        trade_id = first_id + i
        price = f"{42000 + rng.uniform(-50, 50):.2f}"  # drawn even when garbled: the rest stays the same
        out.append({
            "symbol": native(symbol),
            "id": trade_id,
            "price": "not-a-price" if trade_id in malformed else None if trade_id in null_price else price,
            "qty": f"{rng.uniform(0.001, 2):.6f}",
            "time": t,
            "is_buyer_maker": rng.random() < 0.5,
        })
    return out


def _ids(value: Any) -> frozenset[int]:
    if value in (None, ""):
        return frozenset()
    items = value.split(",") if isinstance(value, str) else value
    return frozenset(int(v) for v in items)


class ScriptedConnector(Connector):
    """Deterministic trades with injectable faults; see the module docstring for options."""

    name = "scripted"
    description = "Deterministic scripted test venue (simulated data)"
    streams = {"trades": TRADES}
    default_symbols = ("BTC-USD", "ETH-USD")

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        o = self.options
        self.seed = int(o.get("seed", 0))
        self.count = int(o.get("trades", 50))
        self.page_size = int(o.get("page_size", 10))
        self.malformed = _ids(o.get("malformed"))
        self.null_price = _ids(o.get("null_price"))
        self.fail_at_page = int(o["fail_at_page"]) if o.get("fail_at_page") not in (None, "") else None
        self.slow_ms = float(o.get("slow_ms", 0))
        self.pages_served = 0

    def native_symbol(self, symbol: str) -> str:
        return native(symbol)

    def trades(self, symbol: str) -> list[dict]:
        return trades_for(self.name, self.seed, symbol, self.count, self.malformed, self.null_price)

    def _page(self, records: list[dict]) -> Page:
        self.pages_served += 1
        if self.fail_at_page is not None and self.pages_served == self.fail_at_page:
            raise ConnectionError(f"{self.name}: injected network failure at page {self.pages_served}")
        if self.slow_ms:
            time.sleep(self.slow_ms / 1000)
        return Page(records=[dict(r) for r in records], cursor=max(r["id"] for r in records))

    def fetch_trades(
        self,
        symbol: str,
        cursor: Cursor,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> Iterator[Page]:
        """Trades after ``cursor`` (else from ``since``, inclusive) up to ``until`` (exclusive), ascending."""
        trades = self.trades(symbol)
        if cursor is not None:
            trades = [t for t in trades if t["id"] > int(cursor)]
        elif since is not None:
            trades = [t for t in trades if t["time"] * 1000 >= micros(since)]
        if until is not None:
            trades = [t for t in trades if t["time"] * 1000 < micros(until)]
        for i in range(0, len(trades), self.page_size):
            yield self._page(trades[i : i + self.page_size])


class ScriptedBConnector(ScriptedConnector):
    """A second scripted venue, so one unify commit has two sources to cover."""

    name = "scripted_b"
    default_symbols = ("BTC-USD",)


CONNECTORS: tuple[type[ScriptedConnector], ...] = (ScriptedConnector, ScriptedBConnector)


def mappings() -> list[MappingSpec]:
    return [
        parse_mapping(MAPPING.format(name=c.name, exchange=c.name.upper()), f"<{c.name} mapping>", origin=c.name)
        for c in CONNECTORS
    ]


@hookimpl
def register_connectors(register):
    for cls in CONNECTORS:
        register(cls)


@hookimpl
def register_mappings(register):
    for m in mappings():
        register(m)


def scripted_registry() -> Registry:
    """A registry with the built-ins and the scripted venues, without global plugin loading."""
    from schemahub_core.framework.builtins import register_targets, register_transforms

    registry = Registry()
    register_transforms(lambda name, fn: registry.transforms.__setitem__(name, fn))
    register_targets(lambda target: registry.targets.__setitem__(target.name, target))
    for cls in CONNECTORS:
        registry.connectors[cls.name] = cls
    registry.mappings.extend(("scripted", m) for m in mappings())
    return registry


def land_backlog(catalog: Any, namespace: str, trades: int, *, days: int = 4, repeat: float = 0.03,
                 commit_rows: int = 250_000, first_id: int = 1_000, seed: int = 0) -> int:
    """Land ``trades`` scripted BTC/ETH trades straight into ``raw_scripted_trades``, for unify at scale.

    No venue and no pages: batches go through the engine's own writer (``IcebergSink.publish``), one commit
    per ``commit_rows``, spread evenly over ``days`` from ``START_MS``. A share ``repeat`` of them is landed a
    second time in a later commit, as overlapping fetches do, so unify has duplicates to drop. Trade ``i``
    has id ``first_id + i``; returns the number of distinct trades.
    """
    import numpy as np

    from schemahub_core.engine.ingest import ensure_tables
    from schemahub_core.engine.sink import IcebergSink
    from schemahub_core.engine.tables import TableDef, raw_schema, raw_table_name

    name = raw_table_name(ScriptedConnector.name, "trades")
    schema = raw_schema(TRADES)
    ensure_tables(catalog, namespace, [TableDef(name, schema, TRADES.event_time)])
    rng = np.random.default_rng(seed)
    span_us = days * 86_400_000_000
    index = np.arange(trades, dtype=np.int64)
    again = np.sort(rng.choice(trades, size=int(trades * repeat), replace=False))
    order = np.concatenate([index, again])  # repeats come after the original: a later commit
    sink = IcebergSink(catalog, namespace)
    for lo in range(0, len(order), commit_rows):
        i = order[lo:lo + commit_rows]
        n = len(i)
        batch = pa.table({
            "symbol": pa.array(np.where(i % 3 == 0, "ETHUSD", "BTCUSD")),
            "id": pa.array(first_id + i),
            "price": pa.array(42_000 + (i % 1000) * 0.01),
            "qty": pa.array(0.001 + (i % 997) * 0.001),
            "time": pa.array(START_MS * 1000 + i * (span_us // max(trades, 1)), TS),
            "is_buyer_maker": pa.array(i % 2 == 0),
            "_source": pa.array([ScriptedConnector.name] * n, pa.string()),
            "_source_ingest_ts": pa.array(np.full(n, START_MS * 1000, dtype=np.int64), TS),
            "_raw_payload": pa.nulls(n, pa.string()),
        }).cast(schema)
        sink.publish(name, batch, {}, stage="ingest")
    return trades
