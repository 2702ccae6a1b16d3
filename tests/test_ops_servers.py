"""The Ops reads and the console on each database (SQLite, then PostgreSQL), and
text search ignoring case the same way on both (failed jobs, runs, webhook
deliveries; ``%`` and ``_`` taken literally)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

import testjobs
from conftest import make_settings
from console_fixtures import press, settle
from draining import drain
from erpq.db import make_engine, upgrade
from erpq.models import Lock, Runner
from erpq.ops import Actor, Ops
from erpq.runtime import Runtime, set_current
from erpq.runtime.registry import load_capabilities
from erpq.webhooks.service import WebhookService
from tui.app import ErpqConsole
from tui.widgets.keyed_table import KeyedTable
from webhook_fixtures import add_tenant, subscribe

load_capabilities()

PERIODIC = "erp:check-system-health"
ALICE = Actor("alice", None, "cli")


@pytest.fixture(params=["sqlite", "pg_url"], ids=["sqlite", "postgresql"])
def rt(request, tmp_path) -> Iterator[Runtime]:
    if request.param == "sqlite":
        settings = make_settings(tmp_path)
    else:
        url = request.getfixturevalue("pg_url")
        engine = make_engine(url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()
        settings = make_settings(tmp_path, database={"url": url})
    testjobs.reset()
    runtime = Runtime(settings)
    set_current(runtime)
    yield runtime
    set_current(None)
    runtime.close()
    testjobs.reset()


@pytest.fixture
def ops(rt: Runtime) -> Ops:
    return Ops(rt, actor=ALICE)


def seed(rt: Runtime) -> dict:
    """A bit of everything an operator reads: failures, runs, a batch, jobs
    waiting and delayed, a dead runner holding a lock, an audit row."""
    for word in ("MixedCase", "lower", "100%_done"):
        rt.enqueue("TestFailNow", word)
    drain(rt)
    rt.history.flush()  # run rows are written in batches
    batch_id = rt.dispatch_batch("import", "TestEcho", [((i,), {}) for i in range(3)])
    rt.enqueue("TestEcho", "Waiting")
    rt.enqueue("TestEcho", "Later", delay=3600)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    with rt.session() as s:
        s.add(Runner(id="gone:1:abc", host="gone", pid=1, workers=2, periodic=True, kind="consumer",
                     queue="q", started_at=old, heartbeat_at=old, stopped_at=None))
        s.add(Lock(name=f"periodic:{PERIODIC}", holder="gone:1:abc", task_id="x",
                   acquired_at=old, expires_at=old + dt.timedelta(minutes=2)))
    return {"batch_id": batch_id}


def test_every_read(rt, ops):
    seeded = seed(rt)
    ops.pause(PERIODIC)  # an audit row and a schedule state row

    schedule = {e.name: e for e in ops.schedule()}
    assert schedule[PERIODIC].paused is True
    assert ops.pending().total == 4 and {j.args_summary for j in ops.pending().items} >= {"'Waiting'"}
    (later,) = ops.scheduled().items
    assert later.args_summary == "'Later'" and later.eta is not None
    assert ops.running().items == []
    assert ops.queue_counts()["failed"] == 3

    failed = ops.failed()
    assert failed.total == 3
    assert sorted(f.exception for f in failed.items) == ["broken 100%_done", "broken MixedCase", "broken lower"]
    detail = ops.failed_detail(failed.items[0].id)
    assert "RuntimeError" in detail.traceback and detail.args == {"args": ["100%_done"], "kwargs": {}}
    clusters = ops.failure_clusters()
    assert sorted(c.message for c in clusters) == ["broken <n>%_done", "broken MixedCase", "broken lower"]
    assert {(c.task_name, c.count) for c in clusters} == {("TestFailNow", 1)}

    runs = ops.runs(with_total=True)
    assert runs.total == 3 and {r.status for r in runs.items} == {"failed"}
    assert ops.runs(status="failed", task="TestFailNow").items == runs.items

    (batch,) = ops.batches().items
    assert (batch.id, batch.total, batch.name) == (seeded["batch_id"], 3, "import")
    assert ops.batch(seeded["batch_id"]).pending == 3

    (runner,) = ops.runners()
    assert runner.id == "gone:1:abc" and runner.alive is False
    (lock,) = ops.locks()
    assert lock.holder == "gone:1:abc" and lock.stale is True

    (entry,) = ops.audit_log().items
    assert (entry.actor, entry.action, entry.target) == ("alice", "schedule.pause", PERIODIC)


@pytest.mark.parametrize("text", ["mixedcase", "MIXEDCASE", "Broken Mixed"])
def test_failed_and_runs_search_ignore_case(rt, ops, text):
    seed(rt)
    (hit,) = ops.failed(search=text).items
    assert hit.exception == "broken MixedCase"
    assert ops.count_failed(search=text) == 1
    (run,) = ops.runs(search=text).items
    assert run.error.endswith("broken MixedCase")
    assert ops.failed(search="testfailnow").total == 3  # task names too


def test_search_wildcards_are_literal(rt, ops):
    seed(rt)
    assert [f.exception for f in ops.failed(search="%_").items] == ["broken 100%_done"]
    assert ops.failed(search="_").total == 1
    assert ops.failed(search="%").total == 1
    assert len(ops.runs(search="0%_D").items) == 1
    assert ops.failed(search="broken_").total == 0


def test_delivery_search_ignores_case(rt, ops):
    tenant = add_tenant(rt)
    subscribe(rt, tenant, "http://127.0.0.1:9/hook")
    service = WebhookService(rt)
    (deal,) = service.queue_delivery("deal.created", {"id": 1}, tenant)
    service.queue_delivery("lead.created", {"id": 2}, tenant)
    for text in ("DEAL.", "Deal.Created", "deal"):
        assert [d.delivery_id for d in ops.webhooks.deliveries(search=text).items] == [deal], text
    assert [d.delivery_id for d in ops.webhooks.deliveries(search=deal.upper()).items] == [deal]
    assert ops.webhooks.deliveries(search="ms_").total == 0  # "_" is literal, not "msg"
    assert ops.webhooks.deliveries(search="MSG_").total == 2
    assert ops.webhooks.deliveries(search="CREATED").total == 2


def test_queue_search_ignores_case(rt, ops):
    seed(rt)
    assert [j.args_summary for j in ops.pending(search="waiting").items] == ["'Waiting'"]
    assert [j.args_summary for j in ops.scheduled(search="LATER").items] == ["'Later'"]
    job_id = ops.pending().items[0].id
    assert [j.id for j in ops.pending(search=job_id.upper()).items] == [job_id]


# ------------------------------------------------------------------ the console


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def table(app: ErpqConsole, view: str, which: str = "#table") -> KeyedTable:
    return app.view(view).query_one(which, KeyedTable)


@pytest.mark.anyio
async def test_console_views_filter_and_act(rt):
    seed(rt)
    app = ErpqConsole(Ops(rt, ALICE), rt.settings, poll=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        assert PERIODIC in table(app, "schedule").keys
        await press(app, pilot, "3")
        failed = table(app, "failed")
        assert len(failed.keys) == 3
        await press(app, pilot, "slash", *"MIXEDcase", "enter")
        (key,) = failed.keys
        assert failed.record(key).exception == "broken MixedCase"
        await press(app, pilot, "d", "y")  # forget it
        assert failed.keys == []
        assert app.ops.count_failed() == 2
        await press(app, pilot, "u")  # undo: restore by id
        assert app.ops.count_failed() == 3
        await press(app, pilot, "7")
        assert table(app, "runners").keys == ["gone:1:abc"]
        assert str(table(app, "runners", "#locks").cells(f"periodic:{PERIODIC}")[3]) == "stale"
        await press(app, pilot, "5")
        assert len(table(app, "batches").keys) == 1
    assert [a.action for a in app.ops.audit_log().items[:2]] == ["failed.restore", "failed.forget"]
