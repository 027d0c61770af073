"""``maintain --engine spark``: Iceberg's own Spark procedures, under the engine's retention rules.

Why Spark: on tables beyond one machine, rewriting data files and deleting unreachable ones are the
heavy parts; Iceberg's procedures spread them over the executors. What stays on the driver, through
pyiceberg, is the choice of what may go, made by the very rule the embedded ``maintain`` uses
(``maintenance.needed_snapshots``):

- ``rewrite_data_files`` compacts each partition's small files (two or more, as the embedded engine
  does). Its commit is a ``replace`` snapshot without ``schemahub.*`` progress: the engine reads its
  progress from the newest snapshot that has any, and unify's incremental append scans skip it, so
  neither ingest nor unify sees compacted rows as new.
- ``expire_snapshots`` gets the explicit ids to expire (old, and not needed by the engine) and an
  ``older_than`` at the epoch, so Iceberg's own age default (5 days) expires nothing else.
- ``remove_orphan_files`` deletes files no snapshot references, but only files older than a cutoff
  (default 3 days, never under 24 hours, as Iceberg itself insists): a writer's data files exist before its
  commit does.

The tables allow no silent commit retry (``commit.retry.num-retries=0``), in Java too: a procedure
that loses a commit race is planned again from the fresh table, up to ``ATTEMPTS`` times.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchNamespaceError

from schemahub_core.engine.maintenance import ATTEMPTS, TableReport, _data_files, needed_snapshots, source_references
from schemahub_core.engine.spark import catalog_name

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from schemahub_core.framework.config import Settings

MIN_ORPHAN_AGE = timedelta(hours=24)  # Iceberg refuses less; far above the longest commit interval (30 s)
ORPHAN_AGE = timedelta(days=3)  # Iceberg's own default for remove_orphan_files
EPOCH = "TIMESTAMP '1970-01-01 00:00:00.001'"
_CONFLICT = ("CommitFailedException", "CommitStateUnknownException", "ValidationException")


def orphan_cutoff(older_than: datetime, now: datetime | None = None) -> datetime:
    """``older_than`` if it is safe for ``remove_orphan_files``, else a ValueError saying why."""
    now = now or datetime.now(UTC)
    if older_than > now - MIN_ORPHAN_AGE:
        raise ValueError(f"{older_than.isoformat()} is less than {MIN_ORPHAN_AGE.total_seconds() / 3600:.0f} hours "
                         "ago: a running ingest's data files exist before its commit does, and would be deleted as "
                         "orphans")
    return older_than


def _sql_time(when: datetime) -> str:
    return f"TIMESTAMP '{when.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S.%f')}'"


def _first_line(exc: BaseException) -> str:
    """One line for a report: a Java error's own class and message, not py4j's "error calling o38.sql"."""
    java = getattr(exc, "java_exception", None)
    text = str(java.toString()) if java is not None else f"{type(exc).__name__}: {exc}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


def _retrying(step: Callable[[], Any]) -> Any:
    """Run ``step`` again when its commit lost a race with an engine commit; other errors propagate."""
    for attempt in range(ATTEMPTS):
        try:
            return step()
        except Exception as exc:
            if attempt == ATTEMPTS - 1 or not any(name in str(exc) for name in _CONFLICT):
                raise
            time.sleep(0.2 * (attempt + 1))
    return None


class SparkMaintenance:
    """Runs the procedures on one SchemaHub catalog through ``session`` (a ``catalog_session``)."""

    def __init__(self, settings: Settings, catalog: Catalog, session: SparkSession) -> None:
        self.settings, self.catalog, self.session = settings, catalog, session
        self.spark_catalog = catalog_name(settings)

    def _call(self, procedure: str, table: str, **args: str) -> list[Any]:
        # the table fully qualified: with the catalog named like the namespace, 'schemahub.t' would be read
        # as catalog 'schemahub', table 't'
        qualified = f"{self.spark_catalog}.{self.settings.namespace}.{table}"
        named = ", ".join([f"table => '{qualified}'", *(f"{k} => {v}" for k, v in args.items())])
        return self.session.sql(f"CALL {self.spark_catalog}.system.{procedure}({named})").collect()

    def compact(self, name: str) -> int:
        """``rewrite_data_files`` with the embedded rule (2+ small files per partition); partitions rewritten."""
        def step() -> int:
            before = {s.snapshot_id for s in self.catalog.load_table((self.settings.namespace, name)).snapshots()}
            rows = self._call("rewrite_data_files", name, options="map('min-input-files', '2')")
            if not rows or not rows[0]["rewritten_data_files_count"]:
                return 0
            table = self.catalog.load_table((self.settings.namespace, name))
            # its snapshot: the new replace one (not "the child of the current one": Iceberg rebases the
            # rewrite onto whatever engine commits landed while it ran)
            rewrite = [s for s in table.snapshots() if s.snapshot_id not in before
                       and s.summary is not None and s.summary.operation.value == "replace"][-1]
            props = rewrite.summary.additional_properties
            if props.get("added-records") != props.get("deleted-records"):  # never silently: say so
                raise RuntimeError(f"compaction of {name} wrote {props.get('added-records')} rows for "
                                   f"{props.get('deleted-records')}")
            return int(props.get("changed-partition-count", 0))
        return int(_retrying(step))

    def expire(self, name: str, older_than: datetime, consumed: set[int]) -> tuple[int, list[int]]:
        """``expire_snapshots`` of exactly the old snapshots the engine does not need; (expired, kept-old ids)."""
        def step() -> tuple[int, list[int]]:
            table = self.catalog.load_table((self.settings.namespace, name))
            cutoff_ms = int(older_than.timestamp() * 1000)
            current = table.current_snapshot()
            keep = needed_snapshots(table, consumed) | ({current.snapshot_id} if current else set())
            old = [s.snapshot_id for s in table.metadata.snapshots if s.timestamp_ms < cutoff_ms]
            doomed = [s for s in old if s not in keep]
            if doomed:
                ids = ", ".join(f"{s}L" for s in doomed)
                self._call("expire_snapshots", name, older_than=EPOCH, snapshot_ids=f"array({ids})")
            return len(doomed), sorted(set(old) - set(doomed))
        return _retrying(step)

    def remove_orphans(self, name: str, older_than: datetime) -> int:
        """``remove_orphan_files`` older than the (checked) cutoff; how many files it deleted."""
        rows = self._call("remove_orphan_files", name, older_than=_sql_time(orphan_cutoff(older_than)))
        return len(rows)

    def table(self, name: str, older_than: datetime | None, do_compact: bool, consumed: set[int],
              orphans_older_than: datetime | None) -> TableReport:
        report = TableReport(table=name)
        try:
            table = self.catalog.load_table((self.settings.namespace, name))
            report.snapshots_before = len(table.metadata.snapshots)
            report.files_before = _data_files(table)
            if do_compact:
                report.partitions_compacted = self.compact(name)
            if older_than is not None:
                report.snapshots_expired, report.kept_snapshot_ids = self.expire(name, older_than, consumed)
                report.snapshots_kept_for_engine = len(report.kept_snapshot_ids)
            if orphans_older_than is not None:
                report.orphan_files_removed = self.remove_orphans(name, orphans_older_than)
            report.files_after = _data_files(self.catalog.load_table((self.settings.namespace, name)))
        except Exception as exc:  # one table's failure is reported; the others are still maintained
            report.error = _first_line(exc)
        return report


def maintain_spark(settings: Settings, catalog: Catalog, session_factory: Callable[[], SparkSession],
                   older_than: datetime | None, do_compact: bool = False,
                   orphans_older_than: datetime | None = None) -> list[TableReport]:
    """Maintain every table of the namespace on Spark; the same reports as ``maintenance.maintain``.

    ``session_factory`` is called only when there is a table, so an empty namespace starts no JVM.
    Unified tables' progress is read once, up front, as the embedded engine does (it only moves forward).
    """
    if orphans_older_than is not None:
        orphan_cutoff(orphans_older_than)  # before any work
    try:
        identifiers = sorted(catalog.list_tables(settings.namespace))
    except NoSuchNamespaceError:
        return []
    if not identifiers:
        return []
    consumed = source_references(catalog.load_table(i) for i in identifiers)
    runner = SparkMaintenance(settings, catalog, session_factory())
    return [runner.table(i[-1], older_than, do_compact, consumed.get(i[-1], set()), orphans_older_than)
            for i in identifiers]

