"""Open the Iceberg catalog named by the settings (embedded SQLite by default)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from urllib.parse import urlparse

from pyiceberg.catalog import Catalog, load_catalog
from sqlalchemy.exc import DBAPIError

from schemahub_core.framework.config import ConfigError, Settings


class CatalogError(ConfigError):
    """The catalog cannot be opened (bad URI, unknown scheme, server down): one line naming it."""


def _redact(uri: str) -> str:
    """The URI without its password, fit for an error message."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", uri)


def _why(exc: BaseException, uri: str) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "unable to open database file" in text and uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        return f"cannot open the SQLite file: does the folder {folder} exist and is it writable?"
    if "Can't load plugin" in text:
        scheme = uri.split("://", 1)[0]
        return (f"unknown database scheme {scheme!r} (SQL catalogs: sqlite:///PATH, postgresql+psycopg2://USER@HOST/DB;"
                " other catalog types: type rest, glue...)")
    if any(m in text for m in ("Connection refused", "could not connect", "could not translate host")):
        return f"the database server does not answer ({text})"
    return f"{type(exc).__name__}: {text}"

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
    where = f"catalog {name} ({_redact(uri) or props.get('type', 'default')})"
    fix = f"check `catalog:` in {settings.config_path or 'config/schemahub.yaml'}"
    try:
        if uri.startswith("sqlite:///") and Path(uri.removeprefix("sqlite:///")).parent == settings.home.resolve():
            settings.home.mkdir(parents=True, exist_ok=True)  # the embedded default: create its home
    except OSError as exc:
        raise CatalogError(f"{where}: cannot create {settings.home}: {exc}") from None
    for attempt in range(attempts):
        try:
            catalog = load_catalog(name, **props)
            break
        except DBAPIError as exc:
            if attempt < attempts - 1 and any(m in str(exc).lower() for m in _RACE_MARKERS):
                time.sleep(0.05 * (attempt + 1))
                continue
            raise CatalogError(f"{where}: {_why(exc, uri)}; {fix}") from None
        except Exception as exc:  # unknown scheme or catalog type, missing driver, bad property
            raise CatalogError(f"{where}: {_why(exc, uri)}; {fix}") from None
    warehouse = str(props.get("warehouse", ""))
    if warehouse.startswith("file://"):  # only once the catalog opened: a bad catalog leaves no folder behind
        try:
            Path(urlparse(warehouse).path).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CatalogError(f"{where}: cannot create the warehouse folder: {exc}") from None
    return catalog
