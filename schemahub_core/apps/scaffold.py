"""``schemahub plugins new NAME``: a venue plugin package that installs and passes its tests as generated.

The templates (``templates/plugin/``, shipped as package data) hold a working connector for one stream, the
simulated venue it talks to, a default mapping, tests wired to the conformance kit and a README. Placeholders
are ``string.Template`` fields; ``__module__`` / ``__name__`` in a template's path become the module and plugin
names, and the ``.tmpl`` suffix (which keeps templates away from linters and pytest) is dropped.
"""

from __future__ import annotations

import re
from importlib import metadata, resources
from importlib.resources.abc import Traversable
from pathlib import Path
from string import Template

NAME_RE = re.compile(r"[a-z][a-z0-9_]{1,30}")
TEMPLATE = "plugin"


class ScaffoldError(ValueError):
    """The package cannot be generated (bad name, or the folder already exists)."""


def _fields(name: str) -> dict[str, str]:
    try:
        core = metadata.version("schemahub-core")
    except metadata.PackageNotFoundError:
        core = "0.1"
    title = name.replace("_", " ").title()
    return {"name": name, "NAME": name.upper(), "Title": title, "Class": title.replace(" ", ""),
            "module": f"schemahub_{name}", "dist": f"schemahub-{name.replace('_', '-')}",
            "core_version": ".".join(core.split(".")[:2])}


def _registered_connectors() -> set[str]:
    from schemahub_core.framework.registry import get_registry

    return set(get_registry().connectors)


def _walk(node: Traversable, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Traversable]]:
    found = []
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.is_dir():
            found += _walk(child, (*prefix, child.name))
        elif child.name.endswith(".tmpl"):
            found.append(((*prefix, child.name.removesuffix(".tmpl")), child))
    return found


def new_plugin(name: str, directory: Path) -> Path:
    """Write ``<directory>/schemahub-<name>/`` and return it; never overwrites anything."""
    if not NAME_RE.fullmatch(name):
        raise ScaffoldError(f"plugin name {name!r}: use 2-31 lower-case letters, digits or _, starting with a letter "
                            "(it becomes the connector name, the table prefix raw_<name>_ and the module name)")
    from schemahub_core.framework import plugins

    taken = {n.replace("-", "_") for n in plugins.installed_names()}
    if name in taken or name in _registered_connectors():
        raise ScaffoldError(f"a plugin named {name!r} is already installed (see `schemahub plugins list`): its tables "
                            f"raw_{name}_* and options SCHEMAHUB_{name.upper()}_* would clash; pick another name")
    fields = _fields(name)
    root = directory / fields["dist"]
    if root.exists():
        raise ScaffoldError(f"{root} already exists: pick another --dir or remove it")
    for parts, template in _walk(resources.files("schemahub_core") / "templates" / TEMPLATE):
        path = root.joinpath(*(p.replace("__module__", fields["module"]).replace("__name__", name) for p in parts))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(template.read_text()).substitute(fields))
    return root
