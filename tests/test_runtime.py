"""The runtime core on each queue store (SQLite file, Redis): execution and history,
failures and retries, batches, the schedule of delayed jobs, paging, in-flight
tracking and recovery of a dead runner's work."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
import sqlalchemy as sa

import testjobs
from draining import drain
from erpq.db import utcnow
from erpq.models import FailedJob, JobBatch, JobRun, Runner
from erpq.ops import Actor, NotFound, Ops
from erpq.runtime import EmbeddedRunner, Runtime
from polling import wait_until

GHOST = "ghost:1:x"


@pytest.fixture(autouse=True)
def _reset_jobs():
    testjobs.reset()
    yield
    testjobs.reset()


@pytest.fixture
def rt(store_runtime: Runtime) -> Runtime:
    return store_runtime


@pytest.fixture
def ops(rt: Runtime) -> Ops:
    return Ops(rt, actor=Actor("tester", None, "cli"))


@pytest.fixture
def runner(rt: Runtime):
    started: list[EmbeddedRunner] = []

    def start(workers: int = 2) -> EmbeddedRunner:
        r = EmbeddedRunner(rt, workers=workers, periodic=False)
        r.start()
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()


work = drain  # take and execute queued tasks in this thread

def runs(rt: Runtime, **where) -> list[JobRun]:
    rt.history.flush()
    q = sa.select(JobRun).order_by(JobRun.id)
    for key, value in where.items():
        q = q.where(getattr(JobRun, key) == value)
    with rt.read_session() as s:
        return list(s.scalars(q))


def failed_rows(rt: Runtime) -> list[FailedJob]:
    with rt.read_session() as s:
        return list(s.scalars(sa.select(FailedJob).order_by(FailedJob.id)))


def queued_tasks(rt: Runtime) -> list:
    return [rt.huey.deserialize_task(data) for _k, data in rt.huey.storage.enqueued_page(0, 1000)]


# ---------------------------------------------------------------- execution and history


def test_jobs_run_and_record_history(rt, runner):
    ids = [rt.enqueue("TestEcho", i, tenant_id=7) for i in range(5)]
    runner()
    wait_until(lambda: len(runs(rt, status="success")) == 5, message="5 success rows")
    rows = {r.task_id: r for r in runs(rt)}
    assert set(rows) == set(ids)
    assert sorted(testjobs.ECHOED) == [0, 1, 2, 3, 4]
    for i, task_id in enumerate(ids):
        r = rows[task_id]
        assert (r.task_name, r.kind, r.status, r.attempt) == ("TestEcho", "job", "success", 1)
        assert r.tenant_id == 7
        assert r.args_summary == str(i)
        assert r.runner == rt.runner_id
        assert r.error is None
        assert r.enqueued_at <= r.started_at <= r.finished_at
        assert r.duration_s is not None and r.duration_s >= 0
    assert rt.huey.pending_count() == 0
    wait_until(lambda: rt.huey.storage.inflight_count() == 0, message="claims released")


def test_failing_job_retries_then_fails_once(rt, ops):
    task_id = rt.enqueue("TestFail", 7, tenant_id=3)
    assert work(rt) == 2  # the first attempt and its retry
    history = runs(rt, task_id=task_id)
    assert [(r.status, r.attempt) for r in history] == [("retrying", 1), ("failed", 2)]
    assert all(r.error == "ValueError: boom 7" for r in history)

    (row,) = failed_rows(rt)
    assert (row.task_id, row.task_name, row.attempts, row.reason) == (task_id, "TestFail", 2, "error")
    assert (row.exception_type, row.exception) == ("ValueError", "boom 7")
    assert "Traceback" in row.traceback and "ValueError: boom 7" in row.traceback
    assert row.args == {"args": [7], "kwargs": {}}
    assert row.tenant_id == 3
    page = ops.failed()
    assert page.total == 1 and page.items[0].id == row.id
    assert rt.huey.pending_count() == 0 and rt.huey.scheduled_count() == 0


def test_retry_failed_job_runs_a_new_attempt(rt, ops):
    rt.enqueue("TestFlaky", "a", tenant_id=5)
    work(rt)
    (failed,) = failed_rows(rt)

    (new_id,) = ops.retry([failed.id])
    assert new_id != failed.task_id
    (row,) = failed_rows(rt)
    assert row.retried_at is not None and row.retried_by == "tester" and row.retry_task_id == new_id
    assert ops.failed().total == 0  # a retried failure leaves the list
    assert [t.id for t in queued_tasks(rt)] == [new_id]

    with pytest.raises(NotFound, match=str(failed.id)):
        ops.retry([failed.id])
    assert rt.huey.pending_count() == 1

    testjobs.FLAKY["fail"] = False
    assert work(rt) == 1
    (run,) = runs(rt, task_id=new_id)
    assert (run.status, run.trigger, run.tenant_id) == ("success", "retry", 5)
    assert testjobs.ECHOED == [("flaky", "a")]
    assert len(failed_rows(rt)) == 1


def test_concurrent_retries_of_one_failure_make_one_task(rt):
    rt.enqueue("TestFailNow", 1)
    work(rt)
    (failed,) = failed_rows(rt)
    barrier = threading.Barrier(2)
    results: list = []

    def retry():
        op = Ops(rt, actor=Actor("tester", None, "cli"))
        barrier.wait()
        try:
            results.append(op.retry([failed.id]))
        except NotFound as exc:
            results.append(exc)

    threads = [threading.Thread(target=retry) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 2
    lists = [r for r in results if isinstance(r, list)]
    assert len(lists) == 1 and len(lists[0]) == 1, results
    assert sum(isinstance(r, NotFound) for r in results) == 1
    assert [t.id for t in queued_tasks(rt)] == lists[0]


def test_forget_restore_flush_prune(rt, ops):
    for i in range(3):
        rt.enqueue("TestFailNow", i)
    work(rt)
    ids = [r.id for r in failed_rows(rt)]
    assert len(ids) == 3 and ops.failed().total == 3

    assert ops.forget(ids[0]) == 1
    assert ops.failed().total == 2
    with pytest.raises(NotFound):
        ops.failed_detail(ids[0])
    with pytest.raises(NotFound):
        ops.forget(ids[0])  # already forgotten
    assert ops.restore([ids[0]]) == 1
    assert ops.failed_detail(ids[0]).traceback

    count, mark = ops.flush_failed()
    assert count == 3 and ops.failed().total == 0
    assert ops.restore(since=mark) == 3
    assert ops.failed().total == 3

    assert ops.prune_failed(hours=1) == 0  # all younger than an hour
    assert ops.failed().total == 3
    assert ops.prune_failed(hours=0) == 3
    assert failed_rows(rt) == []
    with pytest.raises(NotFound):  # pruned: nothing left to bring back
        ops.restore(ids)


# ---------------------------------------------------------------- batches


def batch_row(rt: Runtime, batch_id: str) -> JobBatch:
    rt.history.flush()
    with rt.read_session() as s:
        return s.get(JobBatch, batch_id)


def test_batch_progress_with_failures(rt, ops):
    batch_id = rt.dispatch_batch("numbers", "TestMaybeFail", [((i,), {}) for i in range(6)], tenant_id=2)
    b = batch_row(rt, batch_id)
    assert (b.total, b.pending, b.failed, b.finished_at) == (6, 6, 0, None)
    assert rt.huey.pending_count() == 6

    assert work(rt) == 6
    b = batch_row(rt, batch_id)
    assert (b.total, b.pending, b.failed) == (6, 0, 3)
    assert b.finished_at is not None
    failed = failed_rows(rt)
    assert sorted(b.failed_job_ids) == sorted(f.task_id for f in failed)
    assert all(f.batch_id == batch_id for f in failed)
    info = ops.batch(batch_id)
    assert (info.done, info.progress, info.failed) == (6, 1.0, 3)
    assert sorted(testjobs.ECHOED) == [0, 2, 4]


def test_cancelled_batch_jobs_are_skipped(rt, ops):
    batch_id = rt.dispatch_batch("echo", "TestEcho", [((i,), {}) for i in range(3)])
    ops.cancel_batch(batch_id)
    assert work(rt) == 3
    assert testjobs.ECHOED == []
    rows = runs(rt, batch_id=batch_id)
    assert [r.status for r in rows] == ["skipped"] * 3
    assert all("cancel" in (r.error or "") for r in rows)
    b = batch_row(rt, batch_id)
    assert b.cancelled_at is not None and b.pending == 0 and b.failed == 0
    assert failed_rows(rt) == []


# ---------------------------------------------------------------- schedule, cancel, paging


def test_delayed_job_goes_to_the_schedule_and_can_be_cancelled(rt, ops):
    before = utcnow()
    delayed = rt.enqueue("TestEcho", "later", delay=60)
    pending = rt.enqueue("TestEcho", "now")

    sched = ops.scheduled()
    assert sched.total == 1 and [j.id for j in sched.items] == [delayed]
    eta = sched.items[0].eta
    assert before + dt.timedelta(seconds=59) <= eta <= utcnow() + dt.timedelta(seconds=61)
    assert [j.id for j in ops.pending().items] == [pending]

    ops.cancel_job(delayed)
    assert ops.scheduled().total == 0
    ops.cancel_job(pending, key=ops.pending().items[0].key)
    assert ops.pending().total == 0
    with pytest.raises(NotFound, match=pending):
        ops.cancel_job(pending)
    assert work(rt) == 0 and testjobs.ECHOED == []


def test_due_scheduled_jobs_move_to_the_queue_in_one_step(rt, ops):
    """The scheduler never holds due tasks in memory (a crash there would lose
    them): the store moves them to the queue itself and hands Huey nothing."""
    soon = [rt.enqueue("TestEcho", i, delay=30) for i in range(3)]
    later = rt.enqueue("TestEcho", "later", delay=3600)
    assert ops.scheduled().total == 4
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)  # Huey's scheduler clock: naive UTC
    assert rt.huey.read_schedule(now) == []
    assert ops.scheduled().total == 4 and ops.pending().total == 0
    assert rt.huey.read_schedule(now + dt.timedelta(seconds=60)) == []
    assert [j.id for j in ops.scheduled().items] == [later]
    assert sorted(j.id for j in ops.pending().items) == sorted(soon)
    with pytest.MonkeyPatch.context() as mp:  # run them as if a minute had passed
        mp.setattr(rt.huey, "_get_timestamp", lambda: now + dt.timedelta(seconds=60))
        assert work(rt) == 3
    assert sorted(testjobs.ECHOED) == [0, 1, 2]


def test_pending_pages_in_fifo_order(rt, ops):
    ids = [rt.enqueue("TestEcho", i) for i in range(1000)]
    page = ops.pending(offset=990, limit=20)
    assert page.total == 1000
    assert [j.id for j in page.items] == ids[990:]
    assert [j.args_summary for j in page.items] == [str(i) for i in range(990, 1000)]
    first = ops.pending(offset=0, limit=3)
    assert [j.id for j in first.items] == ids[:3]
    assert all(j.state == "pending" for j in page.items)


# ---------------------------------------------------------------- in flight and recovery


def test_running_job_is_tracked_in_flight(rt, ops, runner):
    started, release = testjobs.block("r1")
    task_id = rt.enqueue("TestBlock", "r1")
    runner()
    assert started.wait(30), "the job never started"
    page = ops.running()
    assert page.total == 1
    (info,) = page.items
    assert (info.id, info.task_name, info.state, info.runner) == (task_id, "TestBlock", "running", rt.runner_id)
    assert utcnow() - dt.timedelta(seconds=30) < info.started_at <= utcnow()  # "running for how long"
    assert rt.huey.pending_count() == 0

    release.set()
    wait_until(lambda: ops.running().total == 0, message="the finished job to leave in-flight")
    assert ops.running().items == []
    wait_until(lambda: runs(rt, task_id=task_id, status="success"), message="its success row")


def claim_as_ghost(rt: Runtime):
    """Take the next queued task the way a runner with id GHOST would."""
    storage = rt.huey.storage
    own = storage.runner_id
    storage.runner_id = GHOST
    try:
        if hasattr(storage, "register_runner"):
            storage.register_runner()  # what a consumer's heartbeat does first
        data = storage.dequeue()
    finally:
        storage.runner_id = own
        storage.drop_claim()
    assert data is not None
    return data


def add_ghost_runner(rt: Runtime, heartbeat_age_s: float, pid: int = 1, host: str = "elsewhere") -> None:
    now = utcnow()
    with rt.session() as s:
        s.merge(Runner(id=GHOST, host=host, pid=pid, workers=1, periodic=False, kind="consumer",
                       queue=rt.queue_label, started_at=now - dt.timedelta(hours=1),
                       heartbeat_at=now - dt.timedelta(seconds=heartbeat_age_s), stopped_at=None))


def test_live_runner_work_is_not_recovered(rt):
    import os
    import socket

    rt.enqueue("TestEcho", "mine")
    claim_as_ghost(rt)
    add_ghost_runner(rt, heartbeat_age_s=0, pid=os.getpid(), host=socket.gethostname())
    assert rt.recover_dead_runners() == 0
    assert rt.huey.pending_count() == 0
    assert rt.huey.storage.inflight_count() == 1


def test_dead_runner_work_is_recovered_then_abandoned(rt, ops):
    max_rec = rt.settings.runner.max_recoveries
    task_id = rt.enqueue("TestEcho", "poison", tenant_id=4)
    add_ghost_runner(rt, heartbeat_age_s=3600)

    for n in range(1, max_rec + 1):
        claim_as_ghost(rt)
        assert rt.huey.pending_count() == 0
        running = ops.running()
        assert running.total == 1 and running.items[0].runner == GHOST
        assert rt.recover_dead_runners() == 1
        (task,) = queued_tasks(rt)
        assert task.id == task_id and task.args == ("poison",)
        assert task.erpq["recoveries"] == n
        assert rt.huey.storage.inflight_count() == 0
        assert failed_rows(rt) == []

    claim_as_ghost(rt)
    assert rt.recover_dead_runners() == 1
    assert rt.huey.pending_count() == 0 and rt.huey.storage.inflight_count() == 0
    (row,) = failed_rows(rt)
    assert (row.task_id, row.reason, row.exception_type) == (task_id, "abandoned", "Abandoned")
    assert str(max_rec) in row.exception and row.tenant_id == 4
    with rt.read_session() as s:
        assert s.get(Runner, GHOST).stopped_at is not None
    assert testjobs.ECHOED == []


def test_recovered_job_runs_to_completion(rt):
    task_id = rt.enqueue("TestEcho", "again")
    add_ghost_runner(rt, heartbeat_age_s=3600)
    claim_as_ghost(rt)
    assert rt.recover_dead_runners() == 1
    assert rt.recover_dead_runners() == 0  # nothing left to recover
    assert work(rt) == 1
    assert testjobs.ECHOED == ["again"]
    (run,) = runs(rt, task_id=task_id)
    assert run.status == "success"
    assert rt.huey.storage.inflight_count() == 0


def test_dead_runner_locks_are_released_on_recovery(rt):
    from erpq.runtime import locks

    rt.enqueue("TestEcho", "x")
    add_ghost_runner(rt, heartbeat_age_s=3600)
    assert locks.acquire(rt.Session, "periodic:crm:check-activity-reminders", GHOST, 600)
    claim_as_ghost(rt)
    assert rt.recover_dead_runners() == 1
    assert locks.holder_of(rt.Session, "periodic:crm:check-activity-reminders") is None


# ---------------------------------------------------------------- more retry paths


def test_delayed_retry_waits_on_the_schedule(rt, ops):
    task_id = rt.enqueue("TestFailDelayed", 1)
    assert work(rt) == 1
    assert [r.status for r in runs(rt, task_id=task_id)] == ["retrying"]
    sched = ops.scheduled()
    assert sched.total == 1
    (info,) = sched.items
    assert (info.id, info.attempt) == (task_id, 2)
    assert info.eta >= utcnow() + dt.timedelta(seconds=50)
    assert rt.huey.pending_count() == 0 and rt.huey.storage.inflight_count() == 0
    assert failed_rows(rt) == []


def test_batch_counts_a_retried_job_once(rt):
    batch_id = rt.dispatch_batch("fails", "TestFail", [((1,), {}), ((2,), {})])
    assert work(rt) == 4
    b = batch_row(rt, batch_id)
    assert (b.total, b.pending, b.failed) == (2, 0, 2)
    assert b.finished_at is not None


# ---------------------------------------------------------------- runners


def test_runner_registers_and_marks_itself_stopped(rt, ops):
    r = EmbeddedRunner(rt, workers=1, periodic=False)
    r.start()
    try:
        (info,) = [x for x in ops.runners() if x.id == rt.runner_id]
        assert info.alive and info.kind == "embedded" and info.workers == 1
        first_beat = info.heartbeat_at
        wait_until(lambda: next(x for x in ops.runners() if x.id == rt.runner_id).heartbeat_at > first_beat,
                   message="a heartbeat")
    finally:
        r.stop()
    assert [x for x in ops.runners() if x.id == rt.runner_id] == []
    (info,) = [x for x in ops.runners(include_stopped=True) if x.id == rt.runner_id]
    assert info.stopped_at is not None and not info.alive


def test_runner_declared_dead_comes_back(rt, runner):
    runner(workers=1)
    with rt.session() as s:  # what another runner's reaper does after a long stall
        s.get(Runner, rt.runner_id).stopped_at = utcnow()

    def alive_again():
        with rt.read_session() as s:
            return s.get(Runner, rt.runner_id).stopped_at is None

    wait_until(alive_again, message="the runner to re-register")
    rt.enqueue("TestEcho", "still working")
    wait_until(lambda: testjobs.ECHOED == ["still working"], message="the job to run")


def test_graceful_stop_waits_for_running_job(rt, ops):
    started, release = testjobs.block("g1")
    task_id = rt.enqueue("TestBlock", "g1")
    r = EmbeddedRunner(rt, workers=1, periodic=False)
    r.start()
    assert started.wait(30)
    stopper = threading.Thread(target=r.stop)
    stopper.start()
    stopper.join(0.3)
    assert stopper.is_alive()  # still waiting for the job
    release.set()
    stopper.join(30)
    assert not stopper.is_alive()
    assert [x.status for x in runs(rt, task_id=task_id)] == ["success"]
    assert rt.huey.storage.inflight_count() == 0


# ---------------------------------------------------------------- retention


def test_prune_keeps_the_newest_history_rows_and_drops_old_forgotten_failures(tmp_path):
    from conftest import make_settings

    rt = Runtime(make_settings(tmp_path, retention={"history_rows": 5, "undo_minutes": 10}))
    try:
        ids = [rt.enqueue("TestEcho", i) for i in range(8)]
        for _ in range(3):
            rt.enqueue("TestFailNow", 0)
        work(rt)
        rt.history.flush()
        ops = Ops(rt, actor=Actor("tester", None, "cli"))
        fids = [f.id for f in failed_rows(rt)]
        ops.forget(fids[:2])
        with rt.session() as s:  # one forgotten long ago, one just now
            s.get(FailedJob, fids[0]).deleted_at = utcnow() - dt.timedelta(minutes=11)
        out = rt.prune()
        assert out["job_runs"] == 6 and out["failed_jobs"] == 1
        remaining = runs(rt)
        assert len(remaining) == 5
        assert [r.task_id for r in remaining if r.task_name == "TestEcho"] == ids[6:]
        assert [f.id for f in failed_rows(rt)] == fids[1:]
    finally:
        rt.close()
