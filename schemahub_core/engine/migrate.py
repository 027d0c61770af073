"""Layout migrations: a stream renamed by its plugin (``Stream.formerly``) keeps its warehouse table and progress.

A connector that renames a stream (old ``x`` -> new ``y``) leaves old warehouses with ``raw_<source>_x`` holding
``y``'s rows, and progress (coverage, counters, archive files, cursors) keyed by ``x`` in snapshot summaries and
table properties. Writing there as if it were today's ``x`` would mix two kinds of records, and a fresh
``raw_<source>_y`` would refetch everything. So:

- ``pending`` finds them, by columns: ``raw_<source>_x`` whose columns are ``y``'s (its key columns, under their
  current or native names) and not today's ``x``'s; or ``raw_<source>_y`` still carrying progress keyed by ``x``
  (a migration interrupted between its two commits);
- ``check`` turns one into a one-line error naming the fix, raised by ingest, unify, status, init and backfill
  before they read or write;
- ``migrate`` (``schemahub maintain --migrate``) renames the table (a catalog operation: data files, snapshots and
  snapshot ids stay), then commits one empty snapshot whose summary carries every symbol's coverage and the other
  progress under ``y``, with the coverage index moved to it, renames columns the plugin renamed since
  (``Column.native``, as ``ensure_table`` would), and renames the unified tables' source positions
  (``schemahub.source.raw_<source>_x``: the same snapshots, now of ``raw_<source>_y``). Each step is idempotent,
  so a migration killed anywhere finishes when run again; nothing is refetched or landed twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
from pyiceberg.table import Table

from schemahub_core.engine.archives import ARCHIVE
from schemahub_core.engine.coverage import COVERAGE, COVERS, INDEX, LAST_TS, LEGACY_CURSOR, ROWS, read_state, symbols_of
from schemahub_core.engine.coverage import encode as encode_spans
from schemahub_core.engine.coverage import key as coverage_key
from schemahub_core.engine.faults import fault_point
from schemahub_core.engine.sink import progress_of, retry_transient
from schemahub_core.engine.state import REPAIRED, source_key
from schemahub_core.engine.tables import migrate_renames, raw_table_def, raw_table_name
from schemahub_core.framework.config import ConfigError
from schemahub_core.framework.connector import Stream
from schemahub_core.framework.registry import Registry

STREAM_KEYED = (COVERS, COVERAGE, ROWS, LAST_TS, INDEX, LEGACY_CURSOR, ARCHIVE, REPAIRED)  # <prefix><stream>.<...>
FIX = "schemahub maintain --migrate"


class MigrationNeeded(ConfigError):
    """The warehouse has a table in a layout the installed plugins renamed: one line naming the fix."""


class MigrationError(RuntimeError):
    """A migration that cannot proceed without a person (both the old and the new table hold data)."""


@dataclass(frozen=True)
class Migration:
    """Stream ``old`` of ``source`` is now ``new``: its table and progress move from ``old`` to ``new``."""

    source: str
    old: str
    new: str

    @property
    def old_table(self) -> str:
        return raw_table_name(self.source, self.old)

    @property
    def new_table(self) -> str:
        return raw_table_name(self.source, self.new)

    def describe(self, namespace: str) -> str:
        return (f"{namespace}.{self.old_table} holds {self.source}.{self.new} rows from before that stream was "
                f"renamed ({self.old} -> {self.new}): run `{FIX}` to move it to {self.new_table}, keeping its "
                "coverage (nothing is refetched)")


def _load(catalog: Catalog, namespace: str, name: str) -> Table | None:
    try:
        return retry_transient(lambda: catalog.load_table((namespace, name)))
    except NoSuchTableError:
        return None


def _has_columns(table: Table, stream: Stream, columns: Iterable[str]) -> bool:
    """The table has each of ``columns`` of ``stream``, under its current name or its native one."""
    names = set(table.schema().column_names)
    return all(name in names or (stream.column(name).native or name) in names for name in columns)


def _old_keys(table: Table, old: str) -> list[str]:
    """Progress keys of stream ``old`` in the newest progress and the coverage index of ``table``."""
    keyed = tuple(f"{prefix}{old}." for prefix in STREAM_KEYED)
    found = [k for k in table.metadata.properties if k.startswith(keyed)]
    found += [k for k in progress_of(table) if k.startswith(keyed)]
    return found


def pending(catalog: Catalog, namespace: str, registry: Registry, sources: Iterable[str] | None = None
            ) -> list[Migration]:
    """The migrations this warehouse needs for ``sources`` (all installed connectors when None)."""
    chosen = sorted(registry.connectors) if sources is None else list(dict.fromkeys(sources))
    out = []
    for source in chosen:
        cls = registry.connectors.get(source)
        if cls is None:
            continue
        for stream in cls.streams.values():
            for old in stream.formerly:
                m = Migration(source, old, stream.name)
                table = _load(catalog, namespace, m.old_table)
                current = cls.streams.get(old)
                if table is not None and _has_columns(table, stream, stream.key) and not (
                        current is not None and _has_columns(table, current, current.key)):
                    out.append(m)
                    continue
                moved = _load(catalog, namespace, m.new_table)
                if moved is not None and _old_keys(moved, old):
                    out.append(m)  # renamed, progress not rewritten yet
    return out


def check(catalog: Catalog, namespace: str, registry: Registry, sources: Iterable[str] | None = None) -> None:
    """Refuse to work on a warehouse that needs a migration (``MigrationNeeded``, one line naming the fix)."""
    todo = pending(catalog, namespace, registry, sources)
    if todo:
        more = f" (and {len(todo) - 1} more)" if len(todo) > 1 else ""
        raise MigrationNeeded(todo[0].describe(namespace) + more)


def _renamed(key: str, old: str, new: str) -> str:
    for prefix in STREAM_KEYED:
        if key.startswith(f"{prefix}{old}."):
            return f"{prefix}{new}.{key[len(prefix) + len(old) + 1:]}"
    return key


def _commit_progress(catalog: Catalog, namespace: str, name: str, rewrite: object, attempts: int = 5) -> bool:
    """Commit an empty snapshot carrying ``rewrite(table)``'s summary, properties to set and to remove.

    ``rewrite`` returns None when there is nothing to do (so a rerun is a no-op). A conflicting commit reloads
    and rewrites again.
    """
    for attempt in range(attempts):
        table = catalog.load_table((namespace, name))
        planned = rewrite(table)  # type: ignore[operator]
        if planned is None:
            return False
        summary, set_props, remove_props = planned
        tx = table.transaction()
        with tx.update_snapshot(snapshot_properties=summary).fast_append():
            pass  # no data: the snapshot carries the progress
        staged = tx.table_metadata.current_snapshot()
        assert staged is not None
        props = set_props(staged.snapshot_id)
        if props:
            tx.set_properties(props)
        if remove_props:
            tx.remove_properties(*remove_props)
        try:
            tx.commit_transaction()
            return True
        except CommitFailedException:
            if attempt == attempts - 1:
                raise
    return False


def _rewrite_raw(m: Migration) -> object:
    def rewrite(table: Table) -> tuple[dict[str, str], object, list[str]] | None:
        stale = _old_keys(table, m.old)
        if not stale:
            return None
        carried = {_renamed(k, m.old, m.new): v for k, v in progress_of(table).items()
                   if not k.startswith((f"{COVERS}{m.old}.", f"{COVERAGE}{m.old}.", f"{ROWS}{m.old}.",
                                        f"{LAST_TS}{m.old}."))}
        symbols = symbols_of(table, m.old)
        summary = dict(carried)
        for symbol in symbols:  # every symbol's coverage, wherever its index pointed
            state = read_state(table, m.old, symbol)
            summary[coverage_key(COVERAGE, m.new, symbol)] = encode_spans(state.spans)
            summary[coverage_key(ROWS, m.new, symbol)] = str(state.rows)
            if state.last_ts is not None:
                summary[coverage_key(LAST_TS, m.new, symbol)] = state.last_ts.isoformat()
        stale_index = [k for k in table.metadata.properties if k.startswith(f"{INDEX}{m.old}.")]
        return (summary, lambda snapshot_id: {coverage_key(INDEX, m.new, s): str(snapshot_id) for s in symbols},
                stale_index)

    return rewrite


def _rewrite_unified(m: Migration) -> object:
    old, new = source_key(m.old_table), source_key(m.new_table)

    def rewrite(table: Table) -> tuple[dict[str, str], object, list[str]] | None:
        progress = progress_of(table)
        if old not in progress or new in progress:
            return None
        summary = {(new if k == old else k): v for k, v in progress.items()}
        return summary, lambda snapshot_id: {}, []

    return rewrite


def migrate(catalog: Catalog, namespace: str, registry: Registry) -> list[str]:
    """Apply every pending migration; one line per step done (empty: nothing was needed)."""
    done = []
    for m in pending(catalog, namespace, registry):
        old_table = _load(catalog, namespace, m.old_table)
        if old_table is not None and _load(catalog, namespace, m.new_table) is None:
            catalog.rename_table((namespace, m.old_table), (namespace, m.new_table))
            done.append(f"renamed {namespace}.{m.old_table} to {m.new_table}")
        elif old_table is not None:
            new_table = _load(catalog, namespace, m.new_table)
            assert new_table is not None
            if new_table.current_snapshot() is not None:
                raise MigrationError(
                    f"{namespace}.{m.old_table} holds {m.source}.{m.new} rows from before the rename and "
                    f"{namespace}.{m.new_table} holds rows too: move or drop one of them by hand (nothing was "
                    "changed)")
            catalog.drop_table((namespace, m.new_table))  # created empty by `init` after the upgrade
            catalog.rename_table((namespace, m.old_table), (namespace, m.new_table))
            done.append(f"renamed {namespace}.{m.old_table} to {m.new_table} (replacing an empty one)")
        fault_point("migrate.after-rename")
        if _commit_progress(catalog, namespace, m.new_table, _rewrite_raw(m)):
            done.append(f"{m.new_table}: coverage and progress of {m.source}.{m.old} now under {m.new}")
        table_def = raw_table_def(m.source, registry.connectors[m.source].streams[m.new])
        moved = catalog.load_table((namespace, m.new_table))
        before = moved.schema().column_names
        after = migrate_renames(catalog, (namespace, m.new_table), moved, table_def.renames).schema().column_names
        renamed = [f"{a} -> {b}" for a, b in zip(before, after, strict=True) if a != b]
        if renamed:
            done.append(f"{m.new_table}: columns renamed as the plugin names them now ({', '.join(renamed)})")
        for name in catalog.list_tables(namespace):
            table_name = name[-1]
            if table_name.startswith("raw_"):
                continue
            table = _load(catalog, namespace, table_name)
            if table is not None and source_key(m.old_table) in progress_of(table):
                if _commit_progress(catalog, namespace, table_name, _rewrite_unified(m)):
                    done.append(f"{table_name}: its position in {m.old_table} now reads {m.new_table}")
    return done
