"""Raw column names are unique ignoring case (Spark, Glue and Athena fold case), enforced at registration.

Binance's aggTrades carry both ``m`` (buyer is maker) and ``M`` (best price match); ``M`` lands as
``M_best_match``. A table made before that rename is migrated by an Iceberg column rename, without
rewriting a data file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import run_cli
from pyiceberg.schema import Schema

from schemahub_core.engine.catalog import open_catalog
from schemahub_core.engine.raw import cast_records
from schemahub_core.engine.tables import iceberg_schema, init_tables, partition_spec, raw_table_def
from schemahub_core.framework.config import load_settings
from schemahub_core.framework.connector import Column, CursorKind, Stream, StreamDefinitionError, check_column_names
from schemahub_core.framework.registry import get_registry
from schemahub_core.testing.entry_points import write_distribution

COLLIDING_PLUGIN = '''
import pyarrow as pa
from schemahub_core import Column, Connector, CursorKind, Stream, hookimpl

class Clash(Connector):
    name = "clash"
    streams = {"trades": Stream("trades", (Column("id", pa.int64()), Column("m", pa.bool_()),
                                           Column("M", pa.bool_())), ("id",), CursorKind.ID, "id")}
    default_symbols = ("BTC-USD",)

@hookimpl
def register_connectors(register):
    register(Clash)
'''


def _stream(*names: str) -> Stream:
    return Stream("trades", tuple(Column(n, pa.int64()) for n in names), (names[0],), CursorKind.ID, names[0])


def test_names_differing_only_by_case_are_refused_with_the_fix() -> None:
    with pytest.raises(StreamDefinitionError, match=r"'m' and 'M' differ only by case.*native='M'"):
        check_column_names("clash", _stream("id", "m", "M"))
    with pytest.raises(StreamDefinitionError, match="'_SOURCE'"):  # the engine's own columns count too
        check_column_names("clash", _stream("id", "_SOURCE"))
    with pytest.raises(StreamDefinitionError, match="declared twice"):
        check_column_names("clash", _stream("id", "a", "a"))
    check_column_names("clash", _stream("id", "m", "M_best_match"))


def test_a_plugin_declaring_colliding_columns_is_reported_and_plugins_test_names_it(tmp_path: Path) -> None:
    (tmp_path / "clash_plugin.py").write_text(COLLIDING_PLUGIN)
    write_distribution(tmp_path, "schemahub-clash", "0.1", {"clash": "clash_plugin"})
    env = {"PYTHONPATH": str(tmp_path), "SCHEMAHUB_LOAD_PLUGINS": "clash,binance"}
    rows = json.loads(run_cli("plugins", "list", "--json", env=env, cwd=tmp_path).stdout)
    clash = next(r for r in rows if r["name"] == "clash")
    assert "'m' and 'M' differ only by case" in clash["error"] and clash["connectors"] == []
    proc = run_cli("plugins", "test", "clash", env=env, cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "'m' and 'M' differ only by case" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_binance_m_lands_as_M_best_match_and_the_payload_keeps_the_native_record() -> None:
    registry = get_registry()
    stream = registry.connectors["binance"].streams["agg_trades"]
    check_column_names("binance", stream)
    records = [{"symbol": "BTCUSDT", "a": 7, "p": "1.5", "q": "2", "f": 1, "l": 2, "T": 1707405124123,
                "m": True, "M": False}]
    raw, rejected = cast_records(stream, records, registry.transforms, "binance")
    assert rejected == [] and "M" not in raw.column_names
    row = raw.to_pylist()[0]
    assert (row["m"], row["M_best_match"]) == (True, False)
    assert json.loads(row["_raw_payload"])["M"] is False


def test_a_table_made_with_the_old_name_is_renamed_in_place_without_rewriting_data(home: Path) -> None:
    settings = load_settings()
    catalog = open_catalog(settings)
    registry = get_registry()
    definition = raw_table_def("binance", registry.connectors["binance"].streams["agg_trades"])
    assert definition.renames == (("M", "M_best_match"),)
    old_schema = pa.schema([pa.field("M" if f.name == "M_best_match" else f.name, f.type) for f in definition.schema])
    catalog.create_namespace(settings.namespace)
    schema: Schema = iceberg_schema(old_schema)
    old = catalog.create_table((settings.namespace, definition.name), schema=schema,
                               partition_spec=partition_spec(schema, definition.partition_column))
    rows = cast_records(registry.connectors["binance"].streams["agg_trades"],
                        [{"symbol": "BTCUSDT", "a": i, "p": "1", "q": "1", "f": i, "l": i, "T": 1707405124123 + i,
                          "m": i % 2 == 0, "M": i % 3 == 0} for i in range(6)], registry.transforms, "binance")[0]
    old.append(rows.rename_columns(old_schema.names).cast(old.schema().as_arrow()))
    files_before = set(old.inspect.files().column("file_path").to_pylist())
    snapshot_before = old.current_snapshot().snapshot_id

    proc = run_cli("init", "--json")  # what a user runs after upgrading; ingest and live open tables the same way
    assert proc.returncode == 0
    table = catalog.load_table((settings.namespace, definition.name))
    assert table.schema().column_names[: len(definition.schema)] == definition.schema.names
    assert table.schema().find_field("M_best_match").field_id == old.schema().find_field("M").field_id
    assert table.current_snapshot().snapshot_id == snapshot_before  # a schema change, no new data
    assert set(table.inspect.files().column("file_path").to_pylist()) == files_before
    assert table.scan(selected_fields=("a", "M_best_match")).to_arrow().sort_by("a").column(
        "M_best_match").to_pylist() == [i % 3 == 0 for i in range(6)]
    init_tables(catalog, settings.namespace, registry)  # again: nothing left to rename, nothing changes
    assert catalog.load_table((settings.namespace, definition.name)).metadata_location == table.metadata_location
