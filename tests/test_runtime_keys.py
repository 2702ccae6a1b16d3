"""Idempotency keys on dispatch: twenty concurrent enqueues with one key make one
job, on a SQLite queue + database, a Redis queue, and a PostgreSQL / MariaDB
database; the key holds while the job is pending or running and for
``queue.key_ttl_s`` after."""

from __future__ import annotations

import threading
import uuid

import pytest
import sqlalchemy as sa

import testjobs
from conftest import REDIS_URL, _reset_redis, make_settings
from draining import drain
from erpq.cli import main
from erpq.db import upgrade
from erpq.models import JobKey
from erpq.ops import Actor, Ops
from erpq.runtime import Runtime, set_current


@pytest.fixture(params=["sqlite", "redis", "postgresql", "mariadb"])
def rt(request, tmp_path):
    sections: dict = {}
    name = None
    if request.param == "redis":
        request.getfixturevalue("redis_url")
        name = f"t{uuid.uuid4().hex[:10]}"
        sections["queue"] = {"url": REDIS_URL, "name": name}
    elif request.param in ("postgresql", "mariadb"):
        url = request.getfixturevalue({"postgresql": "pg_url", "mariadb": "mariadb_url"}[request.param])
        from erpq.db import make_engine

        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        sections["database"] = {"url": url}
    runtime = Runtime(make_settings(tmp_path, **sections))
    set_current(runtime)
    testjobs.reset()
    yield runtime
    set_current(None)
    runtime.close()
    if name:
        _reset_redis(REDIS_URL, name)


def concurrently(n: int, fn) -> list:
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list = []

    def run(i):
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    return results


def test_twenty_concurrent_enqueues_with_one_key_make_one_job(rt):
    ids = concurrently(20, lambda i: rt.enqueue("TestEcho", i, key="import:acme:42"))
    assert len(set(ids)) == 1
    assert rt.huey.pending_count() == 1
    with rt.read_session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(JobKey)) == 1
    assert drain(rt) == 1
    assert len(testjobs.ECHOED) == 1  # counted by the job itself

    # finished less than key_ttl_s ago: still taken
    assert rt.enqueue("TestEcho", 99, key="import:acme:42") == ids[0]
    assert rt.huey.pending_count() == 0
    # a different key is a different job
    assert rt.enqueue("TestEcho", 7, key="import:acme:43") != ids[0]
    assert rt.huey.pending_count() == 1


def test_key_is_free_again_after_its_ttl(tmp_path):
    rt = Runtime(make_settings(tmp_path, queue={"key_ttl_s": 0}))
    set_current(rt)
    try:
        first = rt.enqueue("TestEcho", 1, key="k")
        assert rt.enqueue("TestEcho", 2, key="k") == first  # pending: taken
        drain(rt)
        second = rt.enqueue("TestEcho", 3, key="k")  # finished, ttl 0: free
        assert second != first and rt.huey.pending_count() == 1
    finally:
        set_current(None)
        rt.close()


def test_dispatch_with_key_through_ops_and_cli(tmp_path, capsys):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[queue]\nurl = "sqlite:///queue.db"\n[database]\nurl = "sqlite:///erpq.db"\n'
                   '[log]\npath = "erpq.log"\n')
    assert main(["--config", str(cfg), "queue", "dispatch", "TestEcho", "--args", "[1]", "--key", "K1"]) == 0
    first = capsys.readouterr().out
    assert main(["--config", str(cfg), "queue", "dispatch", "TestEcho", "--args", "[2]", "--key", "K1"]) == 0
    second = capsys.readouterr().out
    assert first.split("job ")[1] == second.split("job ")[1] and "(key K1)" in second
    set_current(None)
    from erpq.config import load

    rt = Runtime(load(str(cfg)))
    try:
        assert rt.huey.pending_count() == 1
        ops = Ops(rt, actor=Actor("tester", None, "cli"))
        assert ops.dispatch("TestEcho", [3], key="K1") == first.split("job ")[1].split()[0]
        from erpq.ops import OpsError

        with pytest.raises(OpsError, match="--key: 1 to 191 characters"):
            ops.dispatch("TestEcho", [3], key="x" * 200)
        assert rt.huey.pending_count() == 1
    finally:
        rt.close()
