"""A newcomer's first session: every command of the README tour, literally, in one shell, in an empty folder.

The tour's lines run in order in one ``bash`` (so ``schemahub sandbox --fast &`` and ``eval "$(...)"``
work as they do for a user); only the ``pip install`` line is skipped (this environment has the packages;
``test_dist.py`` installs the built wheels into a fresh venv), and ``SCHEMAHUB_LOAD_PLUGINS`` loads just the
venues that line installs. The sandbox's port comes from
``SCHEMAHUB_SANDBOX_PORT`` so parallel runs never collide; everything else is the README's text.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from storage_fixtures import free_port


def tour_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## A quick tour of the CLI"):]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block, "the README tour has no bash block"
    lines = [line.split("  #")[0].strip() for line in block.group(1).splitlines()]
    return [line for line in lines if line]


@pytest.mark.timeout(900)  # about a minute on an idle machine; a busy shared one can take several
def test_readme_tour_runs_as_written(tmp_path: Path) -> None:
    commands = tour_commands()
    assert commands[0].startswith("pip install --find-links dist schemahub-binance")
    script = ["set -u", 'sandbox_pid=""', "trap '[ -n \"$sandbox_pid\" ] && kill $sandbox_pid' EXIT"]
    for i, command in enumerate(commands[1:], start=1):
        if command.endswith("&"):  # the sandbox, in the background; wait until it answers
            script += [f"{command[:-1]} > out{i} 2> err{i} &", "sandbox_pid=$!", f"echo 0 > rc{i}",
                       "for _ in $(seq 200); do python -c \"import urllib.request,os; urllib.request.urlopen("
                       "'http://127.0.0.1:'+os.environ['SCHEMAHUB_SANDBOX_PORT']+'/')\" 2>/dev/null && break; "
                       "sleep 0.1; done"]
        elif command.startswith("eval "):
            script += [command, f"echo $? > rc{i}", f"env | grep ^SCHEMAHUB_ > out{i}; : > err{i}"]
        else:
            script += [f"{command} > out{i} 2> err{i}", f"echo $? > rc{i}"]
    installed = [p.removeprefix("schemahub-") for p in commands[0].split() if p.startswith("schemahub-")]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("SCHEMAHUB_")},
           "SCHEMAHUB_LOAD_PLUGINS": ",".join(installed),  # the venues the tour's pip line installs, no others
           "SCHEMAHUB_SANDBOX_PORT": str(free_port()), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env, timeout=850, check=True)

    def result(fragment: str) -> tuple[int, str, str]:
        i = next(n for n, c in enumerate(commands) if fragment in c)
        return (int((tmp_path / f"rc{i}").read_text()), (tmp_path / f"out{i}").read_text(),
                (tmp_path / f"err{i}").read_text())

    for command in commands[1:]:
        if not command.endswith("&"):
            code, out, err = result(command)
            assert code == 0 and "Traceback" not in err, f"{command}\n{out}\n{err}"
            assert out.strip(), f"{command} printed nothing"
    assert "binance" in result("plugins list")[1]
    assert "SCHEMAHUB_BINANCE_BASE_URL=http://127.0.0.1:" in result("eval ")[1]
    pipeline = result("run pipeline")[1]
    total = re.search(r"total\s*│\s*(\d+)\s*│\s*(\d+)", pipeline)
    assert total and int(total.group(2)) > 0, pipeline  # the tour lands trades
    assert re.search(r"binance\.trades BTC-USDT\s*│\s*(\d+)\s*│\s*([1-9]\d*)", result("run ingest")[1])
    status = json.loads(subprocess.run([sys.executable, "-m", "schemahub_core", "status", "--json"], cwd=tmp_path,
                                       env=env, capture_output=True, text=True, check=True).stdout)
    assert {r["source"] for r in status["sources"] if r["rows"] > 0} >= {"binance", "coinbase", "kraken"}
    assert "leads" in result("replay")[1] and (tmp_path / "spike.html").stat().st_size > 10_000
    assert re.search(r"quotes received: .*binance [1-9]", result("live")[1])
    assert (tmp_path / "schemahub-myvenue" / "pyproject.toml").exists()
