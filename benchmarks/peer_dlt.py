"""Peer: the same trades with dedup through dlt (merge on the primary key into DuckDB) vs SchemaHub.

SchemaHub's side is the whole pipeline: pages -> raw Iceberg table (exactly
once, cursor per commit) -> unify with key dedup into ``trades_unified``. dlt's
side is ``write_disposition="merge"`` with ``primary_key`` into a local DuckDB
file. dlt is a benchmark-only extra (``pip install -e '.[bench]'``); its
telemetry is switched off, as nothing here may reach the network.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from schemahub_core.engine.unify import unify

from .harness import Result, median_seconds
from .prefetched import land
from .warehouse import Warehouse, fresh_warehouse
from .workload import binance_pages


def dlt_load(pages: list[str], folder: Path) -> int:
    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    import dlt

    @dlt.resource(name="trades", write_disposition="merge", primary_key=("symbol", "a"))
    def trades():
        for body in pages:
            yield [{**row, "symbol": "BTCUSDT"} for row in json.loads(body)]

    pipeline = dlt.pipeline(pipeline_name="bench", pipelines_dir=str(folder / "pipelines"),
                            destination=dlt.destinations.duckdb(str(folder / "trades.duckdb")), dataset_name="raw")
    pipeline.run(trades())
    with pipeline.sql_client() as client:
        return client.execute_sql("select count(*) from trades")[0][0]


def schemahub_load(wh: Warehouse, pages: list[str]) -> int:
    land(wh, pages)
    stats = unify(wh.catalog, wh.namespace, wh.registry, "trades_unified", [wh.mapping("binance.agg_trades")])
    if stats.error:
        raise RuntimeError(stats.error)
    return stats.unified


def run(quick: bool, workdir: Path) -> list[Result]:
    n = 20_000 if quick else 1_000_000  # dlt needs ~25 s per 100k trades here
    pages = binance_pages(n)
    pages += pages[: len(pages) // 10]  # a tenth of the pages arrive twice: both sides must dedup them
    folders = iter(range(1000))
    state: dict[str, object] = {}

    def new_dlt() -> None:
        state["dlt"] = workdir / f"dlt{next(folders)}"

    def new_warehouse() -> None:
        state["wh"] = fresh_warehouse(workdir / f"wh{next(folders)}")

    def run_dlt() -> None:
        assert dlt_load(pages, state["dlt"]) == n  # type: ignore[arg-type]

    def run_schemahub() -> None:
        assert schemahub_load(state["wh"], pages) == n  # type: ignore[arg-type]

    dlt_s, dlt_runs = median_seconds(run_dlt, setup=new_dlt)
    ours_s, ours_runs = median_seconds(run_schemahub, setup=new_warehouse)
    details = {"trades": n, "pages": len(pages), "repeated_pages": len(pages) - n // 1000, "dlt_runs_s": dlt_runs,
               "schemahub_runs_s": ours_runs}
    return [Result("peer_dlt", f"{n:,} trades (a tenth re-sent) with dedup: SchemaHub pipeline vs dlt merge "
                               "into DuckDB", ours_s, dlt_s, "s", 0.5, details=details)]
