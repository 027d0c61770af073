"""Shared fixtures: every test gets its own SchemaHub home (catalog + warehouse)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCHEMAHUB = [sys.executable, "-m", "schemahub_core"]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty SchemaHub home; the cwd is a temp dir so no repo config leaks in."""
    h = tmp_path / "home"
    monkeypatch.setenv("SCHEMAHUB_HOME", str(h))
    monkeypatch.delenv("SCHEMAHUB_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    return h


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``schemahub`` in a child process, so plugin discovery starts from scratch."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([*SCHEMAHUB, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"schemahub {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc

def doc_commands(doc: str, containing: str) -> list[list[str]]:
    """The ``schemahub`` commands in ```sh blocks of ``docs/<doc>`` whose line contains ``containing``, as argv
    without the program name (a trailing ``&`` dropped): tests run what the docs show, not a copy of it."""
    import re
    import shlex

    text = (ROOT / "docs" / doc).read_text()
    lines = [line.strip().removesuffix("&").strip() for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S)
             for line in block.splitlines()]
    found = [shlex.split(line)[1:] for line in lines if line.startswith("schemahub ") and containing in line]
    assert found, f"docs/{doc} shows no schemahub command containing {containing!r}"
    return found

# PostgreSQL and moto (S3 + Glue) servers for the storage tests; headless Chromium for the browser tests;
# one lazy Spark session for the interop tests; a small real lake from every venue for the SQL and interop tests
pytest_plugins = ["storage_fixtures", "browser_fixtures", "spark_fixtures", "lake_fixtures"]
