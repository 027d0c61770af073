"""Data files written batch by batch as the batches come, for a commit made when the last one is in.

``sink.data_files`` writes a whole batch at once, so a loader that parses and
then writes does one after the other. An archive file arrives as a stream of
parsed blocks: written one by one, each block's Parquet encoding (which releases
the GIL) runs while the reader thread parses the next, and no commit's worth of
rows is ever held at once. The files are the table's data files, as pyiceberg's
own writer makes them (its file schema with field ids, its location provider,
its statistics), one open file per partition, a new one past the table's target
file size; ``close`` returns them for a fast append.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.io.fileformat import FileFormatFactory
from pyiceberg.io.pyarrow import (
    _determine_partitions,
    _get_parquet_writer_kwargs,
    _to_requested_schema,
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
    pyarrow_to_schema,
)
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
from pyiceberg.schema import sanitize_column_names
from pyiceberg.table import Table, TableProperties
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.transforms import DayTransform, HourTransform, IdentityTransform, MonthTransform, YearTransform
from pyiceberg.typedef import Record
from pyiceberg.utils.properties import property_as_int

from schemahub_core.engine.sink import _only_partition

# transforms that keep order: if the smallest and the largest value fall in one partition, every value does
MONOTONE = (IdentityTransform, YearTransform, MonthTransform, DayTransform, HourTransform)


def one_partition(metadata: TableMetadata, batch: pa.Table) -> PartitionKey | None:
    """``sink._only_partition`` without transforming every row when the spec's transforms keep order (a day
    of a timestamp, as every engine table's): the bounds of each source column, transformed, decide."""
    spec, schema = metadata.spec(), metadata.schema()
    if spec.is_unpartitioned() or batch.num_rows == 0:
        return None
    if not all(isinstance(field.transform, MONOTONE) for field in spec.fields):
        return _only_partition(metadata, batch)
    values = []
    for field in spec.fields:
        name = schema.find_column_name(field.source_id)
        if name is None or name not in batch.column_names:
            return None
        column = batch.column(name)
        if column.null_count:
            return None
        bounds = pc.min_max(column)
        ends = pa.chunked_array([pa.array([bounds["min"].as_py(), bounds["max"].as_py()], column.type)])
        lo, hi = field.transform.pyarrow_transform(schema.find_field(field.source_id).field_type)(ends).to_pylist()
        if lo != hi:
            return None
        values.append(PartitionFieldValue(field=field, value=lo))
    return PartitionKey(field_values=values, partition_spec=spec, schema=schema)


class _OpenFile:
    """One Parquet data file being written."""

    def __init__(self, path: str, output: Any, writer: pq.ParquetWriter, key: PartitionKey | None) -> None:
        self.path, self.output, self.writer, self.key = path, output, writer, key
        self.arrow_bytes = 0


class DataFileWriter:
    """Write record batches into ``table``'s data files (not committed); ``close`` gives the ``DataFile``s.

    ``write`` overrides table properties for these files only (as ``IcebergSink.stage``); ``plain`` names
    columns written without a dictionary: values unique per row (a record id, the raw line), where trying a
    dictionary in every row group only costs time.
    """

    def __init__(self, table: Table, write: Mapping[str, str] | None = None, plain: Iterable[str] = ()) -> None:
        metadata = table.metadata
        if write:
            metadata = metadata.model_copy(update={"properties": {**metadata.properties, **write}})
        self.metadata, self.io = metadata, table.io
        schema = metadata.schema()
        sanitized = sanitize_column_names(schema)
        self.file_schema = sanitized if sanitized != schema else schema
        self.properties = metadata.properties
        self.kwargs = _get_parquet_writer_kwargs(self.properties)
        self.row_group_size = property_as_int(self.properties, TableProperties.PARQUET_ROW_GROUP_LIMIT,
                                              TableProperties.PARQUET_ROW_GROUP_LIMIT_DEFAULT)
        self.target_bytes = property_as_int(self.properties, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
                                            TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT)
        self.plain = set(plain)
        self.locations = load_location_provider(table_location=metadata.location, table_properties=self.properties)
        self.uuid, self.counter = uuid.uuid4(), itertools.count(0)
        self.open: dict[tuple, _OpenFile] = {}
        self.done: list[DataFile] = []
        self._projections: dict[pa.Schema, pa.Schema] = {}

    def write(self, batch: pa.Table | pa.RecordBatch) -> None:
        """Append ``batch`` (the table's columns) to its partition's open file: one row group per batch."""
        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        if table.num_rows == 0:
            return
        spec = self.metadata.spec()
        if spec.is_unpartitioned():
            self._append(None, table)
            return
        key = one_partition(self.metadata, table)
        if key is not None:
            self._append(key, table)
            return
        for part in _determine_partitions(spec, self.metadata.schema(), table):  # rows of several days
            self._append(part.partition_key, part.arrow_table_partition)

    def _append(self, key: PartitionKey | None, table: pa.Table) -> None:
        slot = tuple(v.value for v in key.field_values) if key is not None else ()
        current = self.open.get(slot)
        if current is not None and current.arrow_bytes >= self.target_bytes:
            self.done.append(self._finish(self.open.pop(slot)))
            current = None
        data = self._project(table)
        if current is None:
            name = f"00000-{next(self.counter)}-{self.uuid}.parquet"
            path = self.locations.new_data_location(data_file_name=name, partition_key=key)
            output = self.io.new_output(path).create(overwrite=True)
            dictionary = [f.name for f in data.schema if f.name not in self.plain] if self.plain else True
            try:
                writer = pq.ParquetWriter(output, schema=data.schema, store_decimal_as_integer=True,
                                          **{**self.kwargs, "use_dictionary": dictionary})
            except Exception:
                output.close()
                raise
            current = self.open[slot] = _OpenFile(path, output, writer, key)
        current.writer.write_table(data, row_group_size=self.row_group_size)
        current.arrow_bytes += data.nbytes

    def _project(self, table: pa.Table) -> pa.Table:
        """``table`` in the file schema (field ids on every column), as pyiceberg's writer projects a batch; for
        a schema seen before whose projection changed no type and checked no required column, only the schema is
        swapped (no visitor)."""
        target = self._projections.get(table.schema)
        if target is not None:
            return pa.Table.from_arrays(table.columns, schema=target)
        task_schema = pyarrow_to_schema(table.schema, name_mapping=self.metadata.schema().name_mapping,
                                        format_version=self.metadata.format_version)
        model = FileFormatFactory.get(FileFormat.PARQUET)  # the registered Parquet model: field ids per column
        batches = [_to_requested_schema(requested_schema=self.file_schema, file_schema=task_schema, batch=b,
                                        downcast_ns_timestamp_to_us=False, include_field_ids=True,
                                        format_model=model) for b in table.to_batches()]
        data = pa.Table.from_batches(batches) if batches else table
        if data.schema.types == table.schema.types and all(f.nullable for f in data.schema):  # nothing to check
            self._projections[table.schema] = data.schema
        return data

    def _finish(self, file: _OpenFile) -> DataFile:
        with file.output:
            file.writer.close()
        statistics = data_file_statistics_from_parquet_metadata(
            parquet_metadata=file.writer.writer.metadata,
            stats_columns=compute_statistics_plan(self.file_schema, self.properties),
            parquet_column_mapping=parquet_path_to_id_mapping(self.file_schema))
        return DataFile.from_args(
            content=DataFileContent.DATA, file_path=file.path, file_format=FileFormat.PARQUET,
            partition=file.key.partition if file.key is not None else Record(),
            file_size_in_bytes=len(self.io.new_input(file.path)), sort_order_id=None,
            spec_id=self.metadata.default_spec_id, equality_ids=None, key_metadata=None,
            **statistics.to_serialized_dict())

    def close(self) -> list[DataFile]:
        """Finish every open file: the data files written, in the order they were opened."""
        files = self.done + [self._finish(f) for f in self.open.values()]
        self.open, self.done = {}, []
        return files

    def abort(self) -> None:
        """Close the open files without recording them (a failed chunk: the files stay unreferenced)."""
        for file in self.open.values():
            try:
                with file.output:
                    file.writer.close()
            except Exception:  # noqa: BLE001 - best effort: the data is not committed either way
                pass
        self.open = {}
