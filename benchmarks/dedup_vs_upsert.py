"""Dedup vs upsert: land 100k trades of which 10 % are already present.

SchemaHub's unify drops known keys with an anti-join on the key columns of the
affected days and appends; the baseline is pyiceberg's ``Table.upsert`` (insert
when not matched, leave matches alone: the same semantics) on the same mapped
rows into an identical table. Both must end with identical rows.

pyiceberg 0.12's upsert with a multi-column key segfaults past a few thousand
rows per call (apache/iceberg-python#3508: the match filter is one OR term per
row and Arrow's C++ canonicalizer overflows the stack), so the baseline upserts
in chunks of 1,000 rows, the workaround the pyiceberg issue tracker gives (#2058).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemahub_core.engine.state import source_key
from schemahub_core.engine.unify import unify

from .harness import Result, median_seconds
from .warehouse import Warehouse, fresh_warehouse
from .workload import DAY_MS, START_MS, raw_binance

KEY = ["exchange", "symbol", "trade_id"]
UPSERT_CHUNK = 1_000


def _mapped(wh: Warehouse, raw: pa.Table) -> pa.Table:
    target = wh.registry.targets["trades_unified"]
    rows = wh.mapping("binance.agg_trades").apply(raw, wh.registry, target.schema)
    i = rows.schema.get_field_index("ingest_ts")
    return rows.set_column(i, rows.schema.field(i), pa.repeat(pa.scalar(datetime.now(UTC), rows.schema.field(i).type),
                                                                rows.num_rows))


def prepare(folder: Path, base: pa.Table, new: pa.Table) -> tuple[Warehouse, int]:
    wh = fresh_warehouse(folder)
    seed = wh.append("raw_binance_agg_trades", base.slice(0, 1))
    wh.append("trades_unified", _mapped(wh, base), {source_key("raw_binance_agg_trades"): str(seed)})
    wh.append("raw_binance_agg_trades", new)
    return wh, wh.table("trades_unified").current_snapshot().snapshot_id


def _rows(wh: Warehouse) -> pa.Table:
    t = wh.table("trades_unified").scan().to_arrow().drop_columns(["ingest_ts"])
    return t.sort_by([(k, "ascending") for k in KEY])


def run(quick: bool, workdir: Path) -> list[Result]:
    # upsert costs ~4 s per 1,000-row chunk here, so the table holds what the 10 % overlap needs
    n_base, n_new = (20_000, 2_000) if quick else (100_000, 100_000)
    days = 10
    base = raw_binance(n_base, first_id=1, start_ms=START_MS, span_ms=days * DAY_MS)
    rng = np.random.default_rng(5)
    # 10 % repeats drawn from the whole table (a re-sent history), 90 % new trades after it
    candidates = np.arange(base.num_rows)
    repeats = base.take(pa.array(np.sort(rng.choice(candidates, n_new // 10, replace=False))))
    fresh = raw_binance(n_new - repeats.num_rows, first_id=n_base + 1,
                        start_ms=START_MS + days * DAY_MS - DAY_MS // 4, span_ms=DAY_MS // 2, seed=99)
    new = pa.concat_tables([repeats, fresh.cast(repeats.schema)])

    ours, ours_before = prepare(workdir / "schemahub", base, new)
    theirs, theirs_before = prepare(workdir / "upsert", base, new)
    mapping = ours.mapping("binance.agg_trades")
    incoming = _mapped(theirs, new)

    def reset(wh: Warehouse, snapshot_id: int):
        return lambda: wh.table("trades_unified").manage_snapshots().set_current_snapshot(snapshot_id).commit()

    def schemahub() -> None:
        stats = unify(ours.catalog, ours.namespace, ours.registry, "trades_unified", [mapping])
        assert stats.unified == fresh.num_rows and stats.deduplicated == repeats.num_rows, stats

    def upsert() -> None:
        table, inserted = theirs.table("trades_unified"), 0
        for batch in incoming.to_batches(max_chunksize=UPSERT_CHUNK):
            result = table.upsert(pa.Table.from_batches([batch]), join_cols=KEY, when_matched_update_all=False,
                                  when_not_matched_insert_all=True)
            inserted += result.rows_inserted
        assert inserted == fresh.num_rows, inserted

    ours_s, ours_runs = median_seconds(schemahub, runs=3, setup=reset(ours, ours_before))
    # at full size one upsert run takes minutes, so it is timed once (SchemaHub's side: median of 3)
    theirs_s, theirs_runs = median_seconds(upsert, runs=3 if quick else 1, setup=reset(theirs, theirs_before))
    a, b = _rows(ours), _rows(theirs)
    assert a.num_rows == n_base + fresh.num_rows and a.equals(b), "unify and upsert disagree on the resulting rows"
    details = {"base_rows": n_base, "incoming": n_new, "already_present": repeats.num_rows,
               "schemahub_runs_s": ours_runs, "upsert_runs_s": theirs_runs, "identical_rows": True,
               "upsert_chunk_rows": UPSERT_CHUNK}
    return [Result("dedup_vs_upsert", f"land {n_new:,} trades (10 % present) into {n_base:,}: pyiceberg upsert "
                                      "time / SchemaHub unify time", theirs_s, ours_s, "s", 50, goal="min",
                   details=details)]
