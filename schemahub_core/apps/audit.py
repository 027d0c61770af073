"""``schemahub audit``: check every venue's trades for gaps and duplicates, and repair what is missing.

The work lives in ``engine.audit`` (read key columns, find gaps, duplicates, time holes, reconcile raw with
unified) and ``engine.repair`` (fetch each gap's window, land what raw lacks exactly once); this module picks
the sources and symbols from the settings and, after a repair, unifies and audits again.

Every audit leaves its completeness per (source, stream, symbol) in ``<home>/last_audit.json``, with when it
ran, its window and the raw snapshot it read: ``status`` shows that figure and its age instead of reading
the raw tables again, and says when raw has taken new data since (the figure is then stale).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Operation

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
LAST_AUDIT = "last_audit.json"


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
    report = audit(catalog, settings.namespace, registry, collect_mappings(registry, settings.mappings_dir),
                   sources=sources, symbols=chosen, stream=STREAM, since=since, until=until, hole_factor=hole_factor,
                   reconcile=reconcile)
    remember(settings, report, since, until)
    return report


def _summary_path(settings: Settings) -> Path:
    return settings.home / LAST_AUDIT


def remember(settings: Settings, report: AuditReport, since: datetime | None, until: datetime | None) -> None:
    """Merge ``report``'s completeness per (source, stream, symbol) into the summary ``status`` reads.

    Symbols this audit did not cover keep their earlier figures; the file is replaced atomically. A home that
    cannot be written only costs ``status`` its figure.
    """
    now = datetime.now(UTC).isoformat()
    try:
        rows = last_audit(settings)
    except ValueError:
        rows = {}
    shares = report.completeness()
    for (source, stream, symbol), share in shares.items():
        days = [d for d in report.days if (d.source, d.stream, d.symbol) == (source, stream, symbol)]
        rows[f"{source}.{stream}.{symbol}"] = {
            "completeness": round(share, 6),
            "gaps": sum(1 for g in report.gaps if (g.source, g.stream, g.symbol) == (source, stream, symbol)),
            "missing": sum(d.missing for d in days), "time_holes": sum(d.time_holes for d in days),
            "raw_duplicates": sum(d.raw_duplicates for d in days),
            "audited_at": now, "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
            "first_day": str(min(d.day for d in days)), "last_day": str(max(d.day for d in days)),
            **report.snapshots.get(f"{source}.{stream}", {}),
        }
    path = _summary_path(settings)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"version": 1, "rows": rows}, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass


def last_audit(settings: Settings) -> dict[str, dict[str, Any]]:
    """``"source.stream.symbol"`` -> what the last audit covering it found (empty before any audit).
    Raises ``ValueError`` when the file is not a summary this version wrote."""
    path = _summary_path(settings)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable audit summary ({exc}); run `schemahub audit` again") from None
    if not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("rows"), dict):
        raise ValueError(f"{path}: not an audit summary; run `schemahub audit` again")
    return data["rows"]


def changed_since(table: Table, audited: dict[str, Any]) -> bool:
    """True when ``table`` took data after the snapshot the audit read (appends, overwrites, deletes; a
    compaction rewrites the same rows and does not count), so the audit's figure may no longer hold."""
    current = table.current_snapshot()
    if current is None or current.snapshot_id == audited.get("snapshot_id"):
        return False
    after = audited.get("sequence_number")
    for snapshot in table.snapshots():
        newer = (snapshot.sequence_number > after if after is not None and snapshot.sequence_number is not None
                 else snapshot.timestamp_ms > audited.get("timestamp_ms", 0))
        operation = snapshot.summary.operation if snapshot.summary is not None else None
        if newer and operation != Operation.REPLACE:
            return True
    return False


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
