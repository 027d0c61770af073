"""``schemahub sql``: DuckDB over every SchemaHub table, on every catalog SchemaHub supports.

Results are checked against the same question answered independently with a pyiceberg scan and pyarrow.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result
from conftest import ROOT, SCHEMAHUB, run_cli
from scripted_support import registry
from storage_fixtures import StorageHome

from schemahub_core.apps.cli import cli
from schemahub_core.apps.pipeline import run_pipeline
from schemahub_core.apps.sql import run_query
from schemahub_core.engine.catalog import open_catalog
from schemahub_core.framework.config import load_settings

SEED_QUERY = ("SELECT exchange, symbol, COUNT(*) AS trades, AVG(price) AS avg_price "
              "FROM schemahub.schemahub.trades_unified WHERE trade_ts >= TIMESTAMP '2024-02-08 15:00:00' "
              "GROUP BY exchange, symbol ORDER BY exchange, symbol")


def lake_env(lake) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMAHUB_")}
    return {**env, "SCHEMAHUB_HOME": str(lake.settings.home)}


def sql_cli(lake, *args: str, check: bool = True, stdin: str | None = None) -> Result:
    """``schemahub sql`` in process (click's runner), on the lake, from a folder with no config file."""
    env = {"SCHEMAHUB_HOME": str(lake.settings.home), "SCHEMAHUB_CONFIG": None}
    with contextlib.chdir(lake.settings.home.parent):
        result = CliRunner().invoke(cli, ["sql", *args], env=env, input=stdin)
    if check:
        assert result.exit_code == 0, result.stderr or result.output
    return result


def expected_seed_answer(catalog, namespace: str = "schemahub", snapshot_id: int | None = None) -> list[dict]:
    """The seed query's answer computed with pyiceberg + pyarrow, no SQL involved."""
    table = catalog.load_table((namespace, "trades_unified"))
    data = table.scan(snapshot_id=snapshot_id, selected_fields=("exchange", "symbol", "price", "trade_ts")).to_arrow()
    since = pa.scalar(pa.scalar("2024-02-08T15:00:00").cast(pa.timestamp("us")).value, pa.timestamp("us", tz="UTC"))
    data = data.filter(pc.greater_equal(data["trade_ts"], since))
    grouped = data.group_by(["exchange", "symbol"]).aggregate([("price", "count"), ("price", "mean")])
    rows = [{"exchange": r["exchange"], "symbol": r["symbol"], "trades": r["price_count"], "avg_price": r["price_mean"]}
            for r in grouped.to_pylist()]
    return sorted(rows, key=lambda r: (r["exchange"], r["symbol"]))


def assert_same_answer(got: list[dict], want: list[dict]) -> None:
    assert [(r["exchange"], r["symbol"], r["trades"]) for r in got] == \
        [(r["exchange"], r["symbol"], r["trades"]) for r in want]
    for g, w in zip(got, want, strict=True):
        assert g["avg_price"] == pytest.approx(w["avg_price"], rel=1e-12)


def test_the_seed_query_runs_verbatim_and_answers_what_pyiceberg_answers(venue_lake) -> None:
    got = json.loads(sql_cli(venue_lake, "--json", SEED_QUERY).stdout)
    want = expected_seed_answer(open_catalog(venue_lake.settings))
    assert {r["exchange"] for r in want} >= {"BINANCE", "COINBASE", "KRAKEN"}
    assert_same_answer(got, want)


def test_the_documented_sql_commands_are_the_seed_query_and_run(venue_lake) -> None:
    documented = []
    for doc in (ROOT / "README.md", ROOT / "docs" / "sql.md"):
        for block in re.findall(r"```shell\n(.*?)```", doc.read_text(), flags=re.S):
            documented += [(doc.name, shlex.split(line[2:])) for line in block.splitlines()
                           if line.startswith("$ schemahub sql")]
    assert {doc for doc, _ in documented} == {"README.md", "sql.md"}
    assert any(argv[-1] == SEED_QUERY for _, argv in documented)
    for _doc, argv in documented:
        sql_cli(venue_lake, *argv[2:])  # from the lake's temp folder: a --parquet file lands there


def test_every_table_by_plain_and_qualified_name(venue_lake) -> None:
    catalog = open_catalog(venue_lake.settings)
    names = sorted(ident[-1] for ident in catalog.list_tables("schemahub"))
    listed = run_query(venue_lake.settings, catalog, "SELECT table_name FROM information_schema.tables "
                       "WHERE table_catalog = 'schemahub' AND table_schema = 'schemahub' ORDER BY 1")
    assert listed.column("table_name").to_pylist() == names
    assert {"raw_binance_trades", "raw_coinbase_trades", "raw_kraken_trades", "quotes_unified"} <= set(names)
    for name in names:
        counts = run_query(venue_lake.settings, catalog, f"SELECT (SELECT COUNT(*) FROM {name}) AS plain, "
                           f"(SELECT COUNT(*) FROM schemahub.schemahub.{name}) AS qualified").to_pylist()[0]
        assert counts["plain"] == counts["qualified"] == catalog.load_table(("schemahub", name)).scan().count(), name


def test_as_of_a_snapshot_or_a_time_reads_the_tables_as_they_were(venue_lake) -> None:
    catalog = open_catalog(venue_lake.settings)
    unified = catalog.load_table(("schemahub", "trades_unified"))
    first = unified.snapshot_by_id(venue_lake.first_unify)
    assert first.snapshot_id != unified.current_snapshot().snapshot_id
    got = json.loads(sql_cli(venue_lake, "--json", "--as-of", str(first.snapshot_id), SEED_QUERY).stdout)
    assert_same_answer(got, expected_seed_answer(catalog, snapshot_id=first.snapshot_id))
    then = (pa.scalar(first.timestamp_ms * 1000, pa.timestamp("us", tz="UTC")).as_py()).isoformat()
    count = "SELECT COUNT(*) AS n FROM trades_unified"
    assert json.loads(sql_cli(venue_lake, "--json", "--as-of", then, count).stdout) == \
        [{"n": unified.scan(snapshot_id=first.snapshot_id).count()}]
    # before anything was written every table is empty, but still there
    assert json.loads(sql_cli(venue_lake, "--json", "--as-of", "2001-01-01T00:00:00Z", count).stdout) == [{"n": 0}]
    bad = sql_cli(venue_lake, "--as-of", "12345", count, check=False)
    assert bad.exit_code == 1 and "snapshot 12345 belongs to no SchemaHub table" in bad.stderr


def test_output_as_a_table_csv_json_and_parquet(venue_lake, tmp_path: Path) -> None:
    query = "SELECT exchange, COUNT(*) AS n FROM trades_unified GROUP BY exchange ORDER BY exchange"
    want = run_query(venue_lake.settings, open_catalog(venue_lake.settings), query).to_pylist()
    shown = sql_cli(venue_lake, query).stdout
    assert re.search(r"exchange\s.*\bn\b", shown) and f"{len(want)} rows" in shown
    for row in want:
        assert re.search(rf"{row['exchange']}\s+\S*\s*{row['n']}\b", shown)
    literal = sql_cli(venue_lake, "SELECT '[bold]x[/] [a-z]' AS \"[c]\"").stdout  # data is never rich markup
    assert "[bold]x[/] [a-z]" in literal and "[c]" in literal
    csv_lines = sql_cli(venue_lake, "--csv", query).stdout.splitlines()
    assert csv_lines == ['"exchange","n"', *(f'"{r["exchange"]}",{r["n"]}' for r in want)]
    assert json.loads(sql_cli(venue_lake, "--json", query).stdout) == want
    out = tmp_path / "by-venue.parquet"
    sql_cli(venue_lake, "--parquet", str(out), query)
    assert pq.read_table(out).to_pylist() == want
    piped = sql_cli(venue_lake, "--json", stdin=query)
    assert json.loads(piped.stdout) == want  # no query argument and no terminal: the query comes from stdin


def test_bad_sql_is_one_line_and_a_non_zero_exit(venue_lake) -> None:
    for query in ("SELEC 1", "SELECT nope FROM trades_unified", "SELECT * FROM no_such_table"):
        proc = sql_cli(venue_lake, query, check=False)
        assert proc.exit_code == 1 and proc.stdout == "", query
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: "), proc.stderr
    child = subprocess.run([*SCHEMAHUB, "sql", "SELEC 1"], capture_output=True, text=True, env=lake_env(venue_lake),
                           cwd=venue_lake.settings.home.parent, timeout=120)  # what a user's shell sees
    assert child.returncode == 1 and child.stdout == ""
    assert child.stderr.strip() == 'error: Parser Error: syntax error at or near "SELEC"'


def _storage_lake(home: StorageHome) -> list[dict]:
    """The scripted venues' pipeline on a production backend; then the seed query through the CLI."""
    settings = load_settings()
    settings.connectors = {"scripted": {"trades": 30}, "scripted_b": {"trades": 20}}
    run_pipeline(settings, registry(), "trades_unified")
    proc = run_cli("sql", "--json", SEED_QUERY, env=home.env)
    got = json.loads(proc.stdout)
    assert_same_answer(got, expected_seed_answer(open_catalog(settings)))
    return got


def test_sql_on_a_postgresql_catalog(postgres_home: StorageHome) -> None:
    got = _storage_lake(postgres_home)
    assert sum(r["trades"] for r in got) == 30 * 2 + 20


def test_sql_on_glue_and_s3(s3_glue_home: StorageHome) -> None:
    got = _storage_lake(s3_glue_home)
    assert sum(r["trades"] for r in got) == 30 * 2 + 20


def test_an_empty_home_says_to_run_init(home: Path) -> None:
    proc = run_cli("sql", "SELECT 1", check=False)
    assert proc.returncode == 1 and "schemahub init" in proc.stderr and "Traceback" not in proc.stderr


def test_the_prompt_runs_statements_ended_by_semicolons_and_survives_errors(venue_lake, monkeypatch, capsys) -> None:
    from schemahub_core.apps.cli.sql import _interactive
    from schemahub_core.apps.sql import Lake

    lines = iter(["SELECT COUNT(*) AS n", "FROM trades_unified;", "SELEC 1;", "SELECT 41 + 1 AS answer;", ".quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    lake = Lake(venue_lake.settings, open_catalog(venue_lake.settings))
    try:
        _interactive(lake)
    finally:
        lake.close()
    out = capsys.readouterr()
    n = open_catalog(venue_lake.settings).load_table(("schemahub", "trades_unified")).scan().count()
    assert re.search(rf"\b{n}\b", out.out) and "42" in out.out
    assert 'syntax error at or near "SELEC"' in out.err


def test_queries_are_recorded_and_partitions_suggest_reads_them(venue_lake, tmp_path: Path) -> None:
    import yaml
    from lake_fixtures import FIRST
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

    from schemahub_core.engine.coverage import micros

    home = tmp_path / "home"  # the lake's catalog, our own home: the log is written here, not in the shared lake
    config = tmp_path / "schemahub.yaml"
    config.write_text(yaml.safe_dump({"catalog": dict(venue_lake.settings.catalog)}))
    env = {"SCHEMAHUB_HOME": str(home), "SCHEMAHUB_CONFIG": str(config)}

    def invoke(*args: str, ok: bool = True) -> Result:
        result = CliRunner().invoke(cli, list(args), env=env)
        assert (result.exit_code == 0) == ok, result.output
        return result

    start, end = (t.strftime("%Y-%m-%d %H:%M:%S") for t in FIRST)
    invoke("sql", f"SELECT COUNT(*) FROM trades_unified t WHERE t.symbol = 'BTC-USDT' AND trade_ts >= TIMESTAMP "
                  f"'{start}' AND trade_ts < TIMESTAMP '{end}'")
    invoke("sql", "SELECT exchange, COUNT(*) FROM schemahub.schemahub.trades_unified GROUP BY exchange")
    invoke("sql", "SELEC 1", ok=False)  # a failed query reads nothing: not recorded
    log = [json.loads(line) for line in (home / "state" / "sql-queries.jsonl").read_text().splitlines()]
    assert [(e["table"], e["columns"]) for e in log] == [("trades_unified", ["symbol", "trade_ts"]),
                                                         ("trades_unified", [])]
    assert log[0]["window"] == {"column": "trade_ts", "start": FIRST[0].isoformat(), "end": FIRST[1].isoformat()}

    table = open_catalog(venue_lake.settings).load_table(("schemahub", "trades_unified"))
    window = And(GreaterThanOrEqual("trade_ts", micros(FIRST[0])), LessThan("trade_ts", micros(FIRST[1])))
    files_now = len(list(table.scan(row_filter=window).plan_files()))
    suggestion = json.loads(invoke("partitions", "suggest", "--json").output)
    assert suggestion["queries"] == {
        "recorded": 2, "filter_columns": {"symbol": 1, "trade_ts": 1}, "filter_symbol": 1, "time_window": 1,
        "median_window_seconds": (FIRST[1] - FIRST[0]).total_seconds(), "median_window_files_now": files_now}
    assert "2 recorded `schemahub sql` queries on this table" in suggestion["inputs"]
    assert any(r.startswith("2 recorded sql queries: 1 filter symbol, 1 bound trade_ts") for r in suggestion["reasons"])
    text = invoke("partitions", "suggest").output
    assert "planned from" in text and "2 recorded `schemahub sql` queries" in text


def test_the_query_log_keeps_its_newest_entries_only(tmp_path: Path) -> None:
    from schemahub_core.apps.sql import record_queries

    path = tmp_path / "state" / "log.jsonl"
    for i in range(25):
        record_queries(path, [{"table": "t", "columns": [str(i)], "window": None}], keep=10)
    kept = [json.loads(line)["columns"][0] for line in path.read_text().splitlines()]
    assert len(kept) <= 10 and kept[-1] == "24" and kept == [str(i) for i in range(25 - len(kept), 25)]
