"""Simulated venues on 127.0.0.1, serving SIMULATED market data; also the public API for a plugin's own venue.

``Sandbox(SandboxConfig(...)).start()`` serves them in-process on a free port;
``schemahub sandbox`` serves them in the foreground. See ``server.py`` for URLs.

A plugin contributes a simulated venue by subclassing ``VenueApp`` (routes through ``VenueApp.route``, so
rate limits, faults and stats behave as for every other venue), optionally trading in the shared ``Market`` through
a ``MarketVenue`` profile, and registering it with the ``register_sandbox_venues`` hook (docs/plugins.md).
"""

from schemahub_core.sandbox.archives import ARCHIVE_FAULTS, ArchiveShelf
from schemahub_core.sandbox.feeds import FirehosePlan
from schemahub_core.sandbox.limits import Limit, Verdict
from schemahub_core.sandbox.market import (
           ANCHOR,
           DEFAULT_DAYS,
           EVENT_AT,
           EVENT_SECONDS,
           LABEL,
           MARKET_END,
           MARKET_START,
           NS,
           REALISTIC_INTENSITY,
           Market,
           Quote,
           Trade,
           TradeColumns,
           to_ns,
)
from schemahub_core.sandbox.market import Venue as MarketVenue
from schemahub_core.sandbox.server import Sandbox, SandboxConfig, venue_apps
from schemahub_core.sandbox.venue import VenueApp, bad_request, int_param

__all__ = [
    "ANCHOR",
    "ARCHIVE_FAULTS",
    "DEFAULT_DAYS",
    "REALISTIC_INTENSITY",
    "EVENT_AT",
    "EVENT_SECONDS",
    "LABEL",
    "MARKET_END",
    "MARKET_START",
    "NS",
    "ArchiveShelf",
    "FirehosePlan",
    "Limit",
    "Market",
    "MarketVenue",
    "Quote",
    "Sandbox",
    "SandboxConfig",
    "Trade",
    "TradeColumns",
    "VenueApp",
    "Verdict",
    "bad_request",
    "int_param",
    "to_ns",
    "venue_apps",
]
