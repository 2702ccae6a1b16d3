"""The runtime with a server database (PostgreSQL, MariaDB) behind it: history,
failures, retries, one fire per tick and overlap locks rely on the database's
transactions and unique keys, so they are checked on each."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa

import testjobs
from conftest import make_settings
from draining import drain
from erpq.db import make_engine, upgrade, utcnow
from erpq.models import FailedJob, JobRun
from erpq.ops import Actor, Ops
from erpq.runtime import Runtime, SchemaOutOfDate, locks
from erpq.runtime import app as runtime_app
from erpq.runtime.registry import JOBS, JobSpec, load_capabilities

NAME = "crm:check-activity-reminders"


@pytest.fixture(params=["pg_url", "mariadb_url"], ids=["postgresql", "mariadb"])
def server_url(request) -> str:
    url = request.getfixturevalue(request.param)
    engine = make_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return url


@pytest.fixture
def make_rt(tmp_path, server_url):
    made: list[Runtime] = []

    def make(**sections) -> Runtime:
        rt = Runtime(make_settings(tmp_path, database={"url": server_url}, **sections))
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()


@pytest.fixture(autouse=True)
def _reset_jobs():
    testjobs.reset()
    yield
    testjobs.reset()


work = drain

def test_history_failures_and_retry(make_rt):
    rt = make_rt()
    ok = rt.enqueue("TestEcho", "é", tenant_id=1)
    bad = rt.enqueue("TestFail", 3)
    assert work(rt) == 3
    rt.history.flush()
    with rt.read_session() as s:
        statuses = {(r.task_id, r.status, r.attempt) for r in s.scalars(sa.select(JobRun))}
        (failed,) = s.scalars(sa.select(FailedJob)).all()
    assert statuses == {(ok, "success", 1), (bad, "retrying", 1), (bad, "failed", 2)}
    assert (failed.attempts, failed.exception, failed.args) == (2, "boom 3", {"args": [3], "kwargs": {}})
    assert "ValueError: boom 3" in failed.traceback

    ops = Ops(rt, actor=Actor("tester", None, "cli"))
    (new_id,) = ops.retry([failed.id])
    assert [t.id for t in rt.huey.pending()] == [new_id]
    assert ops.failed().total == 0


def test_stale_server_schema_is_refused(tmp_path, mariadb_url):
    with pytest.raises(SchemaOutOfDate, match="erpq db upgrade"):
        Runtime(make_settings(tmp_path, database={"url": mariadb_url}))


def test_periodic_fires_once_per_tick_across_runners(make_rt, monkeypatch):
    load_capabilities()
    for name, spec in list(JOBS.items()):
        if spec.periodic:
            monkeypatch.delitem(JOBS, name)
    monkeypatch.setitem(JOBS, NAME, JobSpec(NAME, lambda: None, periodic=True))
    now = dt.datetime(2030, 1, 1, 12, 0, 10, tzinfo=dt.UTC)
    monkeypatch.setattr(runtime_app, "utcnow", lambda: now)
    monkeypatch.setattr(runtime_app, "db_now", lambda _session: now)  # the periodic check's clock
    rts = [make_rt(schedule={"cron": {NAME: "* * * * *"}}) for _ in range(4)]
    barrier = threading.Barrier(len(rts))
    fired: list = []
    errors: list = []

    def check(rt):
        barrier.wait()
        try:
            for task in rt.huey.read_periodic(None):
                rt.huey.enqueue(task)
                fired.append(task)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=check, args=(rt,)) for rt in rts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(fired) == 1
    with rts[0].read_session() as s:
        ticks = s.scalars(sa.select(JobRun.tick).where(JobRun.task_name == NAME)).all()
    assert ticks == [dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)]
    assert rts[0].huey.pending_count() == 1


def test_lease_locks(make_rt):
    rt = make_rt()
    assert locks.acquire(rt.Session, "periodic:x", "a", 60)
    assert not locks.acquire(rt.Session, "periodic:x", "b", 60)
    assert locks.holder_of(rt.Session, "periodic:x").holder == "a"
    with rt.session() as s:  # the holder died: its lease ran out
        s.execute(sa.text("UPDATE locks SET expires_at = :t WHERE name = 'periodic:x'"),
                  {"t": (utcnow() - dt.timedelta(seconds=1)).replace(tzinfo=None)})
    assert locks.holder_of(rt.Session, "periodic:x") is None
    assert locks.acquire(rt.Session, "periodic:x", "b", 60)
    assert not locks.release(rt.Session, "periodic:x", "a")
    assert locks.release(rt.Session, "periodic:x", "b")
