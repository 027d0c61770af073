"""Unify in bounded memory: 10M new raw rows at the default bound, against 1M in the same run.

Raw rows are landed straight into a raw table with the engine's own writer (``land_backlog``: a busy
symbol's 1M trades per day, 3 % landed twice), then ONE child process unifies the whole backlog at
default settings (``unify_memory_mb`` 1024) and reports its peak resident memory (``VmHWM``). Claims:
peak RSS for 10M rows <= 1.5 GiB (the issue's limit) and <= the default bound itself, and throughput (raw
rows read per second) for 10M at least 0.5x that for 1M, so a bigger backlog costs time in proportion, not
a collapse. CPU seconds are reported beside wall time: the machine is shared.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from schemahub_core.engine.catalog import open_catalog
from schemahub_core.engine.unify import DEFAULT_MEMORY_MB, unify
from schemahub_core.framework.config import Settings, default_catalog
from schemahub_core.testing.scripted import land_backlog, scripted_registry

from .harness import Result

PER_DAY = 1_000_000  # a busy symbol on a busy venue
LIMIT_MIB = 1536


def _settings(home: Path) -> Settings:
    return Settings(home=home, catalog=default_catalog(home), mappings_dir=home / "no-mapping-files")


def child(home: Path) -> None:
    """Unify everything at default settings; print stats, seconds and peak RSS as JSON."""
    registry = scripted_registry()
    started, cpu = time.perf_counter(), time.process_time()
    stats = unify(open_catalog(_settings(home)), "schemahub", registry, "trades_unified",
                  [m for _, m in registry.mappings])
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    with open("/proc/self/status") as status:
        peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_mib": peak_kib / 1024, "fetched": stats.fetched,
                      "unified": stats.unified, "error": stats.error}))


def measure(workdir: Path, trades: int) -> dict:
    home = workdir / f"backlog-{trades}"
    land_backlog(open_catalog(_settings(home)), "schemahub", trades, days=max(1, trades // PER_DAY))
    proc = subprocess.run([sys.executable, "-m", "benchmarks.unify_memory", str(home)], capture_output=True,
                          text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"unify child failed: {proc.stderr.strip().splitlines()[-1:]}")
    result = json.loads(proc.stdout)
    if result["error"] or result["unified"] != trades:
        raise RuntimeError(f"unify of {trades:,} rows was not exact: {result}")
    result["rows_per_s"] = result["fetched"] / result["seconds"]
    return result


def run(quick: bool, workdir: Path) -> list[Result]:
    small, large = (100_000, 1_000_000) if quick else (1_000_000, 10_000_000)
    one, ten = measure(workdir, small), measure(workdir, large)
    details = {"small": {"trades": small, **one}, "large": {"trades": large, **ten}, "per_day": PER_DAY}
    return [
        Result("unify_memory", f"peak RSS unifying {large:,} new raw rows (default bound) vs 1.5 GiB",
               ten["peak_mib"], LIMIT_MIB, "MiB", 1.0, details=details),
        Result("unify_memory", f"peak RSS unifying {large:,} new raw rows vs the default bound itself",
               ten["peak_mib"], DEFAULT_MEMORY_MB, "MiB", 1.0, details=details),
        Result("unify_memory", f"unify throughput at {large:,} vs {small:,} new raw rows",
               ten["rows_per_s"], one["rows_per_s"], "rows/s", 0.5, goal="min", details=details),
    ]


if __name__ == "__main__":
    child(Path(sys.argv[1]))
