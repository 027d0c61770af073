"""SQL on the lake: DuckDB in process, every SchemaHub table a view over its Iceberg snapshot.

DuckDB reads the tables itself, through its iceberg extension (PyPI ``duckdb-extension-iceberg``, with
``duckdb-extension-avro`` for the manifests and ``duckdb-extension-httpfs`` for S3), loaded from the
packages' files. pyiceberg only resolves names to metadata files and snapshots: the catalog (SQLite,
PostgreSQL, Glue...) is whatever SchemaHub is configured with. Measured against scanning each table
to Arrow with pyiceberg first (``benchmarks/sql_query.py``): DuckDB pushes the query's columns and
predicates into the Parquet reads, so only what the query needs is read, where a pyiceberg scan must
materialize every column of every row of each table before DuckDB sees it.

Every table is visible by its plain name (``trades_unified``) and by the seed's fully qualified name
``schemahub.<namespace>.<table>`` (``schemahub.schemahub.trades_unified``).

``schemahub sql`` records what each query it runs reads, as a planning input for ``partitions suggest``: per
SchemaHub table, the columns its WHERE clauses filter on and the time window its timestamp comparisons bound
(from DuckDB's own parse, ``json_serialize_sql``; never the query text or its values beyond the window). The
log is one JSON line per (query, table) in ``<home>/state/sql-queries.jsonl``, kept to the newest
``LOG_MAX_ENTRIES``; a log that cannot be written never fails a query.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchNamespaceError
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from schemahub_core.framework.config import Settings

if TYPE_CHECKING:
    import duckdb

DATABASE = "schemahub"  # the seed's catalog part: schemahub.schemahub.trades_unified
EXTENSIONS = ("avro", "iceberg", "httpfs")
LOG_NAME = "sql-queries.jsonl"
LOG_MAX_ENTRIES = 2000  # the newest entries kept; trimmed to half when exceeded, so appends stay cheap
_LOWER = {"COMPARE_GREATERTHAN", "COMPARE_GREATERTHANOREQUALTO"}
_UPPER = {"COMPARE_LESSTHAN", "COMPARE_LESSTHANOREQUALTO"}
_FLIP = {"COMPARE_GREATERTHAN": "COMPARE_LESSTHAN", "COMPARE_GREATERTHANOREQUALTO": "COMPARE_LESSTHANOREQUALTO",
         "COMPARE_LESSTHAN": "COMPARE_GREATERTHAN", "COMPARE_LESSTHANOREQUALTO": "COMPARE_GREATERTHANOREQUALTO"}


class SqlError(ValueError):
    """A query or an ``--as-of`` that cannot run; the message is one line for the user."""


@dataclass(frozen=True)
class View:
    """One table as the query sees it: the snapshot it reads (None: the table was empty then)."""

    name: str
    snapshot_id: int | None
    rows: int


def _duckdb() -> Any:
    try:
        return import_module("duckdb")
    except ImportError as exc:
        raise SqlError("DuckDB is not installed: pip install 'schemahub-core[sql]'") from exc


def _extension_file(name: str, version: str) -> Path:
    try:
        package = import_module(f"duckdb_extension_{name}")
    except ImportError as exc:
        raise SqlError(f"duckdb-extension-{name} is not installed: pip install 'schemahub-core[sql]'") from exc
    path = Path(package.__file__).parent / "extensions" / f"v{version}" / f"{name}.duckdb_extension"
    if not path.is_file():
        found = sorted(p.parent.name for p in (Path(package.__file__).parent / "extensions").glob("*/*"))
        raise SqlError(f"duckdb-extension-{name} has builds for {', '.join(found) or 'nothing'}, "
                       f"DuckDB is {version}: install matching versions")
    return path


def _s3_secret(props: dict[str, Any]) -> str | None:
    """DuckDB's S3 secret from the catalog's pyiceberg ``s3.*`` properties (None: no S3 settings)."""
    if not any(k.startswith("s3.") for k in props):
        return None
    parts = ["TYPE s3"]
    for key, option in (("s3.access-key-id", "KEY_ID"), ("s3.secret-access-key", "SECRET"),
                        ("s3.session-token", "SESSION_TOKEN"), ("s3.region", "REGION")):
        if props.get(key):
            parts.append(f"{option} {_literal(str(props[key]))}")
    endpoint = props.get("s3.endpoint")
    if endpoint:
        url = urlparse(str(endpoint))
        parts += [f"ENDPOINT {_literal(url.netloc or url.path)}", "URL_STYLE 'path'",
                  f"USE_SSL {'false' if url.scheme == 'http' else 'true'}"]
    return f"CREATE SECRET schemahub_s3 ({', '.join(parts)})"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def resolve_as_of(tables: dict[str, Table], as_of: str | None) -> dict[str, Snapshot | None]:
    """The snapshot each table is read at.

    No ``as_of``: the current one. A snapshot id: that snapshot for the table it belongs to, and for
    every other table the snapshot current at that snapshot's commit time, so a query joining tables
    sees them as one reader saw them then. A timestamp: each table's snapshot current at that time.
    """
    if as_of is None:
        return {name: t.current_snapshot() for name, t in tables.items()}
    text = as_of.strip()
    owner: str | None = None
    if re.fullmatch(r"-?\d+", text):
        sid = int(text)
        owner = next((name for name, t in tables.items() if t.snapshot_by_id(sid) is not None), None)
        if owner is None:
            raise SqlError(f"snapshot {sid} belongs to no SchemaHub table (see `<table>.snapshots` in Spark, "
                           "or a table's snapshot list in `schemahub status`)")
        at_ms = tables[owner].snapshot_by_id(sid).timestamp_ms
    else:
        from schemahub_core.apps.replay import ReplayError, parse_instant  # replay's imports cost ~1 s: only here

        try:
            moment: datetime = parse_instant(text)
        except ReplayError as exc:
            raise SqlError(f"--as-of {text!r}: a snapshot id or an ISO 8601 time, e.g. 2024-02-08T16:00:00Z") \
                from exc
        at_ms = int(moment.timestamp() * 1000)
    return {name: (t.snapshot_by_id(int(text)) if name == owner else t.snapshot_as_of_timestamp(at_ms))
            for name, t in tables.items()}


def query_log_path(settings: Settings) -> Path:
    """Where ``schemahub sql`` records its queries: the home's local state, next to the embedded catalog."""
    return Path(settings.home) / "state" / LOG_NAME


def _nodes(node: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in DuckDB's serialized parse tree, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _nodes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _nodes(value)


def _column(node: Any) -> str | None:
    if isinstance(node, dict) and node.get("class") == "COLUMN_REF" and node.get("column_names"):
        return str(node["column_names"][-1])
    return None


def _instant(node: Any) -> datetime | None:
    """A constant (or a cast of one) as a UTC time; None when it is no time."""
    while isinstance(node, dict) and node.get("class") == "CAST":
        node = node.get("child")
    if not isinstance(node, dict) or node.get("class") != "CONSTANT" or node["value"].get("is_null"):
        return None
    try:
        moment = datetime.fromisoformat(str(node["value"]["value"]).replace(" ", "T", 1).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def describe_query(parsed: dict[str, Any], schemas: dict[str, list[str]], time_columns: dict[str, set[str]]
                   ) -> list[dict[str, Any]]:
    """What a parsed query reads, per SchemaHub table it names: filter columns and the time window it bounds.

    ``schemas``: table -> column names; ``time_columns``: table -> its timestamp columns. A column is charged
    to every named table that has it (DuckDB's parse does not resolve names).
    """
    tables = sorted({str(n["table_name"]) for n in _nodes(parsed) if n.get("type") == "BASE_TABLE"
                     and str(n.get("table_name")) in schemas})
    filtered: set[str] = set()
    bounds: dict[str, dict[str, datetime]] = {}
    for where in (n["where_clause"] for n in _nodes(parsed) if n.get("where_clause")):
        for node in _nodes(where):
            name = _column(node)
            if name:
                filtered.add(name)
            kind = node.get("type") if isinstance(node.get("type"), str) else ""
            if node.get("class") == "BETWEEN" and _column(node.get("input")):
                pairs = [(_column(node["input"]), "start", _instant(node.get("lower"))),
                         (_column(node["input"]), "end", _instant(node.get("upper")))]
            elif kind in _LOWER | _UPPER:
                left, right = node.get("left"), node.get("right")
                if _column(right) and not _column(left):
                    left, right, kind = right, left, _FLIP[kind]
                pairs = [(_column(left), "start" if kind in _LOWER else "end", _instant(right))]
            else:
                continue
            for column, side, moment in pairs:
                if column and moment is not None:
                    bounds.setdefault(column, {})[side] = moment
    out = []
    for table in tables:
        window = next(({"column": c, "start": b["start"].isoformat() if "start" in b else None,
                        "end": b["end"].isoformat() if "end" in b else None}
                       for c, b in sorted(bounds.items()) if c in time_columns.get(table, set())), None)
        out.append({"table": table, "columns": sorted(c for c in filtered if c in schemas[table]),
                    "window": window})
    return out


def record_queries(path: Path, entries: list[dict[str, Any]], keep: int = LOG_MAX_ENTRIES) -> None:
    """Append ``entries`` to the query log; past ``keep`` lines, keep the newest half (an atomic replace)."""
    if not entries:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    at = datetime.now(UTC).isoformat()
    with path.open("a") as log:
        log.write("".join(json.dumps({"at": at, **e}, separators=(",", ":")) + "\n" for e in entries))
    lines = path.read_text().splitlines(keepends=True)
    if len(lines) > keep:
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text("".join(lines[-(keep // 2):]))
        os.replace(tmp, path)


def recorded_queries(settings: Settings, table: str) -> list[dict[str, Any]]:
    """The log's entries for ``table``, oldest first (none when nothing was recorded)."""
    path = query_log_path(settings)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash mid-write
        if isinstance(entry, dict) and entry.get("table") == table:
            out.append(entry)
    return out


class Lake:
    """A DuckDB connection with a view per SchemaHub table (see the module docstring).

    ``record``: log what each successful query reads (``schemahub sql`` does; the web UI and tests do not).
    """

    def __init__(self, settings: Settings, catalog: Catalog, as_of: str | None = None, record: bool = False) -> None:
        duckdb = _duckdb()
        self.namespace = settings.namespace
        self.log = query_log_path(settings) if record else None
        self.con: duckdb.DuckDBPyConnection = duckdb.connect(config={"allow_unsigned_extensions": "true"})
        for name in EXTENSIONS:
            self.con.execute(f"LOAD {_literal(str(_extension_file(name, duckdb.__version__)))}")
        self.con.execute("SET TimeZone = 'UTC'")  # SchemaHub's timestamps are UTC; so are TIMESTAMP literals
        secret = _s3_secret(dict(settings.catalog))
        if secret:
            self.con.execute(secret)
        try:
            idents = sorted(catalog.list_tables(self.namespace))
        except NoSuchNamespaceError:
            idents = []
        if not idents:
            raise SqlError(f"no SchemaHub tables in namespace {self.namespace!r} yet: run `schemahub init` "
                           "(or a pipeline) first")
        tables = {ident[-1]: catalog.load_table(ident) for ident in idents}
        self.schemas = {name: t.schema().column_names for name, t in tables.items()}
        self.time_columns = {name: {f.name for f in t.schema().fields if "timestamp" in str(f.field_type)}
                             for name, t in tables.items()}
        snapshots = resolve_as_of(tables, as_of)
        qualified = f"{_ident(DATABASE)}.{_ident(self.namespace)}"
        self.con.execute(f"ATTACH ':memory:' AS {_ident(DATABASE)}")
        self.con.execute(f"CREATE SCHEMA {qualified}")
        self.views: list[View] = []
        for name, table in tables.items():
            snap = snapshots[name]
            target = f"{qualified}.{_ident(name)}"
            if snap is None:  # nothing committed (then): an empty table of the current schema
                self.con.register("_schemahub_empty", table.schema().as_arrow().empty_table())
                self.con.execute(f"CREATE TABLE {target} AS SELECT * FROM _schemahub_empty")
                self.con.unregister("_schemahub_empty")
            else:
                self.con.execute(f"CREATE VIEW {target} AS SELECT * FROM iceberg_scan("
                                 f"{_literal(table.metadata_location)}, snapshot_from_id = {snap.snapshot_id})")
            rows = int(snap.summary.get("total-records", 0)) if snap is not None and snap.summary else 0
            self.views.append(View(name, snap.snapshot_id if snap is not None else None, rows))
        self.con.execute(f"SET search_path = {_literal(f'{DATABASE}.{self.namespace}')}")

    def query(self, sql: str) -> pa.Table:
        """Run ``sql``; DuckDB's errors become one-line ``SqlError``s."""
        duckdb = _duckdb()
        try:
            result = self.con.sql(sql)
            if result is None:  # a statement with no result set
                return pa.table({})
            out = result.arrow()
            table = out.read_all() if isinstance(out, pa.RecordBatchReader) else out
        except duckdb.Error as exc:
            raise SqlError(str(exc).strip().splitlines()[0]) from None
        if self.log is not None:
            self._record(sql)
        return table

    def _record(self, sql: str) -> None:
        """Log what ``sql`` read (best effort: an unparsable statement or an unwritable log is skipped)."""
        duckdb = _duckdb()
        try:
            row = self.con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
            parsed = json.loads(row[0]) if row else {}
            if parsed.get("error"):
                return
            record_queries(self.log, describe_query(parsed, self.schemas, self.time_columns))  # type: ignore[arg-type]
        except (duckdb.Error, OSError, ValueError, KeyError, TypeError):
            return

    def close(self) -> None:
        self.con.close()


def run_query(settings: Settings, catalog: Catalog, sql: str, as_of: str | None = None) -> pa.Table:
    """One query over the lake, as a pyarrow table."""
    lake = Lake(settings, catalog, as_of)
    try:
        return lake.query(sql)
    finally:
        lake.close()
