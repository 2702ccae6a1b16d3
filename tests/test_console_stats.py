"""Stats (``ops.throughput``, the Activity view's ``s``), every run status in
Activity's filter, and tenant names across the console: on a real store
(SQLite; the throughput read also on PostgreSQL and MariaDB, the Pilot path also
on PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import backend_settings
from console_fixtures import press, settle
from erpq.models import RUN_STATUSES, FailedJob, JobRun, Tenant
from erpq.ops import Actor, Ops
from erpq.ops.stats import ALL, LADDER
from erpq.runtime import Runtime, set_current
from erpq.runtime.registry import load_capabilities
from tui.app import ErpqConsole
from tui.views.activity import STATUSES
from tui.widgets.keyed_table import KeyedTable
from tui.widgets.spark_row import SparkRow

load_capabilities()

ACTOR = Actor(user="tester", client=None, source="console")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _runtime(request, tmp_path: Path, backend: str) -> Runtime:
    settings = backend_settings(request, tmp_path, backend)
    rt = Runtime(settings)
    set_current(rt)
    return rt


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def any_db(request, tmp_path):
    rt = _runtime(request, tmp_path, request.param)
    yield rt
    set_current(None)
    rt.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def pilot_db(request, tmp_path):
    rt = _runtime(request, tmp_path, request.param)
    yield rt
    set_current(None)
    rt.close()


# ------------------------------------------------------------------ the history the tests make

def _minute() -> dt.datetime:
    now = dt.datetime.now(dt.UTC)
    return now.replace(second=0, microsecond=0)


def seed_history(rt: Runtime) -> dict[str, dt.datetime]:
    """Runs at known minutes: returns the finish time of each group (to find its bucket)."""
    base = _minute()
    t10 = base - dt.timedelta(minutes=10) + dt.timedelta(seconds=20)
    t3 = base - dt.timedelta(minutes=3) + dt.timedelta(seconds=20)
    t2h = base - dt.timedelta(hours=2) + dt.timedelta(seconds=20)
    rows = []

    def run(task: str, status: str, finished: dt.datetime, took: float | None, wait: float) -> None:
        started = finished - dt.timedelta(seconds=took or 0)
        rows.append({"task_id": f"t{len(rows)}", "task_name": task, "kind": "job", "status": status, "attempt": 1,
                     "enqueued_at": started - dt.timedelta(seconds=wait), "started_at": started,
                     "finished_at": finished, "duration_s": took})

    for _ in range(5):
        run("TaskA", "success", t10, 0.2, 1.0)
    run("TaskA", "failed", t10, 0.2, 1.0)
    for took in (0.1, 0.2, 0.3, 4.0):
        run("TaskA", "success", t3, took, 0.5)
    run("TaskB", "success", t10, 2.0, 0.0)
    run("TaskB", "success", t10, 2.0, 0.0)
    run("TaskB", "success", t2h, 1.0, 0.0)  # outside the hour, inside the day
    for status in ("skipped", "missed", "cancelled"):  # not processed: not counted
        run("TaskA", status, t3, None, 0.0)
    with rt.session() as s:
        s.execute(sa.insert(JobRun), rows)
    return {"t10": t10, "t3": t3, "t2h": t2h}


def _index(row, when: dt.datetime) -> int:
    return int((when - row.start).total_seconds() // row.bucket_s)


def _same_ladder_bucket(estimate: float, exact: float) -> bool:
    def bucket(v: float) -> int:
        return next((i for i, b in enumerate(LADDER) if v < b), len(LADDER))
    return bucket(estimate) == bucket(exact) or abs(estimate - exact) < 1e-9


def test_throughput_matches_the_run_history(any_db):
    at = seed_history(any_db)
    items = Ops(any_db).throughput(60, 60)
    by = {t.task_name: t for t in items}
    assert [t.task_name for t in items] == [ALL, "TaskA", "TaskB"]
    a, b, total = by["TaskA"], by["TaskB"], by[ALL]
    assert len(a.processed_series) == 60 and a.bucket_s == 60
    i10, i3 = _index(a, at["t10"]), _index(a, at["t3"])
    assert a.processed_series[i10] == 6 and a.failed_series[i10] == 1
    assert a.processed_series[i3] == 4 and a.failed_series[i3] == 0
    assert sum(a.processed_series) == 10 and sum(a.failed_series) == 1
    assert (a.processed, a.failed, a.per_min, a.failed_per_min) == (10, 1, round(10 / 60, 3), round(1 / 60, 3))
    # Equal values: the percentile is exact (kept within the smallest and largest seen).
    assert a.run_p50_series[i10] == pytest.approx(0.2, abs=1e-3)
    assert a.wait_p50_series[i10] == pytest.approx(1.0, abs=1e-3)
    assert a.wait_p95_series[i3] == pytest.approx(0.5, abs=1e-3)
    # Mixed values: p95 is the largest here, p50 lies in the latency bucket of the exact one.
    assert a.run_p95_series[i3] == pytest.approx(4.0, abs=1e-3)
    assert _same_ladder_bucket(a.run_p50_series[i3], 0.2)
    assert a.run_p50_series[0] is None and a.processed_series[0] == 0
    assert b.processed == 2 and b.run_p50_s == pytest.approx(2.0, abs=1e-3) and b.wait_p95_s == 0.0
    assert total.processed == 12 and total.failed == 1 and total.processed_series[i10] == 8
    # The day by hour holds the run of two hours ago too.
    day = {t.task_name: t for t in Ops(any_db).throughput(3600, 24)}
    assert day["TaskB"].processed == 3 and day[ALL].processed == 13
    assert day["TaskB"].processed_series[_index(day["TaskB"], at["t2h"])] == 1


def test_throughput_reads_new_runs_and_keeps_final_buckets(runtime):
    at = seed_history(runtime)
    ops = Ops(runtime)
    first = {t.task_name: t for t in ops.throughput(60, 60)}
    now = dt.datetime.now(dt.UTC)
    with runtime.session() as s:
        s.add(JobRun(task_id="new", task_name="TaskC", kind="job", status="success", attempt=1,
                     enqueued_at=now, started_at=now, finished_at=now, duration_s=0.01))
        # A run written late into a bucket that ended minutes ago: that bucket was read once.
        s.add(JobRun(task_id="late", task_name="TaskA", kind="job", status="success", attempt=1,
                     enqueued_at=at["t10"], started_at=at["t10"], finished_at=at["t10"], duration_s=0.2))
    second = {t.task_name: t for t in ops.throughput(60, 60)}
    assert second["TaskC"].processed == 1 and second[ALL].processed == first[ALL].processed + 1
    assert second["TaskA"].processed == first["TaskA"].processed
    assert Ops(runtime).throughput(60, 60)[0].processed == first[ALL].processed + 2  # a fresh read sees it


def test_throughput_refuses_bad_windows(runtime):
    from erpq.ops import Invalid

    for bad in ((0, 60), (60, 0), (60, 5000), (100_000, 2)):
        with pytest.raises(Invalid):
            Ops(runtime).throughput(*bad)
    assert Ops(runtime).throughput(60, 60) == []


def test_erpq_stats_reads_the_same(runtime):
    from erpq.metrics import stats

    seed_history(runtime)
    rows = {s.task_name: s for s in stats(Ops(runtime), minutes=60, buckets=60)}
    a = next(t for t in Ops(runtime).throughput(60, 60) if t.task_name == "TaskA")
    assert set(rows) == {"TaskA", "TaskB"}
    assert (rows["TaskA"].processed, rows["TaskA"].failed, rows["TaskA"].spark) == (10, 1, a.processed_series)
    assert rows["TaskA"].run_p95_s == a.run_p95_s


# ------------------------------------------------------------------ Pilot


def sparks(app) -> dict[str, list[float]]:
    from textual.widgets import Sparkline

    return {row.id: list(row.query_one(Sparkline).data) for row in app.view("activity").query(SparkRow)}


@pytest.mark.anyio
async def test_stats_section_shows_the_run_history(pilot_db):
    at = seed_history(pilot_db)
    app = ErpqConsole(Ops(pilot_db, ACTOR, read_only=True), pilot_db.settings, poll=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "6", "s")
        view = app.view("activity")
        stats = view.query_one("#stats-table", KeyedTable)
        assert view.stats_mode and app.focused is stats
        assert stats.keys == [ALL, "TaskA", "TaskB"]
        assert "last hour by minute" in view.query_one("#head").text and "12 runs, 1 failed" in \
            view.query_one("#head").text
        a = stats.record("TaskA")
        i10 = _index(a, at["t10"])
        assert str(stats.cells(ALL)[0]) == "all tasks"
        assert sparks(app)["spark-processed"][i10] == 8.0  # all tasks: 6 of TaskA, 2 of TaskB
        await press(app, pilot, "j")  # TaskA
        shown = sparks(app)
        assert shown["spark-processed"] == [float(n) for n in a.processed_series]
        assert shown["spark-failed"][i10] == 1.0 and sum(shown["spark-failed"]) == 1.0
        assert shown["spark-run"][_index(a, at["t3"])] == pytest.approx(4.0, abs=1e-3)
        assert "TaskA: 10 runs, 1 failed" in view.query_one("#info").text
        await press(app, pilot, "w")
        assert "last day by hour" in view.query_one("#head").text
        assert stats.record("TaskB").processed == 3 and len(stats.record("TaskB").processed_series) == 24
        await press(app, pilot, "enter")
        body = str(app.screen.query_one("#body-text").render())
        assert "runs" in body and "run p95" in body
        await press(app, pilot, "escape", "s")
        assert not view.stats_mode and view.query_one("#table", KeyedTable).display


# ------------------------------------------------------------------ every run status


def test_every_status_the_runtime_writes_is_selectable():
    """The runtime writes run statuses as literals: each one is in RUN_STATUSES (and so in ``f``)."""
    root = Path(__file__).parent.parent / "erpq" / "runtime"
    written = set()
    for path in root.rglob("*.py"):
        text = path.read_text()
        written |= set(re.findall(r'status\s*=\s*"(\w+)"', text))
        written |= set(re.findall(r'add_job_run\([^)]*?"(\w+)"', text))
    written |= {"failed", "retrying", "success", "cancelled", "missed", "skipped", "revoked", "expired"}
    assert written and written <= set(RUN_STATUSES), written - set(RUN_STATUSES)
    assert set(STATUSES) == {None, *RUN_STATUSES}


@pytest.mark.anyio
async def test_activity_filters_every_status(runtime):
    now = dt.datetime.now(dt.UTC)
    with runtime.session() as s:
        s.execute(sa.insert(JobRun), [{"task_id": f"s-{st}", "task_name": f"Job_{st}", "kind": "job", "status": st,
                                       "attempt": 1, "enqueued_at": now, "finished_at": now}
                                      for st in RUN_STATUSES])
    app = ErpqConsole(Ops(runtime, ACTOR, read_only=True), runtime.settings, poll=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "6")
        view = app.view("activity")
        assert len(view.table.keys) == len(RUN_STATUSES)
        for status in RUN_STATUSES:
            await press(app, pilot, "f")
            assert view.status == status and f"status {status}" in view.query_one("#head").text
            assert [view.table.record(k).status for k in view.table.keys] == [status]
        await press(app, pilot, "f")
        assert view.status is None and len(view.table.keys) == len(RUN_STATUSES)


# ------------------------------------------------------------------ tenant names


def test_tenant_names_read_once_and_cached(runtime):
    with runtime.session() as s:
        s.add(Tenant(slug="acme", name="Acme Corp"))
    ops = Ops(runtime)
    assert list(ops.tenant_names().values()) == ["Acme Corp"]
    with runtime.session() as s:
        s.add(Tenant(slug="globex", name="Globex"))
    assert list(ops.tenant_names().values()) == ["Acme Corp"]  # within the TTL: the cached dict
    assert sorted(Ops(runtime).tenant_names().values()) == ["Acme Corp", "Globex"]


@pytest.mark.anyio
async def test_tenant_names_in_the_console_and_ids_when_unknown(runtime):
    with runtime.session() as s:
        t = Tenant(slug="acme", name="Acme Corp")
        s.add(t)
        s.flush()
        tid = t.id
    now = dt.datetime.now(dt.UTC)
    with runtime.session() as s:
        s.execute(sa.insert(JobRun), [
            {"task_id": "known", "task_name": "Known", "kind": "job", "status": "success", "attempt": 1,
             "tenant_id": tid, "enqueued_at": now, "finished_at": now},
            {"task_id": "unknown", "task_name": "Unknown", "kind": "job", "status": "success", "attempt": 1,
             "tenant_id": 999, "enqueued_at": now + dt.timedelta(seconds=1), "finished_at": now}])
        s.add(FailedJob(task_id="f1", task_name="Known", args={}, payload=b"", exception_type="RuntimeError",
                        exception="boom", traceback="Traceback", attempts=1, failed_at=now, reason="error",
                        tenant_id=tid))
    app = ErpqConsole(Ops(runtime, ACTOR, read_only=True), runtime.settings, poll=False)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(app, pilot)
        assert app.tenant(tid) == "Acme Corp" and app.tenant(999) == "#999"
        await press(app, pilot, "6")
        view = app.view("activity")
        info = view.query_one("#info").text
        assert view.table.selected_record.task_name == "Unknown" and "tenant #999" in info
        await press(app, pilot, "j")
        assert "tenant Acme Corp" in view.query_one("#info").text
        await press(app, pilot, "enter")
        assert "Acme Corp (#" in str(app.screen.query_one("#body-text").render())
        await press(app, pilot, "escape", "3", "enter")
        body = str(app.screen.query_one("#body-text").render())
        assert f"Tenant:     Acme Corp (#{tid})" in body


@pytest.mark.anyio
async def test_queue_health_and_panels_name_tenants():
    """The queue's tenant column, the health table and a capability panel's tenant column
    show names from ``ops.tenant_names`` (FakeOps knows tenants 1 and 2, not 3)."""
    from console_fixtures import FakeOps, fixed_clock

    ops = FakeOps()
    app = ErpqConsole(ops, ops.settings, clock=fixed_clock, poll=False)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "2")
        queue = app.view("queue").table
        assert {str(queue.cells(k)[-1]) for k in queue.keys} == {"Acme Corp", "Globex", "#3"}
        await press(app, pilot, "4")
        health = app.view("health").table
        assert [str(health.cells(k)[0]) for k in health.keys] == ["Acme Corp", "Globex"]
        app.action_show_view("webhook_subscriptions")
        await settle(app, pilot)
        subs = app.view("webhook_subscriptions").table
        assert [str(subs.cells(k)[1]) for k in subs.keys] == ["Globex", "Acme Corp", "#3"]


def test_erpq_stats_refuses_a_bad_window(runtime):
    from erpq.metrics import stats
    from erpq.ops import Invalid

    for bad in (0, -5, 17_281, float("nan")):
        with pytest.raises(Invalid, match="minutes must be"):
            stats(Ops(runtime), minutes=bad)
