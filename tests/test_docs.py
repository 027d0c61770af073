"""Commands shown in ```console blocks of README.md and docs/ run and succeed."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _console_commands() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for block in re.findall(r"```console\n(.*?)```", doc.read_text(), flags=re.S):
            found += [(doc.name, line[2:].strip()) for line in block.splitlines() if line.startswith("$ ")]
    return found


def test_docs_show_commands() -> None:
    assert len(_console_commands()) >= 4


@pytest.mark.parametrize(("doc", "command"), _console_commands())
def test_documented_command_runs(doc: str, command: str, tmp_path: Path) -> None:
    argv = shlex.split(command)
    assert argv[0] == "schemahub", f"{doc}: only schemahub commands belong in console blocks"
    run_cli(*argv[1:], cwd=ROOT, env={"SCHEMAHUB_HOME": str(tmp_path / "home")})
