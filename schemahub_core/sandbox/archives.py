"""Simulated bulk archives: a zip per file plus its ``.CHECKSUM``, built on demand, with faults on demand.

A venue plugin's simulated venue says how one file's lines are made (from the
shared simulated market, so archive rows equal the REST rows for the same
trades); the shelf zips them, computes the sha256 line venues publish, caches
the result and serves the archive defects users meet in real life:

- ``bad_checksum``: the ``.CHECKSUM`` does not match the zip;
- ``truncated``: the published zip itself is cut off (its checksum matches the cut bytes);
- ``missing``: HTTP 404 for the zip and its checksum (a day never published);
- ``short``: the file lacks its last rows until ``replace(name)`` publishes the complete version
  (Binance replaces files after publication; the new one has a new checksum).
"""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from starlette.responses import PlainTextResponse, Response

from schemahub_core.sandbox.market import LABEL

ARCHIVE_FAULTS = ("bad_checksum", "truncated", "missing", "short")
SHORT_FRACTION = 0.9  # a "short" file holds this share of its rows, as a file cut off mid-day


@dataclass(frozen=True)
class Built:
    zip_bytes: bytes
    checksum: str  # the ``.CHECKSUM`` text
    rows: int


class ArchiveShelf:
    """Builds, caches and serves one venue's archive files.

    ``lines(name)`` returns the CSV lines of the file called ``name`` (the zip's
    name; the member is the same name ending in ``.csv``), or None when the venue
    has no such file. Use ``serve(name, checksum=...)`` from a route.
    """

    def __init__(self, lines: Callable[[str], Iterable[str] | None], cache_files: int = 64,
                 version: Callable[[str], object] = lambda name: None) -> None:
        self._lines = lines
        self._version = version  # whatever else changes a file's content (e.g. a standing fault): part of the key
        self._cache: OrderedDict[tuple[str, bool, object], Built] = OrderedDict()
        self._cache_files = cache_files
        self._lock = threading.Lock()
        self.faults: dict[str, str] = {}  # file name -> fault kind
        self.served: list[str] = []  # names of the zips served, in order (for tests)

    def fault(self, name: str, kind: str) -> None:
        """Serve ``name`` with defect ``kind`` (see the module docstring) from now on."""
        if kind not in ARCHIVE_FAULTS:
            raise ValueError(f"unknown archive fault {kind!r} (kinds: {', '.join(ARCHIVE_FAULTS)})")
        self.faults[name] = kind

    def replace(self, name: str) -> None:
        """Publish the corrected file: every defect of ``name`` is gone, its checksum changes if its bytes do."""
        self.faults.pop(name, None)

    def clear(self) -> None:
        self.faults.clear()

    def build(self, name: str) -> Built | None:
        """The file as currently published (cached), or None if it does not exist."""
        short = self.faults.get(name) == "short"
        key = (name, short, self._version(name))
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        lines = self._lines(name)
        if lines is None:
            return None
        if short:
            rows = list(lines)
            lines = rows[:int(len(rows) * SHORT_FRACTION)]
        buffer, count = io.BytesIO(), 0
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as archive, \
                archive.open(name.removesuffix(".zip") + ".csv", "w", force_zip64=True) as member:
            chunk: list[str] = []
            for line in lines:
                chunk.append(line)
                if len(chunk) >= 50_000:
                    member.write(("\n".join(chunk) + "\n").encode())
                    count, chunk = count + len(chunk), []
            if chunk:
                member.write(("\n".join(chunk) + "\n").encode())
                count += len(chunk)
        data = buffer.getvalue()
        built = Built(data, f"{hashlib.sha256(data).hexdigest()}  {name}", count)
        with self._lock:
            self._cache[key] = built
            while len(self._cache) > self._cache_files:
                self._cache.popitem(last=False)
        return built

    def publish(self, name: str, zip_bytes: bytes) -> None:
        """Serve ``zip_bytes`` as the current ``name`` (a file built elsewhere, e.g. by benchmark workers)."""
        built = Built(zip_bytes, f"{hashlib.sha256(zip_bytes).hexdigest()}  {name}", -1)
        with self._lock:
            self._cache[(name, False, self._version(name))] = built

    def serve(self, name: str, checksum: bool) -> Response:
        """The zip (or with ``checksum`` its ``.CHECKSUM``) as the venue's CDN answers it."""
        headers = {"X-SchemaHub-Sandbox": LABEL}
        kind = self.faults.get(name)
        built = None if kind == "missing" else self.build(name)
        if built is None:
            return PlainTextResponse("<Error><Code>NoSuchKey</Code></Error>", status_code=404, headers=headers)
        data = built.zip_bytes
        if kind == "truncated":
            data = data[:len(data) // 2]
        if checksum:
            text = built.checksum
            if kind == "truncated":
                text = f"{hashlib.sha256(data).hexdigest()}  {name}"
            elif kind == "bad_checksum":
                text = f"{'0' * 64}  {name}"
            return PlainTextResponse(text, headers=headers)  # no trailing newline, as Binance's
        self.served.append(name)
        return Response(data, media_type="application/zip", headers=headers)
