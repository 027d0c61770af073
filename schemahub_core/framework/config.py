"""Settings from ``config/schemahub.yaml`` and the environment, with sane defaults.

Precedence: environment (``SCHEMAHUB_HOME``, ``SCHEMAHUB_CONFIG``, ``SCHEMAHUB_NAMESPACE``,
``SCHEMAHUB_<CONNECTOR>_<OPTION>``, ``SCHEMAHUB_SPARK_MASTER``, ``SCHEMAHUB_SPARK_CONF``) over the config file
over defaults. With no
configuration at all, everything lives under ``./.schemahub/``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG = Path("config") / "schemahub.yaml"
DEFAULT_HOME = Path(".schemahub")
DEFAULT_SPARK_MASTER = "local[2]"
# Spark's own master URL forms: local[N] / local[*] / local[N,F], local-cluster[...], spark://, yarn, k8s://, mesos://
_SPARK_MASTER = re.compile(r"local(\[(\*|\d+)(,\d+)?\])?|local-cluster\[\d+,\d+,\d+\]|yarn"
                           r"|(spark|k8s|mesos)://\S+")


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
    spark_master: str = DEFAULT_SPARK_MASTER  # where ``--engine spark`` runs (docs/spark.md)
    spark_conf: dict[str, str] = field(default_factory=dict)  # extra Spark conf for ``--engine spark``
    config_path: Path | None = None

    def connector_options(self, name: str) -> dict[str, Any]:
        """Options for one connector: config section, then ``SCHEMAHUB_<NAME>_*`` env vars."""
        options = dict(self.connectors.get(name) or {})
        prefix = f"SCHEMAHUB_{name.upper()}_"
        for key, value in os.environ.items():
            if key.startswith(prefix) and len(key) > len(prefix):
                options[key[len(prefix):].lower()] = value
        return options


def spark_master(value: Any, where: str) -> str:
    """A Spark master URL, checked before any write (Spark's own error comes only after the JVM is up)."""
    text = str(value).strip()
    if not _SPARK_MASTER.fullmatch(text):
        raise ConfigError(f"{where}: spark master {text!r} is not a Spark master URL "
                          "(local[2], local[*], spark://host:7077, yarn, k8s://...)")
    return text


def spark_conf(value: Any, where: str) -> dict[str, str]:
    """Extra Spark conf: a mapping, or ``key=value`` pairs separated by commas; every key a ``spark.*`` one.

    Spark ignores a key outside ``spark.`` with only a warning, so a typo would pass unnoticed.
    """
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        pairs = [(str(k).strip(), str(v).strip()) for k, v in value.items()]
    elif isinstance(value, str):
        pairs = []
        for item in (i.strip() for i in value.split(",")):
            if not item:
                continue
            key, sep, val = item.partition("=")
            if not sep:
                raise ConfigError(f"{where}: spark conf item {item!r} is not key=value "
                                  "(e.g. spark.executor.memory=2g,spark.sql.shuffle.partitions=8)")
            pairs.append((key.strip(), val.strip()))
    else:
        raise ConfigError(f"{where}: spark conf must be key=value pairs or a mapping, got {value!r}")
    for key, val in pairs:
        if not key.startswith("spark.") or key == "spark.":
            raise ConfigError(f"{where}: spark conf key {key!r} is not a Spark setting (keys start with 'spark.')")
        if not val:
            raise ConfigError(f"{where}: spark conf key {key!r} has no value")
    return dict(pairs)


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
             "raw_payload", "sink", "unify_memory_mb", "spark_master", "spark_conf"}
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
    master_env, conf_env = os.environ.get("SCHEMAHUB_SPARK_MASTER"), os.environ.get("SCHEMAHUB_SPARK_CONF")
    master = spark_master(master_env, "SCHEMAHUB_SPARK_MASTER") if master_env else \
        spark_master(data.get("spark_master", DEFAULT_SPARK_MASTER), f"{path}: spark_master")
    conf = spark_conf(conf_env, "SCHEMAHUB_SPARK_CONF") if conf_env is not None else \
        spark_conf(data.get("spark_conf"), f"{path}: spark_conf")
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
        spark_master=master,
        spark_conf=conf,
        config_path=path if path.is_file() else None,
    )
