"""SchemaHub core: plugin hooks, connector contract, mappings and Iceberg engines.

Plugin authors import everything they need from here::

    from schemahub_core import hookimpl, Connector, Stream, Column, CursorKind, Page
"""

import schemahub_core.allocator  # noqa: F401  first: picks the allocator before anything loads pyarrow
from schemahub_core.framework.archives import (
    ArchiveError,
    ArchiveFile,
    ArchiveMissing,
    Period,
    archive_periods,
    csv_batches,
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
    VenueUnreachable,
)
from schemahub_core.framework.hookspecs import hookimpl
from schemahub_core.framework.http import (
    JSONNumber,
    RateLimit,
    RetryableError,
    VenuePolicy,
    VenueSession,
    dumps_exact,
    venue_session,
)
from schemahub_core.framework.livefeed import QUOTE_SCHEMA, LiveFeed, LiveQuote, QuoteBatch, vectorized_rows
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
    "JSONNumber",
    "LiveFeed",
    "QUOTE_SCHEMA",
    "QuoteBatch",
    "vectorized_rows",
    "LiveQuote",
    "Page",
    "Period",
    "RateLimit",
    "RetryableError",
    "Stream",
    "Target",
    "archive_periods",
    "csv_batches",
    "csv_text_batches",
    "fetch_text",
    "VenuePolicy",
    "VenueSession",
    "VenueUnreachable",
    "dumps_exact",
    "hookimpl",
    "parse_checksum",
    "venue_session",
]
