"""Schema drift: fields venues send that a stream does not declare, and declared fields that stop arriving.

Ingest counts both per commit and writes them in that commit's snapshot summary
(``schemahub-drift.<symbol>``: records, new fields with a count and an example, missing fields with a count),
so the figures are as exact as the data they describe and the summary grows with what the commit covers only.
The key sits outside the engine's ``schemahub.`` progress prefix: maintenance never carries it forward, so
adding up snapshots never counts a commit twice. ``report`` adds them up over the snapshots a table keeps.

Type drift (a string where a number was) is not here: such a record fails its cast and goes to quarantine.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from pyiceberg.table import Table

from schemahub_core.framework.connector import Stream
from schemahub_core.framework.streams import type_name

PREFIX = "schemahub-drift."
EXAMPLE_CHARS = 80


@dataclass
class Drift:
    """What one batch of records showed: ``new`` field -> (records carrying it, example), ``missing`` -> count."""

    records: int = 0
    new: dict[str, list[Any]] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.new or self.missing)

    def add(self, other: Drift) -> None:
        self.records += other.records
        for name, (count, example) in other.new.items():
            mine = self.new.setdefault(name, [0, example])
            mine[0] += count
        for name, count in other.missing.items():
            self.missing[name] = self.missing.get(name, 0) + count

    def summary_value(self) -> str:
        return json.dumps({"records": self.records, "new": self.new, "missing": self.missing}, separators=(",", ":"))


def observe(stream: Stream, records: Sequence[Any], engine_keys: Iterable[str] = ()) -> Drift:
    """Count undeclared and absent fields in ``records`` (objects only; array rows carry no names).

    Ingest's hot path does not call this for a batch the raw cast found to carry exactly the declared keys
    (``CastPage.exact_keys``): such records have nothing to count.
    """
    declared = {c.record_key for c in stream.columns} | set(engine_keys)
    if _uniform_keys(records):  # the common page: every record has the first one's keys, so it counts them all
        first, keys = records[0], records[0].keys()
        new = {name: [len(records), _example(first[name])] for name in sorted(keys - declared)}
        return Drift(len(records), new, {name: len(records) for name in sorted(_stream_keys(stream) - keys)})
    seen: Counter = Counter()
    examples: dict[str, Any] = {}
    objects = 0
    for record in records:
        if not isinstance(record, Mapping):
            continue
        objects += 1
        seen.update(record.keys())
        for name in record.keys() - declared:
            examples.setdefault(name, record[name])
    new = {name: [seen[name], _example(examples[name])] for name in sorted(examples)}
    missing = {name: objects - seen[name] for name in sorted(_stream_keys(stream)) if objects - seen[name] > 0}
    return Drift(objects, new, missing)


def _stream_keys(stream: Stream) -> set[str]:
    return {c.record_key for c in stream.columns}


def _uniform_keys(records: Sequence[Any]) -> bool:
    """Whether ``records`` are all dicts with the same keys, tested in one C-level pass over the page."""
    if not records or type(records[0]) is not dict:
        return False
    keys = records[0].keys()
    try:
        return all(map(keys.__eq__, map(dict.keys, records)))
    except TypeError:  # a record that is not a dict: the caller counts record by record
        return False


def _example(value: Any) -> Any:
    if isinstance(value, str) and len(value) > EXAMPLE_CHARS:
        return value[:EXAMPLE_CHARS] + "…"
    return value if isinstance(value, bool | int | float | str) or value is None else str(value)[:EXAMPLE_CHARS]


def summary_key(symbol: str) -> str:
    return f"{PREFIX}{symbol}"


def drift_summary(stream: Stream, symbol: str, records: Sequence[Any]) -> dict[str, str]:
    """The summary property a commit of ``records`` carries for ``symbol``: empty when nothing drifted."""
    drift = observe(stream, records)
    return {summary_key(symbol): drift.summary_value()} if drift else {}


@dataclass
class FieldDrift:
    source: str
    stream: str
    field: str
    kind: str  # "new" (sent, not declared) or "missing" (declared, not sent)
    records: int
    of_records: int
    first_seen: str
    last_seen: str
    symbols: list[str]
    example: Any = None
    proposed_type: str | None = None
    still: bool = True  # new: still sent in the newest commit that saw drift; missing: still absent there

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def infer_type(example: Any) -> tuple[pa.DataType, str | None]:
    """The raw column a new field's example calls for: (type, cast); numeric text is cast as the venue's prices."""
    if isinstance(example, bool):
        return pa.bool_(), None
    if isinstance(example, int):
        return pa.int64(), None
    if isinstance(example, float):
        return pa.float64(), None
    if isinstance(example, str):
        try:
            float(example)
            return pa.float64(), "to_double"
        except ValueError:
            return pa.string(), None
    return pa.string(), "to_string"


def report(table: Table, source: str, stream: Stream) -> list[FieldDrift]:
    """Drift over the snapshots ``table`` keeps, oldest first; fields the stream now declares are not new."""
    declared = {c.record_key for c in stream.columns}
    found: dict[tuple[str, str], FieldDrift] = {}
    newest: dict[str, tuple[int, dict]] = {}  # symbol -> (timestamp, its newest drift entry)
    for snapshot in sorted(table.snapshots(), key=lambda s: s.timestamp_ms):
        props = snapshot.summary.additional_properties if snapshot.summary else {}
        when = datetime.fromtimestamp(snapshot.timestamp_ms / 1000, UTC).isoformat()
        for key, value in props.items():
            if not key.startswith(PREFIX):
                continue
            symbol = key[len(PREFIX):]
            entry = json.loads(value)
            newest[symbol] = (snapshot.timestamp_ms, entry)
            for kind in ("new", "missing"):
                for name, figures in entry.get(kind, {}).items():
                    if kind == "new" and name in declared:
                        continue
                    if kind == "missing" and name not in declared:
                        continue
                    count = figures[0] if kind == "new" else figures
                    item = found.get((kind, name))
                    if item is None:
                        example = figures[1] if kind == "new" else None
                        item = found[(kind, name)] = FieldDrift(
                            source, stream.name, name, kind, 0, 0, when, when, [], example,
                            type_name(infer_type(example)[0]) if kind == "new" else None)
                    item.records += count
                    item.of_records += entry.get("records", 0)
                    item.last_seen = when
                    if symbol not in item.symbols:
                        item.symbols.append(symbol)
    for item in found.values():
        item.still = any(item.field in entry.get(item.kind, {}) for _, entry in newest.values())
    return sorted(found.values(), key=lambda f: (f.kind, f.first_seen, f.field))
