"""SchemaHub plugin: Coinbase Exchange connector (trades, ticker)."""

from pathlib import Path

from schemahub_core import hookimpl

from .connector import CoinbaseConnector

MAPPINGS = Path(__file__).parent / "mappings"


@hookimpl
def register_connectors(register):
    register(CoinbaseConnector)


@hookimpl
def register_mappings(register):
    for path in sorted(MAPPINGS.glob("*.yaml")):
        register(path)


@hookimpl
def register_sandbox_venues(register):
    from .sandbox import CoinbaseApp  # imported only when a sandbox starts: the connector needs no server code

    register(CoinbaseApp)
