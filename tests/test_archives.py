"""Bulk archives -> raw, exactly once per file, against the simulated Binance archives on 127.0.0.1.

Real pieces: the sandbox's zips and CHECKSUMs over HTTP, the Binance plugin's reader, a real SQLite catalog,
``schemahub backfill`` in child processes (SIGKILLed at commit points). To keep the suite lean the simulated
Binance here trades a tenth of its default rate (about 17k ETHUSDT trades a day); the module's sandbox builds
each file once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from schemahub_binance import MAPPINGS
from schemahub_binance.sandbox import BinanceApp

from schemahub_core.apps.pipeline import run_unify
from schemahub_core.engine.archives import archive_key, backfill
from schemahub_core.engine.catalog import open_catalog
from schemahub_core.engine.ingest import ingest
from schemahub_core.engine.state import cursor_key, encode_cursor
from schemahub_core.framework.config import Settings, default_catalog
from schemahub_core.framework.registry import get_registry
from schemahub_core.sandbox import Sandbox, SandboxConfig

NS = "schemahub"
D7, D8, D9 = (datetime(2024, 2, d, tzinfo=UTC) for d in (7, 8, 9))
DAY = timedelta(days=1)
SCHEMAHUB = [sys.executable, "-m", "schemahub_core"]


class QuietBinance(BinanceApp):
    """The simulated Binance at a tenth of its trade rate: same wire format, archives and rules."""

    market_profile = replace(BinanceApp.market_profile, rate={"BTC": 0.3, "ETH": 0.2})


@pytest.fixture(scope="module")
def sandbox():
    config = SandboxConfig.fast()
    config.venues = {"binance": QuietBinance}
    with Sandbox(config) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean_archive_faults(sandbox):
    yield
    sandbox.venues["binance"].archives.clear()


def settings(home: Path) -> Settings:
    """Binance's aggregate trades feed trades_unified here: the plugin's optional mapping, as a config file."""
    mappings = home.parent / f"{home.name}-mappings"
    if not mappings.is_dir():
        mappings.mkdir(parents=True)
        shutil.copyfile(MAPPINGS / "optional" / "agg_trades_unified.yaml", mappings / "binance.yaml")
    return Settings(home=home, catalog=default_catalog(home), mappings_dir=mappings)


def raw(home: Path) -> pa.Table:
    return open_catalog(settings(home)).load_table((NS, "raw_binance_agg_trades")).scan().to_arrow()


def truth(sandbox, since: datetime, until: datetime) -> list:
    """The simulated ETHUSDT trades in ``[since, until)``, straight from the market."""
    ids = sandbox.expected_trade_ids("binance", "ETHUSDT", since, until)
    market = sandbox.market
    first = market.index_of_id("binance", ids[0])
    return market.trades_from("binance", "ETH", first, len(ids), 10**20)


def land(sandbox, home: Path, since: datetime, until: datetime, **kw) -> list:
    return backfill(open_catalog(settings(home)), NS, get_registry(), "binance", stream="agg_trades", since=since,
                    until=until, symbols=["ETH-USDT"], options=sandbox.connector_options("binance"), **kw)


def cli(sandbox, home: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **sandbox.env(), "SCHEMAHUB_HOME": str(home)}
    env.pop("SCHEMAHUB_TEST_FAULT", None)
    env.pop("SCHEMAHUB_CONFIG", None)
    if fault:
        env["SCHEMAHUB_TEST_FAULT"] = fault
    return subprocess.run([*SCHEMAHUB, "backfill", "binance", "--stream", "agg_trades", "--symbols", "ETH-USDT",
                           *args], capture_output=True,
                          text=True, env=env, cwd=home.parent, timeout=300)


def test_archive_days_then_rest_forward_unify_to_the_truth_and_rows_equal_rest_rows(sandbox, tmp_path):
    home = tmp_path / "home"
    days = land(sandbox, home, D7 - DAY, D8)  # N = 2 days
    assert [(d.file, d.status, d.commits) for d in days] == [("ETHUSDT-aggTrades-2024-02-06.zip", "landed", 1),
                                                             ("ETHUSDT-aggTrades-2024-02-07.zip", "landed", 1)]
    until = D8 + timedelta(minutes=20)  # REST carries on from the archive's last trade
    [rest] = ingest(open_catalog(settings(home)), NS, get_registry(), "binance", streams=["agg_trades"],
                    symbols=["ETH-USDT"], until=until, pages_per_commit=50,
                    options=sandbox.connector_options("binance"))
    assert rest.error is None and rest.landed > 0
    assert run_unify(settings(home), get_registry(), "trades_unified", catalog=open_catalog(settings(home))).error \
        is None
    unified = open_catalog(settings(home)).load_table((NS, "trades_unified")).scan().to_arrow()
    got = Counter(zip(*(unified.column(c).to_pylist() for c in ("trade_id", "side", "price", "quantity",
                                                                  "trade_ts")), strict=True))
    want = Counter((str(t.id), t.taker.upper(), float(f"{t.price:.8f}"), float(f"{t.qty:.8f}"),
                    datetime.fromtimestamp(t.time_ns // 1000 / 1e6, UTC).replace(
                        microsecond=(t.time_ns // 1000) % 1_000_000)) for t in truth(sandbox, D7 - DAY, until))
    assert got == want and max(got.values()) == 1

    # the same trades through REST alone, in another home: raw rows identical but for the payload
    other = tmp_path / "rest-only"
    window = (D7 + timedelta(hours=12), D7 + timedelta(hours=13))
    ingest(open_catalog(settings(other)), NS, get_registry(), "binance", streams=["agg_trades"], symbols=["ETH-USDT"],
           since=window[0], until=window[1], pages_per_commit=50, options=sandbox.connector_options("binance"))
    rest_rows = raw(other)
    ids = rest_rows.column("a")
    archived = raw(home)
    archived = archived.filter(pc.is_in(archived.column("a"), ids)).sort_by("a")
    rest_rows = rest_rows.sort_by("a")
    same = [c for c in rest_rows.column_names if c not in ("_raw_payload", "_source_ingest_ts")]
    assert rest_rows.num_rows > 300 and archived.select(same).equals(rest_rows.select(same))
    line = archived.column("_raw_payload")[0].as_py()
    assert line.split(",")[0] == str(archived.column("a")[0].as_py()) and line.endswith(",True")
    assert json.loads(rest_rows.column("_raw_payload")[0].as_py())["a"] == rest_rows.column("a")[0].as_py()


def test_individual_trades_files_land_the_rest_rows_of_the_trades_stream(sandbox, tmp_path):
    """The default stream (``trades``, what feeds trades_unified) from Binance's ``trades`` files: raw rows equal
    the ``historicalTrades`` rows for the same trades but for the payload; a rerun skips the file."""
    home, other = tmp_path / "home", tmp_path / "rest-only"

    def trades(where: Path) -> pa.Table:
        table = open_catalog(settings(where)).load_table((NS, "raw_binance_trades")).scan().to_arrow()
        return table.sort_by([("time", "ascending"), ("id", "ascending")])

    options = sandbox.connector_options("binance")
    days = backfill(open_catalog(settings(home)), NS, get_registry(), "binance", stream="trades", since=D7,
                    until=D8 + DAY, symbols=["ETH-USDT"], options=options)  # two files: the second continues
    assert [(d.file, d.status, d.error) for d in days] == [("ETHUSDT-trades-2024-02-07.zip", "landed", None),
                                                           ("ETHUSDT-trades-2024-02-08.zip", "landed", None)]
    window = (D8 + timedelta(hours=6), D8 + timedelta(hours=7))
    [rest] = ingest(open_catalog(settings(other)), NS, get_registry(), "binance", streams=["trades"],
                    symbols=["ETH-USDT"], since=window[0], until=window[1], pages_per_commit=50, options=options)
    assert rest.error is None
    from_rest, archived = trades(other), trades(home)
    archived = archived.filter(pc.is_in(archived.column("id"), from_rest.column("id")))
    same = [c for c in from_rest.column_names if c not in ("_raw_payload", "_source_ingest_ts")]
    assert from_rest.num_rows > 300 and archived.select(same).equals(from_rest.select(same))
    ids = [int(i) for i in trades(home).column("id").to_pylist()]
    assert len(ids) == len(set(ids)) and sorted(ids) == list(range(min(ids), max(ids) + 1))  # every fill once
    line = archived.column("_raw_payload")[0].as_py().split(",")
    assert line[0] == archived.column("id")[0].as_py() and line[-2:] == [
        str(archived.column("isBuyerMaker")[0].as_py()), "True"]
    table = open_catalog(settings(home)).load_table((NS, "raw_binance_trades"))
    assert table.current_snapshot().summary.additional_properties[cursor_key("trades", "ETH-USDT")] == \
        encode_cursor(max(ids))  # REST continues after the last fill of the second file
    again = backfill(open_catalog(settings(home)), NS, get_registry(), "binance", stream="trades", since=D7,
                     until=D8 + DAY, symbols=["ETH-USDT"], options=options)
    assert [d.status for d in again] == ["skipped", "skipped"] and trades(home).num_rows == len(ids)


def _one_line_errors(stderr: str) -> list[str]:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr and all(line.startswith("error: ") for line in lines), stderr
    return lines


def test_bad_checksum_truncated_zip_and_404_fail_alone_and_a_rerun_lands_nothing(sandbox, tmp_path):
    home = tmp_path / "home"
    shelf = sandbox.venues["binance"].archives
    shelf.fault("ETHUSDT-aggTrades-2024-02-07.zip", "bad_checksum")
    shelf.fault("ETHUSDT-aggTrades-2024-02-08.zip", "truncated")
    shelf.fault("ETHUSDT-aggTrades-2024-02-06.zip", "missing")  # never published: HTTP 404
    first = cli(sandbox, home, "--since", "2024-02-06", "--until", "2024-02-10", "--json")
    assert first.returncode == 1
    errors = _one_line_errors(first.stderr)
    assert len(errors) == 3
    assert "ETHUSDT-aggTrades-2024-02-06.zip: not published (HTTP 404" in errors[0]
    assert "ETHUSDT-aggTrades-2024-02-07.zip: checksum mismatch" in errors[1]
    assert "ETHUSDT-aggTrades-2024-02-08.zip: not a readable zip" in errors[2]
    summary = {f["file"]: f for f in json.loads(first.stdout)}
    assert [f["status"] for f in summary.values()] == ["failed", "failed", "failed", "landed"]
    expected = [t.id for t in truth(sandbox, D9, D9 + DAY)]
    assert sorted(raw(home).column("a").to_pylist()) == expected  # only the good file landed
    snapshots = len(open_catalog(settings(home)).load_table((NS, "raw_binance_agg_trades")).metadata.snapshots)

    again = cli(sandbox, home, "--since", "2024-02-06", "--until", "2024-02-10", "--json")
    assert again.returncode == 1 and len(_one_line_errors(again.stderr)) == 3
    assert [f["status"] for f in json.loads(again.stdout)] == ["failed", "failed", "failed", "skipped"]
    table = open_catalog(settings(home)).load_table((NS, "raw_binance_agg_trades"))
    assert len(table.metadata.snapshots) == snapshots and table.scan().to_arrow().num_rows == len(expected)


def test_a_replaced_file_lands_only_its_new_rows(sandbox, tmp_path):
    home, name = tmp_path / "home", "ETHUSDT-aggTrades-2024-02-08.zip"
    shelf = sandbox.venues["binance"].archives
    shelf.fault(name, "short")  # published without its last rows, as Binance's cut-off files were
    [short] = land(sandbox, home, D8, D8 + DAY)
    shelf.replace(name)
    [fixed] = land(sandbox, home, D8, D8 + DAY)
    ids = [t.id for t in truth(sandbox, D8, D8 + DAY)]
    assert short.status == "landed" and short.landed < len(ids)
    assert (fixed.status, fixed.rows, fixed.landed, fixed.deduplicated) == \
        ("replaced", len(ids), len(ids) - short.landed, short.landed)
    assert fixed.sha256 != short.sha256
    assert sorted(raw(home).column("a").to_pylist()) == ids
    table = open_catalog(settings(home)).load_table((NS, "raw_binance_agg_trades"))
    record = json.loads(table.current_snapshot().summary.additional_properties[archive_key("agg_trades", "ETH-USDT",
                                                                                             name)])
    assert record["sha256"] == fixed.sha256 and record["done"] and (record["first_id"], record["last_id"]) == \
        (ids[0], ids[-1])
    assert land(sandbox, home, D8, D8 + DAY)[0].status == "skipped"


class QuieterBinance(BinanceApp):
    """A hundredth of the default rate (about 1,700 ETHUSDT trades a day): a month's file stays small."""

    market_profile = replace(BinanceApp.market_profile, rate={"BTC": 0.03, "ETH": 0.02})


def test_a_whole_past_month_comes_from_its_monthly_file_and_the_other_days_from_daily_files(tmp_path):
    """2023-12-31 .. 2024-02-02 at a sandbox clock of 2024-02-10: daily 12-31, monthly 2024-01, daily 02-01."""
    config = SandboxConfig.fast()
    config.venues = {"binance": QuieterBinance}
    since, until = datetime(2023, 12, 31, tzinfo=UTC), datetime(2024, 2, 2, tzinfo=UTC)
    with Sandbox(config) as quieter:
        stats = land(quieter, tmp_path / "home", since, until)
        shelf = quieter.venues["binance"].archives
        served, month = list(shelf.served), shelf.build("ETHUSDT-aggTrades-2024-01.zip")
        expected = [t.id for t in truth(quieter, since, until)]
        january = [t.id for t in truth(quieter, datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 2, 1, tzinfo=UTC))]
    assert [(s.file, s.period, s.status) for s in stats] == [
        ("ETHUSDT-aggTrades-2023-12-31.zip", "daily", "landed"), ("ETHUSDT-aggTrades-2024-01.zip", "monthly", "landed"),
        ("ETHUSDT-aggTrades-2024-02-01.zip", "daily", "landed")]
    assert served == [s.file for s in stats]  # no January day was asked for one by one
    assert month is not None and month.rows == len(january) == stats[1].landed > 40_000
    rows = raw(tmp_path / "home")
    assert sorted(rows.column("a").to_pylist()) == expected and rows.num_rows == len(expected)  # exactly the truth
    table = open_catalog(settings(tmp_path / "home")).load_table((NS, "raw_binance_agg_trades"))
    record = json.loads(table.current_snapshot().summary.additional_properties[
        archive_key("agg_trades", "ETH-USDT", "ETHUSDT-aggTrades-2024-01.zip")])
    assert (record["period"], record["start"], record["end"]) == \
        ("monthly", "2024-01-01T00:00:00+00:00", "2024-02-01T00:00:00+00:00")
    assert (record["first_id"], record["last_id"]) == (january[0], january[-1]) and record["done"]


COMMITS = 5  # 17k rows at 4k per commit


def _killed(sandbox, tmp_path: Path, seed: int) -> Path:
    """A child ``schemahub backfill`` SIGKILLed at the seed's commit point (before or after the catalog commit)."""
    home = tmp_path / f"seed-{seed}" / "home"
    home.parent.mkdir(parents=True)
    point = ("archive.before-commit", "archive.after-commit")[seed % 2]
    fault = f"{point}:{1 + seed * 3 % COMMITS}"
    killed = cli(sandbox, home, "--since", "2024-02-07", "--until", "2024-02-08", "--rows-per-commit", "4000",
                 fault=fault)
    assert killed.returncode == -9, (fault, killed.stderr)
    return home


def test_sigkill_at_any_commit_of_a_backfill_leaves_the_table_exact(sandbox, tmp_path):
    expected = [t.id for t in truth(sandbox, D7, D8)]
    sandbox.venues["binance"].archives.build("ETHUSDT-aggTrades-2024-02-07.zip")  # built once, before the clock
    with ThreadPoolExecutor(2) as pool:
        homes = list(pool.map(lambda seed: _killed(sandbox, tmp_path, seed), range(10)))
    for seed, home in enumerate(homes):
        before = raw(home).num_rows if (home / "catalog.db").exists() else 0
        [rerun] = land(sandbox, home, D7, D8, rows_per_commit=4000)  # the rerun resumes at the committed row
        rows = raw(home)
        assert sorted(rows.column("a").to_pylist()) == expected, seed  # nothing lost, nothing doubled
        assert rerun.landed == len(expected) - before and rows.column("_raw_payload").null_count == 0
        record = json.loads(open_catalog(settings(home)).load_table((NS, "raw_binance_agg_trades")).current_snapshot()
                            .summary.additional_properties[archive_key("agg_trades", "ETH-USDT",
                                                                       "ETHUSDT-aggTrades-2024-02-07.zip")])
        assert record["done"] and record["rows"] == len(expected)


def test_two_backfills_racing_over_the_same_files_land_each_row_once(sandbox, tmp_path):
    """Two runs over the same two days, 2,000 rows a commit: each commit is conditional on the file's progress,
    so the run that finds it moved reads on from the other's row; together they land the truth once."""
    expected = [t.id for t in truth(sandbox, D7, D9)]
    home = tmp_path / "home"
    land(sandbox, home, D7, D7)  # the tables, before the race
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda _: land(sandbox, home, D7, D9, rows_per_commit=2000), range(2)))
    rows = raw(home)
    assert sorted(rows.column("a").to_pylist()) == expected  # nothing lost, nothing doubled
    assert sum(s.landed for run in runs for s in run) == len(expected)
    assert all(s.error is None and s.status in ("landed", "skipped") for run in runs for s in run), runs
    table = open_catalog(settings(home)).load_table((NS, "raw_binance_agg_trades"))
    summary = table.current_snapshot().summary.additional_properties
    for name in ("ETHUSDT-aggTrades-2024-02-07.zip", "ETHUSDT-aggTrades-2024-02-08.zip"):
        record = json.loads(summary[archive_key("agg_trades", "ETH-USDT", name)])
        assert record["done"] and record["rows"] > 10_000


def test_a_venue_without_archives_or_an_unknown_one_is_refused_before_any_write(tmp_path):
    catalog = open_catalog(settings(tmp_path / "home"))
    with pytest.raises(ValueError, match="coinbase has no bulk archives"):
        backfill(catalog, NS, get_registry(), "coinbase", since=D7, until=D8)
    with pytest.raises(KeyError, match="unknown source 'nope'"):
        backfill(catalog, NS, get_registry(), "nope", since=D7, until=D8)
    assert (NS,) not in catalog.list_namespaces()  # refused before any table was made


def test_csv_batches_type_columns_keep_each_line_and_skip_headers_and_blank_lines(tmp_path):
    """The shared reader plugins use: blocks cut at line ends, a header skipped, CRLF and blank lines, a last
    line without a newline, True/False only."""
    import zipfile

    from schemahub_core import ArchiveError, csv_batches

    lines = [f"{i},{i / 8:.8f},{'True' if i % 3 else 'False'}" for i in range(1, 2001)]
    text = "id,price,flag\r\n" + "\r\n".join(lines[:1000]) + "\r\n\r\n" + "\n".join(lines[1000:])  # no last \n
    path = tmp_path / "X-trades-2024-02-07.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("X-trades-2024-02-07.csv", text)
    batches = list(csv_batches(path, path.name, ["id", "price", "flag"], block_size=4096,
                               types={"id": pa.int64(), "price": pa.float64(), "flag": pa.bool_()}))
    rows = pa.Table.from_batches(batches)
    assert len(batches) > 5 and rows.column("_raw_payload").to_pylist() == lines
    assert rows.column("id").to_pylist() == list(range(1, 2001))
    assert rows.column("price").to_pylist() == [float(line.split(",")[1]) for line in lines]
    assert rows.column("flag").to_pylist() == [line.endswith("True") for line in lines]
    text_ids = pa.Table.from_batches(list(csv_batches(path, path.name, ["id", "price", "flag"], block_size=4096)))
    assert text_ids.column("id").to_pylist() == [str(i) for i in range(1, 2001)]  # no block's bytes reused
    bad = tmp_path / "X-trades-2024-02-08.zip"
    with zipfile.ZipFile(bad, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("X-trades-2024-02-08.csv", "1,0.5,True\n2,0.5,yes\n")
    with pytest.raises(ArchiveError, match="X-trades-2024-02-08.zip: cannot read"):
        list(csv_batches(bad, bad.name, ["id", "price", "flag"], types={"flag": pa.bool_()}))
    corrupt = tmp_path / "X-trades-2024-02-09.zip"  # a byte of the deflate stream changed: never silent
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    with pytest.raises(ArchiveError, match="X-trades-2024-02-09.zip: .*(CRC|cannot read|ends early)"):
        list(csv_batches(corrupt, corrupt.name, ["id", "price", "flag"]))
