"""Relative ``--since``/``--until`` count back from each venue's own clock (issue 20).

The sandbox's clock is in 2024 while the wall clock is not: ``--since 2h`` must mean the venue's last two hours.
Connectors tell their venue's clock through ``Connector.server_time`` (each venue's real server-time endpoint,
served by the simulated venues in the real wire format); a connector that cannot tell falls back to the wall
clock.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.compute as pc
import pytest
from conftest import run_cli

from schemahub_core.apps.pipeline import check_window
from schemahub_core.engine.catalog import open_catalog
from schemahub_core.engine.ingest import Ago, parse_window_time, resolve_window
from schemahub_core.framework.config import ConfigError, Settings, default_catalog
from schemahub_core.framework.connector import Connector, ConnectorError
from schemahub_core.framework.registry import get_registry
from schemahub_core.sandbox import Sandbox, SandboxConfig


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig.fast()) as server:
        yield server


def sandbox_now(sandbox: Sandbox) -> datetime:
    return datetime.fromtimestamp(sandbox.clock.now_ns() / 1e9, UTC)


@pytest.mark.parametrize("venue", ["binance", "coinbase", "kraken", "okx"])
def test_each_connector_reads_its_venues_clock(sandbox: Sandbox, venue: str) -> None:
    if venue not in sandbox.venues:
        pytest.skip(f"{venue} is not installed")
    connector = get_registry().connectors[venue](sandbox.connector_options(venue))
    before = sandbox_now(sandbox)
    told = connector.server_time()
    after = sandbox_now(sandbox)
    assert told is not None and told.tzinfo is not None
    resolution = timedelta(seconds=1) if venue == "kraken" else timedelta(milliseconds=1)  # Kraken: whole seconds
    assert before - resolution <= told <= after, (before, told, after)
    assert told.year == 2024  # the sandbox's clock, not the wall clock


def test_the_time_endpoints_speak_the_real_wire_formats(sandbox: Sandbox) -> None:
    import requests

    binance = requests.get(sandbox.base_url("binance") + "/api/v3/time", timeout=5).json()
    coinbase = requests.get(sandbox.base_url("coinbase") + "/time", timeout=5).json()
    kraken = requests.get(sandbox.base_url("kraken") + "/0/public/Time", timeout=5).json()
    assert set(binance) == {"serverTime"} and isinstance(binance["serverTime"], int)
    assert set(coinbase) == {"iso", "epoch"} and coinbase["iso"].endswith("Z") and isinstance(coinbase["epoch"], float)
    assert datetime.fromisoformat(coinbase["iso"]).timestamp() == pytest.approx(coinbase["epoch"], abs=1e-3)
    assert kraken["error"] == [] and set(kraken["result"]) == {"unixtime", "rfc1123"}
    assert isinstance(kraken["result"]["unixtime"], int)
    assert datetime.strptime(kraken["result"]["rfc1123"], "%a, %d %b %y %H:%M:%S %z").timestamp() == \
        kraken["result"]["unixtime"]


def test_since_2h_lands_the_last_two_sandbox_hours(home: Path, sandbox: Sandbox) -> None:
    start = sandbox_now(sandbox)
    proc = run_cli("run", "ingest", "binance.trades", "--symbols", "BTC-USDT", "--since", "2h", "--json",
                   env=sandbox.env())
    end = sandbox_now(sandbox)
    [stats] = json.loads(proc.stdout)
    assert stats["landed"] > 10_000 and not stats["error"], stats  # the wall clock's "2h ago" is in 2026: nothing
    settings = Settings(home=home, catalog=default_catalog(home))
    rows = open_catalog(settings).load_table((settings.namespace, "raw_binance_trades")).scan().to_arrow()
    first, last = pc.min(rows["time"]).as_py(), pc.max(rows["time"]).as_py()
    # the window starts 2 h before the venue's clock as read during the run, to the millisecond
    assert start - timedelta(hours=2, milliseconds=1) <= first <= end - timedelta(hours=2) + timedelta(seconds=1)
    assert last <= end
    # and holds every trade of the venue from there on, each once
    expected = sandbox.venues["binance"].expected_keys("trades", "BTC-USDT", first, last + timedelta(milliseconds=1))
    assert sorted(map(int, rows["id"].to_pylist())) == [key for _, key in expected]  # raw ids are text (seed DDL)


def test_relative_times_on_every_venue_of_a_run_use_that_venues_clock(home: Path, sandbox: Sandbox) -> None:
    start = sandbox_now(sandbox)
    proc = run_cli("run", "ingest", "coinbase.trades", "kraken.trades", "--symbols", "BTC-USD", "--since", "3m",
                   "--until", "1m", "--json", env=sandbox.env())
    end = sandbox_now(sandbox)
    stats = {s["name"]: s for s in json.loads(proc.stdout)}
    settings = Settings(home=home, catalog=default_catalog(home))
    catalog = open_catalog(settings)
    for venue in ("coinbase", "kraken"):
        assert stats[f"{venue}.trades BTC-USD"]["landed"] > 0, stats
        rows = catalog.load_table((settings.namespace, f"raw_{venue}_trades")).scan().to_arrow()
        times = rows["time"]
        assert pc.min(times).as_py() >= start - timedelta(minutes=3, seconds=1)  # Kraken's clock: whole seconds
        assert pc.max(times).as_py() < end - timedelta(minutes=1)


class NoClock(Connector):
    name = "noclock"
    streams = {}


class BrokenClock(Connector):
    name = "brokenclock"
    streams = {}

    def server_time(self) -> datetime:
        raise ConnectorError("brokenclock: /time returned 'soon'")


def test_without_a_venue_clock_relative_times_count_from_the_wall_clock() -> None:
    before = datetime.now(UTC)
    since, until = resolve_window(NoClock(), parse_window_time("2h"), parse_window_time("2024-02-09T00:00:00Z"))
    assert before - timedelta(hours=2) <= since <= datetime.now(UTC) - timedelta(hours=2)
    assert until == datetime(2024, 2, 9, tzinfo=UTC)
    # absolute bounds never ask the venue: a broken clock does not matter then
    assert resolve_window(BrokenClock(), until, None) == (until, None)
    with pytest.raises(ConnectorError, match="returned 'soon'"):
        resolve_window(BrokenClock(), Ago(timedelta(hours=1), "1h"), None)


def test_an_empty_relative_window_fails_before_any_work(home: Path) -> None:
    with pytest.raises(ConfigError, match="--since 1h is not before --until 2h"):
        check_window(parse_window_time("1h"), parse_window_time("2h"))
    proc = run_cli("run", "ingest", "binance", "--since", "5m", "--until", "10m", check=False)
    assert proc.returncode == 1 and proc.stderr.strip().startswith("error: --since 5m is not before --until 10m")
    assert not home.exists()


def test_a_relative_since_after_an_absolute_until_on_the_venues_clock_is_one_line(home: Path,
                                                                                  sandbox: Sandbox) -> None:
    proc = run_cli("run", "ingest", "binance.trades", "--symbols", "BTC-USDT", "--since", "1m", "--until",
                   "2024-02-09T00:00:00Z", env=sandbox.env(), check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "--since 1m is 2024-02-09T23:59" in lines[0] and "on binance's clock" in lines[0], lines[0]
    settings = Settings(home=home, catalog=default_catalog(home))
    assert not open_catalog(settings).table_exists((settings.namespace, "raw_binance_trades"))  # nothing written
