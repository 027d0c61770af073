"""Every failure a user can cause is one line on stderr, a non-zero exit and nothing written (issue 20).

Each test runs the real ``schemahub`` in a child process against the project's simulated venues (or the
scripted test venue), then checks stderr is exactly one ``error:`` line with no traceback, and that the
SchemaHub home is byte-for-byte what it was before the command (``files_of``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, run_cli
from scripted_support import child_env, expected_rows, start_cli
from storage_fixtures import free_port

from schemahub_core.sandbox import Sandbox, SandboxConfig

WINDOW = ("--since", "2024-02-08T15:12:00Z", "--until", "2024-02-08T15:12:10Z")  # into the event: every venue trades


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(SandboxConfig.fast()) as server:
        yield server


def files_of(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` with its size and modification time: "nothing written" is equality."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def one_line_error(proc, *, code: int = 1) -> str:
    """The single ``error:`` line of a failed command (asserting that is all stderr holds)."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def sandbox_env(sandbox: Sandbox, **extra: str) -> dict[str, str]:
    return {**sandbox.env(), "SCHEMAHUB_BINANCE_BACKOFF": "0.01", **extra}


# ------------------------------------------------------------------------------------------------- venues


def test_refused_connection_fails_fast_naming_the_url(home: Path) -> None:
    run_cli("init")
    before = files_of(home)
    port = free_port()
    started = time.monotonic()
    proc = run_cli("run", "ingest", "binance", env={"SCHEMAHUB_BINANCE_BASE_URL": f"http://127.0.0.1:{port}/binance"},
                   check=False)
    elapsed = time.monotonic() - started
    line = one_line_error(proc)
    assert f"http://127.0.0.1:{port}" in line and "connection refused" in line and "sandbox" in line, line
    assert "rerun to resume" not in line
    assert elapsed < 30, f"took {elapsed:.1f} s (used to retry for 48 s)"  # process start-up included
    assert files_of(home) == before


def test_http_400_is_not_called_resumable(home: Path, sandbox: Sandbox) -> None:
    run_cli("init")
    before = files_of(home)
    proc = run_cli("run", "ingest", "binance.trades", "--symbols", "NOPE-XYZ", *WINDOW, env=sandbox_env(sandbox),
                   check=False)
    line = one_line_error(proc)
    assert "HTTP 400" in line and "Invalid symbol" in line and "rerun to resume" not in line, line
    assert files_of(home) == before


# ------------------------------------------------------------------------------------------------ catalogs


@pytest.mark.parametrize("uri, expected", [
    ("sqlite:////nonexistent-schemahub/dir/catalog.db", "does the folder /nonexistent-schemahub/dir exist"),
    ("nosuchdb://host/db", "unknown database scheme 'nosuchdb'"),
    ("postgresql+psycopg2://schemahub:secret@127.0.0.1:{port}/schemahub", "the database server does not answer"),
])
def test_catalog_that_cannot_open_is_one_line(home: Path, tmp_path: Path, uri: str, expected: str) -> None:
    config = tmp_path / "schemahub.yaml"
    warehouse = tmp_path / "warehouse"
    config.write_text(json.dumps({"catalog": {"type": "sql", "uri": uri.format(port=free_port()),
                                              "warehouse": warehouse.as_uri()}}))
    proc = run_cli("--config", str(config), "init", check=False)
    line = one_line_error(proc)
    assert expected in line and "secret" not in line, line
    assert not warehouse.exists() and not home.exists()


# ------------------------------------------------------------------------------------------------- storage
# A read-only or full warehouse: SCHEMAHUB_TEST_FAULT raises the OSError the file system would (errno 30 /
# 28) at the engine's write points. INJECTED, not a real mount: the real-mount variant is in
# test_real_read_only_warehouse_mid_run (skipped where mounting a tmpfs is not allowed).

SCRIPTED = {"scripted": {"trades": 30, "page_size": 10}}


def scripted_rows(proc) -> dict[str, dict]:
    return {s["name"]: s for s in json.loads(proc.stdout)}


def test_warehouse_read_only_mid_run_is_one_line_with_a_summary(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = child_env(tmp_path, home, SCRIPTED, fault="ingest.before-commit:2:errno=30")
    proc = run_cli("run", "pipeline", "trades_unified", "--json", env=env, cwd=tmp_path, check=False)
    line = one_line_error(proc)
    assert "read-only" in line and "[Errno 30]" in line and "rerun to resume" in line, line
    first = json.loads(proc.stdout)  # the summary of what did land before the warehouse refused
    assert [s["step"] for s in first] == ["ingest"] * len(first) and first[-1]["error"]  # stopped: no unify
    rerun = run_cli("run", "pipeline", "trades_unified", "--json", env={**env, "SCHEMAHUB_TEST_FAULT": ""},
                    cwd=tmp_path)
    landed = sum(s["landed"] for run in (first, json.loads(rerun.stdout)) for s in run if s["step"] == "ingest")
    unified = [s for s in json.loads(rerun.stdout) if s["step"] == "unify"][0]
    total = sum(expected_rows(SCRIPTED).values())
    assert landed == total and unified["unified"] == total  # nothing lost, nothing doubled across the fault


def test_disk_full_while_rebuilding_watermarks_is_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = child_env(tmp_path, home, SCRIPTED, fault="watermarks.before-write:1:errno=28")
    proc = run_cli("run", "ingest", "scripted", env=env, cwd=tmp_path, check=False)
    line = one_line_error(proc)
    assert "no space left" in line and "schemahub_watermarks" in line and "landed data is safe" in line, line
    assert "run summary" in proc.stdout


def _mount_tmpfs(target: Path) -> bool:
    target.mkdir()
    return os.geteuid() == 0 and os.system(f"mount -t tmpfs -o size=64m tmpfs {target} 2>/dev/null") == 0


def test_real_read_only_warehouse_mid_run(tmp_path: Path) -> None:
    """A real tmpfs remounted read-only while the run sleeps after its first commit: errno 30 from the kernel."""
    warehouse = tmp_path / "warehouse"
    if not _mount_tmpfs(warehouse):
        pytest.skip("mounting a tmpfs needs root with CAP_SYS_ADMIN; the injected variant above still runs")
    proc = None
    try:
        config = tmp_path / "schemahub.yaml"
        config.write_text(json.dumps({"catalog": {"type": "sql", "uri": f"sqlite:///{tmp_path / 'catalog.db'}",
                                                  "warehouse": warehouse.as_uri()}}))
        env = {**child_env(tmp_path, tmp_path / "home", SCRIPTED, fault="ingest.after-commit:1:sleep=3"),
               "SCHEMAHUB_CONFIG": str(config)}
        proc = start_cli(["run", "ingest", "scripted"], env, tmp_path)
        deadline = time.monotonic() + 60
        while not list(warehouse.rglob("*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.05)
        while os.system(f"mount -o remount,ro {warehouse} 2>/dev/null") != 0:  # busy while a file is open
            assert time.monotonic() < deadline and proc.poll() is None, "the run ended before the remount"
            time.sleep(0.05)
        out, err = proc.communicate(timeout=120)
        proc.stdout, proc.stderr = out, err  # for one_line_error
        line = one_line_error(proc)
        assert "read-only" in line and "rerun to resume" in line, line
        assert "run summary" in out
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        os.system(f"umount {warehouse}")


# ------------------------------------------------------------------------------------------- configuration


def test_bad_page_size_names_the_option(home: Path, sandbox: Sandbox) -> None:
    proc = run_cli("run", "pipeline", "trades_unified", *WINDOW,
                   env=sandbox_env(sandbox, SCHEMAHUB_BINANCE_PAGE_SIZE="abc"), check=False)
    line = one_line_error(proc)
    assert "page_size='abc'" in line and "SCHEMAHUB_BINANCE_PAGE_SIZE" in line, line
    assert not home.exists()


def test_bad_timeout_in_config_names_the_option(home: Path, tmp_path: Path, sandbox: Sandbox) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "schemahub.yaml").write_text("connectors:\n  coinbase:\n    timeout: soon\n")
    proc = run_cli("run", "pipeline", "trades_unified", *WINDOW, env=sandbox_env(sandbox), check=False)
    line = one_line_error(proc)
    assert "connectors.coinbase.timeout" in line and "'soon'" in line, line
    assert not home.exists()


def test_bad_rate_limit_of_the_last_venue_fails_before_any_write(home: Path, sandbox: Sandbox) -> None:
    proc = run_cli("run", "pipeline", "trades_unified", *WINDOW,
                   env=sandbox_env(sandbox, SCHEMAHUB_KRAKEN_RATE_LIMIT="lots"), check=False)
    line = one_line_error(proc)
    assert "rate_limit='lots'" in line and "SCHEMAHUB_KRAKEN_RATE_LIMIT" in line, line
    assert not home.exists()  # binance and coinbase, mapped first, did not ingest


# -------------------------------------------------------------------------------------------- silent no-ops


def test_since_after_until_is_an_error(home: Path, sandbox: Sandbox) -> None:
    proc = run_cli("run", "ingest", "binance", "--since", "2024-02-09T00:00:00Z", "--until", "2024-02-08T00:00:00Z",
                   env=sandbox_env(sandbox), check=False)
    assert "is not before --until" in one_line_error(proc)
    assert not home.exists()


def test_pipeline_without_any_venue_is_an_error(home: Path) -> None:
    proc = run_cli("run", "pipeline", "trades_unified", env={"SCHEMAHUB_LOAD_PLUGINS": ""}, check=False)
    line = one_line_error(proc)
    assert "no installed venue is mapped into trades_unified" in line and "up to date" not in proc.stdout, line
    assert not home.exists()


def test_misspelt_load_plugins_is_an_error(home: Path) -> None:
    proc = run_cli("plugins", "list", env={"SCHEMAHUB_LOAD_PLUGINS": "binanse"}, check=False)
    line = one_line_error(proc)
    assert "'binanse'" in line and "binance" in line.split("installed:")[1], line


def test_plugins_new_refuses_an_installed_name(tmp_path: Path) -> None:
    proc = run_cli("plugins", "new", "binance", "--dir", str(tmp_path), check=False)
    assert "already installed" in one_line_error(proc)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------- bad records


def test_trade_with_null_price_goes_to_quarantine_not_unified(tmp_path: Path) -> None:
    from pyiceberg.expressions import IsNull
    from scripted_support import settings_for

    from schemahub_core.engine.catalog import open_catalog
    from schemahub_core.testing.scripted import ScriptedConnector, trades_for

    home = tmp_path / "home"
    symbol = ScriptedConnector.default_symbols[0]
    bad = [t["id"] for t in trades_for("scripted", 0, symbol, 20)][3:5]
    env = child_env(tmp_path, home, {"scripted": {"trades": 20, "null_price": ",".join(map(str, bad))}})
    proc = run_cli("run", "pipeline", "trades_unified", "--json", env=env, cwd=tmp_path)
    unify = [s for s in json.loads(proc.stdout) if s["step"] == "unify"][0]
    assert unify["quarantined"] == 2 and unify["unified"] == unify["fetched"] - 2, unify
    catalog = open_catalog(settings_for(home, {}))
    trades = catalog.load_table(("schemahub", "trades_unified"))
    assert trades.scan(row_filter=IsNull("price")).to_arrow().num_rows == 0
    quarantined = catalog.load_table(("schemahub", "schemahub_quarantine")).scan().to_arrow().to_pylist()
    assert sorted(json.loads(r["payload"])["id"] for r in quarantined) == sorted(bad)
    assert all("required column(s) price" in r["reason"] for r in quarantined), quarantined
    again = run_cli("run", "unify", "trades_unified", "--json", env=env, cwd=tmp_path)
    assert json.loads(again.stdout)[0]["quarantined"] == 0  # nothing set aside twice


# ------------------------------------------------------------------------------------------------------ live


def test_live_unknown_symbol_on_the_sandbox_is_one_line(home: Path) -> None:
    proc = run_cli("live", "--symbols", "NOPE-XYZ", "--sandbox", "--duration", "3s", check=False)
    line = one_line_error(proc)  # no ASGI CancelledError tracebacks from the sandbox shutting down
    assert "no quote for NOPE-XYZ from any venue" in line, line
    assert not home.exists()


def test_live_with_no_venue_reachable_gives_up(home: Path) -> None:
    port = free_port()
    proc = run_cli("live", "--symbols", "BTC-USD", "--venues", "binance", "--give-up-after", "2s",
                   env={"SCHEMAHUB_BINANCE_WS_URL": f"ws://127.0.0.1:{port}"}, check=False)
    line = one_line_error(proc)  # instead of "connecting" forever and exit 0
    assert "no venue could be reached in 2 s" in line and f"ws://127.0.0.1:{port}" in line, line


def test_kraken_raw_payload_is_the_original_json(home: Path, sandbox: Sandbox) -> None:
    import requests

    from schemahub_core.engine.catalog import open_catalog
    from schemahub_core.framework.config import load_settings

    run_cli("run", "ingest", "kraken.trades", "--symbols", "BTC-USD", *WINDOW, env=sandbox_env(sandbox))
    raw = open_catalog(load_settings()).load_table(("schemahub", "raw_kraken_trades")).scan().to_arrow()
    payloads = raw.sort_by("time").column("_raw_payload").to_pylist()
    assert payloads
    original = requests.get(f"{sandbox.base_url('kraken')}/0/public/Trades",
                            params={"pair": "XXBTZUSD", "since": 1707405120 * 10**9 - 1, "count": 1}).text
    first = json.loads(payloads[0])
    assert isinstance(first[2], float) and isinstance(first[0], str)  # time a number, price a string: as sent
    assert payloads[0] in original.replace(" ", "")  # the very text of the row the venue sent


# ----------------------------------------------------------------------------------------------------- smaller


def test_maintain_json_is_the_array_its_help_says(home: Path) -> None:
    assert "JSON array with one object per table" in " ".join(run_cli("maintain", "--help").stdout.split())
    run_cli("init")
    reports = json.loads(run_cli("maintain", "--json").stdout)
    assert isinstance(reports, list) and reports and all("table" in r for r in reports)


@pytest.mark.parametrize("columns", [None, "80"])
def test_piped_tables_never_wrap_names_mid_word(home: Path, columns: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    if columns:
        env["COLUMNS"] = columns
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "schemahub_core", "plugins", "list"], env=env, capture_output=True,
                         text=True, check=True).stdout  # stdout is a pipe: no TTY
    names = [line.split("│")[1].strip() for line in out.splitlines() if line.startswith("│")]
    assert {"schemahub-core", "binance", "coinbase", "kraken"} <= set(names), out


def test_config_mappings_folder_the_docs_name_exists_and_validates() -> None:
    folder = ROOT / "config" / "mappings"
    assert (folder / "README.md").is_file() and "config/mappings/" in (ROOT / "docs" / "guide.md").read_text()
    proc = run_cli("mappings", "validate", cwd=ROOT, env={"SCHEMAHUB_HOME": "/nonexistent-never-written"})
    assert "README" not in proc.stdout + proc.stderr  # only *.yaml files are mappings


def test_status_after_a_run_that_fetched_nothing_says_why(home: Path, sandbox: Sandbox) -> None:
    proc = run_cli("run", "ingest", "binance.trades", "--symbols", "BTC-USDT", "--since", "2025-06-01T00:00:00Z",
                   env=sandbox_env(sandbox))  # after the sandbox's clock (2024-02-10), so nothing
    assert "failed" not in proc.stdout
    status = " ".join(run_cli("status").stdout.split())
    assert "no data has landed yet" in status and "--since 2024-02-08T15:00:00Z" in status, status
    assert "try `schemahub run" not in status  # not the command that was just run
