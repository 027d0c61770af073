"""A small real lake from every installed venue, shared read-only by the SQL and interop tests.

The sandbox's simulated venues on 127.0.0.1 -> ``run_pipeline`` (the real engine) -> raw tables of every
venue, ``trades_unified`` (two unify commits, for time travel), ``quotes_unified``, and the meta tables.
Registered from ``tests/conftest.py`` as a pytest plugin.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import pytest

from schemahub_core.apps.pipeline import run_ingest, run_pipeline
from schemahub_core.engine.catalog import open_catalog
from schemahub_core.framework.config import Settings, default_catalog
from schemahub_core.framework.registry import get_registry
from schemahub_core.sandbox import EVENT_AT, Sandbox, SandboxConfig

FIRST = (EVENT_AT - timedelta(seconds=6), EVENT_AT + timedelta(seconds=2))
SECOND_UNTIL = EVENT_AT + timedelta(seconds=8)


@dataclass(frozen=True)
class VenueLake:
    settings: Settings
    first_unify: int  # the snapshot id of the first trades_unified commit


@pytest.fixture(scope="session")
def venue_lake(tmp_path_factory: pytest.TempPathFactory) -> VenueLake:
    """Read-only: tests must not write to it (other tests share it). Its own sandbox, stopped once built."""
    home = tmp_path_factory.mktemp("venue-lake")
    registry = get_registry()
    server = Sandbox(SandboxConfig.fast()).start()
    try:
        options = {name: server.connector_options(name, page_size=200) for name in server.venues}
        settings = Settings(home=home, catalog=default_catalog(home), connectors=options,
                            mappings_dir=home / "no-mapping-files")
        run_pipeline(settings, registry, "trades_unified", since=FIRST[0], until=FIRST[1])
        unified = open_catalog(settings).load_table((settings.namespace, "trades_unified"))
        first = unified.current_snapshot().snapshot_id
        run_pipeline(settings, registry, "trades_unified", since=FIRST[0], until=SECOND_UNTIL)
        run_pipeline(settings, registry, "quotes_unified")
        # Binance's aggregate trades (landed only when named): the raw table with the m / M_best_match pair
        run_ingest(settings, registry, ["binance.agg_trades"], since=FIRST[0], until=FIRST[1])
    finally:
        server.stop()
    return VenueLake(settings, first)
