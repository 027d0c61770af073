"""`run ingest --shard i/n`: N processes on one shared catalog split the work units, and together land
exactly what one run would.

The shards run at once as real CLI processes against the sandbox's simulated venues, on a PostgreSQL
SQL catalog (the shared catalog a cluster would use); the truth is the sandbox's own trade list.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import SCHEMAHUB, doc_commands, run_cli
from storage_fixtures import StorageHome

from schemahub_core.engine.catalog import open_catalog
from schemahub_core.engine.shards import Shard, shard_of
from schemahub_core.framework.config import ConfigError, load_settings
from schemahub_core.sandbox import EVENT_AT, Sandbox, SandboxConfig

NS = "schemahub"
SOURCES = {  # source -> (raw id column, raw symbol column, its default symbols -> native symbol in the sandbox)
    "binance": ("id", "symbol", {"BTC-USDT": "BTCUSDT", "ETH-USDT": "ETHUSDT"}),
    "coinbase": ("trade_id", "product_id", {"BTC-USD": "BTC-USD", "ETH-USD": "ETH-USD"}),
    "kraken": ("trade_id", "pair", {"BTC-USD": "XXBTZUSD", "ETH-USD": "XETHZUSD"}),
}
UNITS = [(source, "trades", symbol) for source, (_, _, symbols) in SOURCES.items() for symbol in symbols]


def test_the_split_is_stable_and_covers_every_unit_once() -> None:
    # pinned values: a changed hash would silently move units between hosts running different versions
    assert [shard_of(*unit, 3) for unit in UNITS] == [2, 3, 1, 2, 2, 2]
    units = [(f"venue{v}", stream, f"SYM{s}-USD") for v in range(5) for stream in ("trades", "quotes")
             for s in range(40)]
    for n in (1, 2, 3, 7):
        owners = Counter(sum(Shard(i, n).owns(*u) for i in range(1, n + 1)) for u in units)
        assert owners == {1: len(units)}, f"n={n}: a unit owned by no shard or by two"
        sizes = Counter(shard_of(*u, n) for u in units)
        assert min(sizes.values()) > len(units) / n / 2, f"n={n}: lopsided split {sizes}"
    assert Shard.parse(" 2/3 ") == Shard(2, 3) and str(Shard(2, 3)) == "2/3"
    for bad in ("0/3", "4/3", "1/0", "3", "a/b", "1/-2", "", "1/2/3"):
        with pytest.raises(ConfigError, match="expected I/N"):
            Shard.parse(bad)


@pytest.mark.parametrize("bad", ["0/3", "x/3"])
def test_a_bad_shard_is_one_line_before_any_write(tmp_path: Path, bad: str) -> None:
    home = tmp_path / "home"
    proc = run_cli("run", "ingest", "binance", "--shard", bad, check=False,
                   env={"SCHEMAHUB_HOME": str(home)}, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "expected I/N" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not home.exists()


def test_three_shards_at_once_land_every_unit_exactly_once(tmp_path: Path, postgres_home: StorageHome) -> None:
    """The three commands docs/cluster.md shows, run at once."""
    since, until = EVENT_AT - timedelta(seconds=2), EVENT_AT + timedelta(seconds=1)
    commands = doc_commands("cluster.md", "--shard")
    assert [c[c.index("--shard") + 1] for c in commands] == ["1/3", "2/3", "3/3"]
    for argv in commands:
        assert argv[:2] == ["run", "ingest"] and "--json" in argv
        assert [argv[argv.index(o) + 1] for o in ("--since", "--until")] == \
            [t.isoformat().replace("+00:00", "Z") for t in (since, until)]
    with Sandbox(SandboxConfig.fast()) as sandbox:
        env = {**os.environ, **postgres_home.env, **sandbox.env(), "SCHEMAHUB_LOAD_PLUGINS": ",".join(SOURCES)}

        def shards() -> list[list[dict]]:
            procs = [subprocess.Popen([*SCHEMAHUB, *argv], env=env, cwd=tmp_path, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE) for argv in commands]
            outs = [p.communicate(timeout=180) for p in procs]
            for p, (out, err) in zip(procs, outs, strict=True):
                assert p.returncode == 0, f"{out}\n{err}"
            return [json.loads(out) for out, _ in outs]

        first = shards()
        again = shards()
        truth = {(source, symbol): [int(k[1]) for k in sandbox.venues[source].expected_keys("trades", symbol,
                                                                                            since, until)]
                 if source == "binance" else sandbox.expected_trade_ids(source, native, since, until)
                 for source, (_, _, symbols) in SOURCES.items() for symbol, native in symbols.items()}
    by_shard = [[s["name"] for s in stats if s["step"] == "ingest"] for stats in first]
    names = [f"{source}.{stream} {symbol}" for source, stream, symbol in UNITS]
    assert sorted(n for shard in by_shard for n in shard) == sorted(names), "a unit ran twice or never"
    for i, shard in enumerate(by_shard, start=1):
        assert sorted(shard) == sorted(n for n, u in zip(names, UNITS, strict=True) if shard_of(*u, 3) == i)
    landed = {s["name"]: s["landed"] for stats in first for s in stats if s["step"] == "ingest"}
    assert all(landed.values()), landed
    assert [s["landed"] for stats in again for s in stats] == [0] * len(UNITS), "a rerun landed something again"

    catalog = open_catalog(load_settings())
    for source, (column, symbol_column, symbols) in SOURCES.items():
        raw = catalog.load_table((NS, f"raw_{source}_trades")).scan(selected_fields=(symbol_column, column)).to_arrow()
        for symbol, native in symbols.items():
            ids = [int(i) for i, s in zip(raw[column].to_pylist(), raw[symbol_column].to_pylist(), strict=True)
                   if s == native]
            assert sorted(ids) == truth[(source, symbol)], f"{source} {symbol}: lost or doubled trades"
            assert landed[f"{source}.trades {symbol}"] == len(ids)
    status = json.loads(run_cli("status", "--json", env=postgres_home.env, cwd=tmp_path).stdout)
    assert {(r["source"], r["stream"], r["symbol"]) for r in status["sources"]} >= set(UNITS)
