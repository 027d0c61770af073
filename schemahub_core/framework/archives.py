"""Bulk archives: the part of the connector contract a plugin implements to land history from files.

Venues publish their trade history as downloadable files (a zip per day or month
with a published checksum). Reading them is venue knowledge, so it lives in the
plugin; landing them exactly once is the engine's (``engine/archives.py``). A
connector that has archives implements four methods (see ``Connector``):
``archive_files`` lists the files covering a window, ``archive_checksum`` reads
the venue's published sha256 for one, ``download_archive`` fetches it (the
default, ``download``, is a plain streamed GET) and ``read_archive`` streams the
downloaded file's rows as Arrow record batches in the stream's raw columns plus
``_raw_payload`` (the original line).

This module holds what plugins share: the file description, the errors, the
monthly-or-daily plan, the streamed download and a bounded-memory reader for the
headerless CSV members such zips hold.
"""

from __future__ import annotations

import hashlib
import struct
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import requests

try:  # ISA-L's inflate (package isal): zlib's API and output, faster
    from isal import isal_zlib as _zlib
except ImportError:  # pragma: no cover - without it, zlib
    import zlib as _zlib  # type: ignore[no-redef]

PAYLOAD = "_raw_payload"
BLOCK_SIZE = 8 << 20  # bytes of CSV per record batch: ~100k trade rows, a few tens of MB of Arrow memory
# Bytes inflated at a time. Pieces this small are memory the allocator hands out again and again; an inflated
# 8 MB piece was a fresh mapping each time, and its page faults were a sixth of reading a file.
PIECE = 1 << 20


class ArchiveError(RuntimeError):
    """An archive file cannot be landed (bad checksum, broken zip, unreadable rows): one line, the file named."""


class ArchiveMissing(ArchiveError):
    """The venue has no such file (HTTP 404): a day not published (yet), or never."""


@dataclass(frozen=True)
class ArchiveFile:
    """One archive file of a (stream, symbol): where it is and which event times it covers, ``[start, end)``.

    ``name`` is the venue's file name, unique per (stream, symbol): with the
    checksum it identifies what landed, so a rerun skips the file and a
    replaced file (same name, new checksum) is noticed.
    """

    stream: str
    symbol: str  # canonical, as given to ``run ingest``
    name: str
    url: str
    start: datetime
    end: datetime
    period: str = "daily"  # "daily" or "monthly": how the venue cut the file
    checksum_url: str | None = None


@dataclass(frozen=True)
class Period:
    """A calendar day or month in UTC, ``[start, end)``."""

    kind: str  # "daily" | "monthly"
    start: datetime
    end: datetime

    @property
    def label(self) -> str:
        """``YYYY-MM-DD`` for a day, ``YYYY-MM`` for a month (how venues name their files)."""
        return self.start.strftime("%Y-%m-%d" if self.kind == "daily" else "%Y-%m")


def _aware(moment: datetime) -> datetime:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)


def _day(moment: datetime | date) -> datetime:
    if isinstance(moment, datetime):
        moment = _aware(moment)
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)


def _next_month(day: datetime) -> datetime:
    return datetime(day.year + day.month // 12, day.month % 12 + 1, 1, tzinfo=UTC)


def archive_periods(since: datetime, until: datetime, now: datetime, *, monthly: bool = True) -> list[Period]:
    """The files to ask for to cover ``[since, until)``: monthly files for whole months that are over at ``now``
    (when the venue has them), daily files for the other days. ``since`` is floored and ``until`` rounded up to
    whole days; days from ``now``'s on are left out: no venue has published them yet."""
    start, stop = _day(since), _day(until)
    if stop < _aware(until):
        stop += timedelta(days=1)
    stop = min(stop, _day(now))
    out: list[Period] = []
    day = start
    while day < stop:
        month_end = _next_month(day)
        if monthly and day.day == 1 and month_end <= stop and month_end <= _day(now).replace(day=1):
            out.append(Period("monthly", day, month_end))
            day = month_end
        else:
            out.append(Period("daily", day, day + timedelta(days=1)))
            day += timedelta(days=1)
    return out


def parse_checksum(text: str, name: str) -> str:
    """The sha256 in a ``sha256sum`` line (``<hex>  <file name>``), checked to name ``name``."""
    parts = text.strip().split()
    if not parts or len(parts[0]) != 64 or any(c not in "0123456789abcdefABCDEF" for c in parts[0]):
        raise ArchiveError(f"{name}: unreadable checksum file: {text[:80]!r}")
    if len(parts) > 1 and parts[-1].lstrip("*") != name:
        raise ArchiveError(f"{name}: the checksum file names {parts[-1]!r}, not this file")
    return parts[0].lower()


_RETRYABLE = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


def _get(session: requests.Session, url: str, retries: int, stream: bool) -> requests.Response:
    """GET through transient faults; 404 -> ``ArchiveMissing``, other client errors -> ``ArchiveError``."""
    problem, name = "", url.rsplit("/", 1)[-1].removesuffix(".CHECKSUM")
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(5.0, 0.2 * 2 ** attempt))
        try:
            response = session.get(url, stream=stream, timeout=60)
        except _RETRYABLE as exc:
            problem = f"{type(exc).__name__}: {exc}"
            continue
        if response.status_code == 404:
            raise ArchiveMissing(f"{name}: not published (HTTP 404 at {url})")
        if response.status_code == 429 or response.status_code >= 500:
            problem = f"HTTP {response.status_code}"
            response.close()
            continue
        if response.status_code >= 400:
            raise ArchiveError(f"{name}: HTTP {response.status_code} at {url}")
        return response
    raise ArchiveError(f"{name}: {problem} (gave up after {retries} retries)")


def fetch_text(session: requests.Session, url: str, retries: int = 4) -> str:
    """A small text file (a ``.CHECKSUM``)."""
    return _get(session, url, retries, stream=False).text


def download(session: requests.Session, url: str, out: BinaryIO, on_bytes: Callable[[int, int | None], None],
             retries: int = 4) -> None:
    """Stream ``url`` into ``out``, reporting (bytes so far, total or None); a cut-off transfer is retried whole."""
    name = url.rsplit("/", 1)[-1]
    for attempt in range(retries + 1):
        response = _get(session, url, retries, stream=True)
        total = int(response.headers["Content-Length"]) if response.headers.get("Content-Length", "").isdigit() \
            else None
        out.seek(0)
        out.truncate()
        done = 0
        try:
            for chunk in response.iter_content(1 << 20):
                out.write(chunk)
                done += len(chunk)
                on_bytes(done, total)
        except _RETRYABLE as exc:
            if attempt == retries:
                raise ArchiveError(f"{name}: download cut off after {done} bytes: {exc}") from None
            continue
        finally:
            response.close()
        if total is not None and done != total:
            if attempt == retries:
                raise ArchiveError(f"{name}: download cut off at {done} of {total} bytes")
            continue
        return


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def zip_member(path: Path, name: str) -> tuple[zipfile.ZipFile, zipfile.ZipInfo]:
    """The zip's single data member (venues put one CSV in each zip); ``ArchiveError`` if the zip is broken."""
    try:
        archive = zipfile.ZipFile(path)
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) != 1:
            archive.close()
            raise ArchiveError(f"{name}: expected one file in the zip, found {len(members)}")
        return archive, members[0]
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ArchiveError(f"{name}: not a readable zip (truncated or corrupt): {exc}") from None


def csv_text_batches(path: Path, name: str, columns: Sequence[str], *, header: bool | None = None,
                     block_size: int | None = None) -> Iterator[pa.RecordBatch]:
    """``csv_batches`` with every column as text (for a stream whose casts read text, as from REST)."""
    return csv_batches(path, name, columns, header=header, block_size=block_size)


def csv_batches(path: Path, name: str, columns: Sequence[str], *, types: Mapping[str, pa.DataType] | None = None,
                header: bool | None = None, block_size: int | None = None) -> Iterator[pa.RecordBatch]:
    """Stream the CSV in zip ``path`` as record batches of the columns named ``columns`` (typed per ``types``,
    text otherwise; booleans are ``True``/``False`` in any case, nothing else), plus ``_raw_payload``: each
    line as the file has it, without its line end.

    ``header`` None: a first line whose first field is not a number is a header and skipped (Binance's USD-M
    files have one since 2022-08, its spot files never). The decompressing zip stream is cut into blocks of
    about ``block_size`` bytes at line ends; each block is parsed once by pyarrow's CSV reader, straight into
    the requested types, and its lines are the same bytes split at the newlines (no per-row Python, no
    rejoining of fields): memory is a few blocks, whatever the file's size. A corrupt member (bad CRC, cut
    deflate stream) or a row that does not parse raises ``ArchiveError``.
    """
    archive, member = zip_member(path, name)
    archive.close()  # the central directory told where the member is; its bytes are read directly
    newlines = _Scratch()
    kinds = {c: (types or {}).get(c, pa.string()) for c in columns}
    convert = pacsv.ConvertOptions(column_types=kinds, strings_can_be_null=False, true_values=["True", "true"],
                                   false_values=["False", "false"])
    parse = pacsv.ParseOptions(quote_char=False)
    try:
        with open(path, "rb") as raw:
            first = True
            size = block_size or BLOCK_SIZE
            for block in _line_blocks(_inflated(raw, member, name, size), size):
                if first:
                    first = False
                    if header is None:
                        lead = bytes(block[:64]).split(b",", 1)[0].strip().lstrip(b"-")
                        header = bool(lead) and not lead.replace(b".", b"", 1).isdigit()
                    if header:  # drop the first line
                        block = block[int(np.argmax(np.frombuffer(block, np.uint8) == 10)) + 1:]
                lines = _lines(block, newlines)
                if len(lines) == 0:
                    continue
                table = pacsv.read_csv(pa.py_buffer(block), read_options=pacsv.ReadOptions(
                    column_names=list(columns), block_size=len(block) + 1, use_threads=False),
                    parse_options=parse, convert_options=convert)
                if table.num_rows != len(lines):  # blank lines: the reader skips them, so must the payload
                    lines = lines.filter(pc.greater(pc.binary_length(lines), 0))
                batch = table.combine_chunks().to_batches()[0] if table.num_rows else None
                if batch is None:
                    continue
                yield pa.RecordBatch.from_arrays([*batch.columns, lines], names=[*columns, PAYLOAD])
    except (zipfile.BadZipFile, EOFError, OSError, pa.ArrowInvalid, _zlib.error) as exc:
        raise ArchiveError(f"{name}: cannot read {member.filename}: {str(exc).splitlines()[0]}") from None


def _inflated(raw: BinaryIO, member: zipfile.ZipInfo, name: str, size: int) -> Iterator[bytes]:
    """The bytes of zip ``member`` in pieces of at most ``size`` (and ``PIECE``), inflated by ISA-L when
    installed (the same bytes as zlib's, in 40 % of its time: inflating is half of reading a CSV zip), its
    CRC-32 checked at the end as ``zipfile`` does."""
    raw.seek(member.header_offset)
    local = raw.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise ArchiveError(f"{name}: not a readable zip (truncated or corrupt): no local header for "
                           f"{member.filename}")
    if member.flag_bits & 0x1:
        raise ArchiveError(f"{name}: {member.filename} is encrypted")
    if member.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ArchiveError(f"{name}: {member.filename} uses zip compression {member.compress_type}, not deflate")
    name_length, extra_length = struct.unpack("<HH", local[26:30])
    raw.seek(member.header_offset + 30 + name_length + extra_length)
    inflater = _zlib.decompressobj(-15) if member.compress_type == zipfile.ZIP_DEFLATED else None
    limit = max(1, min(size, PIECE))
    left, crc, step = member.compress_size, 0, max(1, limit // 4) if inflater else limit  # text deflates ~4:1
    while left > 0:
        piece = raw.read(min(step, left))
        if not piece:
            raise ArchiveError(f"{name}: {member.filename} is cut off ({left} compressed bytes missing)")
        left -= len(piece)
        while piece:
            out = inflater.decompress(piece, limit) if inflater is not None else piece
            piece = inflater.unconsumed_tail if inflater is not None else b""
            if out:
                crc = _zlib.crc32(out, crc)
                yield out
    if inflater is not None:
        out = inflater.flush()
        if out:
            crc = _zlib.crc32(out, crc)
            yield out
        if not inflater.eof:
            raise ArchiveError(f"{name}: {member.filename}: the deflate stream ends early")
    if crc != member.CRC:
        raise ArchiveError(f"{name}: {member.filename}: bad CRC-32 (the zip is corrupt)")


def _line_blocks(pieces: Iterator[bytes], size: int) -> Iterator[memoryview]:
    """``pieces`` gathered into blocks of about ``size`` bytes that each end at a line end (the last one given
    one), in one buffer used again for every block: a block is valid until the next one is asked for (the CSV
    reader and ``_lines`` copy what they keep)."""
    buffer = np.empty(size + PIECE, np.uint8)
    fill = 0
    for piece in pieces:
        if fill + len(piece) > len(buffer):  # a line longer than a block: a bigger buffer
            grown = np.empty(2 * (fill + len(piece)), np.uint8)
            grown[:fill] = buffer[:fill]
            buffer = grown
        buffer[fill:fill + len(piece)] = np.frombuffer(piece, np.uint8)
        fill += len(piece)
        if fill < size:
            continue
        cut = _last_line_end(buffer, fill)
        if cut == 0:  # no line end in this much: read on
            continue
        yield memoryview(buffer)[:cut]
        rest = fill - cut
        buffer[:rest] = buffer[cut:fill].copy()
        fill = rest
    if fill:
        if buffer[fill - 1] != 10:
            if fill == len(buffer):
                buffer = np.concatenate([buffer, np.zeros(1, np.uint8)])
            buffer[fill] = 10
            fill += 1
        yield memoryview(buffer)[:fill]


def _last_line_end(buffer: np.ndarray, fill: int) -> int:
    """One past the last newline in ``buffer[:fill]`` (0: none); lines are short, so the tail is looked at first."""
    start = max(0, fill - (64 << 10))
    while True:
        ends = np.flatnonzero(buffer[start:fill] == 10)
        if len(ends):
            return start + int(ends[-1]) + 1
        if start == 0:
            return 0
        fill, start = start, max(0, start - (1 << 20))


class _Scratch:
    """A reusable byte mask for finding newlines (a fresh 8 MB mask per block costs its page faults)."""

    def __init__(self) -> None:
        self.mask = np.empty(0, np.bool_)

    def newlines(self, data: np.ndarray) -> np.ndarray:
        if len(self.mask) < len(data):
            self.mask = np.empty(len(data), np.bool_)
        mask = self.mask[:len(data)]
        np.equal(data, 10, out=mask)
        return np.flatnonzero(mask)


def _lines(block: memoryview, scratch: _Scratch | None = None) -> pa.StringArray:
    """The lines of ``block`` (which ends with a newline) without their ``\\n`` or ``\\r\\n``: the newlines are
    found by numpy over the bytes and the line bytes copied once, in C."""
    data = np.frombuffer(block, np.uint8)
    ends = (scratch or _Scratch()).newlines(data)
    offsets = np.empty(len(ends) + 1, np.int32)
    offsets[0] = 0
    offsets[1:] = ends + 1
    lines = pa.StringArray.from_buffers(len(ends), pa.py_buffer(offsets), pa.py_buffer(block))
    return pc.ascii_rtrim(lines, "\r\n")
