"""SchemaHub core: plugin hooks, connector contract, mappings and Iceberg engines.

Plugin authors import everything they need from here::

    from schemahub_core import hookimpl, Connector, Stream, Column, CursorKind, Page
"""

from schemahub_core.framework.connector import (
    Column,
    Connector,
    ConnectorError,
    Cursor,
    CursorKind,
    IdContinuity,
    Page,
    Stream,
)
from schemahub_core.framework.hookspecs import hookimpl
from schemahub_core.framework.http import RateLimit, RetryableError, VenuePolicy, VenueSession, venue_session
from schemahub_core.framework.livefeed import LiveFeed, LiveQuote
from schemahub_core.framework.targets import Target

__all__ = [
    "Column",
    "Connector",
    "ConnectorError",
    "Cursor",
    "CursorKind",
    "IdContinuity",
    "LiveFeed",
    "LiveQuote",
    "Page",
    "RateLimit",
    "RetryableError",
    "Stream",
    "Target",
    "VenuePolicy",
    "VenueSession",
    "hookimpl",
    "venue_session",
]
