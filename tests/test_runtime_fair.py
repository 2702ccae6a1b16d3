"""Per-tenant fairness on the SQLite and the Redis store: a tenant's job is taken
while another tenant's 2,000-job backlog is still waiting; per-tenant and
per-task caps are never exceeded (counted by the jobs themselves); at-least-once
delivery (claims, recovery) is intact; depth, age and throughput per tenant."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from conftest import REDIS_URL, _reset_redis, make_settings, need, redis_available
from draining import drain
from erpq.cli import main
from erpq.ops import Ops
from erpq.runtime import EmbeddedRunner, Runtime, job, set_current
from polling import wait_until

SEEN: list = []  # (tenant, n) in the order the jobs ran
RUNNING: dict = {}
PEAK: dict = {}
GUARD = threading.Lock()
GATE = threading.Event()


@job("FairMark")
def fair_mark(tenant, n):
    SEEN.append((tenant, n))


def _count(key, hold):
    with GUARD:
        RUNNING[key] = RUNNING.get(key, 0) + 1
        PEAK[key] = max(PEAK.get(key, 0), RUNNING[key])
    try:
        time.sleep(hold)
    finally:
        with GUARD:
            RUNNING[key] -= 1


@job("FairWork")
def fair_work(tenant, n):
    _count(("tenant", tenant), 0.005)
    SEEN.append((tenant, n))


@job("FairCampaign")
def fair_campaign(tenant, n):
    _count(("task", "FairCampaign"), 0.01)
    SEEN.append((tenant, n))


@pytest.fixture(params=["sqlite", "redis"])
def fair(request, tmp_path):
    made: list[Runtime] = []

    def make(**queue) -> Runtime:
        q = {"fair": True, "workers": 4, **queue}
        if request.param == "redis":
            need("Redis", redis_available(), REDIS_URL)
            q.update(url=REDIS_URL, name=f"t{uuid.uuid4().hex[:10]}")
        rt = Runtime(make_settings(tmp_path, queue=q))
        set_current(rt)
        made.append(rt)
        return rt

    SEEN.clear()
    RUNNING.clear()
    PEAK.clear()
    yield make
    set_current(None)
    for rt in made:
        rt.huey.storage.flush_all()
        rt.close()
        if request.param == "redis":
            _reset_redis(REDIS_URL, rt.settings.queue.name)


def test_tenant_b_starts_while_a_backlog_is_still_large(fair):
    rt = fair()
    for i in range(2_000):  # 10,000 in the bench (erpq bench queue --tenants 10); the test stays fast
        rt.enqueue("FairMark", 1, i, tenant_id=1)
    rt.enqueue("FairMark", 2, "b", tenant_id=2)
    runner = EmbeddedRunner(rt, workers=2, periodic=False)
    runner.start()
    try:
        wait_until(lambda: (2, "b") in SEEN, message="tenant B's job to run")
        position = SEEN.index((2, "b"))
    finally:
        runner.stop()
    # within one scheduling cycle: at most one job per tenant ahead of it per worker
    assert position <= 4, SEEN[:10]
    # A's backlog when B's job started: all but the few A jobs ahead of it (2,000 - position)
    assert 2_000 - position >= 1_996
    assert rt.huey.pending_count() > 1_000  # and still large after the runner's graceful stop


def test_round_robin_order_without_a_runner(fair):
    rt = fair()
    for t in (1, 1, 1, 2, 2, 3):
        rt.enqueue("FairMark", t, t, tenant_id=t)
    drain(rt)
    assert [t for t, _ in SEEN][:5] == [1, 2, 3, 1, 2]


def test_tenant_and_task_caps_are_never_exceeded(fair):
    rt = fair(tenant_concurrency=2, task_concurrency={"FairCampaign": 1}, workers=6)
    for i in range(30):
        for tenant in (1, 2, 3):
            rt.enqueue("FairWork", tenant, i, tenant_id=tenant)
    for i in range(10):
        rt.enqueue("FairCampaign", 4, i, tenant_id=4)
    runner = EmbeddedRunner(rt, workers=6, periodic=False)
    runner.start()
    try:
        wait_until(lambda: len(SEEN) == 100, message="every job to run")
    finally:
        runner.stop()
    for tenant in (1, 2, 3):
        assert 1 <= PEAK[("tenant", tenant)] <= 2
    assert PEAK[("task", "FairCampaign")] == 1
    assert max(PEAK[("tenant", t)] for t in (1, 2, 3)) == 2  # the cap was reached, so it was tested
    assert rt.huey.storage.running_by_tenant() == {} and rt.huey.pending_count() == 0


def test_claims_and_recovery_intact(fair):
    rt = fair(tenant_concurrency=1)
    rt.enqueue("FairMark", 7, "x", tenant_id=7)
    storage = rt.huey.storage
    ghost = "ghost:1:fair"
    own, storage.runner_id = storage.runner_id, ghost
    try:
        if hasattr(storage, "register_runner"):
            storage.register_runner()
        assert storage.dequeue() is not None  # taken by a runner that then dies
    finally:
        storage.runner_id = own
        storage.drop_claim()
    assert rt.huey.pending_count() == 0 and storage.inflight_count() == 1
    assert storage.running_by_tenant() == {7: 1}
    rt.enqueue("FairMark", 7, "y", tenant_id=7)
    assert drain(rt) == 0  # tenant 7 is at its cap of 1 while the ghost holds its claim
    ((key, _r, _t, data),) = storage.inflight_of(ghost)
    assert storage.requeue_claims([(key, data)], runner=ghost) == 1  # what recovery does
    assert storage.running_by_tenant() == {} and rt.huey.pending_count() == 2
    assert drain(rt) == 2
    assert sorted(n for _t, n in SEEN) == ["x", "y"]  # at least once: nothing lost


def test_delayed_jobs_keep_their_lane(fair):
    rt = fair(task_concurrency={"FairCampaign": 1})
    import datetime as dt

    rt.enqueue("FairCampaign", 5, 1, tenant_id=5, eta=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    rt.huey.read_schedule()
    assert rt.huey.storage.tenant_depths()[5][0] == 1
    assert drain(rt) == 1


def test_queue_list_by_tenant(fair, tmp_path, capsys):
    rt = fair()
    for i in range(3):
        rt.enqueue("FairMark", 1, i, tenant_id=1)
    rt.enqueue("FairMark", 2, 0, tenant_id=2)
    rows = {r.tenant_id: r for r in Ops(rt).queue_by_tenant()}
    assert rows[1].pending == 3 and rows[2].pending == 1
    assert rows[1].oldest_age_s is not None and rows[1].oldest_age_s >= 0
    drain(rt)
    rt.history.flush()
    rows = {r.tenant_id: r for r in Ops(rt).queue_by_tenant()}
    assert rows[1].pending == 0 and rows[1].done_last_5m == 3 and rows[2].done_last_5m == 1

    q = rt.settings.queue
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[queue]\nurl = "{q.url}"\nname = "{q.name}"\nfair = true\n'
                   '[database]\nurl = "sqlite:///erpq.db"\n[log]\npath = "erpq.log"\n')
    capsys.readouterr()
    assert main(["--config", str(cfg), "queue", "list", "--by-tenant"]) == 0
    out = capsys.readouterr().out
    assert "TENANT_ID" in out and "DONE_LAST_5M" in out and "#1" in out
