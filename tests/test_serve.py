"""``schemahub serve`` and ``replay --html`` in a real browser (Playwright driving Debian's Chromium headless).

The data is the sandbox's volatility event, ingested and unified into a real catalog in two steps (two
venues, then the third: two snapshots to travel between), plus best bid/ask for two venues taken from the
sandbox's own quote model, so the page shows quoted spreads for those and spreads from trades for the third.
Every value read off a page is compared with the engine's: ``Replay.state_at`` at the instant the page shows.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import requests
from browser_fixtures import BrowserPage
from click.testing import CliRunner
from conftest import SCHEMAHUB

from schemahub_core.apps.cli import cli
from schemahub_core.apps.live import build_session
from schemahub_core.apps.pipeline import run_ingest, run_unify
from schemahub_core.apps.replay import Replay, ReplayRequest, load_replay
from schemahub_core.apps.serve import WebServer, create_app, replay_payload, write_replay_html
from schemahub_core.engine.catalog import open_catalog
from schemahub_core.engine.tables import init_tables
from schemahub_core.framework.config import Settings, load_settings
from schemahub_core.framework.registry import get_registry
from schemahub_core.framework.targets import QUOTES_UNIFIED
from schemahub_core.sandbox import EVENT_AT, LABEL, Sandbox
from schemahub_core.testing.sandbox import _clear_sandbox_faults, sandbox  # noqa: F401

AT = "2024-02-08T15:12:04Z"
QUOTED = {"binance": ("BINANCE", "BTC-USDT", "BTCUSDT"), "coinbase": ("COINBASE", "BTC-USD", "BTC-USD")}

# what the page shows, read in one go (the player is paused first, so nothing moves while it is read)
READ_STATE = """() => {
  const num = (el) => el && el.dataset.value !== "" ? Number(el.dataset.value) : null;
  const venues = {};
  for (const tr of document.querySelectorAll("#venue-table tbody tr")) {
    venues[tr.dataset.venue] = {price: num(tr.querySelector(".price")), dev: num(tr.querySelector(".dev")),
      bid: num(tr.querySelector(".bid")), ask: num(tr.querySelector(".ask")),
      spread: num(tr.querySelector(".spread")), trades: num(tr.querySelector(".trades")),
      source: tr.querySelector(".src").textContent, priceText: tr.querySelector(".price").textContent};
  }
  return {t: Number(document.querySelector("#clock").dataset.tUs),
          tick: Number(document.querySelector("#clock").dataset.tick),
          slider: Number(document.querySelector("#slider").value), venues,
          disagreement: num(document.querySelector("#disagreement")), peak: num(document.querySelector("#peak")),
          peakAt: num(document.querySelector("#peak-at")),
          leadlag: [...document.querySelectorAll("#leadlag li")].map((li) => li.textContent)};
}"""


def _ingest(settings: Settings, sources: list[tuple[str, str]]) -> None:
    since, until = EVENT_AT - timedelta(seconds=3), EVENT_AT + timedelta(seconds=13)
    catalog = open_catalog(settings)
    for source, symbol in sources:
        stats = run_ingest(settings, get_registry(), [source], symbols=[symbol], since=since, until=until,
                           catalog=catalog)
        assert [s.error for s in stats] == [None] * len(stats)
    assert run_unify(settings, get_registry(), "trades_unified", catalog=catalog).error is None


@pytest.fixture(scope="module")
def event(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:  # noqa: F811
    """A catalog holding the sandbox event (two trades_unified snapshots) and quotes for two venues."""
    home = tmp_path_factory.mktemp("serve") / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCHEMAHUB_HOME", str(home))
        mp.delenv("SCHEMAHUB_CONFIG", raising=False)
        mp.chdir(home.parent)
        for key, value in sandbox.env().items():
            mp.setenv(key, value)
        settings = load_settings()
        catalog = open_catalog(settings)
        init_tables(catalog, settings.namespace, get_registry())
        _ingest(settings, [("binance.trades", "BTC-USDT"), ("coinbase.trades", "BTC-USD")])
        _ingest(settings, [("kraken.trades", "BTC-USD")])
        rows = []
        start_ns = int((EVENT_AT - timedelta(seconds=2)).timestamp()) * 1_000_000_000
        for venue, (exchange, symbol, native) in QUOTED.items():
            for i in range(0, 14_000, 100):  # the venue's simulated best bid/ask every 100 ms
                q = sandbox.venues[venue].market.quote(venue, "BTC", start_ns + i * 1_000_000)
                rows.append({"exchange": exchange, "symbol": symbol, "bid_price": q.bid, "bid_qty": q.bid_qty,
                             "ask_price": q.ask, "ask_qty": q.ask_qty, "quote_ts": q.time_ns // 1000,
                             "ingest_ts": q.time_ns // 1000, "base_asset": "BTC", "quote_asset": symbol[4:],
                             "native_symbol": native})
        quotes = pa.Table.from_pylist(rows, schema=pa.schema([f.with_type(pa.int64()) if f.name.endswith("_ts")
                                                              else f for f in QUOTES_UNIFIED.schema]))
        quotes = quotes.cast(QUOTES_UNIFIED.schema)
        catalog.load_table((settings.namespace, "quotes_unified")).append(quotes)
        yield settings


@pytest.fixture(scope="module")
def replay(event: Settings) -> Replay:
    return load_replay(open_catalog(event), event.namespace, ReplayRequest("BTC-USD", EVENT_AT, timedelta(seconds=12)))


@pytest.fixture(scope="module")
def server(event: Settings, sandbox: Sandbox) -> Iterator[WebServer]:  # noqa: F811
    app = create_app(lambda: open_catalog(event), event.namespace,
                     live=lambda: build_session(get_registry(), ["BTC-USD"], sandbox.connector_options),
                     defaults={"symbol": "BTC-USD", "at": AT, "window": "12s"}, caption=LABEL)
    with WebServer(app) as web:
        yield web


def _same(shown: float | None, engine: float) -> bool:
    """A figure on the page equals the engine's (no value shown where the engine has NaN)."""
    return shown is None if np.isnan(engine) else shown is not None and abs(shown - engine) <= 1e-9


def _assert_engine_state(shown: dict[str, Any], replay: Replay) -> None:
    """The page's venue rows, disagreement and peak at its instant equal ``Replay.state_at`` there."""
    state = replay.state_at(int(shown["t"]))
    assert set(shown["venues"]) == set(replay.venues)
    for j, venue in enumerate(replay.venues):
        row = shown["venues"][venue]
        assert _same(row["price"], state.prices[j]) and (row["price"] is None or row["price"] == state.prices[j])
        assert _same(row["dev"], state.deviation_bps[j]), (venue, row, state)
        assert _same(row["spread"], state.spread_bps[j]), (venue, row, state)
        assert row["trades"] == state.trades_so_far[j]
        bid, ask, _ = replay.quote_at(j, int(shown["t"]))
        if replay.spread_source_of(venue) == "quotes":
            assert _same(row["bid"], bid) and _same(row["ask"], ask) and row["source"] == "quotes"
        else:
            assert row["bid"] is None and row["source"].startswith("trades")
    assert _same(shown["disagreement"], state.disagreement_bps) and _same(shown["peak"], state.peak_bps)
    assert shown["peakAt"] == state.peak_at_us


def _open_replay(web_page: BrowserPage, server: WebServer) -> Any:
    page = web_page.page
    page.goto(f"{server.url}/replay")
    page.fill("#symbol", "BTC-USD")
    page.fill("#at", AT)
    page.fill("#window", "12s")
    page.click("#replay-button")
    page.wait_for_selector("#player:not([hidden])")
    page.select_option("#speed", "1")
    return page


def test_replay_page_plays_tick_by_tick_with_the_engines_values(web_page: BrowserPage, server: WebServer,
                                                                replay: Replay) -> None:
    page = _open_replay(web_page, server)
    page.wait_for_function("() => Number(document.querySelector('#clock').dataset.tick) >= 20")
    first = page.evaluate(READ_STATE)
    page.wait_for_function(f"() => Number(document.querySelector('#slider').value) > {first['slider']}")
    page.click("#play")  # pause
    shown = page.evaluate(READ_STATE)
    assert shown["slider"] > first["slider"] > 0 and shown["tick"] >= first["tick"] >= 20
    assert shown["t"] == replay.start_us + shown["slider"]
    _assert_engine_state(shown, replay)
    assert any("BINANCE leads COINBASE by ~" in line for line in shown["leadlag"]), shown["leadlag"]
    plot = page.locator("#chart .nsewdrag").first.bounding_box()  # the price plot's area
    box = page.locator("#leadlag").bounding_box()
    assert plot and box and (box["x"] >= plot["x"] + plot["width"] or box["y"] >= plot["y"] + plot["height"])
    # one tick forward: the next trade event
    page.click("#next")
    stepped = page.evaluate(READ_STATE)
    assert stepped["t"] == replay.t[replay.index_at(shown["t"]) + 1] and stepped["tick"] == shown["tick"] + 1
    _assert_engine_state(stepped, replay)
    web_page.screenshot("replay-page")
    assert web_page.errors() == []


def test_scrubbing_to_the_peak_shows_the_peak_disagreement(web_page: BrowserPage, server: WebServer,
                                                           replay: Replay) -> None:
    page = _open_replay(web_page, server)
    page.click("#play")  # pause the autoplay
    end = replay.state_at(replay.end_us - 1)
    assert end.peak_at_us is not None and end.peak_bps > 5
    page.fill("#slider", str(end.peak_at_us - replay.start_us))
    shown = page.evaluate(READ_STATE)
    assert shown["t"] == end.peak_at_us
    assert shown["disagreement"] == pytest.approx(end.peak_bps, abs=1e-9)
    assert shown["peak"] == pytest.approx(end.peak_bps, abs=1e-9) and shown["peakAt"] == end.peak_at_us
    _assert_engine_state(shown, replay)
    web_page.screenshot("replay-peak")
    page.fill("#slider", str(end.peak_at_us - replay.start_us - 1))  # 1 µs before: not there yet
    before = page.evaluate(READ_STATE)
    assert before["disagreement"] < end.peak_bps and before["peak"] < end.peak_bps
    assert web_page.errors() == []


def test_time_travel_to_the_first_snapshot_shows_two_venues(web_page: BrowserPage, server: WebServer,
                                                            event: Settings) -> None:
    table = open_catalog(event).load_table((event.namespace, "trades_unified"))
    first = min(table.snapshots(), key=lambda s: s.timestamp_ms).snapshot_id
    page = web_page.page
    page.goto(f"{server.url}/replay")
    page.wait_for_selector(f"#as_of option[value='{first}']", state="attached")
    page.select_option("#as_of", str(first))
    page.click("#replay-button")
    page.wait_for_selector("#player:not([hidden])")
    page.click("#play")
    shown = page.evaluate(READ_STATE)
    past = load_replay(open_catalog(event), event.namespace,
                       ReplayRequest("BTC-USD", EVENT_AT, timedelta(seconds=12), as_of=str(first)))
    assert set(shown["venues"]) == set(past.venues) == {"BINANCE", "COINBASE"}
    _assert_engine_state(shown, past)
    assert page.inner_text("#snapshot-note").startswith(f"snapshot {first}")
    # a bad field is one line on the page, not a traceback
    page.fill("#at", "yesterday")
    page.click("#replay-button")
    page.wait_for_function("() => document.querySelector('#error').textContent.length > 0")
    assert page.inner_text("#error") == "bad time 'yesterday': use ISO 8601, e.g. 2024-02-08T15:12:04Z"


def test_live_page_streams_quotes_and_highlights_a_divergence_within_1s(web_page: BrowserPage, server: WebServer,
                                                                        sandbox: Sandbox) -> None:  # noqa: F811
    page = web_page.page
    page.goto(f"{server.url}/live")
    ok = "#board tbody tr[data-status='ok']"
    page.wait_for_function(f"() => document.querySelectorAll(\"{ok}\").length === 3", timeout=20_000)
    mids = page.eval_on_selector_all("#board tbody tr", "rows => rows.map(r => r.dataset.venue + r.dataset.mid)")
    page.wait_for_function("mids => [...document.querySelectorAll('#board tbody tr')]"
                           ".some((r, i) => r.dataset.venue + r.dataset.mid !== mids[i])", arg=mids)
    assert {r.split("BTC")[0] for r in mids} >= set()  # the rows changed: quotes are streaming
    header = page.eval_on_selector_all("#board thead th", "ths => ths.map(th => th.textContent)")
    assert header == ["symbol", "venue", "market", "bid", "ask", "mid", "spread bps", "dev bps", "age ms", "status"]
    assert page.inner_text("#caption") == LABEL
    posted = time.monotonic()
    requests.post(f"http://{sandbox.host}:{sandbox.port}/_sandbox/live",
                  json={"venue": "coinbase", "diverge_bps": 25, "ms": 1500}, timeout=10).raise_for_status()
    page.wait_for_selector("#board tbody tr.alert[data-venue='COINBASE']", timeout=5_000)
    elapsed = time.monotonic() - posted
    row = page.eval_on_selector("#board tbody tr[data-venue='COINBASE']",
                                "r => ({status: r.dataset.status, dev: Number(r.dataset.deviation)})")
    print(f"divergence highlighted {elapsed * 1000:.0f} ms after the POST")  # shown with -s
    assert elapsed <= 1.0, f"the divergence showed after {elapsed:.3f} s"
    assert row["status"] == "DISCREPANCY" and row["dev"] > 5, row
    page.wait_for_selector("#events li.open[data-exchange='COINBASE']")
    assert page.locator("#board tbody tr.alert").count() == 1  # only the diverging venue
    web_page.screenshot("live-page")
    page.wait_for_selector("#events li:not(.open)[data-exchange='COINBASE']", timeout=10_000)  # it converged
    assert "(converged)" in page.inner_text("#events")
    # a dropped feed: the row goes stale (dimmed, out of the median) while it reconnects, then comes back
    assert sandbox.venues["binance"].feed.drop(refuse_ms=600) >= 1
    page.wait_for_selector("#board tbody tr.stale[data-venue='BINANCE'][data-status='stale (reconnecting)']")
    assert page.get_attribute("#board tbody tr[data-venue='BINANCE']", "data-deviation") == ""
    page.wait_for_selector("#board tbody tr[data-venue='BINANCE'][data-status='ok']", timeout=15_000)


def test_saved_replay_plays_offline_from_file_with_no_console_errors(web_page: BrowserPage, replay: Replay,
                                                                     tmp_path: Path) -> None:
    path = write_replay_html(replay, tmp_path / "replay.html")
    page = web_page.page
    blocked: list[str] = []
    page.context.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://")
                       else (blocked.append(route.request.url), route.abort()))
    page.goto(path.as_uri())
    page.wait_for_selector("#player:not([hidden])")
    assert page.is_hidden("#replay-button") and page.is_disabled("#symbol")
    page.select_option("#speed", "5")
    page.click("#play")
    page.wait_for_function("() => Number(document.querySelector('#clock').dataset.tick) >= 50")
    page.click("#play")
    shown = page.evaluate(READ_STATE)
    assert shown["slider"] > 0
    _assert_engine_state(shown, replay)
    assert page.evaluate("() => document.querySelectorAll('#chart .scatterlayer .trace').length") >= 7
    web_page.screenshot("replay-static")
    assert blocked == [] and all(u.startswith(("file://", "data:")) for u in web_page.requests), web_page.requests
    assert web_page.errors() == []


def test_replay_api_errors_are_one_line(server: WebServer) -> None:
    r = requests.get(f"{server.url}/api/replay", params={"symbol": "DOGE-USD", "at": AT}, timeout=30)
    assert r.status_code == 400 and r.json()["error"].startswith("unknown symbol DOGE-USD")
    r = requests.get(f"{server.url}/api/replay", params={"symbol": "BTC-USD", "at": AT, "window": "-3s"}, timeout=30)
    assert r.status_code == 400 and "\n" not in r.json()["error"]


def test_payload_rows_are_the_frame_model(replay: Replay) -> None:
    """Without a browser: every payload row is ``state_at`` of its event's instant."""
    payload = replay_payload(replay)
    t = np.array(payload["events"]["t"])
    last_of_instant = np.flatnonzero((t >= replay.start_us) & np.r_[t[1:] != t[:-1], True])
    for i in last_of_instant[np.linspace(0, len(last_of_instant) - 1, 25).astype(int)]:
        state = replay.state_at(int(t[i]))
        for j, venue in enumerate(payload["per_venue"]):
            assert venue["last"][i] == (None if np.isnan(state.prices[j]) else state.prices[j])
        assert payload["disagreement_bps"][i] == pytest.approx(state.disagreement_bps, nan_ok=True)


def test_cli_serve_listens_on_localhost_and_a_busy_port_is_one_line(home: Path) -> None:
    """``schemahub serve`` in a child process: it prints its URL, serves both pages, stops on SIGINT."""
    proc = subprocess.Popen([*SCHEMAHUB, "serve", "--port", "0", "--no-live"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        assert match, line
        url = match.group(0)
        assert "Replay" in requests.get(f"{url}/replay", timeout=30).text
        live = requests.get(f"{url}/api/live", timeout=30).json()
        assert live["rows"] == [] and "--no-live" in live["error"]
        busy = CliRunner().invoke(cli, ["serve", "--port", match.group(1), "--no-live"])
        assert busy.exit_code == 1 and busy.stderr.startswith("error: cannot listen on 127.0.0.1:")
        assert len(busy.stderr.strip().splitlines()) == 1, busy.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
