"""SchemaHub core: plugin hooks, connector contract, mappings and Iceberg engines.

Plugin authors import everything they need from here::

    from schemahub_core import hookimpl, Connector, Stream, Column, CursorKind, Page
"""

from schemahub_core.framework.archives import (
    ArchiveError,
    ArchiveFile,
    ArchiveMissing,
    Period,
    archive_periods,
    csv_text_batches,
    fetch_text,
    parse_checksum,
)
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
    "ArchiveError",
    "ArchiveFile",
    "ArchiveMissing",
    "Column",
    "Connector",
    "ConnectorError",
    "Cursor",
    "CursorKind",
    "IdContinuity",
    "LiveFeed",
    "LiveQuote",
    "Page",
    "Period",
    "RateLimit",
    "RetryableError",
    "Stream",
    "Target",
    "archive_periods",
    "csv_text_batches",
    "fetch_text",
    "VenuePolicy",
    "VenueSession",
    "hookimpl",
    "parse_checksum",
    "venue_session",
]
