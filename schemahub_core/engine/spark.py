"""Apache Spark over SchemaHub's own catalog: the jar set, and sessions that see every SchemaHub table.

Why here: the interop tests prove Spark reads what SchemaHub writes, and Spark unify / maintenance run
on the same session, so both build it one way. Everything comes from PyPI and Debian packages:

- pyspark 3.5 (PyPI) brings Spark and its jackson 2.15 jars;
- ``snowpark-connect-deps-iceberg`` (PyPI) ships ``iceberg-spark-runtime-3.5_2.12-1.10.2.jar``, whose
  shaded jackson is missing; it is supplied by relocating Spark's own jackson jars into
  ``org.apache.iceberg.shaded.com.fasterxml.jackson`` with jarjar (Debian ``libjarjar-java``);
- the JDBC catalog reads pyiceberg's SQL catalog tables through ``libxerial-sqlite-jdbc-java`` or
  ``libpostgresql-jdbc-java`` (Debian).

``python -m schemahub_core.engine.spark`` builds the jar set into ``<venv>/spark-jars`` (idempotent);
sessions build it on first use too.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:  # pyspark is an optional extra: imported only when a session is built
    from pyspark.sql import SparkSession

    from ..framework.config import Settings

ICEBERG_RUNTIME = "iceberg-spark-runtime-3.5_2.12-1.10.2.jar"
SHADED_JACKSON = "org.apache.iceberg.shaded.com.fasterxml.jackson"
JACKSON_PARTS = ("jackson-core", "jackson-databind", "jackson-annotations")
JARJAR = Path("/usr/share/java/jarjar.jar")
JDBC_DRIVERS = {"sqlite": Path("/usr/share/java/sqlite-jdbc.jar"),
                "postgresql": Path("/usr/share/java/postgresql.jar")}
APT_PACKAGES = "openjdk-17-jre-headless libjarjar-java libxerial-sqlite-jdbc-java libpostgresql-jdbc-java"
ICEBERG_EXTENSIONS = "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"


class SparkSetupError(RuntimeError):
    """Spark cannot run here (a missing package or an unsupported catalog); the message says the fix."""


def jars_dir() -> Path:
    """Where the jar set lives: ``$SCHEMAHUB_SPARK_JARS``, else ``spark-jars`` inside the venv."""
    return Path(os.environ.get("SCHEMAHUB_SPARK_JARS") or Path(sys.prefix) / "spark-jars")


def _pyspark_jars() -> Path:
    try:
        import pyspark
    except ImportError as exc:
        raise SparkSetupError("pyspark is not installed: pip install 'schemahub-core[spark]'") from exc
    if not pyspark.__version__.startswith("3.5."):
        raise SparkSetupError(f"pyspark {pyspark.__version__} found; the Iceberg runtime needs pyspark 3.5.x")
    return Path(pyspark.__file__).parent / "jars"


def _iceberg_runtime() -> Path:
    try:
        import snowpark_connect_deps_iceberg as deps
    except ImportError as exc:
        raise SparkSetupError("the Iceberg Spark runtime is not installed: pip install 'schemahub-core[spark]' "
                              "(it ships in snowpark-connect-deps-iceberg)") from exc
    return Path(deps.__file__).parent / "jars" / ICEBERG_RUNTIME


def _need(path: Path, package: str) -> Path:
    if not path.is_file():
        raise SparkSetupError(f"{path} not found: apt-get install -y {package}")
    return path


def _inputs() -> dict[str, Path]:
    """Every file the jar set is made from, by output name (jackson ones are relocated, the rest copied)."""
    spark_jars = _pyspark_jars()
    inputs = {ICEBERG_RUNTIME: _need(_iceberg_runtime(), "(pip) snowpark-connect-deps-iceberg")}
    for part in JACKSON_PARTS:
        found = sorted(spark_jars.glob(f"{part}-2.*.jar"))
        if not found:
            raise SparkSetupError(f"no {part} jar in {spark_jars}: reinstall pyspark 3.5")
        inputs[f"shaded-{found[-1].name}"] = found[-1]
    inputs["sqlite-jdbc.jar"] = _need(JDBC_DRIVERS["sqlite"], "libxerial-sqlite-jdbc-java")
    inputs["postgresql-jdbc.jar"] = _need(JDBC_DRIVERS["postgresql"], "libpostgresql-jdbc-java")
    return inputs


def _fingerprint(inputs: dict[str, Path]) -> str:
    stat = {name: [str(p.resolve()), p.stat().st_size, int(p.stat().st_mtime)] for name, p in sorted(inputs.items())}
    return hashlib.sha256(json.dumps(stat).encode()).hexdigest()


def _relocate_jackson(source: Path, target: Path, work: Path) -> None:
    """jarjar ``source`` into the runtime's shaded package. jackson-core is a multi-release jar whose
    ``META-INF/versions/*`` copies would collide once relocated: they are left out (Java 8 classes work)."""
    java = shutil.which("java")
    if java is None:
        raise SparkSetupError(f"no java on PATH: apt-get install -y {APT_PACKAGES.split()[0]}")
    jarjar = _need(JARJAR, "libjarjar-java")
    stripped = work / f"in-{source.name}"
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(stripped, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            if not item.filename.startswith("META-INF/versions/"):
                zout.writestr(item, zin.read(item))
    rules = work / "rules.txt"
    rules.write_text(f"rule com.fasterxml.jackson.** {SHADED_JACKSON}.@1\n")
    done = subprocess.run([java, "-jar", str(jarjar), "process", str(rules), str(stripped), str(target)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SparkSetupError(f"jarjar failed on {source.name}: {(done.stderr or done.stdout).strip()[-300:]}")


def build_jars(dest: Path | None = None) -> list[Path]:
    """The jars Spark needs for SchemaHub's tables, built once into ``dest`` (default ``jars_dir()``).

    A stamp records the inputs; an unchanged set is returned as is. The set is built in a temp folder
    and moved into place, so a crash never leaves a half-built set that looks complete.
    """
    dest = dest or jars_dir()
    inputs = _inputs()
    stamp = dest / "jars.json"
    fingerprint = _fingerprint(inputs)
    if stamp.is_file():
        recorded = json.loads(stamp.read_text())
        if recorded.get("fingerprint") == fingerprint and all((dest / n).is_file() for n in recorded["jars"]):
            return [dest / n for n in recorded["jars"]]
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".spark-jars-", dir=dest.parent) as tmp:
        work, out = Path(tmp), Path(tmp) / "out"
        out.mkdir()
        for name, source in inputs.items():
            if name.startswith("shaded-"):
                _relocate_jackson(source, out / name, work)
            else:
                shutil.copyfile(source, out / name)
        (out / "jars.json").write_text(json.dumps({"fingerprint": fingerprint, "jars": sorted(inputs)}, indent=1))
        if dest.exists():
            shutil.rmtree(dest)
        out.rename(dest)
    return [dest / n for n in sorted(inputs)]


# --- catalog settings -> Spark conf ------------------------------------------------------------------


def _jdbc_uri(uri: str) -> dict[str, str]:
    """pyiceberg's SQLAlchemy URL as Iceberg's JDBC catalog properties."""
    if uri.startswith("sqlite:///"):
        # pyiceberg creates the catalog tables; Iceberg's own check for them leaves a metadata result set open
        # that holds SQLite's read lock for the session's life, and every pyiceberg commit in the same process
        # (a test suite, a notebook) then fails with "database is locked"
        return {"uri": f"jdbc:sqlite:{uri[len('sqlite:///'):]}", "jdbc.init-catalog-tables": "false"}
    parsed = urlparse(uri)
    if parsed.scheme.split("+")[0] in ("postgresql", "postgres"):
        conf = {"uri": f"jdbc:postgresql://{parsed.hostname}:{parsed.port or 5432}{parsed.path}"}
        if parsed.username:
            conf["jdbc.user"] = unquote(parsed.username)
        if parsed.password:
            conf["jdbc.password"] = unquote(parsed.password)
        return conf
    raise SparkSetupError(f"catalog uri {parsed.scheme}:// has no JDBC mapping (SQLite and PostgreSQL do)")


def catalog_name(settings: Settings) -> str:
    """The Spark catalog name: pyiceberg's catalog name, since the JDBC catalog keys its rows by it."""
    return str(settings.catalog.get("name", "schemahub"))


def spark_catalog_conf(settings: Settings) -> dict[str, str]:
    """SchemaHub's catalog settings as ``spark.sql.catalog.<name>.*``: the same catalog, seen from Spark.

    The warehouse must be a local folder with this jar set (S3 needs Iceberg's AWS bundle, which no
    PyPI or Debian package ships), and the catalog a SQL one: Glue needs that bundle too.
    """
    props = dict(settings.catalog)
    name = catalog_name(settings)
    kind = str(props.get("type", "sql"))
    if kind != "sql":
        raise SparkSetupError(f"catalog type {kind!r}: Spark here reads SQL catalogs (SQLite, PostgreSQL); "
                              "Glue and REST need Iceberg's AWS bundle on spark.jars")
    warehouse = str(props.get("warehouse", ""))
    if warehouse and not warehouse.startswith("file:"):
        raise SparkSetupError(f"warehouse {warehouse}: Spark here reads local warehouses; "
                              "object stores need Iceberg's AWS bundle on spark.jars")
    prefix = f"spark.sql.catalog.{name}"
    # no table cache: pyiceberg commits outside Spark all the time, and a cached table would let a long-lived
    # session plan (compact, read) from a snapshot up to 30 s old
    conf = {prefix: "org.apache.iceberg.spark.SparkCatalog", f"{prefix}.type": "jdbc",
            f"{prefix}.cache-enabled": "false"}
    conf.update({f"{prefix}.{k}": v for k, v in _jdbc_uri(str(props.get("uri", ""))).items()})
    if warehouse:
        conf[f"{prefix}.warehouse"] = warehouse
    return conf


# --- sessions ---------------------------------------------------------------------------------------


def base_session(master: str = "local[2]", conf: dict[str, Any] | None = None,
                 app_name: str = "schemahub") -> SparkSession:
    """A Spark session with the Iceberg runtime and SQL extensions, but no SchemaHub catalog yet.

    Executors run this interpreter (``PYSPARK_PYTHON``), so mapInArrow code sees the same packages.
    Timestamps are shown and parsed in UTC, as SchemaHub writes them.
    """
    from pyspark.sql import SparkSession

    jars = build_jars()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if master.startswith("local"):  # stay on the loopback: no other host takes part
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = (SparkSession.builder.master(master).appName(app_name)
               .config("spark.jars", ",".join(str(j) for j in jars))
               .config("spark.sql.extensions", ICEBERG_EXTENSIONS)
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false"))
    for key, value in (conf or {}).items():
        builder = builder.config(key, str(value))
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    return session


def check_setup() -> None:
    """Fail before any write when Spark cannot start here: no pyspark, no jar set, or no Java."""
    build_jars()
    java_home = os.environ.get("JAVA_HOME")
    if not (java_home and Path(java_home, "bin", "java").is_file()) and shutil.which("java") is None:
        raise SparkSetupError(f"no java on PATH and no JAVA_HOME: apt-get install -y {APT_PACKAGES.split()[0]}")


def settings_session(settings: Settings, app_name: str = "schemahub") -> SparkSession:
    """The session the ``--engine spark`` commands run on: ``spark_master`` and ``spark_conf`` from the settings.

    A missing pyspark, jar or Java, or a JVM that does not start, is a ``SparkSetupError`` (one line, the fix);
    in a process that already has a session (a test suite, a notebook) that session is reused.
    """
    check_setup()
    try:
        session = base_session(settings.spark_master, settings.spark_conf, app_name=app_name)
        session.sparkContext.setLogLevel("FATAL")  # a failed job is reported as one line, not a Java stack
        return session
    except Exception as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        why = lines[0] if lines else type(exc).__name__
        raise SparkSetupError(f"Spark did not start on {settings.spark_master}: {why[:200]}") from None


def catalog_session(settings: Settings, base: SparkSession | None = None) -> SparkSession:
    """A session whose catalog ``<name>`` is SchemaHub's catalog (``schemahub.schemahub.<table>`` by default).

    It is a ``newSession()`` of ``base``: one JVM and SparkContext, its own SQL conf and catalogs, so
    several SchemaHub homes can be read from one Spark without restarting it.
    """
    session = (base or base_session()).newSession()
    for key, value in spark_catalog_conf(settings).items():
        session.conf.set(key, value)
    return session


def spark_submit_args(settings: Settings) -> list[str]:
    """``--jars`` and ``--conf`` arguments that give a spark-submit / pyspark shell SchemaHub's catalog."""
    args = ["--jars", ",".join(str(j) for j in build_jars()), "--conf", f"spark.sql.extensions={ICEBERG_EXTENSIONS}"]
    for key, value in spark_catalog_conf(settings).items():
        args += ["--conf", f"{key}={value}"]
    return args


def main(argv: list[str] | None = None) -> None:
    """Build the jar set and print where it is (``.ci/run`` calls this); ``--conf``: print the
    spark-submit arguments for the current settings instead."""
    import shlex

    from ..framework.config import ConfigError, load_settings

    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv == ["--conf"]:
            print(" ".join(shlex.quote(a) for a in spark_submit_args(load_settings())))
            return
        jars = build_jars()
    except (SparkSetupError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    print(f"{len(jars)} Spark jars in {jars[0].parent}")


if __name__ == "__main__":
    main()
