"""SchemaHub plugin: OKX connector: a third-party example written against the public API only."""

from pathlib import Path

from schemahub_core import hookimpl

from .connector import OkxConnector

MAPPINGS = Path(__file__).parent / "mappings"


@hookimpl
def register_connectors(register):
    register(OkxConnector)


@hookimpl
def register_mappings(register):
    for path in sorted(MAPPINGS.glob("*.yaml")):
        register(path)


@hookimpl
def register_sandbox_venues(register):
    from .sandbox import OkxApp  # imported only when a sandbox starts: the connector needs no server code

    register(OkxApp)
