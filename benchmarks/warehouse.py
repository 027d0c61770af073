"""A fresh, real SchemaHub warehouse (SQLite catalog + local files) for one benchmark run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from schemahub_core.engine.catalog import open_catalog
from schemahub_core.engine.tables import init_tables
from schemahub_core.framework.config import Settings, default_catalog
from schemahub_core.framework.mapping import Mapping, collect_mappings, load_mapping
from schemahub_core.framework.registry import Registry, get_registry


@dataclass
class Warehouse:
    home: Path
    catalog: Catalog
    namespace: str
    registry: Registry

    def table(self, name: str) -> Table:
        return self.catalog.load_table((self.namespace, name))

    def mapping(self, source: str, target: str = "trades_unified") -> Mapping:
        """The installed mapping, or for Binance's aggregate trades (what the benchmarks land) the plugin's optional
        one."""
        if source == "binance.agg_trades":
            from schemahub_binance import MAPPINGS

            return load_mapping(MAPPINGS / "optional" / "agg_trades_unified.yaml")
        return next(m for m in collect_mappings(self.registry, None) if m.source == source and m.target_table == target)

    def append(self, name: str, data: pa.Table, summary: dict[str, str] | None = None) -> int:
        table = self.table(name)
        schema = table.schema().as_arrow()  # as the engine writes: string, not large_string
        schema = pa.schema([f.with_type(pa.string()) if pa.types.is_large_string(f.type) else f for f in schema])
        table.append(data.cast(schema), snapshot_properties=summary or {})
        return table.current_snapshot().snapshot_id


def fresh_warehouse(folder: Path, registry: Registry | None = None) -> Warehouse:
    home = folder.resolve()
    home.mkdir(parents=True, exist_ok=True)
    settings = Settings(home=home, catalog=default_catalog(home))
    catalog = open_catalog(settings)
    registry = registry or get_registry()
    init_tables(catalog, settings.namespace, registry)
    return Warehouse(home, catalog, settings.namespace, registry)
