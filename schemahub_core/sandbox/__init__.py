"""Simulated Binance, Coinbase and Kraken venues on 127.0.0.1, serving SIMULATED market data.

``Sandbox(SandboxConfig(...)).start()`` serves them in-process on a free port;
``schemahub sandbox`` serves them in the foreground. See ``server.py`` for URLs.
"""

from .limits import Limit
from .market import EVENT_AT, EVENT_SECONDS, LABEL, MARKET_END, MARKET_START, Market
from .server import FAST_LIMITS, REAL_LIMITS, SYMBOLS, Sandbox, SandboxConfig

__all__ = ["EVENT_AT", "EVENT_SECONDS", "FAST_LIMITS", "LABEL", "MARKET_END", "MARKET_START", "REAL_LIMITS",
           "SYMBOLS", "Limit", "Market", "Sandbox", "SandboxConfig"]
