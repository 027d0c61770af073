"""Ingest scale-out: split the (source, stream, symbol) work units across processes or hosts.

``run ingest --shard i/n`` (1 <= i <= n) runs only the units whose stable hash falls in shard ``i``.
The hash is SHA-256 of the unit's name, never Python's ``hash()`` (salted per process), so every
process and host computes the same split from its own configuration, with no coordinator: a unit's
shard does not depend on which other units a host lists. Sharding only divides the work; the
exactly-once guarantee comes from the conditional commits, so an overlap (two hosts given the same
shard, or a different ``n``) still lands every record once, it just does some work twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from schemahub_core.framework.config import ConfigError


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"2/3"`` -> Shard(2, 3); anything else is a one-line ConfigError naming the fix."""
        left, sep, right = text.strip().partition("/")
        try:
            index, count = int(left), int(right)
        except ValueError:
            index = count = 0
        if not sep or count < 1 or not 1 <= index <= count:
            raise ConfigError(f"--shard {text!r}: expected I/N with 1 <= I <= N, e.g. --shard 1/3 "
                              "(run N processes, one per I, on a shared catalog)")
        return cls(index, count)

    def owns(self, source: str, stream: str, symbol: str) -> bool:
        """Whether the unit belongs to this shard; the same answer in every process and on every host."""
        return shard_of(source, stream, symbol, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(source: str, stream: str, symbol: str, count: int) -> int:
    """The 1-based shard of a unit among ``count``: SHA-256 of ``source.stream.symbol``, modulo ``count``."""
    digest = hashlib.sha256(f"{source}\x1f{stream}\x1f{symbol}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % count + 1
