"""Make a plugin module discoverable through a real entry point, without installing it.

Writes a minimal ``<name>.dist-info`` (METADATA + entry_points.txt) into a folder;
put that folder on ``sys.path`` or ``PYTHONPATH`` (for a child process) and
``importlib.metadata`` finds the plugin exactly as it finds an installed one.
"""

from __future__ import annotations

from pathlib import Path


def write_distribution(folder: Path, distribution: str, version: str, plugins: dict[str, str]) -> Path:
    """Declare ``plugins`` (entry-point name -> module) as distribution ``distribution``."""
    info = folder / f"{distribution.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
    lines = "".join(f"{name} = {module}\n" for name, module in plugins.items())
    (info / "entry_points.txt").write_text(f"[schemahub]\n{lines}")
    return folder
