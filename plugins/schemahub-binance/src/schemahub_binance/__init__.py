"""SchemaHub plugin: Binance Spot connector (aggTrades, book ticker)."""

from pathlib import Path

from schemahub_core import hookimpl

from .connector import BinanceConnector

MAPPINGS = Path(__file__).parent / "mappings"


@hookimpl
def register_connectors(register):
    register(BinanceConnector)


@hookimpl
def register_mappings(register):
    for path in sorted(MAPPINGS.glob("*.yaml")):
        register(path)


@hookimpl
def register_sandbox_venues(register):
    from .sandbox import BinanceApp  # imported only when a sandbox starts: the connector needs no server code

    register(BinanceApp)
