"""One audit of a benchmark warehouse in a process of its own, so its peak RSS is the audit's, not the build's.

``python -m benchmarks.audit_probe HOME [--floor]`` prints one JSON line: wall and CPU seconds of the audit,
the process's peak RSS, and what the report found. ``--floor`` imports and opens everything but does not
audit: the RSS any process running an audit starts from.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from schemahub_core.engine.audit import audit
from schemahub_core.framework.mapping import collect_mappings

from .warehouse import fresh_warehouse

VENUES = ("binance", "coinbase", "kraken")


def _peak_rss_mb() -> float:
    """This process's peak RSS (``VmHWM``: unlike ``ru_maxrss`` it is not inherited from the parent across exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str]) -> int:
    wh = fresh_warehouse(Path(argv[0]))
    mappings = collect_mappings(wh.registry, None)
    out: dict = {}
    if "--floor" not in argv:
        wall, cpu = time.perf_counter(), time.process_time()
        report = audit(wh.catalog, wh.namespace, wh.registry, mappings, sources=list(VENUES))
        out = {"seconds": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
               "gaps": sorted((g.source, g.native_symbol, g.first_id, g.last_id) for g in report.gaps),
               "raw_duplicates": sum(d.raw_duplicates for d in report.days),
               "other_problems": sum(d.unified_duplicates + d.not_unified + d.not_in_raw + d.time_holes + d.pending
                                     for d in report.days),
               "rows_read": report.rows_read, "columns_read": report.columns_read}
    out["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
