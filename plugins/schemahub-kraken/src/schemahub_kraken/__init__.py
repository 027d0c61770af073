"""SchemaHub plugin: Kraken Spot connector (Trades, Ticker)."""

from pathlib import Path

from schemahub_core import hookimpl

from .connector import KrakenConnector

MAPPINGS = Path(__file__).parent / "mappings"


@hookimpl
def register_connectors(register):
    register(KrakenConnector)


@hookimpl
def register_mappings(register):
    for path in sorted(MAPPINGS.glob("*.yaml")):
        register(path)


@hookimpl
def register_sandbox_venues(register):
    from .sandbox import KrakenApp  # imported only when a sandbox starts: the connector needs no server code

    register(KrakenApp)
