"""Sinks publish unified batches together with the progress they cover.

A sink must make the batch and its progress visible atomically: that is what
lets unify resume exactly where the last publish stopped. Iceberg does it with
one snapshot whose summary carries the progress.
"""

from __future__ import annotations

from typing import Protocol

import pyarrow as pa
from pyiceberg.catalog import Catalog

PROGRESS_PREFIX = "schemahub."


class Sink(Protocol):
    def progress(self, target: str) -> dict[str, str]:
        """The progress recorded by the newest publish to ``target`` (empty if none)."""

    def publish(self, target: str, batch: pa.Table, progress: dict[str, str]) -> int | None:
        """Append ``batch`` and record ``progress`` in one atomic step; return its id."""


class IcebergSink:
    """The built-in sink: one Iceberg append per publish, progress in the snapshot summary."""

    def __init__(self, catalog: Catalog, namespace: str) -> None:
        self.catalog = catalog
        self.namespace = namespace

    def progress(self, target: str) -> dict[str, str]:
        snapshot = self.catalog.load_table((self.namespace, target)).current_snapshot()
        if snapshot is None or snapshot.summary is None:
            return {}
        return {k: v for k, v in snapshot.summary.additional_properties.items() if k.startswith(PROGRESS_PREFIX)}

    def publish(self, target: str, batch: pa.Table, progress: dict[str, str]) -> int | None:
        table = self.catalog.load_table((self.namespace, target))
        table.append(batch, snapshot_properties=progress)
        snapshot = table.current_snapshot()
        return snapshot.snapshot_id if snapshot else None
