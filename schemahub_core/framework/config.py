"""Settings from ``config/schemahub.yaml`` and the environment, with sane defaults.

Precedence: environment (``SCHEMAHUB_HOME``, ``SCHEMAHUB_CONFIG``, ``SCHEMAHUB_NAMESPACE``,
``SCHEMAHUB_<CONNECTOR>_<OPTION>``) over the config file over defaults. With no
configuration at all, everything lives under ``./.schemahub/``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG = Path("config") / "schemahub.yaml"
DEFAULT_HOME = Path(".schemahub")


class ConfigError(ValueError):
    """Bad configuration; raised before anything is written."""


def option_problem(connector: str, key: str, value: Any, why: BaseException | str) -> str:
    """One line naming a bad connector option, its value, why, and the two places it can be set."""
    return (f"connector {connector}: option {key}={value!r} is not valid ({why}); fix connectors.{connector}.{key} "
            f"in config/schemahub.yaml or SCHEMAHUB_{connector.upper()}_{key.upper()}")


@dataclass
class Settings:
    home: Path
    catalog: dict[str, Any]
    namespace: str = "schemahub"
    connectors: dict[str, dict[str, Any]] = field(default_factory=dict)
    mappings_dir: Path = Path("config") / "mappings"
    streams_dir: Path = Path("config") / "streams"  # user-level stream overrides (framework/streams.py)
    targets_dir: Path = Path("config") / "targets"  # user-level unified-target columns (framework/streams.py)
    raw_payload: bool = True
    sink: str = "iceberg"
    unify_memory_mb: int = 1024  # peak memory of a unify run, whatever the backlog (docs/exactly-once.md)
    config_path: Path | None = None

    def connector_options(self, name: str) -> dict[str, Any]:
        """Options for one connector: config section, then ``SCHEMAHUB_<NAME>_*`` env vars."""
        options = dict(self.connectors.get(name) or {})
        prefix = f"SCHEMAHUB_{name.upper()}_"
        for key, value in os.environ.items():
            if key.startswith(prefix) and len(key) > len(prefix):
                options[key[len(prefix):].lower()] = value
        return options


def default_catalog(home: Path) -> dict[str, Any]:
    home = home.resolve()
    return {
        "name": "schemahub",
        "type": "sql",
        "uri": f"sqlite:///{home / 'catalog.db'}",
        "warehouse": (home / "warehouse").as_uri(),
    }


def load_settings(config_path: str | Path | None = None) -> Settings:
    explicit = config_path or os.environ.get("SCHEMAHUB_CONFIG")
    path = Path(explicit) if explicit else DEFAULT_CONFIG
    data: dict[str, Any] = {}
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    elif explicit:
        raise ConfigError(f"{path}: config file not found (from --config or SCHEMAHUB_CONFIG)")
    known = {"home", "catalog", "namespace", "connectors", "mappings_dir", "streams_dir", "targets_dir",
             "raw_payload", "sink", "unify_memory_mb"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown setting {unknown[0]!r} (known: {', '.join(sorted(known))})")
    home = Path(os.environ.get("SCHEMAHUB_HOME") or data.get("home") or DEFAULT_HOME)
    namespace = os.environ.get("SCHEMAHUB_NAMESPACE") or data.get("namespace", "schemahub")
    catalog = data.get("catalog") or default_catalog(home)
    if not isinstance(catalog, dict):
        raise ConfigError(f"{path}: 'catalog' must be a mapping of pyiceberg catalog properties")
    connectors = data.get("connectors") or {}
    if not isinstance(connectors, dict):
        raise ConfigError(f"{path}: 'connectors' must map connector names to their options")
    memory = data.get("unify_memory_mb", 1024)
    if isinstance(memory, bool) or not isinstance(memory, int) or memory <= 0:
        raise ConfigError(f"{path}: 'unify_memory_mb' must be a positive number of MiB, got {memory!r}")
    return Settings(
        home=home,
        catalog=dict(catalog),
        namespace=str(namespace),
        connectors=connectors,
        mappings_dir=Path(data.get("mappings_dir", Path("config") / "mappings")),
        streams_dir=Path(data.get("streams_dir", Path("config") / "streams")),
        targets_dir=Path(data.get("targets_dir", Path("config") / "targets")),
        raw_payload=bool(data.get("raw_payload", True)),
        sink=str(data.get("sink", "iceberg")),
        unify_memory_mb=memory,
        config_path=path if path.is_file() else None,
    )
