"""A plugin author's path: `plugins new` generates a package that installs, is listed, passes its own tests and
`plugins test`; breaking its cursor logic makes `plugins test` fail naming the broken check."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import run_cli

from schemahub_core.apps.cli import cli

NAME = "scaffoldvenue"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The generated package, pip-installed (editable) for this module's tests only, then uninstalled: another
    test module must not see an extra venue whose default base URL is not reachable."""
    folder = tmp_path_factory.mktemp("authoring")
    run_cli("plugins", "new", NAME, "--dir", str(folder), cwd=folder)
    root = folder / f"schemahub-{NAME}"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", "-e", str(root)], check=True, timeout=180,
                   capture_output=True)
    try:
        yield root
    finally:
        subprocess.run([*pip, "uninstall", "-y", f"schemahub-{NAME}"], check=True, timeout=120, capture_output=True)


def test_the_generated_plugin_is_listed_with_its_connector_and_simulated_venue(generated: Path) -> None:
    rows = {r["name"]: r for r in json.loads(run_cli("plugins", "list", "--json", cwd=generated).stdout)}
    row = rows[NAME]
    assert (row["distribution"], row["error"]) == (f"schemahub-{NAME}", None)
    assert row["connectors"] == [NAME] and row["streams"] == [f"{NAME}.trades"]
    assert row["mappings"] == ["trades_unified.yaml"] and row["sandbox_venues"] == [NAME]


def test_the_generated_tests_pass_as_generated(generated: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=generated,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout


def test_plugins_test_passes_then_names_the_check_a_broken_cursor_fails(generated: Path) -> None:
    report = json.loads(run_cli("plugins", "test", NAME, "--json", cwd=generated).stdout)
    assert report["passed"] and {c["status"] for c in report["checks"]} == {"passed"}, report

    connector = generated / "src" / f"schemahub_{NAME}" / "connector.py"
    source = connector.read_text()
    resume_after = 'params["from_id"] = int(cursor) + 1'
    assert resume_after in source
    connector.write_text(source.replace(resume_after, 'params["from_id"] = int(cursor)'))  # resumes AT the cursor
    try:
        broken = run_cli("plugins", "test", NAME, cwd=generated, env={"COLUMNS": "200"}, check=False)
    finally:
        connector.write_text(source)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert f"{NAME}: " in broken.stdout and "failed: resume" in broken.stdout, broken.stdout
    resume = next(line for line in broken.stdout.splitlines() if line.startswith("│ resume"))
    assert "FAILED" in resume and "resume after page" in resume and "AFTER C" in resume, resume


@pytest.mark.parametrize(("name", "message"), [("Bad-Name", "use 2-31 lower-case letters"),
                                               ("myvenue", "already exists"),
                                               ("okx", "a plugin named 'okx' is already installed")])
def test_plugins_new_refuses_bad_names_and_existing_folders(tmp_path: Path, name: str, message: str) -> None:
    (tmp_path / "schemahub-myvenue").mkdir()
    result = CliRunner().invoke(cli, ["plugins", "new", name, "--dir", str(tmp_path)])
    assert result.exit_code == 1 and message in result.output, result.output


def test_plugins_test_without_a_venue_or_url_says_what_to_pass(tmp_path: Path) -> None:
    proc = run_cli("plugins", "test", "nosuchvenue", cwd=tmp_path, check=False)
    assert proc.returncode == 1 and "no connector 'nosuchvenue' installed" in proc.stderr, proc.stderr
