"""Schema drift: a field that appears mid-run is counted, proposed and applied; one that stops is reported."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
from conftest import SCHEMAHUB, run_cli

from schemahub_core.apps.pipeline import run_ingest, run_unify
from schemahub_core.apps.schema import apply, check, propose
from schemahub_core.engine.catalog import open_catalog
from schemahub_core.engine.drift import observe
from schemahub_core.engine.raw import cast_page
from schemahub_core.engine.state import watermark_rows
from schemahub_core.engine.tables import init_tables
from schemahub_core.framework.config import Settings, default_catalog
from schemahub_core.framework.registry import get_registry
from schemahub_core.framework.streams import apply_overrides
from schemahub_core.sandbox import EVENT_AT
from schemahub_core.testing.sandbox import _clear_sandbox_faults, sandbox  # noqa: F401

NS = "schemahub"
T0 = EVENT_AT - timedelta(minutes=20)
DRIFT_AT = EVENT_AT - timedelta(minutes=10)
T1, T2, T3 = EVENT_AT, EVENT_AT + timedelta(minutes=10), EVENT_AT + timedelta(minutes=20)


def test_observe_counts_new_and_missing_fields():
    from schemahub_binance.connector import BinanceConnector

    stream = BinanceConnector.streams["trades"]
    base = {c.record_key: 1 for c in stream.columns}
    records = [{**base, "fee": "0.1"}, {**base, "fee": "0.2"}, {k: v for k, v in base.items() if k != "qty"}, [1, 2]]
    drift = observe(stream, records)
    assert drift.records == 3 and drift.new == {"fee": [2, "0.1"]} and drift.missing == {"qty": 1}
    assert not observe(stream, [base, base])


def test_a_batch_of_records_with_one_key_set_counts_as_record_by_record():
    from schemahub_binance.connector import BinanceConnector

    stream = BinanceConnector.streams["trades"]
    base = {c.record_key: 1 for c in stream.columns}
    same = [{**{k: v for k, v in base.items() if k != "qty"}, "fee": str(i)} for i in range(3)]
    drift = observe(stream, same)  # one pass: every record has the first one's keys
    assert drift.records == 3 and drift.new == {"fee": [3, "0"]} and drift.missing == {"qty": 3}
    assert observe(stream, same + [[1, 2]]) == drift  # an array row: counted record by record, the same figures
    transforms = get_registry().transforms
    exact = cast_page(stream, [dict(base, id=i) for i in range(3)], transforms, "binance")
    assert exact.exact_keys and not exact.rejected  # what lets ingest skip counting
    assert not cast_page(stream, [dict(base, id=1), {**base, "id": 2, "fee": "x"}], transforms, "binance").exact_keys
    assert not cast_page(stream, [dict(base, id=1), {**base, "id": 2, "qty": None}], transforms, "binance").exact_keys


def _ids(sandbox, since, until) -> list[int]:  # noqa: F811
    """Binance's individual trade ids in [since, until): what its trades stream holds."""
    return [k[1] for k in sandbox.venues["binance"].expected_keys("trades", "BTC-USDT", since, until)]


def _registry():
    registry = get_registry()
    target = registry.targets["trades_unified"]
    # a unified target that declares the new field, so the mapping patch has a column to map it to (a copy: the
    # process's registry is shared)
    extended = replace(target, schema=target.schema.append(pa.field("venue_flag", pa.string())))
    return replace(registry, targets={**registry.targets, "trades_unified": extended})


def test_a_new_field_mid_run_is_detected_proposed_applied_and_lands_exactly_once(tmp_path, sandbox):  # noqa: F811
    settings = Settings(home=tmp_path, catalog=default_catalog(tmp_path), mappings_dir=tmp_path / "mappings",
                        streams_dir=tmp_path / "streams",
                        connectors={"binance": sandbox.connector_options("binance", page_size=200)})
    registry = _registry()
    catalog = open_catalog(settings)
    init_tables(catalog, NS, registry)
    sandbox.inject("binance", "new_field", field="venue_flag", value="X", after=DRIFT_AT.isoformat())

    run_ingest(settings, registry, ["binance"], symbols=["BTC-USDT"], since=T0, until=T1, pages_per_commit=1)
    (found,) = check(catalog, NS, registry)
    drifted = _ids(sandbox, DRIFT_AT, T1)
    total = _ids(sandbox, T0, T1)
    assert (found.field, found.kind, found.example, found.still) == ("venue_flag", "new", "X", True)
    assert found.records == len(drifted) and 0 < len(drifted) < len(total)
    assert found.records <= found.of_records < len(total)  # of the records in the commits that saw it
    assert found.first_seen and found.symbols == ["BTC-USDT"] and found.proposed_type == "string"

    (proposal,) = propose([found], registry, settings)
    assert proposal.column == {"name": "venue_flag", "type": "string"}
    assert [m["target"] for m in proposal.mappings] == ["trades_unified"]
    applied = apply([proposal], catalog, settings, registry)
    assert any("added nullable column venue_flag" in line for line in applied)
    raw = catalog.load_table((NS, "raw_binance_trades"))
    assert "venue_flag" in raw.schema().column_names
    assert (settings.streams_dir / "binance.trades.yaml").exists()

    registry = apply_overrides(_registry(), settings.streams_dir)
    run_ingest(settings, registry, ["binance"], symbols=["BTC-USDT"], until=T2)
    assert check(catalog, NS, registry) == []  # declared now: no longer drift
    rows = catalog.load_table((NS, "raw_binance_trades")).scan(selected_fields=("id", "venue_flag")).to_arrow()
    flags = dict(zip(map(int, rows["id"].to_pylist()), rows["venue_flag"].to_pylist(), strict=True))
    second = _ids(sandbox, T1, T2)
    assert all(flags[a] == "X" for a in second)  # new rows carry it
    assert all(flags[a] is None for a in total)  # rows landed before the evolution read null

    run_unify(settings, registry, "trades_unified")
    unified = catalog.load_table((NS, "trades_unified")).scan(selected_fields=("trade_id", "venue_flag")).to_arrow()
    ids = unified["trade_id"].to_pylist()
    assert sorted(ids) == sorted(str(a) for a in total + second)  # exactly once
    by_id = dict(zip(ids, unified["venue_flag"].to_pylist(), strict=True))
    assert all(by_id[str(a)] == "X" for a in second)  # unified gets it where it is mapped
    assert run_unify(settings, registry, "trades_unified").unified == 0  # rerun lands nothing

    sandbox.faults.clear()  # the venue stops sending it
    run_ingest(settings, registry, ["binance"], symbols=["BTC-USDT"], until=T3)
    (stopped,) = check(catalog, NS, registry)
    third = _ids(sandbox, T2, T3)
    assert (stopped.field, stopped.kind, stopped.still) == ("venue_flag", "missing", True)
    assert stopped.records == len(third)


def _settings(tmp_path, sandbox) -> Settings:  # noqa: F811
    return Settings(home=tmp_path, catalog=default_catalog(tmp_path), mappings_dir=tmp_path / "mappings",
                    streams_dir=tmp_path / "streams", targets_dir=tmp_path / "targets",
                    connectors={"binance": sandbox.connector_options("binance", page_size=200)})


def _unified_flags(catalog) -> dict[str, str | None]:
    rows = catalog.load_table((NS, "trades_unified")).scan(selected_fields=("trade_id", "venue_flag")).to_arrow()
    ids = rows["trade_id"].to_pylist()
    assert len(ids) == len(set(ids))  # never doubled
    return dict(zip(ids, rows["venue_flag"].to_pylist(), strict=True))


def test_a_field_no_target_declares_becomes_a_new_nullable_unified_column(tmp_path, sandbox):  # noqa: F811
    settings = _settings(tmp_path, sandbox)
    registry = get_registry()
    assert "venue_flag" not in registry.targets["trades_unified"].schema.names
    catalog = open_catalog(settings)
    init_tables(catalog, NS, registry)
    sandbox.inject("binance", "new_field", field="venue_flag", value="X", after=DRIFT_AT.isoformat())
    run_ingest(settings, registry, ["binance"], symbols=["BTC-USDT"], since=T0, until=T1)
    run_unify(settings, registry, "trades_unified")  # old rows are unified before the evolution
    unified_before = catalog.load_table((NS, "trades_unified")).current_snapshot()

    (proposal,) = propose(check(catalog, NS, registry), registry, settings)
    (patch,) = proposal.mappings
    assert (patch["target"], patch["new_column"], patch["maps"]) == ("trades_unified", True, "venue_flag: venue_flag")
    applied = apply([proposal], catalog, settings, registry)
    assert "trades_unified: added nullable column venue_flag (string)" in applied
    unified = catalog.load_table((NS, "trades_unified"))
    field = unified.schema().find_field("venue_flag")
    assert not field.required and unified.schema().column_names[-1] == "venue_flag"
    assert unified.current_snapshot().snapshot_id == unified_before.snapshot_id  # metadata only: no data rewritten
    assert (settings.targets_dir / "trades_unified.yaml").exists()
    assert (settings.mappings_dir / "binance_trades_trades_unified.yaml").exists()

    registry = apply_overrides(get_registry(), settings.streams_dir, settings.targets_dir)
    assert registry.targets["trades_unified"].schema.field("venue_flag").nullable
    run_ingest(settings, registry, ["binance"], symbols=["BTC-USDT"], until=T2)
    run_unify(settings, registry, "trades_unified")
    old, new = _ids(sandbox, T0, T1), _ids(sandbox, T1, T2)
    raw = catalog.load_table((NS, "raw_binance_trades")).scan(selected_fields=("id", "venue_flag")).to_arrow()
    raw_flags = dict(zip(map(int, raw["id"].to_pylist()), raw["venue_flag"].to_pylist(), strict=True))
    assert sorted(raw_flags) == sorted(old + new)  # raw: every trade once
    flags = _unified_flags(catalog)
    assert sorted(flags) == sorted(str(a) for a in old + new)  # unified: every trade once
    assert all(raw_flags[a] == "X" and flags[str(a)] == "X" for a in new)  # new rows carry it, raw and unified
    assert all(raw_flags[a] is None and flags[str(a)] is None for a in old)  # old rows read null

    # a rerun of the whole window lands nothing twice, in raw or unified
    again = run_ingest(settings, registry, ["binance"], symbols=["BTC-USDT"], since=T0, until=T2)
    assert sum(s.landed for s in again) == 0
    assert run_unify(settings, registry, "trades_unified").unified == 0
    assert _unified_flags(catalog) == flags


def _raw_flags(catalog) -> dict[int, str | None]:
    rows = catalog.load_table((NS, "raw_binance_trades")).scan(selected_fields=("id", "venue_flag")).to_arrow()
    ids = list(map(int, rows["id"].to_pylist()))
    assert len(ids) == len(set(ids))  # never doubled
    return dict(zip(ids, rows["venue_flag"].to_pylist(), strict=True))


def test_backfill_fills_old_rows_from_the_payload_exactly_once_through_kills(tmp_path, home, sandbox):  # noqa: F811
    config = tmp_path / "config"  # where the CLI, run from tmp_path, finds the override files
    settings = Settings(home=home, catalog=default_catalog(home), mappings_dir=config / "mappings",
                        streams_dir=config / "streams", targets_dir=config / "targets",
                        connectors={"binance": sandbox.connector_options("binance", page_size=200)})
    registry = get_registry()
    catalog = open_catalog(settings)
    init_tables(catalog, NS, registry)
    sandbox.inject("binance", "new_field", field="venue_flag", value="X", after=DRIFT_AT.isoformat())
    run_ingest(settings, registry, ["binance"], symbols=["BTC-USDT"], since=T0, until=T1, pages_per_commit=1)
    run_unify(settings, registry, "trades_unified")
    apply(propose(check(catalog, NS, registry), registry, settings), catalog, settings, registry)
    registry = apply_overrides(get_registry(), settings.streams_dir, settings.targets_dir)
    run_ingest(settings, registry, ["binance"], symbols=["BTC-USDT"], until=T2)
    before, drifted, new = _ids(sandbox, T0, DRIFT_AT), _ids(sandbox, DRIFT_AT, T1), _ids(sandbox, T1, T2)
    assert before and drifted and all(v is None for a, v in _raw_flags(catalog).items() if a not in new)
    raw = catalog.load_table((NS, "raw_binance_trades"))
    snapshot = raw.current_snapshot().snapshot_id

    env = {"SCHEMAHUB_LOAD_PLUGINS": "binance"}
    killed = run_cli("schema", "backfill", env={**env, "SCHEMAHUB_TEST_FAULT": "backfill.before-commit:1"},
                     check=False)
    assert killed.returncode == -9, killed.stderr
    assert catalog.load_table((NS, "raw_binance_trades")).current_snapshot().snapshot_id == snapshot  # nothing
    # two writers: ingest commits while the backfill sleeps with its files written; the backfill's commit then
    # fails, is redone on top of ingest's commits (carrying their progress), and the process dies right after it
    location = Path(raw.location().removeprefix("file://"))

    def written() -> tuple[int, int]:  # data files, manifests
        return len(list(location.rglob("*.parquet"))), len(list(location.rglob("*.avro")))

    landed = written()
    racing = subprocess.Popen([*SCHEMAHUB, "schema", "backfill"], env={
        **os.environ, **env, "SCHEMAHUB_TEST_FAULT": "backfill.before-commit:1:sleep=12,backfill.after-commit:1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while any(now == then for now, then in zip(written(), landed, strict=True)) and time.monotonic() < deadline:
        time.sleep(0.05)  # until the backfill has written its files and manifests: it sleeps just before the commit
    run_ingest(settings, registry, ["binance"], symbols=["BTC-USDT"], until=T3)
    ingested = catalog.load_table((NS, "raw_binance_trades")).current_snapshot()
    assert ingested.snapshot_id != snapshot and ingested.summary.operation.value == "append"
    coverage = watermark_rows(catalog, NS, registry)
    assert racing.wait(timeout=120) == -9, racing.stderr.read() if racing.stderr else ""
    raw = catalog.load_table((NS, "raw_binance_trades"))
    newest = raw.current_snapshot()
    # its first attempt was built on the table before ingest's commit: a parent of ingest's snapshot is the retry
    assert newest.summary.operation.value == "overwrite" and newest.parent_snapshot_id == ingested.snapshot_id
    (rerun,) = json.loads(run_cli("schema", "backfill", "--json", env=env).stdout)
    assert (rerun["files_rewritten"], rerun["rows_filled"], rerun["error"]) == (0, 0, None)  # nothing left to fill
    assert rerun["files_checked"] > 0  # the files of rows whose payload lacks the field are looked at, not rewritten

    third = _ids(sandbox, T2, T3)
    flags = _raw_flags(catalog)
    assert sorted(flags) == sorted(before + drifted + new + third)  # every row once: none lost, none doubled
    assert all(flags[a] == "X" for a in drifted + new + third)  # rows landed before the column now carry it
    assert all(flags[a] is None for a in before)  # their payload has no such field
    assert len(list(raw.scan().plan_files())) == len(list(raw.scan(snapshot_id=ingested.snapshot_id).plan_files()))
    # (each rewritten file replaced one for one)
    assert watermark_rows(catalog, NS, registry) == coverage  # coverage and progress survive the rewrite
    assert check(catalog, NS, registry) == []

    # the pipeline goes on exactly once over the rewritten files
    assert sum(s.landed for s in run_ingest(settings, registry, ["binance"], symbols=["BTC-USDT"], since=T0,
                                            until=T3)) == 0
    run_unify(settings, registry, "trades_unified")
    assert sorted(_unified_flags(catalog)) == sorted(str(a) for a in _ids(sandbox, T0, T3))
    assert run_unify(settings, registry, "trades_unified").unified == 0


def test_schema_cli_reports_drift_and_exits_non_zero(tmp_path, home, sandbox):  # noqa: F811
    env = {f"SCHEMAHUB_BINANCE_{k.upper()}": str(v) for k, v in sandbox.connector_options("binance").items()}
    env["SCHEMAHUB_LOAD_PLUGINS"] = "binance"
    assert "no schema drift" in run_cli("schema", "check", env=env).stdout
    sandbox.inject("binance", "new_field", field="fee_tier", value=3, after=T0.isoformat())
    run_cli("run", "ingest", "binance", "--symbols", "BTC-USDT", "--since", T0.isoformat(),
            "--until", (T0 + timedelta(minutes=2)).isoformat(), env=env)
    proc = run_cli("schema", "check", "--json", env=env, check=False)
    assert proc.returncode == 1
    (item,) = json.loads(proc.stdout)
    assert (item["field"], item["example"], item["proposed_type"]) == ("fee_tier", 3, "int64")
    dry = json.loads(run_cli("schema", "propose", "--json", env=env).stdout)
    assert dry["applied"] == [] and dry["proposals"][0]["column"] == {"name": "fee_tier", "type": "int64"}
    assert not (home.parent / "config" / "streams").exists()  # a dry run writes nothing
    refused = run_cli("schema", "propose", "--backfill", env=env, check=False)
    assert refused.returncode == 1 and "give both" in refused.stderr and "Traceback" not in refused.stderr
    done = json.loads(run_cli("schema", "propose", "--apply", "--backfill", "--json", env=env).stdout)
    (filled,) = done["backfilled"]
    assert (filled["column"], filled["rows_filled"], filled["error"]) == ("fee_tier", item["records"], None)
    raw = open_catalog(Settings(home=home, catalog=default_catalog(home))).load_table((NS, "raw_binance_trades"))
    assert raw.scan(selected_fields=("fee_tier",)).to_arrow()["fee_tier"].to_pylist() == [3] * item["records"]
