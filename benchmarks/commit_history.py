"""Commit time after 1,000 small commits, with and without ``schemahub maintain``.

Every engine commit adds a snapshot (metadata JSON grows), a manifest (the manifest list grows) and a
small data file (scans open more files). The claim: with ``maintain`` (compact + expire) run
periodically, commit time after a long history stays close to a fresh table's.

Each commit is a real engine commit: ``IcebergSink.publish`` loads the table, reads the committed
progress, appends 10 rows and carries a new cursor in the snapshot summary, on the embedded catalog
(SQLite + local warehouse) unless ``--config`` points at another one. Two tables get the same 1,000
commits; one of them is maintained every ``--every`` commits (expire everything not needed, compact).
Figures are medians of ``--probe`` further commits, as ratios to the median on a fresh table measured
in the same run (the mean of one fresh table before and one after the long run, as load drifts).

Run by hand: ``python -m benchmarks.commit_history [--commits 1000] [--every 100]`` (or through
``python -m benchmarks`` once registered there).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
from pyiceberg.catalog import Catalog

from schemahub_core.engine.catalog import open_catalog
from schemahub_core.engine.maintenance import maintain_table
from schemahub_core.engine.sink import IcebergSink
from schemahub_core.engine.tables import TableDef, ensure_namespace, ensure_table
from schemahub_core.framework.config import Settings, default_catalog, load_settings

from .harness import Result

NS = "bench"
ROWS_PER_COMMIT = 10
SCHEMA = pa.schema([
    pa.field("symbol", pa.string(), nullable=False),
    pa.field("id", pa.int64(), nullable=False),
    pa.field("price", pa.float64()),
    pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),
])
START = datetime(2024, 2, 8, tzinfo=UTC)
CURSOR_KEY = "schemahub.cursor.trades.BTC-USD"


class History:
    """One raw-like table and the engine commits made to it."""

    def __init__(self, catalog: Catalog, name: str) -> None:
        self.catalog, self.name = catalog, name
        ensure_table(catalog, NS, TableDef(name, SCHEMA, "time"))
        self.sink = IcebergSink(catalog, NS)
        self.next_id = 1

    def commit(self) -> float:
        """One engine commit of ROWS_PER_COMMIT trades; its wall time in seconds."""
        ids = list(range(self.next_id, self.next_id + ROWS_PER_COMMIT))
        batch = pa.Table.from_pydict({
            "symbol": ["BTCUSDT"] * len(ids), "id": ids, "price": [43_000.0 + i % 7 for i in ids],
            "time": [START + timedelta(seconds=i) for i in ids],
        }, SCHEMA)
        started = time.perf_counter()
        committed = self.sink.publish(self.name, batch, {CURSOR_KEY: str(ids[-1])},
                                      expect={CURSOR_KEY: str(self.next_id - 1) if self.next_id > 1 else None},
                                      stage="bench")
        elapsed = time.perf_counter() - started
        if committed is None:
            raise RuntimeError("a benchmark commit was dropped: is another writer using this catalog?")
        self.next_id = ids[-1] + 1
        return elapsed

    def probe(self, n: int) -> float:
        """Median seconds of ``n`` further commits."""
        return statistics.median(self.commit() for _ in range(n))

    def scan_seconds(self) -> float:
        started = time.perf_counter()
        rows = self.catalog.load_table((NS, self.name)).scan().to_arrow().num_rows
        assert rows == self.next_id - 1, f"{self.name}: {rows} rows, expected {self.next_id - 1}"
        return time.perf_counter() - started

    def maintain(self) -> None:
        report = maintain_table(self.catalog, (NS, self.name), datetime.now(UTC), True, ())
        if report.error:
            raise RuntimeError(report.error)

    def shape(self) -> dict[str, int]:
        table = self.catalog.load_table((NS, self.name))
        snapshot = table.current_snapshot()
        return {"snapshots": len(table.metadata.snapshots),
                "manifests": len(snapshot.manifests(table.io)) if snapshot else 0,
                "data_files": sum(1 for _ in table.scan().plan_files())}


def measure(settings: Settings, commits: int, every: int, probe: int, log=print) -> dict[str, float | dict]:
    catalog = open_catalog(settings)
    ensure_namespace(catalog, NS)
    fresh = History(catalog, "fresh")
    fresh.probe(3)  # warm-up: imports, first metadata files
    baseline = fresh.probe(probe)
    baseline_scan = fresh.scan_seconds()
    plain, kept = History(catalog, "no_maintain"), History(catalog, "with_maintain")
    started = time.perf_counter()
    for i in range(1, commits + 1):
        plain.commit()
        kept.commit()
        if i % every == 0:
            kept.maintain()
        if i % max(1, commits // 10) == 0:
            log(f"  {i}/{commits} commits ({time.perf_counter() - started:.0f} s)")
    without, with_ = plain.probe(probe), kept.probe(probe)
    fresh_end = History(catalog, "fresh_end")  # a second baseline after the long run: machine load drifts
    fresh_end.probe(3)
    baseline = (baseline + fresh_end.probe(probe)) / 2
    return {
        "baseline_commit_s": baseline, "without_maintain_commit_s": without, "with_maintain_commit_s": with_,
        "baseline_scan_s": baseline_scan, "without_maintain_scan_s": plain.scan_seconds(),
        "with_maintain_scan_s": kept.scan_seconds(),
        "shape": {"without_maintain": plain.shape(), "with_maintain": kept.shape(), "fresh": fresh.shape()},
    }


def run(quick: bool, workdir: Path, settings: Settings | None = None) -> Result:
    """The harness entry point: the maintained table's commit time as a ratio to a fresh table's."""
    commits, every, probe = (100, 25, 5) if quick else (1000, 100, 21)
    if settings is None:
        settings = load_settings()
        settings.catalog = default_catalog(workdir / "home")
        settings.home = workdir / "home"
    figures = measure(settings, commits, every, probe)
    return Result(
        name="commit_history",
        claim=f"commit time after {commits} commits stays flat with `maintain` every {every}",
        value=figures["with_maintain_commit_s"], baseline=figures["baseline_commit_s"], unit="s",
        target=1.5, details={**figures, "commits": commits, "every": every,
                             "without_maintain_ratio": figures["without_maintain_commit_s"]
                             / figures["baseline_commit_s"]},
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.commit_history", description=__doc__.split("\n")[0])
    parser.add_argument("--commits", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100, help="maintain the second table every N commits")
    parser.add_argument("--probe", type=int, default=21, help="commits timed per figure (median)")
    parser.add_argument("--config", help="a schemahub.yaml whose catalog to use (default: embedded, temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="schemahub-bench-commits-") as tmp:
        settings = load_settings(args.config) if args.config else None
        if settings is None:
            settings = load_settings()
            settings.home, settings.catalog = Path(tmp) / "home", default_catalog(Path(tmp) / "home")
        print(f"catalog: {settings.catalog.get('type', '?')} {settings.catalog.get('uri', '')}")
        f = measure(settings, args.commits, args.every, args.probe)
    base, base_scan = f["baseline_commit_s"], f["baseline_scan_s"]
    print(f"\ncommit time (median of {args.probe}), ratio to a fresh table in this run:")
    print(f"  fresh table (baseline)            {base * 1000:8.1f} ms   1.00x")
    for label, key in (("without maintain", "without_maintain"), (f"maintain every {args.every}", "with_maintain")):
        print(f"  after {args.commits} commits, {label:18} {f[key + '_commit_s'] * 1000:8.1f} ms   "
              f"{f[key + '_commit_s'] / base:.2f}x   (full scan {f[key + '_scan_s'] / base_scan:.2f}x of fresh)")
    print(f"  table shape: {f['shape']}")


if __name__ == "__main__":
    main()
