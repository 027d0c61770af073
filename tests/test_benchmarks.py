"""The benchmark harness keeps working: one benchmark in --quick mode (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def test_landing_quick_runs_and_writes_results(tmp_path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "landing", "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    (result,) = data["results"]
    assert result["name"] == "landing" and result["value"] > 0 and result["baseline"] > 0
    assert result["ratio"] == result["value"] / result["baseline"]
    assert data["machine"]["cpu_count"] and data["quick"] is True and data["errors"] == {}
    assert "landing" in proc.stdout


def test_unknown_benchmark_is_a_clear_error() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "nope"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2 and "unknown benchmark 'nope'" in proc.stderr
