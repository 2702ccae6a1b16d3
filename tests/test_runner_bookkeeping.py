"""Issue 13, item 6: a consumer killed while idle is marked stopped after
runner.dead_after_s, leaves the Redis runner list, and 'runner list' shows only
the living by default."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from erpq.db import utcnow
from erpq.models import Runner
from erpq.ops import Ops
from erpq.runtime import Runtime


def test_an_idle_runner_killed_is_marked_stopped_and_forgotten(store_runtime: Runtime):
    rt = store_runtime
    old = utcnow() - dt.timedelta(seconds=rt.settings.runner.dead_after_s + 60)
    with rt.session() as s:
        s.add(Runner(id="killed-idle", host="elsewhere", pid=1, kind="consumer", workers=2, queue="q",
                     started_at=old, heartbeat_at=old))
        s.add(Runner(id="alive-one", host="elsewhere", pid=1, kind="consumer", workers=2, queue="q"))
    storage = rt.huey.storage
    if hasattr(storage, "runners_key"):  # Redis: the runner had registered itself
        storage.conn.sadd(storage.runners_key, "killed-idle", "alive-one")

    assert [r.id for r in Ops(rt).runners()] == ["alive-one"]  # silent = not shown by default
    rt.recover_dead_runners()

    with rt.read_session() as s:
        stopped = dict(s.execute(sa.select(Runner.id, Runner.stopped_at)).all())
    assert stopped["killed-idle"] is not None and stopped["alive-one"] is None
    if hasattr(storage, "runners_key"):
        members = {m.decode() for m in storage.conn.smembers(storage.runners_key)}
        assert "killed-idle" not in members and "alive-one" in members
    assert {r.id for r in Ops(rt).runners(include_stopped=True)} == {"killed-idle", "alive-one"}
    assert [r.id for r in Ops(rt).runners()] == ["alive-one"]
