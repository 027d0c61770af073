"""The process's memory allocator, chosen before pyarrow loads: memory freed is memory the OS gets back.

Arrow's default allocator (mimalloc) keeps freed pages for reuse, and glibc gives every thread that
allocates its own arena (up to eight per core) that keeps its own free memory. Both count in resident
memory, so they decide whether a unify run holds its bound. Measured on unify of 1M raw rows at its
smallest parts (pool peak 36-62 MiB above a 205 MiB start): mimalloc 408-453 MiB, jemalloc 411-451,
the system allocator 396-409, the system allocator with at most two glibc arenas 268-281. At 10M rows
and the default bound: 1,019-1,029 MiB with mimalloc, 858-894 MiB with system + two arenas, for the
same or less CPU (13.1-14.5 s against 13.9-14.7 s).

Arrow reads ``ARROW_DEFAULT_MEMORY_POOL`` once, when pyarrow loads, and C++ code (Parquet, Acero,
datasets) uses that pool whatever Python sets later, so ``schemahub_core`` imports this module first
and importing it chooses.
A user's own ``ARROW_DEFAULT_MEMORY_POOL`` or ``MALLOC_ARENA_MAX`` is kept; if pyarrow is already
loaded (a host that imported it first) the pool stays as it is and unify's gauge copes with the slack.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

ARENAS = 2  # glibc arenas: fewer means less retained free memory; two keep two cores' threads off one lock
_M_ARENA_MAX = -8  # mallopt parameter (glibc malloc.h)


def choose_allocator() -> None:
    """Use the system allocator for Arrow and cap glibc's arenas, unless the user set either already."""
    if "pyarrow" not in sys.modules:
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    if "MALLOC_ARENA_MAX" in os.environ or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_ARENA_MAX, ARENAS)  # glibc only; other libcs lack it (AttributeError) or ignore it
    except (OSError, AttributeError):
        pass


choose_allocator()
