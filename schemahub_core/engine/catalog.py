"""Open the Iceberg catalog named by the settings (embedded SQLite by default)."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import urlparse

from pyiceberg.catalog import Catalog, load_catalog
from sqlalchemy.exc import DBAPIError

from schemahub_core.framework.config import Settings

# pyiceberg's SQL catalog creates its own tables when it finds none; two processes opening a fresh
# catalog together can both find none, and the later CREATE TABLE fails. Opening again finds them.
_RACE_MARKERS = ("already exists", "duplicate", "database is locked")


def open_catalog(settings: Settings, attempts: int = 5) -> Catalog:
    """Any pyiceberg catalog: the ``catalog:`` properties go to ``load_catalog``.

    ``PYICEBERG_CATALOG__<NAME>__*`` variables apply as usual. For the embedded
    default the home and warehouse folders are created on first use.
    """
    props = dict(settings.catalog)
    name = str(props.pop("name", "schemahub"))
    uri = str(props.get("uri", ""))
    if uri.startswith("sqlite:///"):
        settings.home.mkdir(parents=True, exist_ok=True)
    warehouse = str(props.get("warehouse", ""))
    if warehouse.startswith("file://"):
        Path(urlparse(warehouse).path).mkdir(parents=True, exist_ok=True)
    for attempt in range(attempts):
        try:
            return load_catalog(name, **props)
        except DBAPIError as exc:
            if attempt == attempts - 1 or not any(m in str(exc).lower() for m in _RACE_MARKERS):
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")
