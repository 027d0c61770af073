"""Binance's spot aggTrades archives: real recorded files parse to the right rows and instants (ms before
2025-01-01, µs from then on); the simulated archives have the real layout and serve their defects."""

from __future__ import annotations

import hashlib
import io
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
import requests
from schemahub_binance.connector import BinanceConnector
from schemahub_binance.sandbox import archive_line

from schemahub_core import ArchiveError, ArchiveFile, archive_periods, parse_checksum

RECORDED = Path(__file__).resolve().parents[3].parent / "shared" / "recorded" / "archives" / "binance"
PEPE_ZIP = RECORDED / "original_zips" / "spot-PEPEUSDT-aggTrades-2024-10-27.zip"
PEPE_CSV = RECORDED / "spot" / "PEPEUSDT-aggTrades-2024-10-27.csv"
needs_recorded = pytest.mark.skipif(not PEPE_ZIP.is_file(), reason="../shared/recorded is not beside the repo")


def _file(symbol: str, day: datetime, name: str | None = None) -> ArchiveFile:
    name = name or f"{symbol.replace('-', '')}-aggTrades-{day:%Y-%m-%d}.zip"
    return ArchiveFile("agg_trades", symbol, name, f"http://unused/{name}", day, day + timedelta(days=1))


def _zip(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name.removesuffix(".zip") + ".csv", text)
    return path


def _rows(path: Path, file: ArchiveFile, **options) -> pa.Table:
    return pa.Table.from_batches(list(BinanceConnector(options).read_archive(file, path)))


@needs_recorded
def test_a_real_spot_file_streams_every_row_with_its_line_as_payload():
    """The whole original PEPEUSDT 2024-10-27 zip (57,229 rows, no header, ms, True/False), in small blocks."""
    from schemahub_core.framework import archives

    day = datetime(2024, 10, 27, tzinfo=UTC)
    file = _file("PEPE-USDT", day, PEPE_ZIP.name)
    block, archives.BLOCK_SIZE = archives.BLOCK_SIZE, 256 << 10  # many batches: the reader really streams
    try:
        batches = list(BinanceConnector().read_archive(file, PEPE_ZIP))
    finally:
        archives.BLOCK_SIZE = block
    rows = pa.Table.from_batches(batches)
    assert len(batches) > 5 and rows.num_rows == 57_229
    lines = PEPE_CSV.read_text().splitlines()  # the recorded byte-exact first 2,000 lines of the member
    assert rows.column("_raw_payload").to_pylist()[:2000] == lines
    first = rows.slice(0, 1).to_pylist()[0]
    assert first["symbol"] == "PEPEUSDT" and first["a"] == 60953854 and first["p"] == 0.00000908
    assert first["T"] == datetime(2024, 10, 27, 0, 0, 2, 368000, tzinfo=UTC)  # 1729987202368 ms
    assert (first["m"], first["M_best_match"]) == (False, True)  # M lands as M_best_match, as from REST
    ids = rows.column("a").to_pylist()
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # contiguous aggregate ids, in file order
    times = rows.column("T").to_pylist()
    assert times[0] >= day and times[-1] < day + timedelta(days=1) and times == sorted(times)


def test_timestamps_are_ms_before_2025_and_us_from_2025_01_01(tmp_path):
    """A real 2025-01-01 BTCUSDT row (µs) and a row of our own on 2024-12-31 (ms), each in its daily file."""
    after = "3358804174,93576.00000000,0.00136000,4359935386,4359935386,1735689600010866,True,True\n"
    before = "3358804173,93575.99000000,0.00100000,4359935385,4359935385,1735689599999,False,True\n"
    new_year = datetime(2025, 1, 1, tzinfo=UTC)
    old = _rows(_zip(tmp_path, "BTCUSDT-aggTrades-2024-12-31.zip", before), _file("BTC-USDT", new_year
                                                                                    - timedelta(days=1)))
    new = _rows(_zip(tmp_path, "BTCUSDT-aggTrades-2025-01-01.zip", after), _file("BTC-USDT", new_year))
    assert old.column("T")[0].as_py() == datetime(2024, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
    assert new.column("T")[0].as_py() == datetime(2025, 1, 1, 0, 0, 0, 10866, tzinfo=UTC)
    assert new.column("m")[0].as_py() is True and old.column("m")[0].as_py() is False
    # the unit follows the file's date: a 2025 file with ms values is refused, never landed 1000x off
    with pytest.raises(ArchiveError, match="fall outside .* µs from then on"):
        _rows(_zip(tmp_path, "BTCUSDT-aggTrades-2025-01-02.zip", "1,1.0,1.0,1,1,1735776000000,True,True\n"),
              _file("BTC-USDT", new_year + timedelta(days=1)))


@needs_recorded
def test_a_truncated_real_zip_is_a_one_line_error(tmp_path):
    cut = tmp_path / "PEPEUSDT-aggTrades-2024-10-27.zip"
    cut.write_bytes(PEPE_ZIP.read_bytes()[:400_000])
    with pytest.raises(ArchiveError) as info:
        _rows(cut, _file("PEPE-USDT", datetime(2024, 10, 27, tzinfo=UTC), cut.name))
    assert "\n" not in str(info.value) and cut.name in str(info.value)


@needs_recorded
def test_real_checksum_files_read_as_sha256sum_lines():
    text = (RECORDED / "checksums" / "BTCUSDT-aggTrades-2017-12.zip.CHECKSUM").read_text()
    assert not text.endswith("\n")  # as Binance writes them
    assert parse_checksum(text, "BTCUSDT-aggTrades-2017-12.zip") == text.split()[0]
    with pytest.raises(ArchiveError, match="names"):
        parse_checksum(text, "BTCUSDT-aggTrades-2018-01.zip")


def test_monthly_files_for_whole_past_months_daily_for_the_rest():
    now = datetime(2024, 6, 10, 8, tzinfo=UTC)
    plan = archive_periods(datetime(2024, 3, 30, tzinfo=UTC), datetime(2024, 6, 12, tzinfo=UTC), now)
    assert [p.label for p in plan] == ["2024-03-30", "2024-03-31", "2024-04", "2024-05",
                                       *[f"2024-06-{d:02d}" for d in range(1, 10)]]  # none from today on
    assert archive_periods(datetime(2024, 4, 1, tzinfo=UTC), datetime(2024, 4, 1, 1, tzinfo=UTC), now)[0].label \
        == "2024-04-01"  # an hour of a day: its whole day's file


def test_simulated_archives_have_the_real_layout_and_equal_the_rest_rows(sandbox):
    """Daily zip + CHECKSUM (sha256sum line, no newline), one headerless CSV member, lines from the REST rows."""
    day = datetime(2024, 2, 8, tzinfo=UTC)
    connector = BinanceConnector(sandbox.connector_options("binance"))
    files = connector.archive_files("agg_trades", "ETH-USDT", day, day + timedelta(days=1))
    assert [f.name for f in files] == ["ETHUSDT-aggTrades-2024-02-08.zip"]
    url = files[0].url
    assert url == sandbox.base_url("binance") + "/data/spot/daily/aggTrades/ETHUSDT/ETHUSDT-aggTrades-2024-02-08.zip"
    body = requests.get(url).content
    checksum = requests.get(url + ".CHECKSUM").text
    assert checksum == f"{hashlib.sha256(body).hexdigest()}  ETHUSDT-aggTrades-2024-02-08.zip"
    with zipfile.ZipFile(io.BytesIO(body)) as z:
        assert z.namelist() == ["ETHUSDT-aggTrades-2024-02-08.csv"]
        head = z.open("ETHUSDT-aggTrades-2024-02-08.csv").readline().decode().rstrip("\n")
    rest = requests.get(sandbox.base_url("binance") + "/api/v3/aggTrades",
                        params={"symbol": "ETHUSDT", "startTime": int(day.timestamp() * 1000), "limit": 1}).json()[0]
    assert head == (f"{rest['a']},{rest['p']},{rest['q']},{rest['f']},{rest['l']},{rest['T']},"
                    f"{rest['m']},{rest['M']}")
    # days not over at the sandbox clock, days before the simulated market and unknown symbols: 404
    for missing in ("daily/aggTrades/ETHUSDT/ETHUSDT-aggTrades-2024-02-10.zip",
                    "daily/aggTrades/ETHUSDT/ETHUSDT-aggTrades-2023-01-01.zip",
                    "daily/aggTrades/DOGEUSDT/DOGEUSDT-aggTrades-2024-02-08.zip",
                    "monthly/aggTrades/ETHUSDT/ETHUSDT-aggTrades-2024-02.zip"):
        assert requests.get(f"{sandbox.base_url('binance')}/data/spot/{missing}").status_code == 404


def test_simulated_archive_lines_switch_to_us_in_2025():
    from schemahub_core.sandbox import Trade

    trade = Trade(0, 7, 1_735_689_600_010_866_000, 93576.0, 0.00136, "sell")
    assert archive_line(trade, micros=True).split(",")[5] == "1735689600010866"
    assert archive_line(trade, micros=False).split(",")[5] == "1735689600010"
