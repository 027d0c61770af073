"""DataFileWriter: batches written into a real Iceberg table's data files as they come, one fast append."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.transforms import BucketTransform, DayTransform

from schemahub_core.engine.data_file_writer import DataFileWriter, one_partition
from schemahub_core.engine.sink import _only_partition
from schemahub_core.engine.tables import iceberg_schema

DAY = datetime(2024, 2, 8, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SCHEMA = pa.schema([pa.field("id", pa.int64()), pa.field("symbol", pa.string()),
                    pa.field("T", pa.timestamp("us", tz="UTC")), pa.field("_raw_payload", pa.string())])


def _table(tmp_path: Path, *transforms):
    tmp_path.mkdir(parents=True, exist_ok=True)
    catalog = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/catalog.db", warehouse=f"file://{tmp_path}/wh")
    catalog.create_namespace("ns")
    schema = iceberg_schema(SCHEMA)
    spec = PartitionSpec(*[PartitionField(schema.find_field(name).field_id, 1000 + i, transform, f"p{i}")
                           for i, (name, transform) in enumerate(transforms)])
    return catalog.create_table("ns.rows", schema, partition_spec=spec)


def _rows(start: int, n: int, first: datetime, step: timedelta) -> pa.Table:
    ids = list(range(start, start + n))
    return pa.table({"id": ids, "symbol": ["BTCUSDT" if i % 3 else "ETHUSDT" for i in ids],
                     "T": [first + step * k for k in range(n)], "_raw_payload": [f"{i},line" for i in ids]},
                    schema=SCHEMA)


def test_batches_across_days_land_once_each_in_their_partitions_files(tmp_path):
    table = _table(tmp_path, ("T", DayTransform()))
    minute = timedelta(minutes=1)
    batches = [_rows(0, 500, DAY, minute), _rows(500, 2000, DAY + timedelta(hours=8), minute),  # crosses midnight
               _rows(2500, 10, DAY + timedelta(days=3), timedelta(seconds=1))]
    writer = DataFileWriter(table, {"write.target-file-size-bytes": "1000"}, plain=["id", "_raw_payload"])
    for batch in batches:
        writer.write(batch)
    files = writer.close()
    assert len(files) == 4  # three days; day 8 twice, its second rows past the (tiny) target size
    with table.transaction() as tx, tx.update_snapshot().fast_append() as append:
        for data_file in files:
            append.append_data_file(data_file)
    landed = table.scan().to_arrow().sort_by("id")
    assert landed.equals(pa.concat_tables(batches).sort_by("id"))  # every row once, as written
    for data_file in files:  # each file holds exactly its partition's day
        rows = pq.read_table(data_file.file_path.removeprefix("file://"))
        days = pc.unique(pc.floor_temporal(rows["T"], unit="day")).to_pylist()
        assert days == [EPOCH + timedelta(days=data_file.partition[0])], data_file.file_path
        assert data_file.record_count == rows.num_rows
    meta = pq.ParquetFile(files[0].file_path.removeprefix("file://")).metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings for i in range(meta.num_columns)}
    assert "RLE_DICTIONARY" in encodings["symbol"] and "RLE_DICTIONARY" not in encodings["_raw_payload"]


def test_one_partition_agrees_with_transforming_every_row(tmp_path):
    daily = _table(tmp_path / "a", ("T", DayTransform()))
    bucketed = _table(tmp_path / "b", ("T", DayTransform()), ("symbol", BucketTransform(4)))
    for first, step, n in [(DAY, timedelta(minutes=1), 1439), (DAY, timedelta(minutes=1), 1441),
                           (DAY - timedelta(microseconds=1), timedelta(microseconds=1), 2), (DAY, timedelta(0), 1)]:
        rows = _rows(0, n, first, step)
        for table in (daily, bucketed):
            fast, full = one_partition(table.metadata, rows), _only_partition(table.metadata, rows)
            assert (fast and fast.partition) == (full and full.partition), (first, step, n)
    assert one_partition(daily.metadata, _rows(0, 1439, DAY, timedelta(minutes=1))) is not None
