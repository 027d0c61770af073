"""Venue archive files -> the same ``raw_<source>_<stream>`` table as REST, exactly once per file.

For each file the connector lists (``Connector.archive_files``), the engine
reads the venue's published sha256, downloads the zip to a temporary file,
refuses it if the bytes do not match (nothing from it lands, the other files go
on) and streams its rows through the stream's raw casts in record batches, so
memory stays bounded whatever the file's size.

Progress per file lives in the raw table's snapshot summaries, next to the REST
cursor, under ``schemahub.archive.<stream>.<symbol>.<file name>``: JSON with the
file's sha256, the rows of it landed so far, whether it is done, and what it
covered (event-time period, first and last record id for id cursors). A file
bigger than a commit lands in several commits, each conditional on the previous
progress, so a crash anywhere resumes at the exact row. A rerun skips files whose
name and checksum have landed. A replaced file (same name, new checksum) lands
only its rows whose key the table does not hold yet.

When the stream's cursor is an id and the file continues it (no cursor yet, or
the file's first id is at most one past it), the cursor moves to the file's last
id in the same commit, so ``run ingest`` carries on where the archive ends.
"""

from __future__ import annotations

import contextlib
import json
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from schemahub_core.engine.coverage import PER_SYMBOL, Span, claim_commit, micros
from schemahub_core.engine.data_file_writer import DataFileWriter
from schemahub_core.engine.ingest import ensure_tables
from schemahub_core.engine.raw import _cast_column
from schemahub_core.engine.sink import PROGRESS_PREFIX, Commit, IcebergSink, progress_of, retry_transient
from schemahub_core.engine.state import cursor_key, decode_cursor, encode_cursor, last_ts_key, rows_key
from schemahub_core.engine.tables import WATERMARKS, WATERMARKS_SCHEMA, TableDef, raw_schema, raw_table_name
from schemahub_core.framework.archives import PAYLOAD, ArchiveError, ArchiveFile, sha256_of
from schemahub_core.framework.connector import Connector, ConnectorError, CursorKind, Stream
from schemahub_core.framework.registry import Registry

ARCHIVE = PROGRESS_PREFIX + "archive."
ROWS_PER_COMMIT = 500_000  # ~60 MB of Arrow per commit; a 1M-trade day lands in two commits
# Writer options for archive chunks only. Most of a chunk's bytes are unique per row (ids, times, the CSV
# line), where a dictionary page never pays; a 64 KB dictionary limit makes the writer give up early on those
# (30 % less time writing a chunk, files a few % smaller). Only text columns other than the line and the record
# id (the symbol, the source) are dictionary-encoded at all: numbers written plain and zstd-compressed come out
# as small as with a dictionary (a day of trades: 12.7 MB against 13.1) in 8 % less writing time.
WRITE = {"write.parquet.dict-size-bytes": str(64 << 10)}


def archive_key(stream: str, symbol: str, name: str) -> str:
    return f"{ARCHIVE}{stream}.{symbol}.{name}"


@dataclass
class FileStats:
    """One line of a backfill's summary: one archive file."""

    file: str
    symbol: str
    period: str
    status: str = "pending"  # landed | skipped | replaced | failed
    sha256: str | None = None
    bytes: int = 0
    total_bytes: int | None = None
    rows: int = 0  # rows read from the file (this run)
    landed: int = 0  # rows committed (this run)
    deduplicated: int = 0  # rows of a replaced file already in the table
    commits: int = 0
    seconds: float = 0.0
    error: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Done:
    """What an earlier run recorded for a file."""

    sha256: str
    rows: int
    done: bool
    replaced: bool
    first_id: int | None = None
    last_id: int | None = None

    @classmethod
    def parse(cls, text: str | None) -> _Done | None:
        if text is None:
            return None
        data = json.loads(text)
        return cls(data["sha256"], int(data["rows"]), bool(data["done"]), bool(data.get("replaced")),
                   data.get("first_id"), data.get("last_id"))


class FileBackfill:
    """Land one archive file: verify, stream, commit in bounded chunks with exact progress."""

    def __init__(self, sink: IcebergSink, registry: Registry, connector: Connector, stream: Stream,
                 file: ArchiveFile, *, raw_payload: bool, rows_per_commit: int, workdir: Path,
                 on_progress: Callable[[FileStats], None], after: threading.Event | None = None) -> None:
        self.sink, self.registry, self.connector, self.stream, self.file = sink, registry, connector, stream, file
        self.table = raw_table_name(connector.name, stream.name)
        self.raw_payload, self.rows_per_commit, self.workdir = raw_payload, max(1, rows_per_commit), workdir
        self.on_progress = on_progress
        self.stats = FileStats(file.name, file.symbol, file.period)
        self.key = archive_key(stream.name, file.symbol, file.name)
        self._ahead: tuple[int, ReadAhead] | None = None  # (rows skipped, batches being read) started by fetch
        # one file is parsed at a time, in order: the previous file's reading ends before this one's starts, so
        # the next file's first blocks are parsed while this one's last are written, not while its first are
        self.after, self.parsed = after, threading.Event()
        self._table: Table | None = None
        self._committer: ThreadPoolExecutor | None = None
        self.keys = (cursor_key(stream.name, file.symbol), rows_key(stream.name, file.symbol),
                     last_ts_key(stream.name, file.symbol))
        self.schema = raw_schema(stream)

    def run(self) -> FileStats:
        """Fetch then land (``fetch`` may have run already, in the background, while the previous file landed)."""
        return self.land(self.fetch()).result()

    def fetch(self) -> Path | None:
        """Checksum, skip check, download and verification; the verified file's path (None: skip or failed)."""
        self._started = time.monotonic()
        try:
            expected = self.connector.archive_checksum(self.file)
            self._table = self._load()  # kept for the first look of ``land``: the progress of this file only
            recorded = _Done.parse(progress_of(self._table).get(self.key))
            if recorded is not None and recorded.done and expected is not None and recorded.sha256 == expected:
                self.stats.status, self.stats.sha256 = "skipped", expected
                self.parsed.set()
                return None
            path = self.workdir / self.file.name
            with open(path, "wb") as out:
                self.connector.download_archive(self.file, out, self._bytes)
            actual = sha256_of(path)
            self.stats.sha256 = actual
            if expected is not None and actual != expected:
                path.unlink()
                raise ArchiveError(f"{self.file.name}: checksum mismatch: the venue publishes {expected[:12]}..., "
                                   f"the download is {actual[:12]}...; nothing from this file landed")
            # start reading once the previous file is read: parsing this one overlaps the previous one's last writes
            skip = recorded.rows if recorded is not None and recorded.sha256 == actual else 0
            if self.after is not None:
                self.after.wait()
            self._ahead = (skip, ReadAhead(self._batches(path, skip), self.parsed.set))
            return path
        except Exception as exc:
            self.parsed.set()
            self._failed(exc)
            return None

    def land(self, path: Path | None, committer: ThreadPoolExecutor | None = None) -> Future[FileStats]:
        """Land the verified file at ``path`` (if any); its final stats, once its last commit is done.

        With a ``committer`` (one thread), every commit runs there, in the order made, and the file's last one
        is not waited for: the next file's blocks are written while it commits (a commit is Python and catalog
        work, most of it holding the GIL; writing Parquet is not)."""
        self._committer = committer
        last: Future[FileStats] | None = None
        try:
            if path is not None:
                last = self._land(path, self.stats.sha256 or sha256_of(path))
        except Exception as exc:
            self._failed(exc)
        finally:
            if self._ahead is not None:  # not used (the file turned out landed) or left by an error
                self._ahead[1].close()
                self._ahead = None
            if path is not None and last is None:
                path.unlink(missing_ok=True)
            self.parsed.set()
        if last is not None:
            return last
        done: Future[FileStats] = Future()
        done.set_result(self._report())
        return done

    def _report(self) -> FileStats:
        self.stats.seconds = round(time.monotonic() - getattr(self, "_started", time.monotonic()), 3)
        self.on_progress(self.stats)
        return self.stats

    def _last_commit(self, path: Path, sha: str, commit: tuple) -> FileStats:
        """The file's last commit, on the committer; if the file's progress moved meanwhile, land the rest from
        the recorded progress right here (in order, before any later file commits)."""
        try:
            if not self._commit(*commit):
                self._committer = None
                self._land(path, sha)
        except Exception as exc:
            self._failed(exc)
        finally:
            path.unlink(missing_ok=True)
        return self._report()

    def _failed(self, exc: Exception) -> None:
        """One line per failed file; the other files go on."""
        self.stats.status = "failed"
        if isinstance(exc, (ArchiveError, ConnectorError)):
            self.stats.error = str(exc)
        else:  # a bug or an unexpected venue answer: still one line
            self.stats.error = f"{self.file.name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"

    def _bytes(self, done: int, total: int | None) -> None:
        self.stats.bytes, self.stats.total_bytes = done, total
        self.on_progress(self.stats)

    def _land(self, path: Path, sha: str) -> Future[FileStats] | None:
        """Stream the verified file into the table; restart from the committed progress if a writer interferes.
        The file's last commit, if the committer runs it."""
        while True:
            table, self._table = self._table or self._load(), None  # a retry (progress moved) looks afresh
            recorded = _Done.parse(progress_of(table).get(self.key))
            if recorded is not None and recorded.sha256 == sha and recorded.done:
                self.stats.status = "skipped" if not self.stats.commits else self.stats.status
                return None
            replaced = recorded is not None and (recorded.sha256 != sha or recorded.replaced)
            skip = recorded.rows if recorded is not None and recorded.sha256 == sha else 0
            self.stats.status = "replaced" if replaced else "landing"
            streamed = self._stream(table, self._chunks(path, skip), sha, skip, replaced, path)
            if streamed is not False:
                self.stats.status = "replaced" if replaced else "landed"
                return streamed if isinstance(streamed, Future) else None

    def _load(self) -> Table:
        return retry_transient(lambda: self.sink.catalog.load_table((self.sink.namespace, self.table)))

    def _chunks(self, path: Path, skip: int) -> ReadAhead:
        """The batches after ``skip``: the ones ``fetch`` started reading if it assumed the same ``skip``."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            if ahead[0] == skip:
                return ahead[1]
            ahead[1].close()  # a concurrent writer moved this file's progress since: read again from there
        self.stats.rows = 0
        return ReadAhead(self._batches(path, skip))

    def _batches(self, path: Path, skip: int) -> Iterator[_Block]:
        """The file's rows after the first ``skip``, cast to the raw schema, a table per block as it is read,
        cut where a commit ends (every ``rows_per_commit`` rows), so that no table straddles two commits; with
        what the commit needs to know of them (computed here, in the reader thread)."""
        seen, room = 0, self.rows_per_commit
        for batch in self.connector.read_archive(self.file, path):
            n = batch.num_rows
            self.stats.rows += n
            seen += n
            if seen <= skip:
                continue
            if seen - n < skip:
                batch = batch.slice(skip - (seen - n))
            rows = self._cast(batch)
            while rows.num_rows >= room:
                yield self._block(rows.slice(0, room))
                rows, room = rows.slice(room), self.rows_per_commit
            if rows.num_rows:
                yield self._block(rows)
                room -= rows.num_rows
            self.on_progress(self.stats)

    def _block(self, rows: pa.Table) -> _Block:
        """``rows`` with their id range and newest event time."""
        if rows.num_rows == 0:
            return _Block(rows, None, None)
        span = None
        if self.stream.cursor_kind == CursorKind.ID:
            ids = rows.column(self.stream.key[-1])
            # a stream may keep its ids as text (Binance's trade id, as the seed's DDL), where the smallest
            # string is not the smallest id once ids gain a digit
            bounds = pc.min_max(ids if pa.types.is_integer(ids.type) else pc.cast(ids, pa.int64()))
            span = (int(bounds["min"].as_py()), int(bounds["max"].as_py()))
        return _Block(rows, span, pc.max(rows.column(self.stream.event_time)).as_py())

    def _cast(self, batch: pa.RecordBatch) -> pa.Table:
        names = set(batch.schema.names)
        arrays = []
        for column in self.stream.columns:
            if column.name not in names:
                raise ArchiveError(f"{self.file.name}: the connector's rows have no column {column.name!r}")
            array = batch.column(column.name)
            if array.type != column.type:
                try:
                    array = _cast_column(column, array, self.registry.transforms)
                except Exception as exc:
                    raise ArchiveError(f"{self.file.name}: column {column.name!r}: "
                                       f"{str(exc).splitlines()[0]}") from None
            arrays.append(array)
        n = batch.num_rows
        payload = batch.column(PAYLOAD) if self.raw_payload and PAYLOAD in names else pa.nulls(n, pa.string())
        now = datetime.now(UTC)
        arrays += [pa.repeat(pa.scalar(self.connector.name, pa.string()), n),
                   pa.repeat(pa.scalar(now, pa.timestamp("us", tz="UTC")), n), payload]
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def _new_rows(self, chunk: pa.Table) -> pa.Table:
        """A replaced file's rows whose key is not in the table yet (key columns of the touched days only)."""
        if chunk.num_rows == 0:
            return chunk
        times = chunk.column(self.stream.event_time)
        first, last = pc.min(times).as_py(), pc.max(times).as_py()
        days, day = [], datetime(first.year, first.month, first.day, tzinfo=UTC)
        while day <= last:
            days.append(day)
            day += timedelta(days=1)
        key = list(self.stream.key)
        seen = self.sink.existing_keys(self.table, key, self.stream.event_time, days)
        seen = seen.cast(pa.schema([chunk.schema.field(k) for k in key]))
        return chunk.join(seen, key, join_type="left anti").select(chunk.schema.names).cast(chunk.schema)

    def _stream(self, table: Table, batches: ReadAhead, sha: str, skip: int, replaced: bool,
                path: Path) -> bool | Future[FileStats]:
        """Commit the file's rows after ``skip``, ``rows_per_commit`` at a time; False if a concurrent writer
        moved this file's progress; the last commit's future if the committer runs it.

        Each block is written into the commit's data files as it comes, while the reader parses the next; a
        replaced file's chunk is gathered first, to keep only the rows the table does not hold yet."""
        landed_rows = skip
        plain = [f.name for f in self.schema if f.name in (PAYLOAD, self.stream.key[-1])
                 or not pa.types.is_string(f.type)]
        with contextlib.closing(batches):
            batch = next(batches, None)
            while True:
                read, pending = _Rows(self.schema.field(self.stream.event_time)), []
                writer = DataFileWriter(table, WRITE, plain)
                try:
                    while batch is not None and read.count < self.rows_per_commit:
                        read.add(batch)
                        if replaced:
                            pending.append(batch.rows)
                        else:
                            writer.write(batch.rows)
                        batch = next(batches, None)  # look ahead: the file's last commit marks it done
                    landed = read
                    if replaced:
                        rows = self._new_rows(pa.concat_tables(pending) if pending else self.schema.empty_table())
                        pending, landed = [], _Rows(read.field).add(self._block(rows))
                        writer.write(rows)
                    files = writer.close()
                except BaseException:
                    writer.abort()
                    raise
                commit = (files, landed, sha, landed_rows + read.count, batch is None, replaced, read.count,
                          read.span)
                if batch is None and self._committer is not None:
                    return self._committer.submit(self._last_commit, path, sha, commit)
                ok = self._committer.submit(self._commit, *commit).result() if self._committer is not None \
                    else self._commit(*commit)  # in order behind the previous file's last commit
                if not ok:
                    return False
                landed_rows += read.count
                if batch is None:
                    return True

    def _commit(self, files: list, landed: _Rows, sha: str, file_rows: int, done: bool, replaced: bool, read: int,
                span: tuple[int, int] | None) -> bool:
        """Append the data files of ``landed`` with the file's progress (and the cursor it continues), if this
        file's committed progress is still what this chunk was read after (``file_rows - read`` rows).

        The progress is computed from the table as each attempt finds it (a concurrent REST ingest may have moved
        the cursor meanwhile); the data files are written once, before."""
        snapshot_id = self.sink.publish_planned(
            self.table, partial(self._plan, files, landed, sha, file_rows, done, replaced, read, span),
            stage="archive")
        if snapshot_id is None:
            return False  # someone else landed (part of) this file meanwhile: start over from their progress
        self.stats.landed += landed.count
        self.stats.deduplicated += read - landed.count
        self.stats.commits += 1
        self.on_progress(self.stats)
        return True

    def _plan(self, files: list, landed: _Rows, sha: str, file_rows: int, done: bool, replaced: bool, read: int,
              span: tuple[int, int] | None, table: Table) -> Commit | None:
        """The append on ``table`` as it is now (None if this file's progress moved); the file's last commit also
        claims its period as coverage, so REST windows over it land nothing twice and forward REST continues from
        its end."""
        committed = progress_of(table)
        previous = _Done.parse(committed.get(self.key))
        if (previous.rows if previous is not None and previous.sha256 == sha else 0) != file_rows - read:
            return None
        ckey, rkey, tkey = self.keys
        record: dict = {"sha256": sha, "rows": file_rows, "done": done, "period": self.file.period,
                        "start": self.file.start.isoformat(), "end": self.file.end.isoformat()}
        if replaced:
            record["replaced"] = True
        if previous is not None and previous.sha256 == sha and previous.first_id is not None:
            earlier = (previous.first_id, previous.last_id or previous.first_id)
            span = earlier if span is None else (min(span[0], earlier[0]), max(span[1], earlier[1]))
        if span is not None:  # the id range the file covered so far
            record["first_id"], record["last_id"] = span
        progress = {self.key: json.dumps(record, separators=(",", ":")),
                    rkey: str(int(committed.get(rkey) or 0) + landed.count)}
        if landed.count:
            last_ts = committed.get(tkey)
            if last_ts is None or datetime.fromisoformat(last_ts) < landed.newest:
                progress[tkey] = landed.newest.isoformat()
            if self.stream.cursor_kind == CursorKind.ID:
                cursor = self._continued_cursor(landed.span, decode_cursor(committed.get(ckey)))
                if cursor is not None:
                    progress[ckey] = encode_cursor(cursor)
        if done:
            claim = Span(micros(self.file.start), micros(self.file.end))
            planned = claim_commit(table, self.stream.name, self.file.symbol, self.stream.event_time, claim, None,
                                   landed.times(), extra=progress)
            if planned is not None:
                return replace(planned[0], files=files)
        return Commit(None, {**{k: v for k, v in committed.items() if not k.startswith(PER_SYMBOL)}, **progress},
                      files=files)

    def _continued_cursor(self, bounds: tuple[int, int] | None, cursor: object) -> int | None:
        """The id cursor after rows of ids ``bounds`` if they continue the committed one (or there is none)."""
        if bounds is None:
            return None
        first, last = bounds
        if cursor is None:
            return int(last)
        if isinstance(cursor, int) and first <= cursor + 1 < last + 1:
            return int(last)
        return None


@dataclass
class _Block:
    """Rows read from a file, with their id range (id-cursor streams) and newest event time."""

    rows: pa.Table
    span: tuple[int, int] | None
    newest: datetime | None


class _Rows:
    """What a commit needs to know of rows without holding them: how many, their id range (id-cursor streams),
    their event times (the coverage claim counts them and takes the newest)."""

    def __init__(self, field: pa.Field) -> None:
        self.field, self.count, self.span, self.newest = field, 0, None, None
        self._times: list[pa.Array] = []

    def add(self, block: _Block) -> _Rows:
        if block.rows.num_rows == 0:
            return self
        self.count += block.rows.num_rows
        self._times += block.rows.column(self.field.name).chunks
        if block.newest is not None and (self.newest is None or block.newest > self.newest):
            self.newest = block.newest
        if block.span is not None:
            lo, hi = block.span
            self.span = block.span if self.span is None else (min(lo, self.span[0]), max(hi, self.span[1]))
        return self

    def times(self) -> pa.Table:
        """The event-time column of the rows (all ``claim_commit`` reads of them)."""
        return pa.table({self.field.name: pa.chunked_array(self._times, self.field.type)})


class ReadAhead:
    """``batches``, read (inflated, parsed, cast) ahead in a thread that starts at once: parsing a block overlaps
    the Parquet writing of the block before (and, across files, of the previous file's last blocks).

    Both release the GIL (pyarrow's CSV reader and casts, the Parquet writer), so on two cores a file lands in
    about the time of the slower half. At most ``AHEAD`` blocks wait in the queue; ``close`` stops the thread;
    ``on_end`` runs when the thread is done reading (the file read, failed or closed).
    """

    AHEAD = 2

    def __init__(self, batches: Iterator[_Block], on_end: Callable[[], None] | None = None) -> None:
        self._ready: queue.Queue = queue.Queue(maxsize=self.AHEAD)
        self._stop, self._end, self._done = threading.Event(), object(), False
        self._on_end = on_end
        self._thread = threading.Thread(target=self._work, args=(batches,), name="schemahub-archive-reader",
                                        daemon=True)
        self._thread.start()

    def _work(self, batches: Iterator[_Block]) -> None:
        try:
            for batch in batches:
                if not self._put(batch):
                    return
            self._put(self._end)
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)
        finally:
            if self._on_end is not None:
                self._on_end()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._ready.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> ReadAhead:
        return self

    def __next__(self) -> _Block:
        if self._done:
            raise StopIteration
        item = self._ready.get()
        if item is self._end:
            self._done = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._done = True
            raise item
        return item

    def close(self) -> None:
        self._done = True
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._ready.get(timeout=0.05)


def backfill(
    catalog: Catalog,
    namespace: str,
    registry: Registry,
    source: str,
    *,
    since: datetime,
    until: datetime,
    symbols: Sequence[str] | None = None,
    stream: str = "trades",
    options: dict | None = None,
    raw_payload: bool = True,
    rows_per_commit: int = ROWS_PER_COMMIT,
    on_progress: Callable[[FileStats], None] | None = None,
    on_plan: Callable[[list[ArchiveFile]], None] | None = None,
) -> list[FileStats]:
    """Land ``source``'s archive files covering ``[since, until)`` for each symbol; one ``FileStats`` per file.

    A file that fails (missing, bad checksum, broken zip) is reported in its stats
    and the other files go on; nothing of a failed file lands unless its rows were
    readable, in which case what committed stays and a rerun resumes it.
    """
    cls = registry.connectors.get(source)
    if cls is None:
        raise KeyError(f"unknown source {source!r} (installed: {', '.join(sorted(registry.connectors)) or 'none'})")
    if stream not in cls.streams:
        raise KeyError(f"{source} has no stream {stream!r} (streams: {', '.join(cls.streams)})")
    connector = cls(options or {})
    chosen = cls.streams[stream]
    try:
        files = [f for symbol in (symbols or cls.default_symbols)
                 for f in connector.archive_files(stream, symbol, since, until)]
    except NotImplementedError:
        raise ValueError(f"{source} has no bulk archives (its connector implements no archive_files)") from None
    if on_plan is not None:
        on_plan(files)
    ensure_tables(catalog, namespace, [TableDef(raw_table_name(source, stream), raw_schema(chosen),
                                                chosen.event_time), TableDef(WATERMARKS, WATERMARKS_SCHEMA, None)])
    sink = IcebergSink(catalog, namespace)
    report = on_progress or (lambda stats: None)
    with tempfile.TemporaryDirectory(prefix="schemahub-archive-") as tmp, ThreadPoolExecutor(1) as downloads, \
            ThreadPoolExecutor(1, thread_name_prefix="schemahub-archive-commit") as committer:
        jobs: list[FileBackfill] = []
        for f in files:  # each file's reading waits for the one before's to end
            jobs.append(FileBackfill(sink, registry, connector, chosen, f, raw_payload=raw_payload,
                                     rows_per_commit=rows_per_commit, workdir=Path(tmp), on_progress=report,
                                     after=jobs[-1].parsed if jobs else None))
        results = []
        ahead: Future | None = downloads.submit(jobs[0].fetch) if jobs else None
        for i, job in enumerate(jobs):  # the next file downloads while this one lands
            path = ahead.result() if ahead is not None else None
            ahead = downloads.submit(jobs[i + 1].fetch) if i + 1 < len(jobs) else None
            results.append(job.land(path, committer))
        return [r.result() for r in results]
