"""Helpers for the exactly-once tests: scripted venues in-process or in child processes, expected rows.

The expected unified rows are computed here straight from the scripted venue's
records (taker side from the maker flag, canonical symbol, decimal text to
float), independently of the mapping engine under test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemahub_core.engine.catalog import open_catalog
from schemahub_core.framework.config import Settings, default_catalog
from schemahub_core.testing.entry_points import write_distribution
from schemahub_core.testing.scripted import ScriptedBConnector, ScriptedConnector, scripted_registry, trades_for

NS = "schemahub"
ROW_COLUMNS = ("exchange", "symbol", "trade_id", "side", "price", "quantity", "trade_ts")
SCHEMAHUB = [sys.executable, "-m", "schemahub_core"]
VENUES = {ScriptedConnector.name: ScriptedConnector.default_symbols,
          ScriptedBConnector.name: ScriptedBConnector.default_symbols}


def settings_for(home: Path, options: dict[str, dict[str, Any]]) -> Settings:
    """Settings for an in-process run: embedded catalog under ``home``, no mapping files."""
    return Settings(home=home, catalog=default_catalog(home), connectors=options,
                    mappings_dir=home / "no-mapping-files")


def registry():
    return scripted_registry()


def expected_rows(options: dict[str, dict[str, Any]]) -> Counter:
    """Every trade the scripted venues serve (minus malformed ones), as unified rows."""
    rows: Counter = Counter()
    for name, symbols in VENUES.items():
        o = options.get(name, {})
        malformed = frozenset(int(i) for i in str(o.get("malformed", "")).split(",") if i)
        for symbol in symbols:
            for r in trades_for(name, int(o.get("seed", 0)), symbol, int(o.get("trades", 50)), malformed):
                if r["id"] in malformed:
                    continue
                rows[(name.upper(), symbol, str(r["id"]), "SELL" if r["is_buyer_maker"] else "BUY",
                      float(r["price"]), float(r["qty"]), datetime.fromtimestamp(r["time"] / 1000, UTC))] += 1
    return rows


def restrict(rows: Counter, position: int, value: Any) -> Counter:
    """Only the entries whose key has ``value`` at ``position``."""
    return Counter({k: n for k, n in rows.items() if k[position] == value})


def unified_rows(settings: Settings) -> Counter:
    table = open_catalog(settings).load_table((NS, "trades_unified")).scan().to_arrow()
    return Counter(zip(*[table.column(c).to_pylist() for c in ROW_COLUMNS], strict=True))


def raw_keys(settings: Settings, source: str) -> Counter:
    table = open_catalog(settings).load_table((NS, f"raw_{source}_trades")).scan(
        selected_fields=("symbol", "id")).to_arrow()
    return Counter(zip(table.column("symbol").to_pylist(), table.column("id").to_pylist(), strict=True))


def served_keys(name: str, options: dict[str, Any]) -> Counter:
    """(native symbol, id) of every well-formed trade the venue serves."""
    malformed = frozenset(int(i) for i in str(options.get("malformed", "")).split(",") if i)
    return Counter((r["symbol"], r["id"]) for symbol in VENUES[name]
                   for r in trades_for(name, int(options.get("seed", 0)), symbol, int(options.get("trades", 50)))
                   if r["id"] not in malformed)


def child_env(tmp_path: Path, home: Path, options: dict[str, dict[str, Any]], fault: str | None = None) -> dict:
    """Environment for a child ``schemahub``: the scripted plugin found through a real entry point."""
    entry = tmp_path / "entry-points"
    if not entry.exists():
        write_distribution(entry, "schemahub-scripted", "0.0.1", {"scripted": "schemahub_core.testing.scripted"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMAHUB_")}
    env.update({"SCHEMAHUB_HOME": str(home), "SCHEMAHUB_LOAD_PLUGINS": "scripted",
                "PYTHONPATH": os.pathsep.join(filter(None, [str(entry), env.get("PYTHONPATH")]))})
    for name, opts in options.items():
        env.update({f"SCHEMAHUB_{name.upper()}_{k.upper()}": str(v) for k, v in opts.items()})
    if fault:
        env["SCHEMAHUB_TEST_FAULT"] = fault
    return env


def start_cli(args: list[str], env: dict, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([*SCHEMAHUB, *args], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
