"""The runs the CLI, the demo and other modules start: ingest sources, unify a target, or both.

``run_pipeline(settings, registry, "trades_unified")`` is ``schemahub run pipeline``:
ingest every source that has a mapping into the target, then one unify commit.
Every step is exactly-once (see ``ingest`` and ``unify``), so any of these can
be interrupted and simply run again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from pyiceberg.catalog import Catalog

from schemahub_core.engine.catalog import open_catalog
from schemahub_core.engine.ingest import Ago, RunStats, When, ingest
from schemahub_core.engine.limits import MAX_ROWS_PER_COMMIT, MAX_SECONDS_PER_COMMIT
from schemahub_core.engine.migrate import check as check_migrations
from schemahub_core.engine.shards import Shard
from schemahub_core.engine.sink import storage_errno, storage_problem
from schemahub_core.engine.state import rebuild_watermarks
from schemahub_core.engine.tables import WATERMARKS
from schemahub_core.engine.unify import unify
from schemahub_core.framework.config import ConfigError, Settings, option_problem
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


def check_connectors(settings: Settings, registry: Registry, sources: Sequence[str]) -> None:
    """Build every connector a run needs, so a bad option fails before anything is written.

    Connectors read their options when built (``Connector.option`` names the bad one); an error raised
    another way is still turned into one line naming the connector and, when its value shows in the
    message, the option.
    """
    for source in dict.fromkeys(spec.partition(".")[0] for spec in sources):
        cls = registry.connectors.get(source)
        if cls is None:
            continue  # parse_sources names it
        options = settings.connector_options(source)
        try:
            connector = cls(options)
        except ConfigError:
            raise
        except Exception as exc:
            named = [k for k, v in options.items() if isinstance(v, str | int | float) and repr(str(v)) in str(exc)]
            if named:
                raise ConfigError(option_problem(source, named[0], options[named[0]], exc)) from None
            raise ConfigError(f"connector {source}: cannot start with its options ({type(exc).__name__}: {exc}); "
                              f"check connectors.{source} in config/schemahub.yaml and SCHEMAHUB_{source.upper()}_*"
                              ) from None
        close = getattr(connector, "close", None)
        if close is not None:
            close()


def check_window(since: When | None, until: When | None) -> None:
    """An empty window fails before any work. Two relative bounds compare as spans; one of each kind is checked
    per venue once its clock is known (``ingest``)."""
    if isinstance(since, Ago) and isinstance(until, Ago):
        if since.delta <= until.delta:
            raise ConfigError(f"--since {since} is not before --until {until}: the window is empty, nothing would be "
                              "fetched")
    elif since is not None and until is not None and not isinstance(since, Ago) and not isinstance(until, Ago) \
            and since >= until:
        raise ConfigError(f"--since {since.isoformat()} is not before --until {until.isoformat()}: the window is "
                          "empty, nothing would be fetched")


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
    since: When | None = None,
    until: When | None = None,
    pages_per_commit: int | None = None,
    commit_rows: int = MAX_ROWS_PER_COMMIT,
    commit_seconds: float = MAX_SECONDS_PER_COMMIT,
    on_progress: Callable[[RunStats], None] | None = None,
    catalog: Catalog | None = None,
    shard: Shard | None = None,
) -> list[RunStats]:
    """Ingest each source (``name`` or ``name.stream``), then refresh ``schemahub_watermarks``.

    ``shard`` runs only the (source, stream, symbol) units it owns, so N processes on a shared catalog
    split one run between them (``engine/shards.py``).

    Everything is checked first (sources, window, every connector's options), so bad configuration writes
    nothing. An unreachable venue stops that venue; a warehouse that refuses writes stops the run.
    """
    parsed = parse_sources(registry, sources)
    check_window(since, until)
    check_connectors(settings, registry, sources)
    catalog = catalog or open_catalog(settings)
    check_migrations(catalog, settings.namespace, registry, [source for source, _ in parsed])
    stats: list[RunStats] = []
    for source, streams in parsed:
        chosen = symbols_for(source, symbols)
        if chosen == []:
            continue
        stats += ingest(catalog, settings.namespace, registry, source, options=settings.connector_options(source),
                        streams=streams, symbols=chosen, since=since, until=until,
                        raw_payload=settings.raw_payload, pages_per_commit=pages_per_commit,
                        max_rows=commit_rows, max_seconds=commit_seconds, on_progress=on_progress,
                        shard=shard)
        if stats and stats[-1].stop == "run":
            return stats
    if stats and catalog.table_exists((settings.namespace, WATERMARKS)):  # none: every source failed before work
        try:
            rebuild_watermarks(catalog, settings.namespace, registry)
        except Exception as exc:
            if storage_errno(exc) is None:
                raise
            failed = RunStats("ingest", WATERMARKS)
            failed.failed(exc)
            failed.error = storage_problem(exc, f"rebuilding {WATERMARKS}").replace(
                "(nothing landed twice)", "(the landed data is safe: the mirror is rebuilt from snapshots)")
            stats.append(failed)
    return stats


ENGINES = ("embedded", "spark")


def run_unify(settings: Settings, registry: Registry, target: str, *, catalog: Catalog | None = None,
              memory_mb: int | None = None, engine: str = "embedded", spark: Any = None) -> RunStats:
    """One incremental, idempotent unify of ``target`` from all its mappings, within ``memory_mb`` (or the setting).

    ``engine="spark"`` runs the mappings on Spark (``engine/spark_unify.py``) on the session ``spark``, or one
    built from the ``spark_master`` / ``spark_conf`` settings; the commit is the same.
    """
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r} (engines: {', '.join(ENGINES)})")
    catalog = catalog or open_catalog(settings)
    mappings = target_mappings(settings, registry, target)
    check_migrations(catalog, settings.namespace, registry, [m.connector for m in mappings])
    sink_cls = registry.sinks.get(settings.sink)
    sink = sink_cls(catalog, settings.namespace) if sink_cls is not None else None
    if engine == "spark":
        from schemahub_core.engine.spark import check_setup, settings_session
        from schemahub_core.engine.spark_unify import spark_unify

        for mapping in mappings:  # a bad mapping or a missing Java fails before anything starts
            check_mapping(mapping, registry)
        if spark is None:
            check_setup()
        return spark_unify(spark or (lambda: settings_session(settings, "schemahub-unify")), catalog,
                           settings.namespace, registry, target, mappings, sink=sink)
    return unify(catalog, settings.namespace, registry, target, mappings,
                 sink=sink, memory_mb=memory_mb or settings.unify_memory_mb)


def run_pipeline(
    settings: Settings,
    registry: Registry,
    target: str,
    *,
    symbols: Sequence[str] | None = None,
    since: When | None = None,
    until: When | None = None,
    pages_per_commit: int | None = None,
    commit_rows: int = MAX_ROWS_PER_COMMIT,
    commit_seconds: float = MAX_SECONDS_PER_COMMIT,
    on_progress: Callable[[RunStats], None] | None = None,
    catalog: Catalog | None = None,
    memory_mb: int | None = None,
    engine: str = "embedded",
    spark: Any = None,
) -> list[RunStats]:
    """Ingest every source mapped into ``target``, then unify it (on ``engine``); the stats of every step.

    Ingest is always embedded (it is bound by the venues, not by compute); ``engine`` is the unify step's.
    """
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r} (engines: {', '.join(ENGINES)})")
    if engine == "spark" and spark is None:
        from schemahub_core.engine.spark import check_setup

        check_setup()  # before ingest writes anything
    mappings = target_mappings(settings, registry, target)
    if not mappings:
        raise ConfigError(f"no installed venue is mapped into {target}: install one (pip install schemahub-<venue>) "
                          f"or add a mapping to {settings.mappings_dir}/ (see `schemahub plugins list`)")
    for mapping in mappings:  # a bad mapping fails before anything is written
        check_mapping(mapping, registry)
    sources = list(dict.fromkeys(m.source for m in mappings))  # connector.stream, in mapping order
    parse_sources(registry, sources)
    check_window(since, until)
    check_connectors(settings, registry, sources)
    catalog = catalog or open_catalog(settings)
    stats = run_ingest(settings, registry, sources, symbols=symbols, since=since, until=until,
                       pages_per_commit=pages_per_commit, commit_rows=commit_rows,
                       commit_seconds=commit_seconds, on_progress=on_progress, catalog=catalog)
    if any(s.stop == "run" for s in stats):
        return stats  # the warehouse refuses writes: unify would fail the same way
    stats.append(run_unify(settings, registry, target, catalog=catalog, memory_mb=memory_mb, engine=engine,
                           spark=spark))
    return stats
