"""One real Spark for the whole test session (``local[2]``, Iceberg runtime), started only when a test needs it.

Each test reads its own SchemaHub home through ``spark_for(settings)``: a ``newSession()`` of the one
session, with that home's catalog configured, so no test restarts the JVM. Registered from
``tests/conftest.py`` as a pytest plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from schemahub_core.framework.config import Settings


@pytest.fixture(scope="session")
def spark_base() -> Iterator[Any]:
    """The suite's SparkSession; a missing Java or jar fails here with the install command to run."""
    from schemahub_core.engine.spark import base_session

    session = base_session("local[2]", {"spark.sql.shuffle.partitions": "2", "spark.driver.memory": "1g"})
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture
def spark_for(spark_base: Any) -> Callable[[Settings], Any]:
    """``spark_for(settings)``: a Spark session whose ``<catalog name>`` catalog is that SchemaHub catalog."""
    from schemahub_core.engine.spark import catalog_session

    return lambda settings: catalog_session(settings, spark_base)
