"""Completeness audit and repair against the simulated venues (127.0.0.1) on a real SQLite catalog.

One history is landed while the sandbox's ``drop_ids`` fault hides chosen id ranges from every venue; the
audit must report exactly those ranges, ``--repair`` (crashed mid-way, then rerun) must fill them exactly once
while the venues serve them again, and a second audit is clean. A separate short history audits clean and
then shows a duplicate appended by hand.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner
from conftest import run_cli

from schemahub_core.apps.audit import run_audit
from schemahub_core.apps.cli import cli
from schemahub_core.apps.pipeline import run_pipeline
from schemahub_core.engine import audit as engine_audit
from schemahub_core.engine.archives import backfill
from schemahub_core.engine.catalog import open_catalog
from schemahub_core.framework.config import load_settings
from schemahub_core.framework.registry import get_registry
from schemahub_core.sandbox import EVENT_AT
from schemahub_core.testing.sandbox import _clear_sandbox_faults, sandbox  # noqa: F401

SINCE, UNTIL = EVENT_AT - timedelta(minutes=3), EVENT_AT + timedelta(minutes=1)
WINDOW = ["--since", SINCE.isoformat(), "--until", UNTIL.isoformat()]
UTC_UNTIL = UNTIL.isoformat()
# venue -> (native symbol, canonical symbol, raw id column)
VENUES = {"binance": ("BTCUSDT", "BTC-USDT", "id"), "coinbase": ("BTC-USD", "BTC-USD", "trade_id"),
          "kraken": ("XXBTZUSD", "BTC-USD", "trade_id"), "okx": ("BTC-USDT", "BTC-USDT", "tradeId")}
SYMBOLS = [f"{venue}:{canonical}" for venue, (_, canonical, _) in VENUES.items()]


def _env(home: Path, sandbox, **extra: str) -> dict[str, str]:  # noqa: F811
    return {"SCHEMAHUB_HOME": str(home), **sandbox.env(), **extra}


def _status(home: Path) -> dict[str, dict]:
    """``schemahub status --json`` in process: source -> its trades row."""
    out = CliRunner().invoke(cli, ["status", "--json"], env={"SCHEMAHUB_HOME": str(home)})
    assert out.exit_code == 0, out.output
    return {r["source"]: r for r in json.loads(out.output)["sources"] if r["stream"] == "trades"}


def _raw_ids(venue: str) -> list[int]:
    native, _, column = VENUES[venue]
    table = open_catalog(load_settings()).load_table((load_settings().namespace, f"raw_{venue}_trades"))
    symbol = get_registry().connectors[venue].streams["trades"].symbol_column
    data = table.scan(selected_fields=(symbol, column)).to_arrow()
    return sorted(int(i) for i in data.filter(pc.equal(data.column(symbol), native)).column(column).to_pylist())


def _truth(sandbox, venue: str, since, until) -> list[int]:  # noqa: F811
    """The ids the venue's trades stream holds: Binance's are its individual trades (the fills of its aggTrades)."""
    native, canonical, _ = VENUES[venue]
    if venue == "binance":
        return [k[1] for k in sandbox.venues[venue].expected_keys("trades", canonical, since, until)]
    return sandbox.expected_trade_ids(venue, native, since, until)


@pytest.fixture(scope="module")
def dropped(sandbox, tmp_path_factory):  # noqa: F811
    """A 4-minute history of every venue's BTC trades landed while chosen id ranges were dropped."""
    home = tmp_path_factory.mktemp("audit") / "home"
    truth = {v: _truth(sandbox, v, SINCE, UNTIL) for v in VENUES}
    b, c, k, o = (truth[v] for v in ("binance", "coinbase", "kraken", "okx"))
    drops = {"binance": [(b[100], b[139]), (b[300], b[300])], "coinbase": [(c[10], c[19])],
             "kraken": [(k[40], k[44])], "okx": [(o[150], o[199])]}
    for venue, ranges in drops.items():
        sandbox.inject(venue, "drop_ids", ids=[list(r) for r in ranges], symbol=VENUES[venue][0])
    sandbox.inject("binance", "drop_ids", ids=[(b[0], b[-1])], symbol="ETHUSDT")  # another symbol: not ours
    with pytest.MonkeyPatch.context() as mp:
        for key, value in _env(home, sandbox).items():
            mp.setenv(key, value)
        mp.delenv("SCHEMAHUB_CONFIG", raising=False)
        stats = run_pipeline(load_settings(), get_registry(), "trades_unified", symbols=SYMBOLS, since=SINCE,
                             until=UNTIL)
        assert all(s.error is None for s in stats), [s.error for s in stats]
        sandbox.faults.clear()  # the venues serve every trade again
        yield {"home": home, "truth": truth, "drops": drops}


def test_audit_reports_exactly_the_dropped_ranges_and_exits_non_zero(dropped, sandbox):  # noqa: F811
    proc = run_cli("audit", "--json", *WINDOW, env=_env(dropped["home"], sandbox), check=False)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["clean"] is False
    id_gaps = {(g["source"], g["first_id"], g["last_id"]) for g in report["gaps"] if g["kind"] == "ids"}
    assert id_gaps == {(v, lo, hi) for v, ranges in dropped["drops"].items() if v != "okx" for lo, hi in ranges}
    assert report["missing"] == sum(hi - lo + 1 for v, rs in dropped["drops"].items() if v != "okx" for lo, hi in rs)
    (hole,) = [g for g in report["gaps"] if g["kind"] == "time"]  # OKX ids are only monotonic: time tells
    o, (lo, hi) = dropped["truth"]["okx"], dropped["drops"]["okx"][0]
    assert (hole["source"], hole["id_before"], hole["id_after"]) == ("okx", o[o.index(lo) - 1], o[o.index(hi) + 1])
    days = {d["source"]: d for d in report["days"]}
    for venue, ranges in dropped["drops"].items():
        lost = sum(hi - lo + 1 for lo, hi in ranges)
        assert days[venue]["raw_rows"] == days[venue]["unified_rows"] == len(dropped["truth"][venue]) - lost
        assert (days[venue]["raw_duplicates"], days[venue]["unified_duplicates"], days[venue]["not_unified"],
                days[venue]["not_in_raw"]) == (0, 0, 0, 0)
    assert days["binance"]["missing_ranges"] == [list(r) for r in dropped["drops"]["binance"]]
    # key columns only: the scans' projected schemas
    assert sorted(report["columns_read"]["raw_binance_trades"]) == ["id", "symbol", "time"]
    assert sorted(report["columns_read"]["trades_unified"]) == ["exchange", "symbol", "trade_id", "trade_ts"]

    status = _status(dropped["home"])  # the figure the audit left, not a new audit
    for venue, ranges in dropped["drops"].items():
        lost = sum(hi - lo + 1 for lo, hi in ranges)
        assert status[venue]["gaps"] == len(ranges) and status[venue]["completeness"] < 1
        assert status[venue]["audit_stale"] is False and status[venue]["audit_window"] == [SINCE.isoformat(),
                                                                                           UTC_UNTIL]
        if venue != "okx":
            assert status[venue]["completeness"] == pytest.approx(1 - lost / len(dropped["truth"][venue]), abs=1e-6)

    text = run_cli("audit", *WINDOW, env=_env(dropped["home"], sandbox), check=False)
    assert text.returncode == 1 and "incomplete" in text.stdout
    b = dropped["drops"]["binance"][0]
    assert f"{b[0]}..{b[1]}" in text.stdout.replace("\n", "")


def test_repair_crashed_then_rerun_fills_the_gaps_exactly_once(dropped, sandbox):  # noqa: F811
    home = dropped["home"]
    crash = {"SCHEMAHUB_TEST_FAULT": "repair.after-commit:2"}
    killed = run_cli("audit", "--repair", *WINDOW, env=_env(home, sandbox, **crash), check=False)
    assert killed.returncode == -9  # SIGKILL after the second symbol's commit, before it knew
    crash = {"SCHEMAHUB_TEST_FAULT": "repair.before-commit:1"}
    killed = run_cli("audit", "--repair", *WINDOW, env=_env(home, sandbox, **crash), check=False)
    assert killed.returncode == -9  # SIGKILL with the data files written and no commit
    proc = run_cli("audit", "--repair", "--json", *WINDOW, env=_env(home, sandbox), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["clean"] is True and result["before"]["clean"] is False
    assert {r["source"] for r in result["repairs"]} == {"kraken", "okx"}  # the first two landed before the kill
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCHEMAHUB_HOME", str(home))
        for venue in VENUES:
            assert _raw_ids(venue) == dropped["truth"][venue], venue  # every trade, once
        unified = open_catalog(load_settings()).load_table((load_settings().namespace, "trades_unified"))
        keys = unified.scan(selected_fields=("exchange", "trade_id")).to_arrow()
        assert keys.num_rows == len(keys.group_by(["exchange", "trade_id"]).aggregate([])) == sum(
            len(t) for t in dropped["truth"].values())
    status = _status(home)
    assert {v: (r["completeness"], r["gaps"], r["rows"]) for v, r in status.items()} == {
        v: (1.0, 0, len(ids)) for v, ids in dropped["truth"].items()}  # rows count what the repair landed
    again = run_cli("audit", *WINDOW, env=_env(home, sandbox), check=False)
    assert again.returncode == 0 and "complete" in again.stdout


def test_a_clean_history_audits_clean_and_a_manual_duplicate_is_detected(sandbox, home, monkeypatch):  # noqa: F811
    for key, value in sandbox.env().items():
        monkeypatch.setenv(key, value)
    settings, registry = load_settings(), get_registry()
    until = SINCE + timedelta(minutes=1)
    run_pipeline(settings, registry, "trades_unified", symbols=["binance:BTC-USDT", "coinbase:BTC-USD"],
                 since=SINCE, until=until)
    (row,) = [r for r in _status(home).values() if r["source"] == "binance"]
    assert (row["completeness"], row["gaps"], row["audited_at"]) == (None, None, None)  # status does not audit
    clean = run_audit(settings, registry)
    assert {(r["completeness"], r["gaps"], r["audit_stale"]) for r in _status(home).values()} == {(1.0, 0, False)}
    text = CliRunner().invoke(cli, ["status"], env={"SCHEMAHUB_HOME": str(home)})
    assert text.exit_code == 0, repr(text.exception)
    text = text.output
    assert "from the last `schemahub audit`" in text and "s ago" in text
    assert clean.clean and not clean.gaps and {d.source for d in clean.days} == {"binance", "coinbase"}
    assert [(d.raw_rows, d.unified_rows, d.missing) for d in clean.days if d.source == "binance"] == [
        (len(_truth(sandbox, "binance", SINCE, until)),) * 2 + (0,)]

    catalog = open_catalog(settings)
    raw = catalog.load_table((settings.namespace, "raw_coinbase_trades"))
    doubled = raw.scan(limit=1).to_arrow()
    raw.append(doubled)  # a manual append of a row that is already there
    assert {s: r["audit_stale"] for s, r in _status(home).items()} == {"binance": False, "coinbase": True}
    found = run_audit(settings, registry)
    assert {s: r["audit_stale"] for s, r in _status(home).items()} == {"binance": False, "coinbase": False}
    assert not found.clean and [(d.source, d.raw_duplicates, d.unified_duplicates) for d in found.days
                                if d.problems] == [("coinbase", 1, 0)]
    unified = catalog.load_table((settings.namespace, "trades_unified"))
    row = unified.scan(row_filter="exchange == 'BINANCE'", limit=1).to_arrow()
    unified.append(pa.concat_tables([row, row]))
    found = run_audit(settings, registry, symbols=["binance:BTC-USDT"])
    assert [(d.source, d.raw_duplicates, d.unified_duplicates) for d in found.days] == [("binance", 0, 2)]
    proc = run_cli("audit", "--json", env={"SCHEMAHUB_HOME": str(home)}, check=False)
    assert proc.returncode == 1 and json.loads(proc.stdout)["unified_duplicates"] == 2

    # reconciliation: a unified row with no raw row, a raw row that unify consumed but the target lost
    i = row.schema.get_field_index("trade_id")
    ghost = row.set_column(i, row.schema.field(i), pa.array(["1"]))
    unified.append(ghost)
    lost = next(t for t in catalog.load_table((settings.namespace, "trades_unified")).scan(
        row_filter="exchange == 'COINBASE'", selected_fields=("trade_id",), limit=2).to_arrow()["trade_id"].to_pylist()
        if t != str(doubled["trade_id"][0].as_py()))
    unified.delete(f"exchange == 'COINBASE' and trade_id == '{lost}'")
    found = run_audit(settings, registry)
    assert {d.source: (d.not_in_raw, d.not_unified, d.pending) for d in found.days} == {
        "binance": (1, 0, 0), "coinbase": (0, 1, 1)}  # the doubled raw row came after unify: pending
    monkeypatch.setattr(engine_audit._Audit, "_integer_ids", lambda *args: None)  # the mapped-key comparison
    again = run_audit(settings, registry)
    assert [d.as_dict() for d in again.days] == [d.as_dict() for d in found.days]


def test_an_archive_missing_a_range_is_reported_exactly(sandbox, home, monkeypatch):  # noqa: F811
    """The simulated Binance archive of a day, served while ids are dropped: the audit finds exactly them."""
    for key, value in sandbox.env().items():
        monkeypatch.setenv(key, value)
    settings, registry = load_settings(), get_registry()
    day = datetime(2024, 2, 8, tzinfo=UTC)
    ids = _truth(sandbox, "binance", day, day + timedelta(days=1))  # the trades archive: individual trade ids
    drops = [(ids[5], ids[9]), (ids[100_000], ids[100_000]), (ids[-3], ids[-2])]
    sandbox.inject("binance", "drop_ids", ids=[list(r) for r in drops], symbol="BTCUSDT")
    files = backfill(open_catalog(settings), settings.namespace, registry, "binance", since=day,
                     until=day + timedelta(days=1), symbols=["BTC-USDT"], options=settings.connector_options("binance"))
    assert [(f.status, f.error) for f in files] == [("landed", None)]
    report = run_audit(settings, registry, symbols=["binance:BTC-USDT"])
    assert [(g.first_id, g.last_id) for g in report.gaps] == drops
    (d,) = report.days
    assert (d.raw_rows, d.missing, d.id_min, d.id_max) == (len(ids) - 8, 8, ids[0], ids[-1])
    assert d.pending == d.raw_rows and d.not_unified == 0  # not unified yet: pending, not missing


def _landed(table, stream, native: str, ids: list, times: list[datetime]) -> pa.Table:
    """Raw rows of ``stream`` with these ids and times; every other column null or a placeholder."""
    columns = {}
    for f in table.schema().as_arrow():
        if f.name == stream.symbol_column:
            columns[f.name] = pa.array([native] * len(ids), f.type)
        elif f.name == stream.id_column:
            columns[f.name] = pa.array(ids).cast(f.type)
        elif f.name == stream.event_time:
            columns[f.name] = pa.array(times, f.type)
        elif f.nullable:
            columns[f.name] = pa.nulls(len(ids), f.type)
        else:
            columns[f.name] = pa.array([0] * len(ids)).cast(f.type)
    return pa.table(columns, schema=pa.schema([f.with_type(pa.string()) if pa.types.is_large_string(f.type) else f
                                                for f in table.schema().as_arrow()]))


def test_the_day_by_day_audit_carries_ids_and_intervals_across_midnight(home):
    """Gaps and time holes that straddle midnight, where one day's read ends and the next begins, are found as
    if the days were one; the time-hole threshold is the 99th percentile of all intervals, exactly."""
    from schemahub_core.engine.tables import init_tables

    settings, registry = load_settings(), get_registry()
    catalog = open_catalog(settings)
    init_tables(catalog, settings.namespace, registry)
    midnight = datetime(2024, 2, 9, tzinfo=UTC)
    times = [midnight + timedelta(milliseconds=100 * (i - 500)) for i in range(1000)]
    for venue, native, ids, keep in (
        ("coinbase", "BTC-USD", list(range(1000, 2000)), [i for i in range(1000) if not 497 <= i <= 502]),
        ("okx", "BTC-USDT", [str(10 * i) for i in range(1000)], [i for i in range(1000) if not 450 <= i <= 549]),
    ):
        stream = registry.connectors[venue].streams["trades"]
        table = catalog.load_table((settings.namespace, f"raw_{venue}_trades"))
        for half in (keep[: len(keep) // 2], keep[len(keep) // 2:]):  # two appends, both across midnight
            table.append(_landed(table, stream, native, [ids[i] for i in half], [times[i] for i in half]))
    report = engine_audit.audit(catalog, settings.namespace, registry, [], sources=["coinbase", "okx"])
    assert {d.day for d in report.days} == {midnight.date() - timedelta(days=1), midnight.date()}
    (gap,) = [g for g in report.gaps if g.kind == "ids"]
    assert (gap.source, gap.first_id, gap.last_id, gap.time_before, gap.time_after) == (
        "coinbase", 1497, 1502, times[496], times[503])
    (hole,) = [g for g in report.gaps if g.kind == "time"]
    assert (hole.source, hole.id_before, hole.id_after, hole.time_before, hole.time_after) == (
        "okx", 4490, 5500, times[449], times[550])  # ids as integers, as the repair asks for them
    kept = np.array([int(times[i].timestamp() * 1e6) for i in range(1000) if not 450 <= i <= 549])
    assert report.hole_thresholds["okx.BTC-USDT"] == round(max(4 * np.percentile(np.diff(kept), 99), 1e6) / 1e6, 3)
    assert sum(d.raw_rows for d in report.days if d.source == "coinbase") == 994
    assert [d.raw_duplicates for d in report.days] == [0] * len(report.days)


@pytest.mark.parametrize("n", [1, 2, 3, 99, 100, 101, 1000, 12345])
def test_the_99th_percentile_from_only_the_largest_intervals_is_numpys(n):
    rng = np.random.default_rng(n)
    values = rng.exponential(1000, n).astype(np.int64) * (rng.random(n) < 0.9)  # ties and zeros too
    top = np.sort(values)[len(values) - min(n, engine_audit.top_needed(n)):]
    assert engine_audit.p99_of_top(rng.permutation(top), n) == pytest.approx(np.percentile(values, 99), abs=1e-9)
