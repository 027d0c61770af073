"""The conformance suite against an installed connector: what ``schemahub plugins test NAME`` runs.

Without a base URL the connector runs against the plugin's own simulated venue (hook
``register_sandbox_venues``), served in-process twice: once with generous limits for the paging checks and
the venue's truth for the gap check, once with a tight limit for the rate-limit check. With a base URL it runs
against that server (a real venue, or a test host) and the checks that need a simulated venue are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from schemahub_core.framework.mapping import collect_mappings
from schemahub_core.framework.registry import Registry, get_registry
from schemahub_core.testing.conformance import CheckResult, run_suite

TIGHT_LIMIT = (20, 1)  # requests per second the rate-limit check allows the venue


@dataclass
class SuiteReport:
    """What ``plugins test`` prints: the run's parameters and one result per check."""

    connector: str
    stream: str
    symbol: str
    since: datetime
    until: datetime
    server: str  # "simulated venue" or the base URL
    results: list[CheckResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.status != "failed" for r in self.results)

    @property
    def failed(self) -> list[str]:
        return [r.name for r in self.results if r.status == "failed"]

    def as_dict(self) -> dict[str, Any]:
        return {"connector": self.connector, "stream": self.stream, "symbol": self.symbol,
                "since": self.since.isoformat(), "until": self.until.isoformat(), "server": self.server,
                "passed": self.passed, "failed": self.failed, "checks": [r.as_dict() for r in self.results]}


def check_installed(name: str, *, base_url: str | None = None, stream: str = "trades", symbol: str | None = None,
                    since: datetime | None = None, until: datetime | None = None, page_size: int = 25,
                    min_pages: int = 5, options: dict[str, Any] | None = None, mappings_dir: Any = None,
                    registry: Registry | None = None) -> SuiteReport:
    """Run every conformance check on connector ``name``; ``KeyError`` (one line) when it cannot even start."""
    registry = registry or get_registry()
    cls = registry.connectors.get(name)
    if cls is None and name in registry.errors:  # installed, but refused (e.g. colliding column names)
        raise KeyError(f"connector {name!r} failed to register: {registry.errors[name]}")
    if cls is None:
        raise KeyError(f"no connector {name!r} installed (installed: {', '.join(sorted(registry.connectors))}; "
                       "see `schemahub plugins list`)")
    if stream not in cls.streams:
        raise KeyError(f"connector {name!r} has no stream {stream!r} (streams: {', '.join(sorted(cls.streams))})")
    symbol = symbol or (cls.default_symbols[0] if cls.default_symbols else None)
    if symbol is None:
        raise KeyError(f"connector {name!r} declares no default_symbols: pass --symbol")
    mappings = [m for m in collect_mappings(registry, mappings_dir) if m.source == f"{name}.{stream}"]
    base = {**(options or {}), "page_size": page_size}
    if base_url:
        until = until or datetime.now(UTC) - timedelta(minutes=1)
        since = since or until - timedelta(minutes=10)
        report = SuiteReport(name, stream, symbol, since, until, base_url)
        report.results = run_suite(cls({**base, "base_url": base_url}), stream, symbol, since, until,
                                   min_pages=min_pages, registry=registry, mappings=mappings)
        return report
    from schemahub_core.sandbox import EVENT_AT, Limit, Sandbox, SandboxConfig, venue_apps

    app = {**venue_apps(), **registry.sandbox_venues}.get(name)
    if app is None:
        raise KeyError(f"{name!r} registers no simulated venue (hook register_sandbox_venues): pass --base-url")

    since = since or EVENT_AT - timedelta(minutes=2)
    until = until or EVENT_AT + timedelta(minutes=1)
    report = SuiteReport(name, stream, symbol, since, until, "simulated venue")
    tight = SandboxConfig.fast(venues={name: app}, **{name: Limit(*TIGHT_LIMIT, burst=TIGHT_LIMIT[0])})
    with Sandbox(SandboxConfig.fast(venues={name: app})) as sandbox, Sandbox(tight) as limited:
        connector = cls({**base, **sandbox.connector_options(name)})
        throttled = cls({**base, **limited.connector_options(name)})
        venue = sandbox.venues[name]
        report.results = run_suite(connector, stream, symbol, since, until,
                                   expected_keys=venue.expected_keys(stream, symbol, since, until),
                                   min_pages=min_pages, registry=registry, mappings=mappings,
                                   limited=(throttled, limited, name),
                                   taker_sides=venue.taker_sides(stream, symbol, since, until))
    return report
