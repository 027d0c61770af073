"""Real processes, real crashes: SIGKILL a `schemahub run pipeline` anywhere, two ingests racing.

Children find the scripted venues through a real entry point (``child_env``) and
write a real SQLite catalog and warehouse under a temp ``SCHEMAHUB_HOME``.
Kills come from ``SCHEMAHUB_TEST_FAULT`` (exact commit points, including between
the data files being written and the catalog commit) or from a timer.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from scripted_support import (
    NS,
    child_env,
    expected_rows,
    raw_keys,
    registry,
    served_keys,
    settings_for,
    start_cli,
    unified_rows,
)

from schemahub_core.apps.pipeline import run_pipeline
from schemahub_core.engine.catalog import open_catalog
from schemahub_core.testing.scripted import trades_for

KILLED = -signal.SIGKILL
# Commit points and how often each is reached in a fresh run of the options below.
POINTS = {
    "ingest.before-commit": 7,  # data files + manifests written, catalog not yet committed
    "unify.before-commit": 1,
    "quarantine.before-commit": 1,
    "ingest.after-commit": 7,  # committed, response not yet seen
    "unify.after-commit": 1,
    "quarantine.after-commit": 1,
}
SEEDS = range(20)


def crash_options(seed: int) -> dict:
    """18 BTC-USD + 18 ETH-USD trades in pages of 6, two of them malformed; 6 more from a second venue."""
    btc = trades_for("scripted", seed, "BTC-USD", 18)
    bad = random.Random(seed).sample([t["id"] for t in btc], 2)
    return {"scripted": {"seed": seed, "trades": 18, "page_size": 6, "malformed": ",".join(map(str, bad))},
            "scripted_b": {"seed": seed, "trades": 6, "page_size": 6}}


def crash_plan(seed: int) -> list[str | float]:
    """One or two kills: a fault spec (``point:n``) or a timer in seconds. Seeds 0-5 cover every point."""
    rng = random.Random(f"plan-{seed}")
    plan: list[str | float] = []
    for i in range(1 + (rng.random() < 0.3)):
        if i == 0 and seed < len(POINTS):
            point = list(POINTS)[seed]
        elif rng.random() < 0.25:
            plan.append(round(rng.uniform(0.8, 1.8), 2))
            continue
        else:
            point = rng.choice(list(POINTS))
        plan.append(f"{point}:{rng.randint(1, POINTS[point])}")
    return plan


def killed_runs(tmp_path: Path, seed: int) -> list[tuple[str | float, int, str]]:
    """Run the seed's plan, each step a child `schemahub run pipeline` that gets killed."""
    home, out = tmp_path / "home", []
    for kill in crash_plan(seed):
        fault = kill if isinstance(kill, str) else None
        proc = start_cli(["run", "pipeline", "trades_unified", "--pages-per-commit", "1"],
                         child_env(tmp_path, home, crash_options(seed), fault), tmp_path)
        if isinstance(kill, float):
            try:
                proc.wait(timeout=kill)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
        out.append((kill, proc.returncode, err))
    return out


def orphan_data_files(home: Path) -> set[str]:
    """Parquet files in the warehouse that no table references: what a kill between write and commit leaves."""
    settings = settings_for(home, {})
    catalog = open_catalog(settings)
    referenced = set()
    for _, name in catalog.list_tables(NS):
        table = catalog.load_table((NS, name))
        if table.current_snapshot() is not None:
            referenced |= {p.removeprefix("file://") for p in table.inspect.all_files().column("file_path").to_pylist()}
    return {str(p) for p in (home / "warehouse").rglob("*.parquet")} - referenced


def recover_and_check(home: Path, seed: int, runs: list) -> None:
    """Rerun the pipeline to completion in-process, then compare every table with what the venues served."""
    options = crash_options(seed)
    settings = settings_for(home, options)
    stats = run_pipeline(settings, registry(), "trades_unified")
    assert not [s.error for s in stats if s.error], seed
    assert unified_rows(settings) == expected_rows(options), f"seed {seed}: unified differs ({runs})"
    for source in ("scripted", "scripted_b"):
        assert raw_keys(settings, source) == served_keys(source, options[source]), f"seed {seed}: {source}"
    bad = {int(i) for i in options["scripted"]["malformed"].split(",")}
    catalog = open_catalog(settings)
    payloads = catalog.load_table((NS, "schemahub_quarantine")).scan().to_arrow().column("payload").to_pylist()
    got = Counter((json.loads(p)["symbol"], json.loads(p)["id"]) for p in payloads)
    want = Counter((t["symbol"], t["id"]) for s in ("BTC-USD", "ETH-USD")
                   for t in trades_for("scripted", seed, s, 18) if t["id"] in bad)
    assert got == want, f"seed {seed}: quarantine {got} != {want}"

    tables = ("trades_unified", "raw_scripted_trades", "raw_scripted_b_trades", "schemahub_quarantine",
              "schemahub_watermarks")
    before = {t: len(catalog.load_table((NS, t)).snapshots()) for t in tables}
    run_pipeline(settings, registry(), "trades_unified")  # and once more: nothing at all to do
    assert {t: len(catalog.load_table((NS, t)).snapshots()) for t in tables} == before, f"seed {seed}"


def test_sigkill_anywhere_then_rerun_lands_every_trade_exactly_once(tmp_path: Path) -> None:
    def crash_then_recover(seed: int) -> list[tuple[str | float, int, str]]:
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        runs = killed_runs(folder, seed)
        for i, (kill, code, err) in enumerate(runs):
            assert code in (KILLED, 0), f"seed {seed} {kill}: exit {code}\n{err}"
            if i == 0 and isinstance(kill, str):  # a fresh run reaches every point: the kill must happen
                assert code == KILLED, f"seed {seed}: fault {kill} never fired\n{err}"
        if ".before-commit:" in str(runs[0][0]):  # the proof that the kill fell between write and commit
            assert orphan_data_files(folder / "home"), f"seed {seed}: killed before commit, yet no file written"
        recover_and_check(folder / "home", seed, runs)
        return runs

    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = list(pool.map(crash_then_recover, SEEDS))
    fired = Counter(kill.split(":")[0] for steps in runs for kill, code, _ in steps
                    if code == KILLED and isinstance(kill, str))
    assert set(fired) == set(POINTS), fired


@pytest.mark.parametrize("race", ["stalled", "free"])
def test_two_ingest_processes_on_one_source_land_every_trade_once(tmp_path: Path, race: str) -> None:
    """"stalled": one writer stops between writing its data files and committing while the other runs
    through, so its batch must be detected as stale and dropped. "free": both simply race."""
    options = {"scripted": {"trades": 40, "page_size": 5, "slow_ms": 0 if race == "stalled" else 15}}
    home = tmp_path / "home"
    stall = "ingest.before-commit:2:sleep=3" if race == "stalled" else None
    procs = [start_cli(["run", "ingest", "scripted", "--json", "--pages-per-commit", "1"],
                       child_env(tmp_path, home, options, fault), tmp_path)
             for fault in (stall, None)]
    results = [p.communicate(timeout=120) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
    stats = [json.loads(out) for out, _ in results]

    settings = settings_for(home, options)
    assert raw_keys(settings, "scripted") == served_keys("scripted", options["scripted"])  # no duplicate, no gap
    assert sum(s["landed"] for run in stats for s in run) == 80  # each batch landed by exactly one of them
    if race == "stalled":
        assert sum(s["dropped_batches"] for s in stats[0]) >= 1, stats[0]  # the stalled writer saw the move
        status = start_cli(["status", "--json"], child_env(tmp_path, home, options), tmp_path)
        out, err = status.communicate(timeout=60)
        assert status.returncode == 0, err
        marks = {(r["symbol"], r["cursor"], r["rows"]) for r in json.loads(out)["sources"]}
        assert marks == {(s, str(trades_for("scripted", 0, s, 40)[-1]["id"]), 40) for s in ("BTC-USD", "ETH-USD")}


def test_sigkill_between_staged_unify_parts_then_rerun_is_exact(tmp_path: Path) -> None:
    """With a 1 MiB bound every raw batch is its own staged part: kill after part k, before and after the
    one commit. The killed run leaves unreferenced files only; the rerun lands every trade exactly once."""
    kills = ["unify.staged:1", "unify.staged:3", "unify.staged:6", "unify.before-commit:1", "unify.after-commit:1"]

    def crash_then_recover(i: int) -> str:
        folder = tmp_path / f"k{i}"
        folder.mkdir()
        home, options = folder / "home", crash_options(i)
        ingest = start_cli(["run", "ingest", "scripted", "scripted_b", "--pages-per-commit", "1"],
                           child_env(folder, home, options), folder)  # one raw file per page
        assert ingest.wait(timeout=120) == 0, ingest.communicate()[1]
        proc = start_cli(["run", "unify", "trades_unified", "--memory-mb", "1"],
                         child_env(folder, home, options, kills[i]), folder)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == KILLED, f"{kills[i]} never fired\n{err}"
        committed = open_catalog(settings_for(home, {})).load_table((NS, "trades_unified")).snapshots()
        assert len(committed) == (1 if "after-commit" in kills[i] else 0), kills[i]
        if "after-commit" not in kills[i]:
            assert orphan_data_files(home), f"{kills[i]}: killed after staging, yet no file written"
        recover_and_check(home, i, [kills[i]])
        return kills[i]

    with ThreadPoolExecutor(max_workers=3) as pool:
        assert list(pool.map(crash_then_recover, range(len(kills)))) == kills
