"""Real production-storage backends for tests: a PostgreSQL server and moto's S3 + Glue server.

Both are started once per test session on 127.0.0.1 (free ports) and torn down cleanly; every test
gets its own database / bucket, so tests never see each other's tables. Nothing here is mocked in
process: pyiceberg, psycopg2 and pyarrow talk to the servers over real sockets.

Registered from ``tests/conftest.py`` as a pytest plugin.
"""

from __future__ import annotations

import itertools
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from glob import glob
from pathlib import Path
from typing import Any

import pytest
import yaml

PG_SUPERUSER = "postgres"
AWS_REGION = "us-east-1"
AWS_KEY = "testing"  # moto accepts any credentials; these only have to be present
_counter = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- PostgreSQL ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.user}@{self.host}:{self.port}/{database}"

    def connect(self, database: str = "postgres") -> Any:
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname=database)

    def create_database(self, prefix: str = "iceberg") -> str:
        name = f"{prefix}_{os.getpid()}_{next(_counter)}"
        conn = self.connect()
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return name


def _pg_bindir() -> Path | None:
    """Where ``initdb``/``pg_ctl`` live: PATH first, then Debian's versioned folders (newest first)."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    for candidate in sorted(glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name),
                            reverse=True):
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None


def _server_user() -> str | None:
    """PostgreSQL refuses to run as root: use the ``postgres`` account (created by the Debian package),
    else create a system user for it. ``None`` means we are not root and run as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "schemahub-pg"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "schemahub-pg"],
                   check=True, capture_output=True)
    return "schemahub-pg"


def _as_user(user: str | None, argv: list[str]) -> list[str]:
    return argv if user is None else ["runuser", "-u", user, "--", *argv]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL cluster in a temp dir: initdb, pg_ctl start on a free port, fast stop after.

    Durability is switched off (fsync, synchronous_commit): the tests need a real server's locking
    and transactions, not crash safety, and this keeps startup and commits quick.
    """
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed; "
                    "`apt-get install -y postgresql` (.ci/run does this on a fresh machine)")
    pytest.importorskip("psycopg2", reason="psycopg2-binary missing: run `make bootstrap` (it is a core dependency)")
    user = _server_user()
    root = Path(tempfile.mkdtemp(prefix="schemahub-pg-"))  # /tmp, not pytest's root-only tmp dir
    data, log = root / "data", root / "server.log"
    if user is not None:
        shutil.chown(root, user)
    port = free_port()
    subprocess.run(_as_user(user, [str(bindir / "initdb"), "-D", str(data), "-U", PG_SUPERUSER, "-A", "trust",
                                   "-E", "UTF8", "--no-sync", "--no-instructions"]),
                   check=True, capture_output=True, text=True)
    options = (f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{root}' -c fsync=off "
               "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
    start = subprocess.run(_as_user(user, [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                                           "-w", "-t", "60", "start"]), capture_output=True, text=True)
    if start.returncode != 0:
        detail = log.read_text() if log.exists() else start.stderr
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"PostgreSQL did not start:\n{start.stdout}\n{detail}")
    try:
        yield PostgresServer("127.0.0.1", port, PG_SUPERUSER)
    finally:
        subprocess.run(_as_user(user, [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


# --- moto: S3 + Glue ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MotoServer:
    endpoint: str

    def client(self, service: str) -> Any:
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name=AWS_REGION,
                            aws_access_key_id=AWS_KEY, aws_secret_access_key=AWS_KEY)

    def reset(self) -> None:
        """Forget every bucket and Glue database (moto's documented reset endpoint)."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto's server (S3 and Glue on one port) in a thread, over real HTTP on 127.0.0.1.

    The server rather than ``mock_aws``: pyarrow's S3 filesystem is C++ and child processes are
    separate interpreters, so neither can see an in-process mock; both can reach a socket.
    """
    server_module = pytest.importorskip("moto.server", reason="moto[server] missing: run `make bootstrap`")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
    port = free_port()
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield MotoServer(f"http://127.0.0.1:{port}")
    finally:
        server.stop()


# --- SchemaHub homes on each backend ------------------------------------------------------------


@dataclass
class StorageHome:
    """A SchemaHub config pointing at one backend; ``env`` makes child processes use it too."""

    config: Path
    catalog: dict[str, Any]
    env: dict[str, str]
    bucket: str | None = None  # S3 backends: the warehouse bucket
    database: str | None = None  # PostgreSQL backends: the catalog database


def _write_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, catalog: dict[str, Any],
                extra_env: dict[str, str] | None = None) -> StorageHome:
    config = tmp_path / "schemahub.yaml"
    config.write_text(yaml.safe_dump({"home": str(tmp_path / "home"), "catalog": catalog}, sort_keys=False))
    env = {"SCHEMAHUB_CONFIG": str(config), "SCHEMAHUB_HOME": str(tmp_path / "home"), **(extra_env or {})}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    return StorageHome(config, catalog, env)


@pytest.fixture
def postgres_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, postgres_server: PostgresServer) -> StorageHome:
    """SchemaHub on a pyiceberg SQL catalog in a fresh PostgreSQL database, warehouse on local disk."""
    database = postgres_server.create_database()
    catalog = {"name": "pg", "type": "sql", "uri": postgres_server.url(database),
               "warehouse": (tmp_path / "warehouse").as_uri()}
    (tmp_path / "warehouse").mkdir()
    home = _write_home(tmp_path, monkeypatch, catalog)
    home.database = database
    return home


@pytest.fixture
def s3_glue_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moto_server: MotoServer) -> StorageHome:
    """SchemaHub on moto: Glue catalog, warehouse in a fresh S3 bucket, fake credentials."""
    moto_server.reset()
    bucket = f"schemahub-lake-{next(_counter)}"
    moto_server.client("s3").create_bucket(Bucket=bucket)
    catalog = {
        "name": "glue", "type": "glue",
        "glue.endpoint": moto_server.endpoint, "glue.region": AWS_REGION,
        "glue.access-key-id": AWS_KEY, "glue.secret-access-key": AWS_KEY,
        "s3.endpoint": moto_server.endpoint, "s3.region": AWS_REGION,
        "s3.access-key-id": AWS_KEY, "s3.secret-access-key": AWS_KEY,
        "warehouse": f"s3://{bucket}/warehouse",
    }
    # no instance-metadata probing for credentials or region: there is no EC2 here
    home = _write_home(tmp_path, monkeypatch, catalog, {"AWS_EC2_METADATA_DISABLED": "true"})
    home.bucket = bucket
    return home
