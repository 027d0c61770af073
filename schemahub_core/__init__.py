"""SchemaHub core: plugin hooks, connector contract, mappings and Iceberg engines.

Plugin authors import everything they need from here::

    from schemahub_core import hookimpl, Connector, Stream, Column, CursorKind, Page
"""

from .connector import Column, Connector, ConnectorError, Cursor, CursorKind, Page, Stream
from .hookspecs import hookimpl
from .http import RateLimit, RetryableError, VenuePolicy, VenueSession, venue_session
from .livefeed import LiveFeed, LiveQuote
from .targets import Target

__all__ = [
    "Column",
    "Connector",
    "ConnectorError",
    "Cursor",
    "CursorKind",
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
