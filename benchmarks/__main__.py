"""``python -m benchmarks [NAME ...] [--quick]``: run benchmarks, print ratios, save JSON."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .harness import Result, machine

# name -> module; each has ``run(quick: bool, workdir: Path) -> Result | list[Result]``
BENCHMARKS = {
    "landing": "benchmarks.landing",
    "unify_delta": "benchmarks.unify_delta",
    "dedup_vs_upsert": "benchmarks.dedup_vs_upsert",
    "rate_limit": "benchmarks.rate_limit",
    "replay_latency": "benchmarks.replay_latency",
    "peer_dlt": "benchmarks.peer_dlt",
    "commit_history": "benchmarks.commit_history",
    "partitions": "benchmarks.partitions",
    "sql_query": "benchmarks.sql_query",
    "archive": "benchmarks.archive",
    "audit": "benchmarks.audit",
    "unify_memory": "benchmarks.unify_memory",
    "history": "benchmarks.history",
    "live_load": "benchmarks.live_load",
    "spark_unify": "benchmarks.spark_unify",
}
RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the harness, not the claims")
    parser.add_argument("--intensity", type=float, default=None,
                        help="simulated market intensity for the benchmarks that take one (history: realistic)")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default: benchmarks/results/)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]!r} (known: {', '.join(BENCHMARKS)})")
    console = Console(width=None if sys.stdout.isatty() else 150)
    results: list[Result] = []
    errors: dict[str, str] = {}
    started = time.perf_counter()
    for name in args.names or list(BENCHMARKS):
        console.print(f"[bold]running {name}[/]{' (quick)' if args.quick else ''}...")
        try:
            module = importlib.import_module(BENCHMARKS[name])
            with tempfile.TemporaryDirectory(prefix=f"schemahub-bench-{name}-") as tmp:
                extra = {"intensity": args.intensity} if args.intensity and "intensity" in inspect.signature(
                    module.run).parameters else {}
                produced = module.run(quick=args.quick, workdir=Path(tmp), **extra)
                results += produced if isinstance(produced, list) else [produced]
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            console.print(traceback.format_exc(), style="red", highlight=False)
    table = Table(title=f"SchemaHub benchmarks{' (quick sizes: not the claims)' if args.quick else ''}")
    for col in ("benchmark", "claim", "value", "baseline", "ratio", "target", "met"):
        table.add_column(col, overflow="fold")
    for r in results:
        op = "<=" if r.goal == "max" else ">="
        table.add_row(r.name, r.claim, f"{r.value:.4g} {r.unit}", f"{r.baseline:.4g} {r.unit}", f"{r.ratio:.3f}",
                      f"{op} {r.target}", "[green]yes[/]" if r.met else "[red]no[/]")
    for name, err in errors.items():
        table.add_row(name, "", "", "", "", "", f"[red]error: {err}[/]")
    console.print(table)
    payload = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine(),
        "results": [r.as_dict() for r in results],
        "errors": errors,
    }
    out = args.out or RESULTS / ("quick.json" if args.quick else "latest.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    console.print(f"results written to {out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
