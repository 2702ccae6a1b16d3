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

    shown = {r.id: r.alive for r in Ops(rt).runners()}
    assert shown == {"killed-idle": False, "alive-one": True}  # silent, not yet marked stopped
    rt.recover_dead_runners()

    with rt.read_session() as s:
        stopped = dict(s.execute(sa.select(Runner.id, Runner.stopped_at)).all())
    assert stopped["killed-idle"] is not None and stopped["alive-one"] is None
    if hasattr(storage, "runners_key"):
        members = {m.decode() for m in storage.conn.smembers(storage.runners_key)}
        assert "killed-idle" not in members and "alive-one" in members
    assert {r.id for r in Ops(rt).runners(include_stopped=True)} == {"killed-idle", "alive-one"}
    assert [r.id for r in Ops(rt).runners()] == ["alive-one"]


def test_runner_list_shows_only_the_living_by_default(tmp_path):
    from badinput import run_cli, write_config

    cfg = write_config(tmp_path, f"sqlite:///{tmp_path}/db.sqlite")
    assert run_cli(cfg, ["db", "upgrade"]).code == 0
    from erpq.config import load

    rt = Runtime(load(cfg))
    try:
        old = utcnow() - dt.timedelta(hours=1)
        with rt.session() as s:
            s.add(Runner(id="silent", host="h", pid=1, queue="q", started_at=old, heartbeat_at=old))
            s.add(Runner(id="living", host="h", pid=1, queue="q"))
    finally:
        rt.close()
    r = run_cli(cfg, ["runner", "list", "--json"])
    assert r.code == 0 and "living" in r.out and "silent" not in r.out
    r = run_cli(cfg, ["runner", "list", "--all", "--json"])
    assert "living" in r.out and "silent" in r.out
