"""Shared fixtures: settings in a temp dir, runtimes on each store, real servers.

A test needing a server that is not running is skipped with the reason, unless
ERPQ_REQUIRE_SERVICES=1 (CI), where it fails instead: CI never goes green by
skipping.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from erpq.config import Settings, from_dict
from erpq.runtime import Runtime, set_current

REDIS_URL = os.environ.get("ERPQ_TEST_REDIS", "redis://127.0.0.1:6379/15")
PG_URL = os.environ.get("ERPQ_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("ERPQ_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test")

REQUIRE = os.environ.get("ERPQ_REQUIRE_SERVICES") == "1"


def need(service: str, ok: bool, why: str = "") -> None:
    """Skip (or, with ERPQ_REQUIRE_SERVICES=1, fail) when ``service`` is missing."""
    if ok:
        return
    msg = f"{service} is not available{': ' + why if why else ''}"
    if REQUIRE:
        pytest.fail(f"{msg} (ERPQ_REQUIRE_SERVICES=1)")
    pytest.skip(msg)


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_settings(tmp: Path, **sections) -> Settings:
    """Settings with everything under ``tmp``; ``sections`` override TOML tables."""
    raw: dict = {
        "queue": {"url": "sqlite:///queue.db", "workers": 2},
        "database": {"url": "sqlite:///erpq.db"},
        "log": {"path": "erpq.log"},
        "runner": {"heartbeat_s": 0.5, "dead_after_s": 2.0, "periodic_check_s": 1},
        "webhooks": {"allow_hosts": ["127.0.0.1", "::1"], "timeout_s": 5.0},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value}
    return from_dict(raw, source=str(tmp / "config.toml"), base_dir=str(tmp))


def backend_settings(request, tmp: Path, backend: str) -> Settings:
    """Settings on ``backend`` ("sqlite", "postgresql" or "mariadb"): a server's
    database (its fixture, so it is reset or skipped as usual) upgraded to head."""
    if backend == "sqlite":
        return make_settings(tmp)
    from erpq.db import make_engine, upgrade

    url = request.getfixturevalue({"postgresql": "pg_url", "mariadb": "mariadb_url"}[backend])
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    return make_settings(tmp, database={"url": url})


def _reset_redis(url: str, name: str) -> None:
    import redis

    r = redis.Redis.from_url(url)
    for key in r.scan_iter(f"huey*{name}*"):
        r.delete(key)


def reset_database(url: str) -> None:
    """Drop every table (erpq's and alembic's) of a server test database, even one a
    crashed run left half dropped (tables pointing at tables already gone)."""
    engine = sa.create_engine(url)
    try:
        names = sa.inspect(engine).get_table_names()
        with engine.begin() as conn:
            if engine.dialect.name in ("mysql", "mariadb"):
                conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS=0")
                for name in names:
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS `{name}`")
                conn.exec_driver_sql("SET FOREIGN_KEY_CHECKS=1")
            else:
                for name in names:
                    conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}" CASCADE')
    finally:
        engine.dispose()


def redis_available() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping())
    except Exception:
        return False


def db_available(url: str) -> bool:
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 2})
        with engine.connect():
            pass
        engine.dispose()
        return True
    except Exception:
        return False


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    """A runtime on SQLite queue + SQLite database in a temp dir, set as current."""
    rt = Runtime(settings)
    set_current(rt)
    yield rt
    set_current(None)
    rt.close()


@pytest.fixture
def redis_url() -> str:
    need("Redis", redis_available(), REDIS_URL)
    return REDIS_URL


@pytest.fixture
def pg_url() -> str:
    need("PostgreSQL", db_available(PG_URL), PG_URL)
    reset_database(PG_URL)
    return PG_URL


@pytest.fixture
def mariadb_url() -> str:
    need("MariaDB", db_available(MARIADB_URL), MARIADB_URL)
    reset_database(MARIADB_URL)
    return MARIADB_URL


@pytest.fixture(params=["sqlite", "redis"])
def store_runtime(request, tmp_path: Path) -> Iterator[Runtime]:
    """A runtime per queue store: SQLite file, then Redis (SQLite database on both)."""
    if request.param == "redis":
        need("Redis", redis_available(), REDIS_URL)
        name = f"t{uuid.uuid4().hex[:10]}"
        s = make_settings(tmp_path, queue={"url": REDIS_URL, "name": name})
    else:
        s = make_settings(tmp_path)
    rt = Runtime(s)
    set_current(rt)
    yield rt
    set_current(None)
    if request.param == "redis":
        _reset_redis(REDIS_URL, s.queue.name)
    rt.close()


def pytest_terminal_summary(terminalreporter) -> None:
    """How many command lines the bad-input property suite generated (per backend)."""
    badinput = __import__("sys").modules.get("badinput")
    counts = getattr(badinput, "GENERATED", None)
    if counts:
        cases = len(getattr(badinput, "CASES", []))
        per = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        terminalreporter.write_line(f"bad-input properties: {sum(counts.values())} generated command lines "
                                    f"over {cases} cases ({per})")
