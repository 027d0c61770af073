"""Coverage: backfill any window, exactly once, in any order; concurrent backfill + forward under SIGKILL.

The planner's rules are unit-tested on spans; everything else runs the real engine on a real SQLite catalog,
against the scripted venue (fast, exact truth) or the sandbox's simulated venues on 127.0.0.1.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import run_cli
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from scripted_support import (
    NS,
    child_env,
    expected_rows,
    raw_keys,
    registry,
    restrict,
    settings_for,
    start_cli,
    unified_rows,
)

from schemahub_core.apps.pipeline import run_ingest
from schemahub_core.engine.catalog import open_catalog
from schemahub_core.engine.coverage import Hole, Span, conflicts, holes, merge, read_state
from schemahub_core.engine.state import watermark_rows
from schemahub_core.engine.unify import DEFAULT_MEMORY_MB, unify
from schemahub_core.testing.scripted import START_MS, trades_for


def test_holes_are_the_uncovered_parts_of_a_window_each_resuming_from_the_open_end_before_it() -> None:
    spans = [Span(10, 20, 7), Span(30, 40)]
    assert holes(spans, 0, 50) == [Hole(0, 10), Hole(20, 30, 7), Hole(40, 50)]
    assert holes(spans, 15, 35) == [Hole(20, 30, 7)]
    assert holes(spans, None, None) == [Hole(40, None)]  # no bounds: forward from the newest covered point
    assert holes([], None, None) == [Hole(None, None)]
    assert holes(spans, 12, 18) == []
    assert merge([Span(20, 30, 9), Span(10, 20, 7)]) == [Span(10, 30, 9)]
    # an open end holds records at its end: a claim starting there conflicts, unless it resumed from that cursor
    assert conflicts([Span(10, 20, 7)], Span(20, 25), None)
    assert not conflicts([Span(10, 20, 7)], Span(20, 25, 8), 7)
    assert conflicts([Span(20, 30)], Span(10, 20, 5), None) and not conflicts([Span(20, 30)], Span(10, 20), None)


# --- property: any set of overlapping windows, in any order, lands exactly their union --------------------

N_TRADES = 24
SPAN_MS = 13_000  # the scripted trades span about 11 s from START_MS


def _at(offset_ms: int) -> datetime:
    return datetime.fromtimestamp((START_MS + offset_ms) / 1000, UTC)


@st.composite
def window_runs(draw):
    windows = []
    for _ in range(draw(st.integers(1, 5))):
        a = draw(st.integers(-500, SPAN_MS))
        windows.append((a, draw(st.integers(a + 1, SPAN_MS + 500))))
    return {
        "btc": windows,
        "eth": draw(st.permutations(windows)),  # the same windows in another order
        "forward": draw(st.booleans()),  # then a run without bounds: forward from the newest covered point
        "commit_rows": draw(st.integers(3, 10)),
        "unify_after": draw(st.lists(st.booleans(), min_size=len(windows), max_size=len(windows))),
        # 1 MiB: every record batch is its own staged part and no day's keys stay cached (read back each time)
        "memory_mb": draw(st.sampled_from([1, DEFAULT_MEMORY_MB])),
    }


def _union(trades: list[dict], windows: list[tuple[int, int]], forward: bool) -> set[int]:
    inside = {t["id"] for t in trades for a, b in windows if a <= t["time"] - START_MS < b}
    if forward:
        newest = max(b for _, b in windows)
        inside |= {t["id"] for t in trades if t["time"] - START_MS >= newest}
    return inside


@pytest.mark.timeout(900)
@hsettings(max_examples=8, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=window_runs())
def test_any_overlapping_windows_in_any_order_land_exactly_their_union(plan) -> None:
    reg = registry()
    options = {"scripted": {"trades": N_TRADES, "page_size": 4}}
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_for(Path(tmp), options)
        catalog = open_catalog(settings)
        for i, unify_now in enumerate(plan["unify_after"]):
            for symbol, key in (("BTC-USD", "btc"), ("ETH-USD", "eth")):
                a, b = plan[key][i]
                stats = run_ingest(settings, reg, ["scripted"], symbols=[symbol], since=_at(a), until=_at(b),
                                   commit_rows=plan["commit_rows"], catalog=catalog)
                assert not [s.error for s in stats if s.error]
            if unify_now:
                unify(catalog, NS, reg, "trades_unified", [m for _, m in reg.mappings], memory_mb=plan["memory_mb"])
        if plan["forward"]:
            run_ingest(settings, reg, ["scripted"], catalog=catalog)
        unify(catalog, NS, reg, "trades_unified", [m for _, m in reg.mappings], memory_mb=plan["memory_mb"])
        raw = raw_keys(settings, "scripted")
        unified = unified_rows(settings)
        table = catalog.load_table((NS, "raw_scripted_trades"))
        spans = {s: read_state(table, "trades", s).spans for s in ("BTC-USD", "ETH-USD")}
    want = Counter()
    for symbol in ("BTC-USD", "ETH-USD"):
        trades = trades_for("scripted", 0, symbol, N_TRADES)
        ids = _union(trades, plan["btc"], plan["forward"])
        want.update((t["symbol"], t["id"]) for t in trades if t["id"] in ids)
        windows = merge(Span(START_MS * 1000 + a * 1000, START_MS * 1000 + b * 1000) for a, b in plan["btc"])
        if not plan["forward"]:
            assert [(s.start, s.end) for s in spans[symbol]] == [(w.start, w.end) for w in windows]
    assert raw == want  # no duplicate, no hole
    rows = restrict(expected_rows({"scripted": {"trades": N_TRADES}}), 0, "SCRIPTED")
    assert unified == Counter({r: n for r, n in rows.items() if (r[1].replace("-", ""), int(r[2])) in want})


def test_windows_on_a_sandbox_venue_in_any_order_land_exactly_their_union(tmp_path) -> None:
    """Overlapping windows on the simulated Binance (ids, ms times), out of order, small pages."""
    from schemahub_core.framework.config import load_settings
    from schemahub_core.framework.registry import get_registry
    from schemahub_core.sandbox import EVENT_AT, Sandbox, SandboxConfig

    with Sandbox(SandboxConfig.fast()) as sandbox:
        settings = load_settings()
        settings.home = tmp_path
        settings.catalog = settings_for(tmp_path, {}).catalog
        settings.connectors = {"binance": sandbox.connector_options("binance", page_size=200)}
        catalog = open_catalog(settings)
        reg = get_registry()
        windows = [(0, 20), (-30, 5), (10, 40), (60, 70), (35, 65)]  # seconds around the event, overlapping
        for a, b in windows:
            stats = run_ingest(settings, reg, ["binance.agg_trades"], symbols=["BTC-USDT"], commit_rows=300,
                               since=EVENT_AT + timedelta(seconds=a), until=EVENT_AT + timedelta(seconds=b),
                               catalog=catalog)
            assert not [s.error for s in stats if s.error], stats
        ids = catalog.load_table((NS, "raw_binance_agg_trades")).scan(selected_fields=("a",)).to_arrow()["a"] \
            .to_pylist()
        truth = sandbox.expected_trade_ids("binance", "BTCUSDT", EVENT_AT - timedelta(seconds=30),
                                           EVENT_AT + timedelta(seconds=70))
    assert len(ids) == len(set(ids)) and sorted(ids) == truth


# --- a backfill racing forward ingest of the same symbol, SIGKILLed at random points --------------------------

RACE_TRADES = 28


def _race_options(seed: int) -> dict:
    return {"scripted": {"seed": seed, "trades": RACE_TRADES, "page_size": 4, "slow_ms": 10}}


def _first_commit(settings, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until the child has committed to raw (or exited): then the two writers overlap for real."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if open_catalog(settings).load_table((NS, "raw_scripted_trades")).current_snapshot() is not None:
                return
        except Exception:  # noqa: BLE001 - catalog or table not created yet
            pass
        time.sleep(0.05)


@pytest.mark.timeout(900)  # 20 seeds of child processes: generous for a busy machine
def test_backfill_racing_forward_ingest_sigkilled_at_random_points_leaves_tables_exact(tmp_path: Path) -> None:
    """Per seed: forward ingest and a backfill of an overlapping window of the same symbol run at once, one of
    them a child process SIGKILLed at a random commit point (or timer), the other in this process; a rerun of
    the killed one then leaves raw holding each trade of their union exactly once."""
    fired = Counter()

    def one(seed: int) -> None:
        rng = random.Random(seed)
        home = tmp_path / f"s{seed}"
        home.mkdir()
        options = _race_options(seed)
        settings = settings_for(home / "h", options)
        trades = trades_for("scripted", seed, "BTC-USD", RACE_TRADES)
        start = trades[rng.randrange(4, 14)]["time"]
        a, b = sorted(rng.sample(range(-200, trades[-1]["time"] - START_MS + 200), 2))
        runs = {"forward": (datetime.fromtimestamp(start / 1000, UTC), None), "backfill": (_at(a), _at(b))}
        victim = "forward" if seed % 2 else "backfill"
        fault = f"{rng.choice(['ingest.before-commit', 'ingest.after-commit'])}:{rng.randint(1, 3)}"
        since, until = runs[victim]
        args = ["--since", since.isoformat()] + (["--until", until.isoformat()] if until else [])
        proc = start_cli(["run", "ingest", "scripted", "--symbols", "BTC-USD", "--commit-rows", "5", *args],
                         child_env(home, home / "h", options, fault if rng.random() < 0.8 else None), home)
        other = [n for n in runs if n != victim][0]
        _first_commit(settings, proc)
        stats = run_ingest(settings, registry(), ["scripted"], symbols=["BTC-USD"], since=runs[other][0],
                           until=runs[other][1], commit_rows=5)
        assert not [s.error for s in stats if s.error], (seed, stats)
        try:
            proc.wait(timeout=rng.uniform(0.2, 1.5))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode in (0, -signal.SIGKILL), f"seed {seed}: {err}"
        fired[proc.returncode == -signal.SIGKILL] += 1
        stats = run_ingest(settings, registry(), ["scripted"], symbols=["BTC-USD"], since=since, until=until)
        assert not [s.error for s in stats if s.error], (seed, stats)  # recover: rerun the killed one
        want = Counter((t["symbol"], t["id"]) for t in trades
                       if t["time"] >= start or START_MS + a <= t["time"] < START_MS + b)
        assert raw_keys(settings, "scripted") == want, f"seed {seed}: forward from {start}, backfill {a}..{b}"
        (mark,) = watermark_rows(open_catalog(settings), NS, registry())
        assert mark["rows"] == len(want), (seed, mark)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, range(20)))
    assert fired[True] >= 5, fired  # the kills really happened (most seeds; a small window may end first)


# --- after a forward run from "now", `run pipeline --since D --until D+1h` lands exactly that hour -------------

VENUE_TRADES = {  # source -> (symbol asked, raw id column, raw time column, native symbol in the sandbox)
    "binance": ("BTC-USDT", "id", "time", "BTCUSDT"),  # individual trades (ids as text, the seed's DDL)
    "coinbase": ("BTC-USD", "trade_id", "time", "BTC-USD"),
    "kraken": ("BTC-USD", "trade_id", "time", "XXBTZUSD"),
}


def test_backfill_of_an_older_hour_after_a_forward_run_lands_exactly_that_hour(tmp_path) -> None:

    from schemahub_core.framework.config import load_settings
    from schemahub_core.sandbox import EVENT_AT, Sandbox, SandboxConfig

    home = tmp_path / "home"
    symbols = ",".join(f"{source}:{v[0]}" for source, v in VENUE_TRADES.items())
    since, until = EVENT_AT - timedelta(minutes=12), EVENT_AT + timedelta(minutes=48)
    with Sandbox(SandboxConfig.fast()) as sandbox:
        env = {**sandbox.env(), "SCHEMAHUB_HOME": str(home), "SCHEMAHUB_LOAD_PLUGINS": ",".join(VENUE_TRADES)}
        forward = json.loads(run_cli("run", "pipeline", "trades_unified", "--symbols", symbols, "--json", env=env,
                                     cwd=tmp_path).stdout)
        assert all(s["landed"] > 0 for s in forward if s["step"] == "ingest"), forward
        hour = ["--since", since.isoformat(), "--until", until.isoformat()]
        backfill = json.loads(run_cli("run", "pipeline", "trades_unified", "--symbols", symbols, *hour, "--json",
                                      env=env, cwd=tmp_path).stdout)
        again = json.loads(run_cli("run", "pipeline", "trades_unified", "--symbols", symbols, *hour, "--json",
                                   env=env, cwd=tmp_path).stdout)
        truth = {source: sandbox.expected_trade_ids(source, v[3], since, until) for source, v in VENUE_TRADES.items()}
        truth["binance"] = [k[1] for k in sandbox.venues["binance"].expected_keys("trades", "BTC-USDT", since, until)]
    settings = load_settings()
    settings.home, settings.catalog = home, settings_for(home, {}).catalog
    catalog = open_catalog(settings)
    landed = {s["name"].split(".")[0]: s["landed"] for s in backfill if s["step"] == "ingest"}
    for source, (_, column, time_column, _) in VENUE_TRADES.items():
        raw = catalog.load_table((NS, f"raw_{source}_trades")).scan(selected_fields=(column, time_column)).to_arrow()
        ids = [int(i) for i in raw[column].to_pylist()]
        assert len(ids) == len(set(ids)), f"{source}: a trade landed twice"
        in_hour = sorted(i for i, t in zip(ids, raw[time_column].to_pylist(), strict=True) if since <= t < until)
        assert in_hour == truth[source], f"{source}: the hour differs from the venue's truth"
        assert landed[source] == len(truth[source])  # the backfill landed the hour and nothing else
    assert [s["landed"] for s in again if s["step"] == "ingest"] == [0, 0, 0]  # nothing left to land
    assert [s["commits"] for s in again if s["step"] == "ingest"] == [0, 0, 0]
    assert next(s for s in backfill if s["step"] == "unify")["unified"] == sum(map(len, truth.values()))
