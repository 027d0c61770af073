"""The install story: ``make dist`` builds wheels, and they install and run in a fresh venv outside the repo.

Offline and fast, honestly: the wheels of schemahub-core and each plugin are built from a copy of the sources
(``make dist``, no build isolation) and installed with ``pip install --no-index --find-links dist``; their
third-party dependencies (pyiceberg, pyarrow...) come from this test environment's site-packages, linked in
through a ``.pth`` file (without SchemaHub's own editable installs), so pip resolves them as already present
instead of downloading them. Everything SchemaHub runs then comes from the installed wheels: package data
(mappings, JSON Schema, templates), entry points, the ``schemahub`` script.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT
from storage_fixtures import free_port

SKIP = shutil.ignore_patterns(".venv", ".git", ".schemahub*", "dist", "build", "*.egg-info", "__pycache__",
                              ".hypothesis", ".pytest_cache", ".ruff_cache", "results", "node_modules", "*.html")


def _dependencies_only(target: Path) -> Path:
    """This environment's site-packages minus SchemaHub itself: links to every other package."""
    target.mkdir()
    source = Path(site.getsitepackages()[0])
    for entry in source.iterdir():
        name = entry.name.lower()
        if name.startswith(("schemahub", "__editable__", "_schemahub")) or name.endswith(".pth"):
            continue
        (target / entry.name).symlink_to(entry)
    return target


@pytest.mark.timeout(900)  # under a minute on an idle machine (it prints its phases); more on a busy one
def test_built_wheels_install_and_run_outside_the_repo(tmp_path: Path) -> None:
    started = time.monotonic()
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=SKIP, symlinks=True)
    subprocess.run(["make", "-s", "dist", f"DIST_PYTHON={sys.executable}"], cwd=src, check=True, capture_output=True,
                   timeout=300)
    wheels = sorted(p.name for p in (src / "dist").glob("*.whl"))
    assert [w.split("-")[0] for w in wheels] == ["schemahub_binance", "schemahub_coinbase", "schemahub_core",
                                                 "schemahub_kraken", "schemahub_okx"], wheels
    built = time.monotonic()

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    purelib = Path(subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path("
                                   "'purelib'))"], check=True, capture_output=True, text=True).stdout.strip())
    (purelib / "dependencies.pth").write_text(str(_dependencies_only(tmp_path / "deps")) + "\n")
    install = subprocess.run([venv / "bin" / "pip", "install", "-q", "--disable-pip-version-check", "--no-index",
                              "--find-links", src / "dist", "schemahub-binance", "schemahub-coinbase",
                              "schemahub-kraken"], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    installed = time.monotonic()

    work = tmp_path / "work"  # an empty folder far from the repo: no config/, no sources on the path
    work.mkdir()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SCHEMAHUB_", "PYTHON"))},
           "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}

    def schemahub(*args: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["schemahub", *args], cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, f"{args}\n{proc.stdout}\n{proc.stderr}"
        return proc

    where = subprocess.run([venv / "bin" / "python", "-c", "import schemahub_core, schemahub_binance; "
                            "print(schemahub_core.__file__); print(schemahub_binance.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert all(path.startswith(str(purelib)) for path in where), where  # the wheels, not the repo
    plugins = {r["name"]: r for r in json.loads(schemahub("plugins", "list", "--json").stdout)}
    assert {"binance", "coinbase", "kraken"} <= set(plugins) and "okx" not in plugins
    assert all(not r["error"] and r["version"] for r in plugins.values())
    assert plugins["binance"]["mappings"]  # the mapping YAML shipped as package data

    port = free_port()
    sandbox = subprocess.Popen(["schemahub", "sandbox", "--fast", "--port", str(port)], cwd=work, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and sandbox.poll() is None, sandbox.stderr
                time.sleep(0.1)
        exports = schemahub("sandbox", "--fast", "--port", str(port), "--env").stdout
        env.update(line.removeprefix("export ").split("=", 1) for line in exports.splitlines())
        run = json.loads(schemahub("run", "pipeline", "trades_unified", "--since", "2024-02-08T15:12:00Z",
                                   "--until", "2024-02-08T15:12:20Z", "--json").stdout)
        assert {s["name"].split(".")[0] for s in run if s["step"] == "ingest"} == {"binance", "coinbase", "kraken"}
        assert all(s["landed"] > 0 and not s["error"] for s in run if s["step"] == "ingest"), run
        assert run[-1]["unified"] == sum(s["landed"] for s in run if s["step"] == "ingest")
        replay = json.loads(schemahub("replay", "--at", "2024-02-08T15:12:04Z", "--window", "12s", "--symbol",
                                      "BTC-USD", "--json").stdout)
        assert replay["trades"] > 0 and len(replay["venues"]) == 3, replay
    finally:
        sandbox.kill()
        sandbox.wait()
    print(f"make dist {built - started:.1f} s, venv + install {installed - built:.1f} s, "
          f"commands {time.monotonic() - installed:.1f} s")
