"""OKX (the example third-party plugin) against its own simulated venue: paging, errors, mapping, the
conformance command, and the pipeline into trades_unified."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from schemahub_okx import MAPPINGS
from schemahub_okx.connector import POLICY, OkxConnector

from schemahub_core import ConnectorError
from schemahub_core.framework.mapping import load_mapping, parse_mapping
from schemahub_core.sandbox import EVENT_AT, to_ns
from schemahub_core.testing.conformance import assert_conformance, check_sides, fetch_all, map_records

SINCE, UNTIL = EVENT_AT - timedelta(minutes=3), EVENT_AT + timedelta(minutes=2)
SCHEMAHUB = [sys.executable, "-m", "schemahub_core"]


def connector(sandbox, **options) -> OkxConnector:
    return OkxConnector(sandbox.connector_options("okx", **{"page_size": 40, "backoff": 0.05, **options}))


def expected(sandbox, symbol: str, since: datetime = SINCE, until: datetime = UNTIL) -> list[tuple]:
    return sandbox.venues["okx"].expected_keys("trades", symbol, since, until)


def test_pages_cover_the_range_exactly_once_resume_and_edges(sandbox):
    keys = expected(sandbox, "BTC-USDT")
    report = assert_conformance(connector(sandbox), "trades", "BTC-USDT", SINCE, UNTIL, keys, min_pages=20)
    assert report["records"] == len(keys) > 500


def test_resume_from_a_cursor_walks_forward_in_id_windows(sandbox):
    ids = [k[1] for k in expected(sandbox, "ETH-USDT")]
    c = connector(sandbox)
    run = fetch_all(c, "trades", "ETH-USDT", cursor=ids[100], until=UNTIL)
    assert [r["tradeId"] for r in run.records] == ids[101:]
    assert all(len(p.records) <= 40 for p in run.pages)
    assert c.session.stats.requests == 1 + len(run.pages)  # the ceiling, then one request per window


def test_since_before_the_kept_history_starts_at_the_oldest_trade(sandbox):
    start = datetime(2024, 2, 6, tzinfo=UTC)  # the simulated history begins 2024-02-07
    until = datetime(2024, 2, 7, 0, 0, 30, tzinfo=UTC)
    run = fetch_all(connector(sandbox), "trades", "BTC-USDT", since=start, until=until)
    assert run.keys == expected(sandbox, "BTC-USDT", start, until) and run.keys


def test_forced_429_and_5xx_are_retried(sandbox):
    ids = [k[1] for k in expected(sandbox, "BTC-USDT")]
    c = connector(sandbox)
    sandbox.inject("okx", "429")
    sandbox.inject("okx", "5xx", status=503)
    sandbox.inject("okx", "rate_limit_body")  # code 50011 inside a 200 answer
    run = fetch_all(c, "trades", "BTC-USDT", cursor=ids[0], until=SINCE + timedelta(seconds=40))
    assert [r["tradeId"] for r in run.records] == ids[1:len(run.records) + 1] and run.records
    assert c.session.stats.retries == 3 and not sandbox.faults.pending()


def test_an_unknown_instrument_is_one_clear_error(sandbox):
    with pytest.raises(ConnectorError, match=r"okx: HTTP 400 on /okx/api/v5/market/history-trades: code 51001"):
        fetch_all(connector(sandbox), "trades", "DOGE-XYZ", since=SINCE)


# OKX's documented trade rows (every value a string, `side` = the taker's side) -> trades_unified.
CASES = [
    ({"instId": "BTC-USDT", "tradeId": "242720720", "px": "43210.5", "sz": "0.00125", "side": "buy",
      "ts": "1707405124123"}, ("BTC-USDT", "242720720", "BUY", 43210.5, 0.00125, "2024-02-08T15:12:04.123")),
    ({"instId": "ETH-USDT", "tradeId": "9", "px": "2460", "sz": "3", "side": "sell", "ts": "1707405124000"},
     ("ETH-USDT", "9", "SELL", 2460.0, 3.0, "2024-02-08T15:12:04")),
    ({"instId": "ETH-BTC", "tradeId": "77", "px": "0.05444", "sz": "1.5", "side": "sell", "ts": "1704067199999"},
     ("ETH-BTC", "77", "SELL", 0.05444, 1.5, "2023-12-31T23:59:59.999")),
]


@pytest.mark.parametrize(("raw", "want"), CASES, ids=[r["tradeId"] for r, _ in CASES])
def test_mapping_keeps_the_taker_side_and_milliseconds(raw, want):
    record = {**raw, "tradeId": int(raw["tradeId"])}  # as the connector yields it
    rows, rejected = map_records(OkxConnector.streams["trades"], load_mapping(MAPPINGS / "trades_unified.yaml"),
                                 [record])
    assert not rejected
    row = rows[0]
    symbol, trade_id, side, price, qty, ts = want
    assert (row["exchange"], row["symbol"], row["trade_id"], row["side"]) == ("OKX", symbol, trade_id, side)
    assert (row["price"], row["quantity"], row["native_symbol"]) == (price, qty, raw["instId"])
    assert row["trade_ts"] == datetime.fromisoformat(ts).replace(tzinfo=UTC)
    assert (row["base_asset"], row["quote_asset"]) == tuple(symbol.split("-"))


def test_the_side_check_catches_a_mapping_that_inverts_the_taker_side(sandbox):
    since, until = EVENT_AT, EVENT_AT + timedelta(seconds=20)
    run = fetch_all(connector(sandbox), "trades", "BTC-USDT", since=since, until=until)
    taker = sandbox.venues["okx"].taker_sides("trades", "BTC-USDT", since, until)
    text = (MAPPINGS / "trades_unified.yaml").read_text()
    for side_rule, verdict in (("upper", None), ("invert_side", "(every one: the side is inverted)")):
        mapping = parse_mapping(text.replace("side: upper", f"side: {side_rule}"))
        rows, _ = map_records(OkxConnector.streams["trades"], mapping, run.records)
        if verdict is None:
            assert check_sides(rows, keys=run.keys, taker=taker).endswith("each the taker's side")
        else:
            with pytest.raises(AssertionError, match=re.escape(verdict)):
                check_sides(rows, keys=run.keys, taker=taker)


def test_defaults_are_the_real_venue():
    c = OkxConnector({})
    assert c.base_url == "https://www.okx.com" and c.page_size == 100
    assert (POLICY.rate.limit, POLICY.rate.window) == (20, 2)


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SCHEMAHUB, *args], capture_output=True, text=True, env={**os.environ, **env}, cwd=cwd,
                          timeout=120)


def test_plugins_test_okx_passes_every_check(tmp_path):
    proc = _cli("plugins", "test", "okx", "--json", env={"SCHEMAHUB_HOME": str(tmp_path / "home")}, cwd=tmp_path)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["passed"], proc.stdout + proc.stderr
    statuses = {c["check"]: c["status"] for c in report["checks"]}
    assert set(statuses.values()) == {"passed"} and {"rate_limit", "mapping", "side", "resume"} <= set(statuses)


def test_plugins_test_against_a_base_url_skips_only_what_needs_the_simulated_venue(sandbox, tmp_path):
    proc = _cli("plugins", "test", "okx", "--base-url", sandbox.base_url("okx"), "--since", SINCE.isoformat(),
                "--until", UNTIL.isoformat(), "--json", env={"SCHEMAHUB_HOME": str(tmp_path / "home")}, cwd=tmp_path)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["server"] == sandbox.base_url("okx"), proc.stdout + proc.stderr
    statuses = {c["check"]: c["status"] for c in report["checks"]}
    assert statuses.pop("rate_limit") == "skipped" and set(statuses.values()) == {"passed"}, statuses


def test_run_pipeline_lands_okx_trades_in_trades_unified_once(sandbox, tmp_path, monkeypatch):
    from schemahub_core.engine.catalog import open_catalog
    from schemahub_core.framework.config import load_settings

    env = {"SCHEMAHUB_HOME": str(tmp_path / "home"), "SCHEMAHUB_LOAD_PLUGINS": "okx",
           "SCHEMAHUB_OKX_BASE_URL": sandbox.base_url("okx"), "SCHEMAHUB_OKX_RATE_LIMIT": "1000/1"}
    since, until = EVENT_AT - timedelta(seconds=30), EVENT_AT + timedelta(seconds=30)
    args = ("run", "pipeline", "trades_unified", "--symbols", "BTC-USDT,ETH-USDT", "--since", since.isoformat(),
            "--until", until.isoformat())
    for _ in range(2):  # the rerun lands nothing new
        proc = _cli(*args, env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    monkeypatch.setenv("SCHEMAHUB_HOME", env["SCHEMAHUB_HOME"])
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    rows = open_catalog(settings).load_table(f"{settings.namespace}.trades_unified").scan().to_arrow().to_pylist()
    want = expected(sandbox, "BTC-USDT", since, until) + expected(sandbox, "ETH-USDT", since, until)
    assert sorted((r["native_symbol"], int(r["trade_id"])) for r in rows) == sorted(want)
    assert {r["exchange"] for r in rows} == {"OKX"} and {r["symbol"] for r in rows} == {"BTC-USDT", "ETH-USDT"}
    lo, hi = (sandbox.market.index_at("okx", "BTC", to_ns(t)) for t in (since, until))
    taker = {t.id: t.taker.upper() for t in sandbox.market.trades_from("okx", "BTC", lo, hi - lo, to_ns(until))}
    btc = [r for r in rows if r["symbol"] == "BTC-USDT"]
    assert [r["side"] for r in btc] == [taker[int(r["trade_id"])] for r in btc]  # OKX's side is the taker's


def test_backfill_lands_the_daily_archive_as_the_rest_rows_and_a_rerun_lands_nothing(sandbox, tmp_path):
    """`schemahub backfill okx`: the plugin's archive capability against its simulated CDN (a zip per day, a
    header line, no checksum). Archive rows equal REST rows for the same trades, except ``_raw_payload``."""
    import io
    import zipfile

    import pyarrow.compute as pc
    import requests

    from schemahub_core.engine.catalog import open_catalog
    from schemahub_core.framework.config import Settings, default_catalog

    def env(home: Path) -> dict[str, str]:
        return {"SCHEMAHUB_HOME": str(home), "SCHEMAHUB_LOAD_PLUGINS": "okx",
                "SCHEMAHUB_OKX_BASE_URL": sandbox.base_url("okx"), "SCHEMAHUB_OKX_RATE_LIMIT": "1000/1"}

    def raw(home: Path):
        catalog = open_catalog(Settings(home=home, catalog=default_catalog(home)))
        return catalog.load_table(("schemahub", "raw_okx_trades")).scan().to_arrow().sort_by("tradeId")

    day = datetime(2024, 2, 8, tzinfo=UTC)
    archived_home, rest_home = tmp_path / "archive", tmp_path / "rest"
    args = ("backfill", "okx", "--symbols", "ETH-USDT", "--since", "2024-02-08", "--until", "2024-02-09", "--json")
    first = _cli(*args, env=env(archived_home), cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    [summary] = json.loads(first.stdout)
    assert (summary["file"], summary["status"]) == ("ETH-USDT-trades-2024-02-08.zip", "landed")
    archived = raw(archived_home)
    assert [("ETH-USDT", i) for i in archived.column("tradeId").to_pylist()] == \
        expected(sandbox, "ETH-USDT", day, day + timedelta(days=1))
    again = _cli(*args, env=env(archived_home), cwd=tmp_path)
    assert again.returncode == 0 and json.loads(again.stdout)[0]["status"] == "skipped", again.stderr
    assert raw(archived_home).num_rows == archived.num_rows

    url = (f"{sandbox.base_url('okx')}/cdn/okex/traderecords/trades/daily/20240208/ETH-USDT-trades-2024-02-08.zip")
    with zipfile.ZipFile(io.BytesIO(requests.get(url, timeout=30).content)) as z:
        head = z.read(z.namelist()[0]).decode().splitlines()[:2]
    assert head[0] == "instrument_name,trade_id,side,price,size,created_time"
    assert archived.column("_raw_payload")[0].as_py() == head[1]  # the line, not the header

    since, until = day + timedelta(hours=12), day + timedelta(hours=12, minutes=10)
    rest = _cli("run", "ingest", "okx", "--symbols", "ETH-USDT", "--since", since.isoformat(), "--until",
                until.isoformat(), env=env(rest_home), cwd=tmp_path)
    assert rest.returncode == 0, rest.stdout + rest.stderr
    from_rest = raw(rest_home)
    same = [c for c in from_rest.column_names if c not in ("_raw_payload", "_source_ingest_ts")]
    archived = archived.filter(pc.is_in(archived.column("tradeId"), from_rest.column("tradeId")))
    assert from_rest.num_rows > 300 and archived.select(same).equals(from_rest.select(same))
    assert json.loads(from_rest.column("_raw_payload")[0].as_py())["tradeId"] == str(from_rest["tradeId"][0])
