"""Raw ingestion: cursor in the snapshot, resume, quarantine, lost responses, venue failures."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy.exc
from pyiceberg.exceptions import CommitFailedException
from scripted_support import (
    NS,
    expected_rows,
    raw_keys,
    registry,
    restrict,
    served_keys,
    settings_for,
    unified_rows,
)

from schemahub_core.apps.pipeline import run_ingest, run_pipeline, symbols_for
from schemahub_core.engine import faults
from schemahub_core.engine.catalog import open_catalog
from schemahub_core.engine.coverage import Span, read_state
from schemahub_core.engine.ingest import ingest, parse_when
from schemahub_core.engine.sink import is_transient
from schemahub_core.engine.state import read_cursor, watermark_rows
from schemahub_core.testing.scripted import START_MS, trades_for


def _snapshots(settings, table: str) -> list[int]:
    return [s.snapshot_id for s in open_catalog(settings).load_table((NS, table)).snapshots()]


def test_each_batch_commits_with_its_coverage_and_a_rerun_resumes_from_it(tmp_path) -> None:
    options = {"scripted": {"trades": 25, "page_size": 10}, "scripted_b": {"trades": 5}}
    settings = settings_for(tmp_path, options)
    first = run_ingest(settings, registry(), ["scripted"], symbols=["BTC-USD"], commit_rows=10)
    assert [(s.fetched, s.landed, s.commits) for s in first] == [(25, 25, 3)]
    table = open_catalog(settings).load_table((NS, "raw_scripted_trades"))
    trades = trades_for("scripted", 0, "BTC-USD", 25)
    us = [t["time"] * 1000 for t in trades]
    claims = [json.loads(s.summary.additional_properties["schemahub.covers.trades.BTC-USD"])
              for s in table.snapshots()]
    # one claim per batch of 10 rows, each ending open at its last trade, resumable from its id
    assert claims == [[us[0], us[9], trades[9]["id"]], [us[9], us[19], trades[19]["id"]],
                      [us[19], us[24], trades[24]["id"]]]
    assert read_state(table, "trades", "BTC-USD").spans == [Span(us[0], us[24], trades[24]["id"])]
    assert read_cursor(table, "trades", "BTC-USD") == trades[-1]["id"]
    assert set(table.snapshots()[-1].summary.additional_properties) >= {
        "schemahub.coverage.trades.BTC-USD", "schemahub.rows.trades.BTC-USD"}

    again = run_ingest(settings, registry(), ["scripted"], symbols=["BTC-USD"])
    assert [(s.fetched, s.landed, s.commits) for s in again] == [(0, 0, 0)]
    assert len(_snapshots(settings, "raw_scripted_trades")) == 3

    more = settings_for(tmp_path, {"scripted": {"trades": 32, "page_size": 10}})  # the venue has 7 new trades
    assert [(s.fetched, s.landed) for s in run_ingest(more, registry(), ["scripted"], symbols=["BTC-USD"])] == [(7, 7)]
    assert raw_keys(more, "scripted") == restrict(served_keys("scripted", {"trades": 32}), 0, "BTCUSD")
    (mark,) = watermark_rows(open_catalog(more), NS, registry())
    newest = trades_for("scripted", 0, "BTC-USD", 32)[-1]
    assert (mark["symbol"], mark["cursor"], mark["rows"], mark["holes"]) == ("BTC-USD", str(newest["id"]), 32, [])
    assert [c["until"] for c in mark["covered"]] == [datetime.fromtimestamp(newest["time"] / 1000, UTC).isoformat()]
    mirror = open_catalog(more).load_table((NS, "schemahub_watermarks")).scan().to_arrow().to_pylist()
    assert [(m["symbol"], m["cursor"], m["snapshot_id"], json.loads(m["covered"])) for m in mirror] == [
        ("BTC-USD", mark["cursor"], _snapshots(more, "raw_scripted_trades")[-1], mark["covered"])]


def test_malformed_record_is_quarantined_with_its_payload_and_its_neighbours_land(tmp_path) -> None:
    trades = trades_for("scripted", 0, "BTC-USD", 20)
    bad = trades[7]["id"]
    options = {"scripted": {"trades": 20, "page_size": 5, "malformed": str(bad)}, "scripted_b": {"trades": 0}}
    settings = settings_for(tmp_path, options)
    stats = run_pipeline(settings, registry(), "trades_unified", symbols=["BTC-USD"])
    assert [(s.landed, s.quarantined) for s in stats if s.name == "scripted.trades BTC-USD"] == [(19, 1)]

    quarantine = open_catalog(settings).load_table((NS, "schemahub_quarantine")).scan().to_arrow().to_pylist()
    assert len(quarantine) == 1
    (row,) = quarantine
    assert (row["source"], row["stream"], row["symbol"]) == ("scripted", "trades", "BTC-USD")
    assert json.loads(row["payload"]) == {**trades[7], "price": "not-a-price"}
    assert "price" in row["reason"] and "not-a-price" in row["reason"]

    landed = {k[1] for k in raw_keys(settings, "scripted")}
    assert {trades[6]["id"], trades[8]["id"]} <= landed and bad not in landed
    unified_ids = {r[2] for r in unified_rows(settings)}
    assert str(bad) not in unified_ids and {str(trades[6]["id"]), str(trades[8]["id"])} <= unified_ids
    assert unified_rows(settings) == restrict(expected_rows(options), 1, "BTC-USD")

    run_pipeline(settings_for(tmp_path, {**options, "scripted": {**options["scripted"], "trades": 25}}),
                 registry(), "trades_unified", symbols=["BTC-USD"])  # rerun with more data: quarantined once
    assert open_catalog(settings).load_table((NS, "schemahub_quarantine")).scan().to_arrow().num_rows == 1


LOST_RESPONSES = [
    "ingest.before-commit:2:raise",  # failed before the catalog saw it: must be retried
    "ingest.after-commit:2:raise",  # landed, response lost: must NOT be retried
    "quarantine.after-commit:1:raise",
    "unify.before-commit:1:raise",
    "unify.after-commit:1:raise",
]


@pytest.mark.parametrize("fault", LOST_RESPONSES)
def test_unknown_commit_outcome_is_resolved_by_looking_for_the_snapshot(tmp_path, monkeypatch, fault) -> None:
    bad = trades_for("scripted", 0, "BTC-USD", 20)[3]["id"]
    options = {"scripted": {"trades": 20, "page_size": 5, "malformed": str(bad)},
               "scripted_b": {"trades": 6, "page_size": 5}}
    pages_with_bad = sum(bad in {t["id"] for t in trades_for("scripted", 0, s, 20)} for s in ("BTC-USD", "ETH-USD"))
    settings = settings_for(tmp_path, options)
    monkeypatch.setenv(faults.ENV, fault)
    faults.reset()
    stats = run_pipeline(settings, registry(), "trades_unified", pages_per_commit=1)
    point, n, _ = fault.split(":")
    assert faults._reached[point] >= int(n), "the fault never fired"
    assert not [s.error for s in stats if s.error]
    ingested = [s for s in stats if s.step == "ingest"]
    assert [s.landed + s.quarantined for s in ingested] == [s.fetched for s in ingested]  # nothing taken as lost
    assert sum(s.dropped_batches for s in ingested) == 0 and sum(s.quarantined for s in ingested) == pages_with_bad

    assert unified_rows(settings) == expected_rows(options)
    for source in ("scripted", "scripted_b"):
        assert raw_keys(settings, source) == served_keys(source, options[source])
    raw_commits = len(_snapshots(settings, "raw_scripted_trades"))
    assert raw_commits == 4 + 4  # BTC-USD and ETH-USD, 4 pages each, each committed exactly once
    assert len(_snapshots(settings, "trades_unified")) == 1
    quarantined = open_catalog(settings).load_table((NS, "schemahub_quarantine")).scan().to_arrow()
    assert quarantined.num_rows == len(_snapshots(settings, "schemahub_quarantine")) == pages_with_bad


def test_a_venue_failure_keeps_what_landed_and_a_rerun_completes(tmp_path) -> None:
    options = {"scripted": {"trades": 30, "page_size": 5, "fail_at_page": 3}, "scripted_b": {"trades": 0}}
    settings = settings_for(tmp_path, options)
    stats = run_pipeline(settings, registry(), "trades_unified", symbols=["BTC-USD"])
    (btc,) = [s for s in stats if s.name == "scripted.trades BTC-USD"]
    assert btc.landed == 10 and "injected network failure at page 3" in btc.error
    assert sum(raw_keys(settings, "scripted").values()) == 10

    healed = {**options, "scripted": {"trades": 30, "page_size": 5}}
    stats = run_pipeline(settings_for(tmp_path, healed), registry(), "trades_unified", symbols=["BTC-USD"])
    assert not [s.error for s in stats if s.error]
    assert raw_keys(settings, "scripted") == restrict(served_keys("scripted", healed["scripted"]), 0, "BTCUSD")
    assert unified_rows(settings) == restrict(expected_rows(healed), 1, "BTC-USD")


def test_since_and_until_bound_a_first_run(tmp_path) -> None:
    settings = settings_for(tmp_path, {"scripted": {"trades": 40}})
    start = datetime.fromtimestamp(START_MS / 1000, UTC)
    since, until = start + timedelta(seconds=4), start + timedelta(seconds=9)
    (stats,) = ingest(open_catalog(settings), NS, registry(), "scripted", options={"trades": 40},
                      symbols=["BTC-USD"], since=since, until=until)
    want = {t["id"] for t in trades_for("scripted", 0, "BTC-USD", 40)
            if since.timestamp() * 1000 <= t["time"] < until.timestamp() * 1000}
    assert want and {k[1] for k in raw_keys(settings, "scripted")} == want and stats.landed == len(want)


def test_parse_when_reads_iso_and_relative_times() -> None:
    now = datetime(2024, 2, 8, 15, 12, 4, tzinfo=UTC)
    assert parse_when("15m", now) == now - timedelta(minutes=15)
    assert parse_when("2h", now) == now - timedelta(hours=2)
    assert parse_when("2024-02-08T15:12:04Z") == now
    assert parse_when("2024-02-08T15:12:04") == now  # no zone: UTC
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_when("yesterday-ish")


def test_busy_sqlite_catalog_and_commit_conflicts_are_retried_other_errors_are_not() -> None:
    locked = sqlalchemy.exc.OperationalError("UPDATE", {}, sqlite3.OperationalError("database is locked"))
    assert is_transient(locked)
    assert is_transient(CommitFailedException("Table has been updated by another process"))
    assert is_transient(faults.InjectedFault("lost response"))
    assert not is_transient(ValueError("schema mismatch"))
    no_such = sqlalchemy.exc.OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: iceberg_tables"))
    assert not is_transient(no_such)


def test_symbols_can_name_one_source_each(tmp_path) -> None:
    settings = settings_for(tmp_path, {"scripted": {"trades": 5}, "scripted_b": {"trades": 5}})
    stats = run_pipeline(settings, registry(), "trades_unified", symbols=["scripted:ETH-USD", "scripted_b:BTC-USD"])
    assert [s.name for s in stats if s.step == "ingest"] == ["scripted.trades ETH-USD", "scripted_b.trades BTC-USD"]
    assert {(r[0], r[1]) for r in unified_rows(settings)} == {("SCRIPTED", "ETH-USD"), ("SCRIPTED_B", "BTC-USD")}
    assert symbols_for("kraken", ["BTC-USD", "binance:BTC-USDT"]) == ["BTC-USD"]
    assert symbols_for("binance", ["binance:BTC-USDT"]) == ["BTC-USDT"] and symbols_for("binance", None) is None


def test_a_commit_refused_by_a_locked_sqlite_catalog_is_not_taken_for_landed(tmp_path) -> None:
    """A reader holds the SQLite catalog's lock past the 5 s busy timeout (a sqlite3 shell mid-transaction, a
    JDBC catalog): the refused COMMIT must be retried, not found "landed" through its own uncommitted row."""
    import threading

    options = {"scripted": {"trades": 10, "page_size": 5}}
    settings = settings_for(tmp_path, options)
    run_ingest(settings, registry(), ["scripted"], symbols=["BTC-USD"], pages_per_commit=1)
    reader = sqlite3.connect(tmp_path / "catalog.db", isolation_level=None, check_same_thread=False)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM iceberg_tables").fetchall()  # a read transaction: SQLite's shared lock
    release = threading.Timer(6.5, lambda: reader.execute("COMMIT"))
    release.start()
    try:
        options["scripted"]["trades"] = 20
        stats = run_ingest(settings, registry(), ["scripted"], symbols=["BTC-USD"], pages_per_commit=1)
    finally:
        release.join()
        reader.close()
    assert [(s.landed, s.error) for s in stats] == [(10, None)]
    btc = [{k: n for k, n in keys.items() if k[0].startswith("BTC")}
           for keys in (raw_keys(settings, "scripted"), served_keys("scripted", options["scripted"]))]
    assert btc[0] == btc[1] and len(btc[0]) == 20, "a page reported landed is missing (or one landed twice)"
    raw = open_catalog(settings).load_table((NS, "raw_scripted_trades"))
    assert len(read_state(raw, "trades", "BTC-USD").spans) == 1, "a hole where a page was reported landed"
