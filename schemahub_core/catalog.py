"""Open the Iceberg catalog named by the settings (embedded SQLite by default)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from pyiceberg.catalog import Catalog, load_catalog

from .config import Settings


def open_catalog(settings: Settings) -> Catalog:
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
    return load_catalog(name, **props)
