"""The runs the CLI, the demo and other modules start: ingest sources, unify a target, or both.

``run_pipeline(settings, registry, "trades_unified")`` is ``schemahub run pipeline``:
ingest every source that has a mapping into the target, then one unify commit.
Every step is exactly-once (see ``ingest`` and ``unify``), so any of these can
be interrupted and simply run again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from pyiceberg.catalog import Catalog

from schemahub_core.engine.catalog import open_catalog
from schemahub_core.engine.ingest import RunStats, ingest
from schemahub_core.engine.limits import MAX_ROWS_PER_COMMIT, MAX_SECONDS_PER_COMMIT
from schemahub_core.engine.state import rebuild_watermarks
from schemahub_core.engine.unify import unify
from schemahub_core.framework.config import Settings
from schemahub_core.framework.mapping import Mapping, check_mapping, collect_mappings, mappings_for
from schemahub_core.framework.registry import Registry


def parse_sources(registry: Registry, specs: Sequence[str]) -> list[tuple[str, list[str] | None]]:
    """``binance`` (all its streams) or ``binance.trades``; unknown names fail before any work."""
    out: list[tuple[str, list[str] | None]] = []
    for spec in specs:
        source, _, stream = spec.partition(".")
        cls = registry.connectors.get(source)
        if cls is None:
            raise KeyError(f"unknown source {source!r} (installed: {', '.join(sorted(registry.connectors)) or 'none'};"
                           " see `schemahub plugins list`)")
        if stream and stream not in cls.streams:
            raise KeyError(f"source {source!r} has no stream {stream!r} (streams: {', '.join(sorted(cls.streams))})")
        out.append((source, [stream] if stream else None))
    return out


def symbols_for(source: str, symbols: Sequence[str] | None) -> list[str] | None:
    """``--symbols`` for one source: plain entries apply to every source, ``source:SYMBOL`` to that one.

    ``None`` means the connector's defaults. Venues list different pairs (``BTC-USDT`` on Binance,
    ``BTC-USD`` on Coinbase), so one pipeline run can name each: ``BTC-USDT,coinbase:BTC-USD``... A list
    whose entries all name other sources gives this one no symbol at all.
    """
    if not symbols:
        return None
    chosen = []
    for item in symbols:
        prefix, sep, symbol = item.partition(":")
        if not sep:
            chosen.append(item)
        elif prefix == source:
            chosen.append(symbol)
    return chosen


def target_mappings(settings: Settings, registry: Registry, target: str) -> list[Mapping]:
    if target not in registry.targets:
        raise KeyError(f"unknown target {target!r} (targets: {', '.join(sorted(registry.targets))})")
    return mappings_for(target, collect_mappings(registry, settings.mappings_dir))


def run_ingest(
    settings: Settings,
    registry: Registry,
    sources: Sequence[str],
    *,
    symbols: Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    pages_per_commit: int | None = None,
    commit_rows: int = MAX_ROWS_PER_COMMIT,
    commit_seconds: float = MAX_SECONDS_PER_COMMIT,
    on_progress: Callable[[RunStats], None] | None = None,
    catalog: Catalog | None = None,
) -> list[RunStats]:
    """Ingest each source (``name`` or ``name.stream``), then refresh ``schemahub_watermarks``."""
    catalog = catalog or open_catalog(settings)
    stats: list[RunStats] = []
    for source, streams in parse_sources(registry, sources):
        chosen = symbols_for(source, symbols)
        if chosen == []:
            continue
        stats += ingest(catalog, settings.namespace, registry, source, options=settings.connector_options(source),
                        streams=streams, symbols=chosen, since=since, until=until,
                        raw_payload=settings.raw_payload, pages_per_commit=pages_per_commit,
                        max_rows=commit_rows, max_seconds=commit_seconds, on_progress=on_progress)
    if stats:
        rebuild_watermarks(catalog, settings.namespace, registry)
    return stats


def run_unify(settings: Settings, registry: Registry, target: str, *, catalog: Catalog | None = None,
              memory_mb: int | None = None) -> RunStats:
    """One incremental, idempotent unify of ``target`` from all its mappings, within ``memory_mb`` (or the setting)."""
    catalog = catalog or open_catalog(settings)
    sink_cls = registry.sinks.get(settings.sink)
    sink = sink_cls(catalog, settings.namespace) if sink_cls is not None else None
    return unify(catalog, settings.namespace, registry, target, target_mappings(settings, registry, target),
                 sink=sink, memory_mb=memory_mb or settings.unify_memory_mb)


def run_pipeline(
    settings: Settings,
    registry: Registry,
    target: str,
    *,
    symbols: Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    pages_per_commit: int | None = None,
    commit_rows: int = MAX_ROWS_PER_COMMIT,
    commit_seconds: float = MAX_SECONDS_PER_COMMIT,
    on_progress: Callable[[RunStats], None] | None = None,
    catalog: Catalog | None = None,
    memory_mb: int | None = None,
) -> list[RunStats]:
    """Ingest every source mapped into ``target``, then unify it; the stats of every step."""
    catalog = catalog or open_catalog(settings)
    mappings = target_mappings(settings, registry, target)
    for mapping in mappings:  # a bad mapping fails before anything is written
        check_mapping(mapping, registry)
    sources = list(dict.fromkeys(m.source for m in mappings))  # connector.stream, in mapping order
    stats = run_ingest(settings, registry, sources, symbols=symbols, since=since, until=until,
                       pages_per_commit=pages_per_commit, commit_rows=commit_rows,
                       commit_seconds=commit_seconds, on_progress=on_progress, catalog=catalog)
    stats.append(run_unify(settings, registry, target, catalog=catalog, memory_mb=memory_mb))
    return stats
