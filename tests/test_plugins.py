"""Plugin discovery goes through entry points, and a broken plugin never breaks the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import run_cli

from schemahub_core.testing.entry_points import write_distribution

GOOD_PLUGIN = '''
import pyarrow as pa
from schemahub_core import Column, Connector, CursorKind, Stream, hookimpl


class TempConnector(Connector):
    name = "tempvenue"
    streams = {"ticks": Stream("ticks", (Column("id", pa.int64()),), ("id",), CursorKind.ID, "id")}


@hookimpl
def register_connectors(register):
    register(TempConnector)


@hookimpl
def register_transforms(register):
    register("double_it", lambda array: array)
'''


def _env_with(path: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(path), os.environ.get("PYTHONPATH", "")])}


def test_installed_venues_come_from_their_own_distributions(tmp_path: Path) -> None:
    rows = json.loads(run_cli("plugins", "list", "--json", cwd=tmp_path).stdout)
    by_name = {r["name"]: r for r in rows}
    for name, dist in [("binance", "schemahub-binance"), ("coinbase", "schemahub-coinbase"),
                       ("kraken", "schemahub-kraken"), ("okx", "schemahub-okx")]:
        assert by_name[name]["distribution"] == dist
        assert by_name[name]["connectors"] == [name]
        assert f"{name}.trades" in by_name[name]["streams"]
        assert by_name[name]["error"] is None
    core = by_name["schemahub-core"]
    assert "iceberg" in core["sinks"] and "from_ms" in core["transforms"]
    assert set(core["targets"]) >= {"trades_unified", "quotes_unified"}


def test_a_new_distribution_on_the_path_is_discovered(tmp_path: Path) -> None:
    (tmp_path / "temp_plugin.py").write_text(GOOD_PLUGIN)
    write_distribution(tmp_path, "schemahub-tempvenue", "9.8.7", {"tempvenue": "temp_plugin"})
    rows = json.loads(run_cli("plugins", "list", "--json", env=_env_with(tmp_path), cwd=tmp_path).stdout)
    temp = next(r for r in rows if r["name"] == "tempvenue")
    assert temp["distribution"] == "schemahub-tempvenue"
    assert temp["version"] == "9.8.7"
    assert temp["connectors"] == ["tempvenue"] and temp["streams"] == ["tempvenue.ticks"]
    assert temp["transforms"] == ["double_it"]


def test_a_plugin_whose_import_raises_is_reported_by_name(tmp_path: Path) -> None:
    (tmp_path / "broken_plugin.py").write_text("raise ImportError('needs libfoo >= 2')\n")
    write_distribution(tmp_path, "schemahub-broken", "0.0.1", {"brokenvenue": "broken_plugin"})
    env = _env_with(tmp_path)
    rows = json.loads(run_cli("plugins", "list", "--json", env=env, cwd=tmp_path).stdout)
    broken = next(r for r in rows if r["name"] == "brokenvenue")
    assert broken["distribution"] == "schemahub-broken"
    assert "ImportError: needs libfoo >= 2" in broken["error"]
    assert any(r["name"] == "binance" and r["error"] is None for r in rows)  # the others still load
    table = run_cli("plugins", "list", env={**env, "COLUMNS": "200"}, cwd=tmp_path).stdout
    assert "brokenvenue" in table and "needs libfoo" in table
    run_cli("mappings", "validate", env=env, cwd=tmp_path)  # other commands keep working


def test_load_plugins_env_var_restricts_to_named_plugins(tmp_path: Path) -> None:
    rows = json.loads(run_cli("plugins", "list", "--json", env={"SCHEMAHUB_LOAD_PLUGINS": "kraken"},
                              cwd=tmp_path).stdout)
    assert sorted(r["name"] for r in rows) == ["kraken", "schemahub-core"]
