"""``schemahub audit``: check every venue's trades for gaps and duplicates, and repair what is missing.

The work lives in ``engine.audit`` (read key columns, find gaps, duplicates, time holes, reconcile raw with
unified) and ``engine.repair`` (fetch each gap's window, land what raw lacks exactly once); this module picks
the sources and symbols from the settings and, after a repair, unifies and audits again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pyiceberg.catalog import Catalog

from schemahub_core.apps.pipeline import run_unify, symbols_for
from schemahub_core.engine.audit import HOLE_FACTOR, AuditReport, audit
from schemahub_core.engine.catalog import open_catalog
from schemahub_core.engine.ingest import RunStats
from schemahub_core.engine.repair import RepairStats, repair
from schemahub_core.engine.state import rebuild_watermarks
from schemahub_core.framework.config import Settings
from schemahub_core.framework.mapping import collect_mappings
from schemahub_core.framework.registry import Registry

STREAM = "trades"


@dataclass
class Repaired:
    """An audit, the repair of what it found, and the audit after it."""

    before: AuditReport
    after: AuditReport
    repairs: list[RepairStats] = field(default_factory=list)
    unified: list[RunStats] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {**self.after.as_dict(), "before": self.before.as_dict(),
                "repairs": [r.as_dict() for r in self.repairs], "unified": [u.as_dict() for u in self.unified]}


def run_audit(
    settings: Settings,
    registry: Registry,
    *,
    symbols: Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    hole_factor: float = HOLE_FACTOR,
    catalog: Catalog | None = None,
    reconcile: bool = True,
) -> AuditReport:
    """Audit the trades of every installed venue (``symbols`` as for ``run``: ``BTC-USD,<venue>:BTC-USDT``)."""
    catalog = catalog or open_catalog(settings)
    sources = sorted(n for n, c in registry.connectors.items() if STREAM in c.streams)
    chosen = {s: symbols_for(s, symbols) for s in sources}
    sources = [s for s in sources if chosen[s] != []]
    return audit(catalog, settings.namespace, registry, collect_mappings(registry, settings.mappings_dir),
                 sources=sources, symbols=chosen, stream=STREAM, since=since, until=until, hole_factor=hole_factor,
                 reconcile=reconcile)


def run_repair(
    settings: Settings,
    registry: Registry,
    *,
    symbols: Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    hole_factor: float = HOLE_FACTOR,
    catalog: Catalog | None = None,
) -> Repaired:
    """Audit, fetch every gap again through its connector, unify what landed, and audit again."""
    catalog = catalog or open_catalog(settings)
    kwargs = {"symbols": symbols, "since": since, "until": until, "hole_factor": hole_factor, "catalog": catalog}
    before = run_audit(settings, registry, **kwargs)
    if not before.gaps:
        return Repaired(before, before)
    repairs = repair(catalog, settings.namespace, registry, before.gaps, options_for=settings.connector_options,
                     raw_payload=settings.raw_payload)
    unified = []
    if any(r.landed for r in repairs):
        sources = {f"{r.source}.{r.stream}" for r in repairs if r.landed}
        mappings = collect_mappings(registry, settings.mappings_dir)
        for target in sorted({m.target_table for m in mappings if m.source in sources}):
            unified.append(run_unify(settings, registry, target, catalog=catalog))
        rebuild_watermarks(catalog, settings.namespace, registry)
    return Repaired(before, run_audit(settings, registry, **kwargs), repairs, unified)
