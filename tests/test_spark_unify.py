"""``run unify --engine spark``: the same mappings on Spark executors, the same exactly-once publish."""

from __future__ import annotations

import pytest

from schemahub_core.framework.config import ConfigError, load_settings


def test_spark_settings_come_from_the_environment_and_are_checked_before_any_write(home, monkeypatch) -> None:
    settings = load_settings()
    assert (settings.spark_master, settings.spark_conf) == ("local[2]", {})
    monkeypatch.setenv("SCHEMAHUB_SPARK_MASTER", "local[*]")
    monkeypatch.setenv("SCHEMAHUB_SPARK_CONF", "spark.executor.memory=2g, spark.sql.shuffle.partitions=4")
    settings = load_settings()
    assert settings.spark_master == "local[*]"
    assert settings.spark_conf == {"spark.executor.memory": "2g", "spark.sql.shuffle.partitions": "4"}
    for bad, why in [("spark.executor.memory", "not key=value"), ("executor.memory=2g", "not a Spark setting"),
                     ("spark.x=", "has no value")]:
        monkeypatch.setenv("SCHEMAHUB_SPARK_CONF", bad)
        with pytest.raises(ConfigError, match=why):
            load_settings()
    monkeypatch.delenv("SCHEMAHUB_SPARK_CONF")
    monkeypatch.setenv("SCHEMAHUB_SPARK_MASTER", "localhost:7077")
    with pytest.raises(ConfigError, match="not a Spark master URL"):
        load_settings()
