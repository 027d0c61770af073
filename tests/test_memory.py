"""Unify's memory gauge and the process's allocator: what holds the bound (engine/memory.py, allocator.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from schemahub_core.engine.memory import MIB, MIN_PART, PRIOR_GROWTH, MemoryGauge

LEARN_CHILD = """
import json
import numpy as np
from schemahub_core.engine.memory import MIB, MemoryGauge, peak_resident_bytes
gauge = MemoryGauge(4096 * MIB)
gauge.before_flush(8 * MIB)
held = np.ones(400 * MIB // 8)  # a flush that touches 400 MiB: the process's new peak
del held
gauge.after_flush()
quiet = gauge.growth
gauge.before_flush(8 * MIB)
small = np.ones(8 * MIB // 8)  # a cheap flush under the old peak: says nothing certain, changes nothing
del small
gauge.after_flush()
print(json.dumps({"learned": quiet, "after_quiet": gauge.growth, "peak_mib": peak_resident_bytes() / MIB}))
"""


def _child(code: str, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmRSS/VmHWM from /proc")
def test_a_flush_that_raises_the_peak_teaches_the_gauge_its_cost_and_only_raises_it() -> None:
    result = json.loads(_child(LEARN_CHILD))
    # 400 MiB for 8 MiB buffered: about 50 per byte, far above the prior
    assert 40 < result["learned"] < 60 and result["after_quiet"] == result["learned"], result


def test_a_bound_below_the_floor_flushes_every_part_and_splits_big_batches() -> None:
    gauge = MemoryGauge(1 * MIB)  # what `run unify --memory-mb 1` asks
    assert gauge.below_floor and gauge.room() < 0 and gauge.growth == PRIOR_GROWTH
    assert gauge.due(1)  # every part is flushed as soon as it is buffered
    assert not gauge.due(0)
    # a batch of 100 MiB is cut into parts of MIN_PART: 10,000 rows -> 400 a part
    assert gauge.rows_per_part(100 * MIB, 10_000) == 10_000 * MIN_PART // (100 * MIB)
    assert gauge.rows_per_part(MIN_PART // 2, 10_000) == 10_000  # small batches stay whole


def test_a_roomy_bound_buffers_until_the_next_part_would_not_fit() -> None:
    gauge = MemoryGauge(64 * 1024 * MIB)
    room = gauge.room()
    assert not gauge.below_floor and not gauge.due(int(room / PRIOR_GROWTH) - 16 * MIB)
    assert gauge.due(int(room / PRIOR_GROWTH) + 64 * MIB)
    assert gauge.rows_per_part(100 * MIB, 10_000) == 10_000


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and Arrow's system pool")
def test_schemahub_processes_use_the_system_allocator_unless_the_user_chose_one() -> None:
    probe = "import schemahub_core, pyarrow as pa; print(pa.default_memory_pool().backend_name)"
    clean = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=clean)
    assert proc.stdout.strip() == "system", proc.stderr
    assert _child(probe, {"ARROW_DEFAULT_MEMORY_POOL": "jemalloc"}) == "jemalloc"
