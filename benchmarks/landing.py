"""Landing: pre-fetched venue pages -> raw Iceberg table through the engine, vs the Parquet floor.

The floor is the least any loader must do with the same rows: parse the JSON,
build an Arrow table with the same types, write it with pyarrow.parquet. The
engine adds casting with quarantine, schema-drift counts, the coverage in every
commit and Iceberg metadata, at its default commit size (as users get it).
Floor and engine runs alternate, so on a shared machine both see the same load;
CPU seconds are recorded beside the wall times.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemahub_core.engine.limits import MAX_ROWS_PER_COMMIT, MAX_SECONDS_PER_COMMIT

from .harness import Result, median_seconds, paired_seconds
from .prefetched import land
from .warehouse import Warehouse, fresh_warehouse
from .workload import FLOOR_SCHEMA, binance_pages


def floor(pages: list[str], path: Path) -> int:
    tables = []
    for body in pages:
        rows = json.loads(body)
        t = pa.Table.from_pylist([{**row, "symbol": "BTCUSDT"} for row in rows])
        tables.append(t.set_column(t.schema.get_field_index("p"), "p", pc.cast(t["p"], pa.float64()))
                       .set_column(t.schema.get_field_index("q"), "q", pc.cast(t["q"], pa.float64()))
                       .set_column(t.schema.get_field_index("T"), "T",
                                   pc.cast(pc.multiply(t["T"], 1000), pa.timestamp("us", tz="UTC"))))
    table = pa.concat_tables(tables).select(FLOOR_SCHEMA.names).cast(FLOOR_SCHEMA)
    pq.write_table(table, path)
    return table.num_rows


def run(quick: bool, workdir: Path) -> list[Result]:
    n = 100_000 if quick else 1_000_000
    pages = binance_pages(n)
    counter = itertools.count()
    warehouses: list[Warehouse] = []

    def new_warehouse() -> None:  # untimed: a fresh catalog with its tables
        warehouses.append(fresh_warehouse(workdir / f"wh{next(counter)}"))

    medians, runs = paired_seconds(lambda: floor(pages, workdir / f"floor{next(counter)}.parquet"),
                                   lambda: land(warehouses[-1], pages), setup=new_warehouse)
    floor_s, engine_s = medians["baseline"], medians["measured"]
    landed = warehouses[-1].table("raw_binance_agg_trades").scan(selected_fields=("a",)).to_arrow()
    assert landed.num_rows == n and pc.count_distinct(landed["a"]).as_py() == n, "landing lost or doubled rows"
    payload_s, _ = median_seconds(lambda: land(warehouses[-1], pages, raw_payload=True), setup=new_warehouse,
                                  runs=1 if quick else 3)
    details = {"trades": n, "pages": len(pages), "commit": f"defaults: {MAX_ROWS_PER_COMMIT:,} rows or "
               f"{MAX_SECONDS_PER_COMMIT:g} s", "floor_runs_s": runs["baseline"],
               "engine_runs_s": runs["measured"], "floor_cpu_s": runs["baseline_cpu"],
               "engine_cpu_s": runs["measured_cpu"],
               "cpu_ratio": round(medians["measured_cpu"] / medians["baseline_cpu"], 3),
               "engine_with_raw_payload_s": payload_s,
               "engine_trades_per_s": round(n / engine_s)}
    return [Result("landing", f"{n:,} trades from JSON pages -> raw Iceberg table, vs JSON->Arrow->Parquet floor",
                   engine_s, floor_s, "s", 1.5, details=details)]
