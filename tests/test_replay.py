"""Replay (issue 5): lead–lag accuracy, partition pruning, time travel, terminal frames, offline HTML, errors.

Trades are written straight into a real ``trades_unified`` on a real SQLite catalog (one append per batch, so
there are several snapshots to travel between); the ingest engine is not needed to test the replay.
"""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from rich.console import Console

from schemahub_core.apps.cli import cli
from schemahub_core.apps.leadlag import lead_lag
from schemahub_core.apps.replay import (
    ReplayRequest,
    fmt_price,
    load_replay,
    play,
    render_frame,
    window_scan,
)
from schemahub_core.apps.serve import write_replay_html
from schemahub_core.engine.catalog import open_catalog
from schemahub_core.engine.tables import init_tables
from schemahub_core.framework.config import load_settings
from schemahub_core.framework.registry import get_registry
from schemahub_core.framework.targets import QUOTES_UNIFIED, TRADES_UNIFIED

EVENT = datetime(2024, 2, 8, 15, 12, 4, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SYMBOLS = {"BINANCE": "BTC-USDT", "COINBASE": "BTC-USD", "KRAKEN": "BTC-USD"}


def us(t: datetime) -> int:
    return (t - EPOCH) // timedelta(microseconds=1)


def trades(venue: str, t_us: np.ndarray, prices: np.ndarray, sides: list[str] | None = None,
           symbol: str | None = None, first_id: int = 0) -> pa.Table:
    """Rows shaped exactly like the unify step writes them."""
    n = len(t_us)
    symbol = symbol or SYMBOLS[venue]
    ts = pa.array(np.asarray(t_us, dtype=np.int64), type=pa.timestamp("us", tz="UTC"))
    return pa.table({
        "exchange": [venue] * n, "symbol": [symbol] * n,
        "trade_id": [str(first_id + i) for i in range(n)],
        "side": sides or ["BUY" if i % 2 else "SELL" for i in range(n)],
        "price": np.asarray(prices, dtype=np.float64), "quantity": np.full(n, 0.05),
        "trade_ts": ts, "ingest_ts": ts, "base_asset": [symbol.split("-")[0]] * n,
        "quote_asset": [symbol.split("-")[1]] * n, "native_symbol": [symbol.replace("-", "")] * n,
    }, schema=TRADES_UNIFIED.schema)


@pytest.fixture
def catalog(home: Path):
    settings = load_settings()
    cat = open_catalog(settings)
    init_tables(cat, settings.namespace, get_registry())
    return cat


def trades_table(catalog):
    return catalog.load_table((load_settings().namespace, "trades_unified"))


def simulate(lags_ms: dict[str, float], rates: dict[str, float], seed: int, *, seconds: float = 14.0,
             sigma_bps: float = 0.4, noise_bps: float = 1.2, jitter_ms: float = 15.0,
             half_spread_bps: float = 2.0) -> dict[str, tuple]:
    """A latent random-walk price (1 ms steps, a 6 s burst of triple volatility) seen by each venue with its
    lag (plus uniform latency jitter) at Poisson trade times; each trade prints at the bid or the ask (bounce
    by its taker side), with extra noise and the venue's own quote-currency basis. Returns
    ``{venue: (t_us, price, side)}``."""
    rng = np.random.default_rng(seed)
    n = int(seconds * 1000) + 2000
    vol = np.full(n, sigma_bps * 1e-4)
    vol[3000:9000] *= 3
    log_price = np.log(42_000.0) + np.cumsum(rng.normal(0.0, 1.0, n) * vol)
    out = {}
    for venue, lag in lags_ms.items():
        k = rng.poisson(rates[venue] * seconds)
        t_ms = np.sort(rng.uniform(1500, seconds * 1000, k))
        delay = lag + (rng.uniform(-jitter_ms, jitter_ms, k) if lag else 0.0)
        idx = np.clip((t_ms - delay).astype(np.int64), 0, n - 1)
        basis = 1.0003 if SYMBOLS[venue].endswith("USDT") else 1.0
        side = rng.choice([-1.0, 1.0], k)
        prices = np.exp(log_price[idx] + side * half_spread_bps * 1e-4 + rng.normal(0.0, noise_bps * 1e-4, k))
        out[venue] = ((t_ms * 1000).astype(np.int64) + us(EVENT) - 2_000_000, prices * basis, side)
    return out


@pytest.mark.parametrize("lag", [20, 45, 80, 120, 150])
def test_estimator_recovers_injected_lag_within_10ms(lag: int) -> None:
    # two seeds per lag; in the second Coinbase trades more than Binance, so the first pass measures against
    # Coinbase and the estimator must re-measure against the leader it found
    for seed, rates in ((lag, {"BINANCE": 60, "COINBASE": 25, "KRAKEN": 10}),
                        (lag + 1000, {"BINANCE": 30, "COINBASE": 45, "KRAKEN": 10})):
        series = simulate({"COINBASE": lag, "KRAKEN": 400, "BINANCE": 0}, rates, seed)
        result = lead_lag(series)
        coinbase = result.lag_of("COINBASE")
        assert result.leader == "BINANCE"
        assert coinbase is not None and coinbase.reference == "BINANCE"
        assert abs(coinbase.lag_ms - lag) <= 10, (lag, seed, coinbase)
        assert coinbase.ci_low_ms <= coinbase.lag_ms <= coinbase.ci_high_ms
        assert coinbase.reliable and "BINANCE leads COINBASE by ~" in " ".join(result.headlines())
        assert abs(result.lag_of("KRAKEN").lag_ms - 400) <= 25


def test_quiet_market_gives_low_confidence() -> None:
    """Nothing moves: there is nothing to align, and the confidence must say so."""
    rng = np.random.default_rng(7)
    t = np.sort(rng.uniform(0, 10_000_000, 400)).astype(np.int64)
    u = np.sort(rng.uniform(0, 10_000_000, 300)).astype(np.int64)
    result = lead_lag({"BINANCE": (t, 42_000 + rng.normal(0, 0.5, len(t))),
                       "COINBASE": (u, 42_000 + rng.normal(0, 0.5, len(u)))})
    assert result.lags[0].confidence < 0.5
    assert not result.lags[0].reliable and "no reliable estimate" in result.headlines()[0]


def test_a_venue_with_17_trades_gets_no_reliable_estimate() -> None:
    """The issue's case: 17 trades gave "MYVENUE leads BINANCE by ~-1000 ms (..., confidence 0.92)"."""
    series = simulate({"BINANCE": 0, "COINBASE": 60}, {"BINANCE": 60, "COINBASE": 25}, seed=11)
    t, p, side = series["COINBASE"]
    middle = np.arange(len(t) // 4, 3 * len(t) // 4)  # well inside the reference's span: all 17 are used
    pick = np.sort(np.random.default_rng(1).choice(middle, 17, replace=False))
    result = lead_lag({"BINANCE": series["BINANCE"], "MYVENUE": (t[pick], p[pick], side[pick])})
    est = result.lag_of("MYVENUE")
    assert est is not None and not est.reliable and "only 17 ticks" in est.note, est
    (line,) = result.headlines()
    assert line.startswith("MYVENUE vs BINANCE: no reliable estimate (only 17 ticks") and "leads" not in line
    assert result.leader == "BINANCE"  # an unreliable offset cannot make a venue the leader


def test_a_lag_beyond_the_search_range_is_not_reported() -> None:
    """True lag 400 ms searched within ±150 ms: the minimum sits at the boundary."""
    series = simulate({"BINANCE": 0, "COINBASE": 400}, {"BINANCE": 60, "COINBASE": 40}, seed=5)
    est = lead_lag(series, max_lag_ms=150).lag_of("COINBASE")
    assert est is not None and not est.reliable and "search boundary" in est.note, est


def test_an_interval_spanning_zero_is_not_a_lead() -> None:
    """Both venues see the same price at the same time: who leads is unknown, and must be said so."""
    series = simulate({"BINANCE": 0, "COINBASE": 0}, {"BINANCE": 40, "COINBASE": 40}, seed=9, jitter_ms=0)
    est = lead_lag(series).lag_of("COINBASE") or lead_lag(series).lag_of("BINANCE")
    assert est is not None and est.ci_low_ms <= 0 <= est.ci_high_ms, est
    assert not est.reliable and "spans zero" in est.note


def test_window_scan_reads_only_that_days_files(catalog) -> None:
    table = trades_table(catalog)
    for day in (-1, 0, 1):  # one append per day, then one append spanning all three days
        base = us(EVENT + timedelta(days=day))
        table.append(trades("BINANCE", base + np.arange(50) * 10_000, 42_000 + np.arange(50.0)))
    mixed = us(EVENT) + np.array([-86_400, 0, 86_400]) * 1_000_000 + 500_000
    table.append(trades("COINBASE", mixed, [42_000.0, 42_001.0, 42_002.0]))
    all_files = list(table.scan().plan_files())
    scan = window_scan(table, ["BTC-USD", "BTC-USDT"], us(EVENT) - 2_000_000, us(EVENT) + 12_000_000)
    files = list(scan.plan_files())
    event_day = (EVENT.date() - EPOCH.date()).days
    assert len(all_files) == 6
    assert len(files) == 2
    assert {task.file.partition[0] for task in files} == {event_day}
    replay = load_replay(catalog, "schemahub", ReplayRequest("BTC-USD", EVENT, timedelta(seconds=12)))
    assert replay.files_scanned == 2
    assert replay.summary()["trades"] == 51


def test_as_of_earlier_snapshot_shows_fewer_trades(catalog) -> None:
    table = trades_table(catalog)
    start = us(EVENT)
    table.append(trades("BINANCE", start + np.arange(40) * 100_000, np.full(40, 42_000.0)))
    table.append(trades("COINBASE", start + np.arange(30) * 150_000 + 40_000, np.full(30, 42_001.0)))
    table.append(trades("BINANCE", start + np.arange(40) * 100_000 + 50_000, np.full(40, 42_002.0), first_id=40))
    snaps = table.snapshots()
    first, second, current = (s.snapshot_id for s in snaps)

    def count(*extra: str) -> int:
        result = CliRunner().invoke(cli, ["replay", "--at", "2024-02-08T15:12:04Z", "--window", "12s",
                                          "--symbol", "BTC-USD", "--json", *extra])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["trades"]

    assert count() == 110
    assert count("--as-of", str(second)) == 70
    assert count("--as-of", str(first)) == 40
    assert count("--as-of", str(current)) == 110
    # a timestamp resolves through the snapshot log: just before the second commit, the table had one batch
    just_before = EPOCH + timedelta(milliseconds=snaps[1].timestamp_ms - 1)
    assert count("--as-of", just_before.isoformat()) == 40

    text = CliRunner().invoke(cli, ["replay", "--at", "2024-02-08T15:12:04Z", "--symbol", "BTC-USD",
                                    "--as-of", str(second)]).stdout  # no TTY: the printed report
    assert f"snapshot {second}" in text and "timeline" in text
    assert "no reliable estimate" in text and "leads" not in text  # flat prices: nothing to align


def _expected(rows: list[tuple[str, int, float]], t: int) -> tuple[dict[str, float], float]:
    """Last price per venue at t and the disagreement, computed the slow obvious way."""
    last: dict[str, float] = {}
    for venue, ts, price in sorted(rows, key=lambda r: r[1]):
        if ts <= t:
            last[venue] = price
    prices = sorted(last.values())
    return last, (prices[-1] - prices[0]) / float(np.median(prices)) * 1e4


def test_terminal_frames_show_the_data(catalog) -> None:
    start = us(EVENT)
    rows = [("COINBASE", start - 500_000, 41_990.00),  # lead-in: Coinbase's price at the window start
            ("BINANCE", start, 42_000.00), ("KRAKEN", start + 50_000, 42_005.00),
            ("BINANCE", start + 100_000, 42_010.00), ("COINBASE", start + 180_000, 42_012.50),
            ("BINANCE", start + 300_000, 42_050.00), ("COINBASE", start + 400_000, 42_060.00),
            ("KRAKEN", start + 600_000, 42_070.00), ("BINANCE", start + 900_000, 42_040.00)]
    table = trades_table(catalog)
    for venue in SYMBOLS:
        mine = [r for r in rows if r[0] == venue]
        table.append(trades(venue, np.array([r[1] for r in mine]), np.array([r[2] for r in mine])))
    quotes = catalog.load_table(("schemahub", "quotes_unified"))
    qt = pa.array([start + 10_000, start + 20_000], type=pa.timestamp("us", tz="UTC"))
    quotes.append(pa.table({"exchange": ["BINANCE", "COINBASE"], "symbol": ["BTC-USDT", "BTC-USD"],
                            "bid_price": [41_999.0, 41_989.0], "bid_qty": [1.0, 1.0],
                            "ask_price": [42_001.0, 41_991.5], "ask_qty": [1.0, 1.0], "quote_ts": qt,
                            "ingest_ts": qt, "base_asset": ["BTC", "BTC"], "quote_asset": ["USDT", "USD"],
                            "native_symbol": ["BTCUSDT", "BTC-USD"]}, schema=QUOTES_UNIFIED.schema))
    replay = load_replay(catalog, "schemahub", ReplayRequest("BTC-USD", EVENT, timedelta(seconds=1)))
    # BINANCE and COINBASE have quotes, KRAKEN only trades: its spread comes from its trades, labelled so
    assert replay.spread_source == "quotes/trades"
    assert [replay.spread_source_of(v) for v in replay.venues] == ["quotes", "quotes", "trades"]
    kraken = replay.venues.index("KRAKEN")
    assert replay.state_at(start + 700_000).spread_bps[kraken] == pytest.approx(65 / 42_037.5 * 1e4)
    peak = 0.0
    for offset_ms in (60, 250, 700):
        t = start + offset_ms * 1000
        console = Console(record=True, width=160, file=io.StringIO())
        console.print(render_frame(replay, t))
        text = console.export_text()
        last, disagreement = _expected(rows, t)
        # the peak so far: the largest disagreement at any trade instant since the window start
        instants = [start] + [r[1] for r in rows if start <= r[1] <= t]
        peak = max(_expected(rows, i)[1] for i in instants)
        assert f"+{offset_ms} ms" in text
        for venue, price in last.items():
            line = next(ln for ln in text.splitlines() if ln.startswith(venue + " "))
            assert fmt_price(price) in line, (venue, line)
        assert f"disagreement {disagreement:.2f} bps" in text
        assert f"peak {peak:.2f} bps" in text
        binance = next(ln for ln in text.splitlines() if ln.startswith("BINANCE "))
        assert f"{2 / 42_000 * 1e4:.2f}" in binance  # quoted spread 41,999 / 42,001
    assert replay.summary()["disagreement"]["peak_bps"] == pytest.approx(peak, abs=1e-3)
    # the animation ends on the window's last instant (a 1 s window at 100x plays in about 10 ms)
    console = Console(record=True, width=160, file=io.StringIO(), force_terminal=True)
    play(replay, console, speed=100.0)
    final = console.export_text()
    assert "+1,000 ms" in final and fmt_price(42_070.00) in final and fmt_price(42_040.00) in final


def test_html_is_offline_and_has_every_venue(catalog, tmp_path: Path) -> None:
    """The saved Replay page: nothing loaded from elsewhere, and its embedded data is the window's trades.
    (tests/test_serve.py plays it in Chromium from file://.)"""
    series = simulate({"COINBASE": 80, "KRAKEN": 300, "BINANCE": 0}, {"BINANCE": 50, "COINBASE": 20, "KRAKEN": 8},
                      seed=3)
    table = trades_table(catalog)
    for venue, (t, p, side) in series.items():
        table.append(trades(venue, t, p, ["BUY" if x > 0 else "SELL" for x in side]))
    replay = load_replay(catalog, "schemahub", ReplayRequest("BTC-USD", EVENT, timedelta(seconds=12)))
    html = write_replay_html(replay, tmp_path / "replay.html").read_text()
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, re.I)  # plotly.js and the page's script are inline
    assert not re.search(r"<link[^>]*href\s*=\s*[\"']?(https?:)?//", html, re.I)
    assert not re.search(r"@import\s+url\(\s*[\"']?(https?:)?//", html, re.I)
    assert "Plotly.newPlot" in html and 'id="slider"' in html and 'id="play"' in html
    embedded = html[html.index('<script id="config" type="application/json">') + 44:]
    config, _ = json.JSONDecoder().raw_decode(embedded)
    assert config["mode"] == "static"
    payload = config["payload"]
    events = payload["events"]
    start = us(EVENT)
    for venue, (t, p, _) in series.items():
        j = payload["venues"].index(venue)
        shown = [price for ts, v, price in zip(events["t"], events["venue"], events["price"], strict=True)
                 if v == j and ts >= start]
        assert np.array_equal(shown, p[t >= start])
    assert payload["markets"] == SYMBOLS
    assert any("BINANCE leads COINBASE by ~" in line for line in payload["lead_lag"]["headlines"])


@pytest.mark.parametrize("args, message", [
    (["--at", "2024-02-09T15:12:04Z", "--symbol", "BTC-USD"], "no BTC-USD trades between"),
    (["--at", "2024-02-08T15:12:04Z", "--symbol", "DOGE-USD"], "unknown symbol DOGE-USD"),
    (["--at", "2024-02-08T15:12:04Z", "--symbol", "BTC-USD", "--as-of", "123456789"],
     "snapshot 123456789 does not exist"),
])
def test_errors_are_one_line(catalog, args: list[str], message: str) -> None:
    trades_table(catalog).append(trades("BINANCE", us(EVENT) + np.arange(5) * 1000, np.full(5, 42_000.0)))
    result = CliRunner().invoke(cli, ["replay", *args])
    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_sandbox_event_shows_coinbase_lagging_binance_40_to_120ms(home: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end on the simulated venues: ingest + unify the event, then replay it from Iceberg."""
    from schemahub_core.apps.pipeline import run_ingest, run_unify
    from schemahub_core.sandbox import EVENT_AT, Sandbox, SandboxConfig

    registry = get_registry()
    with Sandbox(SandboxConfig.fast()) as sandbox:
        for key, value in sandbox.env().items():
            monkeypatch.setenv(key, value)
        settings = load_settings()
        catalog = open_catalog(settings)
        since, until = EVENT_AT - timedelta(seconds=3), EVENT_AT + timedelta(seconds=13)
        stats = []
        for source, symbol in (("binance.trades", "BTC-USDT"), ("coinbase.trades", "BTC-USD"),
                               ("kraken.trades", "BTC-USD")):
            stats += run_ingest(settings, registry, [source], symbols=[symbol], since=since, until=until,
                                catalog=catalog)
        assert [s.error for s in stats] == [None] * 3
        assert run_unify(settings, registry, "trades_unified", catalog=catalog).error is None

    html = tmp_path / "event.html"
    result = CliRunner().invoke(cli, ["replay", "--at", "2024-02-08T15:12:04Z", "--window", "12s",
                                      "--symbol", "BTC-USD", "--json", "--html", str(html)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert {v["venue"]: v["symbol"] for v in summary["venues"]} == SYMBOLS
    lead = summary["lead_lag"]
    coinbase = next(e for e in lead["lags"] if e["venue"] == "COINBASE")
    assert lead["leader"] == "BINANCE" and coinbase["reference"] == "BINANCE"
    assert 40 <= coinbase["lag_ms"] <= 120, lead["headlines"]
    kraken = next(e for e in lead["lags"] if e["venue"] == "KRAKEN")
    assert kraken["lag_ms"] > coinbase["lag_ms"], lead["headlines"]  # Kraken later still
    assert summary["disagreement"]["peak_bps"] > 5
    assert "BINANCE leads COINBASE by ~" in html.read_text()


def test_replay_reads_tables_whose_files_hold_large_strings(catalog) -> None:
    """Files written by other tools (or through Schema.as_arrow()) read back as large_string."""
    table = trades_table(catalog)
    start = us(EVENT)
    for venue, offset in (("BINANCE", 0), ("COINBASE", 40_000)):
        rows = trades(venue, start + np.arange(20) * 100_000 + offset, np.full(20, 42_000.0))
        table.append(rows.cast(table.schema().as_arrow()))
    assert pa.types.is_large_string(table.scan().to_arrow().schema.field("symbol").type)
    replay = load_replay(catalog, "schemahub", ReplayRequest("BTC-USD", EVENT, timedelta(seconds=12)))
    assert replay.summary()["trades"] == 40 and set(replay.markets) == {"BINANCE", "COINBASE"}
