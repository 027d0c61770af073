"""The benchmark runner's vocabulary: a measurement, its baseline, the ratio and its target."""

from __future__ import annotations

import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any


@dataclass
class Result:
    """One benchmark line: ``value`` against ``baseline``, ``ratio = value / baseline``.

    ``goal`` says which way is good: ``"max"`` means ratio <= target,
    ``"min"`` means ratio >= target.
    """

    name: str
    claim: str
    value: float
    baseline: float
    unit: str
    target: float
    goal: str = "max"
    details: dict[str, Any] = field(default_factory=dict)
    also: bool = True  # a second condition the claim needs (e.g. zero 429s)

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("inf")

    @property
    def met(self) -> bool:
        return self.also and (self.ratio <= self.target if self.goal == "max" else self.ratio >= self.target)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "met": self.met}


def median_seconds(
    fn: Callable[[], Any], runs: int = 3, setup: Callable[[], Any] | None = None
) -> tuple[float, list[float]]:
    """Median wall time of ``fn`` over ``runs`` (``setup`` runs before each, untimed)."""
    times = []
    for _ in range(runs):
        if setup is not None:
            setup()
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def paired_seconds(
    baseline: Callable[[], Any], measured: Callable[[], Any], runs: int = 3,
    setup: Callable[[], Any] | None = None,
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Medians of ``baseline`` and ``measured`` run in turn (``setup`` untimed before each ``measured``), so on a
    shared machine both see the same load; wall and CPU seconds (CPU: all threads of this process)."""
    times: dict[str, list[float]] = {"baseline": [], "measured": [], "baseline_cpu": [], "measured_cpu": []}
    for _ in range(runs):
        for name, fn in (("baseline", baseline), ("measured", measured)):
            if name == "measured" and setup is not None:
                setup()
            gc.collect()
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - wall)
            times[f"{name}_cpu"].append(time.process_time() - cpu)
    return {name: statistics.median(values) for name, values in times.items()}, times


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    versions = {}
    for dist in ("schemahub-core", "pyiceberg", "pyarrow", "pyiceberg-core", "dlt"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    mem = cpu_model = None
    try:
        with open("/proc/meminfo") as f:
            mem = f.readline().split()[1] + " kB"
        with open("/proc/cpuinfo") as f:
            cpu_model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), None)
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],  # other work on the machine skews seconds
        "memory": mem,
        "versions": versions,
    }
