"""Retry strategies (erpq.runtime.retry) and their use by the runtime on each
queue store; task data naming a job this runner does not know goes to
failed_jobs (on dequeue and on recovery), never dropped; pruning of runners."""

from __future__ import annotations

import datetime as dt
import random
import time

import pytest
import sqlalchemy as sa

import testjobs  # noqa: F401  (registers TestEcho, TestFailDelayed)
from draining import drain
from erpq.capability import Capability
from erpq.db import utcnow
from erpq.models import FailedJob, JobBatch, Runner
from erpq.ops import Actor, Ops
from erpq.runtime import JOBS, Runtime, job
from erpq.runtime.retry import Delays, Exponential, Fixed, RetryAfter, RetryAt, legacy

CALLS: list[str] = []


@job("TestRetryDelays", retries=3, retry=Delays([10, 100]))
def retry_delays_job(x=None):
    CALLS.append("delays")
    raise ValueError(f"delays {x}")


@job("TestRetryAfter", retries=2, retry=Fixed(1))
def retry_after_job(seconds=500):
    CALLS.append("after")
    raise RetryAfter(seconds)


@job("TestRetryAt", retries=1, retry=Exponential(1, 2))
def retry_at_job(epoch=0.0):
    CALLS.append("at")
    raise RetryAt(epoch)


@job("TestRetryThenOk", retries=2, retry=Exponential(5, 3, max=30))
def retry_then_ok_job():
    CALLS.append("then-ok")
    if CALLS.count("then-ok") < 3:
        raise RuntimeError("not yet")


@pytest.fixture(autouse=True)
def _reset_calls():
    CALLS.clear()
    yield
    CALLS.clear()


@pytest.fixture
def rt(store_runtime: Runtime) -> Runtime:
    return store_runtime


def failed_rows(rt: Runtime) -> list[FailedJob]:
    with rt.read_session() as s:
        return list(s.scalars(sa.select(FailedJob).order_by(FailedJob.id)))


def scheduled(rt: Runtime) -> list[tuple[object, object, float]]:
    """(key, task, seconds from now until its eta) of every scheduled task."""
    out = []
    for key, data, _ts in rt.huey.storage.scheduled_page(0, 100):
        task = rt.huey.deserialize_task(data)
        out.append((key, task, (task.eta - utcnow().replace(tzinfo=None)).total_seconds()))
    return out


def run_scheduled_now(rt: Runtime) -> None:
    """Take the one scheduled task off the schedule and run it as if its time had come."""
    ((key, task, _),) = scheduled(rt)
    assert rt.huey.storage.remove_scheduled(key)
    rt.huey.execute(task, task.eta + dt.timedelta(seconds=1))


# ---------------------------------------------------------------- strategies


def test_fixed_exponential_and_delays():
    assert [Fixed(7).delay(n) for n in (1, 2, 5)] == [7, 7, 7]
    assert [Exponential(1, 2, max=10).delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert [Exponential(3).delay(n) for n in (1, 2, 3)] == [3, 6, 12]
    assert [Delays([5, 300, 3600]).delay(n) for n in range(1, 6)] == [5, 300, 3600, 3600, 3600]
    assert Delays([5]).delay(0) == 5  # attempt counts below 1 act as the first retry


def test_jitter_adds_up_to_its_fraction():
    rng = random.Random(1)
    s = Delays([100], jitter=0.1)
    values = [s.delay(1, rng=rng) for _ in range(200)]
    assert all(100 <= v <= 110 for v in values)
    assert len({round(v, 6) for v in values}) > 100  # spread out
    assert Fixed(0, jitter=0.5).delay(1) == 0


def test_not_before_is_a_floor_capped_at_a_day():
    assert Fixed(10).delay(1, not_before=3) == 10
    assert Fixed(10).delay(1, not_before=600) == 600
    assert Fixed(10).delay(1, not_before=10 * 86400) == 86400
    assert Fixed(10, max_not_before=60).delay(1, not_before=600) == 60


def test_retry_exceptions_say_how_long():
    assert RetryAfter(30).seconds() == 30
    assert RetryAfter(-5).seconds() == 0
    now = time.time()
    assert RetryAt(now + 120).seconds(now) == pytest.approx(120)
    aware = dt.datetime.fromtimestamp(now + 60, dt.UTC)
    assert RetryAt(aware).seconds(now) == pytest.approx(60)
    assert RetryAt(aware.replace(tzinfo=None)).seconds(now) == pytest.approx(60)  # naive = UTC
    assert RetryAt(now - 100).seconds(now) == 0


def test_invalid_strategies_are_refused():
    with pytest.raises(ValueError):
        Delays([])
    with pytest.raises(ValueError):
        Fixed(1, jitter=2)


def test_legacy_retry_delay_and_backoff_map_to_strategies():
    assert legacy(60, 0) == Fixed(60)
    assert legacy(0, 2) == Fixed(0)
    assert legacy(2, 3) == Exponential(2, 3)
    assert JOBS["TestFailDelayed"].strategy == Fixed(60)  # tests/testjobs.py: retry_delay=60
    assert JOBS["TestRetryDelays"].strategy == Delays([10, 100])


def test_job_refuses_both_retry_and_retry_delay():
    with pytest.raises(ValueError, match="not both"):
        job("TestRetryBoth", retries=1, retry=Fixed(1), retry_delay=5)
    with pytest.raises(TypeError):
        job("TestRetryBad", retries=1, retry=5)
    assert "TestRetryBoth" not in JOBS and "TestRetryBad" not in JOBS


def test_capability_job_passes_retry_through():
    cap = Capability("retry_fixture")

    @cap.job("TestCapRetry", retries=2, retry=Delays([1, 2], jitter=0.2))
    def cap_job():
        pass

    try:
        spec = JOBS["TestCapRetry"]
        assert (spec.capability, spec.retries, spec.retry) == ("retry_fixture", 2, Delays([1, 2], jitter=0.2))
    finally:
        JOBS.pop("TestCapRetry", None)


# ---------------------------------------------------------------- in the runtime


def test_strategy_sets_each_retry_delay(rt):
    task_id = rt.enqueue("TestRetryDelays", 1)
    assert drain(rt) == 1
    ((_, task, wait),) = scheduled(rt)
    assert task.id == task_id and task.erpq["attempt"] == 2
    assert 8 <= wait <= 10.5
    run_scheduled_now(rt)
    ((_, task, wait),) = scheduled(rt)
    assert task.erpq["attempt"] == 3 and 98 <= wait <= 100.5
    run_scheduled_now(rt)
    ((_, task, wait),) = scheduled(rt)
    assert task.erpq["attempt"] == 4 and 98 <= wait <= 100.5  # the last delay repeats
    run_scheduled_now(rt)
    assert scheduled(rt) == [] and rt.huey.pending_count() == 0
    assert rt.huey.storage.inflight_count() == 0
    (row,) = failed_rows(rt)
    assert (row.task_id, row.attempts, row.reason) == (task_id, 4, "error")
    assert CALLS == ["delays"] * 4


def test_retry_then_success(rt):
    rt.enqueue("TestRetryThenOk")
    drain(rt)
    ((_, _, wait),) = scheduled(rt)
    assert 3 <= wait <= 5.5
    run_scheduled_now(rt)
    ((_, _, wait),) = scheduled(rt)
    assert 13 <= wait <= 15.5
    run_scheduled_now(rt)
    assert scheduled(rt) == [] and failed_rows(rt) == []
    assert CALLS == ["then-ok"] * 3


def test_retry_after_is_honoured(rt):
    rt.enqueue("TestRetryAfter", 500)
    drain(rt)
    ((_, task, wait),) = scheduled(rt)
    assert 495 <= wait <= 500.5
    run_scheduled_now(rt)
    ((_, task, wait),) = scheduled(rt)
    assert 495 <= wait <= 500.5 and task.erpq["attempt"] == 3
    run_scheduled_now(rt)  # retries used up: a RetryAfter is a failed attempt
    (row,) = failed_rows(rt)
    assert row.exception_type == "RetryAfter" and row.attempts == 3


def test_retry_at_an_explicit_time(rt):
    when = time.time() + 3600
    rt.enqueue("TestRetryAt", when)
    drain(rt)
    ((_, task, wait),) = scheduled(rt)
    assert 3590 <= wait <= 3600.5


def test_legacy_retry_delay_still_works(rt):
    rt.enqueue("TestFailDelayed", 1)
    drain(rt)
    ((_, task, wait),) = scheduled(rt)
    assert 58 <= wait <= 60.5 and task.retry_backoff == 0


# ---------------------------------------------------------------- unknown tasks


def unknown_task_data(rt: Runtime, name: str = "GoneCapabilityJob", **meta) -> bytes:
    """Task data as a runner with a job ``name`` (not installed here) would enqueue it."""
    task = rt.tasks["TestEcho"].s("payload", tenant_id=9)
    message = rt.huey._registry.create_message(task)
    assert message.name.endswith(".TestEcho")  # Huey's identifier: "module.JobName"
    message = message._replace(name=f"gone.capability.{name}")
    return rt.huey.serializer.serialize((message, {"attempt": 1, **meta}))


def test_unknown_task_on_dequeue_goes_to_failed_jobs(rt):
    rt.huey.storage.enqueue(unknown_task_data(rt))
    echo_id = rt.enqueue("TestEcho", "after")
    assert drain(rt) == 1  # the unknown one is failed, the next one runs
    (row,) = failed_rows(rt)
    assert (row.task_name, row.reason, row.exception_type) == ("GoneCapabilityJob", "unknown_task", "UnknownTask")
    assert row.exception == "unknown task GoneCapabilityJob: not registered in this runner"
    assert row.args == {"args": ["payload"], "kwargs": {"tenant_id": 9}} and row.tenant_id == 9
    assert rt.huey.decode(row.payload)[0].name == "gone.capability.GoneCapabilityJob"  # kept, for a retry
    assert rt.huey.pending_count() == 0 and rt.huey.storage.inflight_count() == 0
    assert echo_id


def test_unknown_task_of_a_batch_counts_as_failed(rt):
    with rt.session() as s:
        s.add(JobBatch(id="b-unknown", name="b", kind="jobs", total=1, pending=1, failed=0,
                       failed_job_ids=[]))
    rt.huey.storage.enqueue(unknown_task_data(rt, batch_id="b-unknown"))
    assert drain(rt) == 0
    rt.history.flush()
    with rt.read_session() as s:
        b = s.get(JobBatch, "b-unknown")
        assert (b.pending, b.failed) == (0, 1)


def add_dead_runner(rt: Runtime, rid: str) -> None:
    now = utcnow()
    with rt.session() as s:
        s.add(Runner(id=rid, host="elsewhere", pid=1, workers=1, periodic=False, kind="consumer",
                     queue=rt.queue_label, started_at=now - dt.timedelta(hours=1),
                     heartbeat_at=now - dt.timedelta(hours=1), stopped_at=None))


def claim_as(rt: Runtime, rid: str) -> None:
    storage = rt.huey.storage
    own, storage.runner_id = storage.runner_id, rid
    try:
        if hasattr(storage, "register_runner"):
            storage.register_runner()
        assert storage.dequeue() is not None
    finally:
        storage.runner_id = own
        storage.drop_claim()


def test_unknown_task_on_recovery_goes_to_failed_jobs(rt):
    ops = Ops(rt, actor=Actor("tester", None, "cli"))
    rt.huey.storage.enqueue(unknown_task_data(rt, "RemovedJob"))
    add_dead_runner(rt, "ghost:2:y")
    claim_as(rt, "ghost:2:y")
    assert rt.huey.storage.inflight_count() == 1
    assert ops.recover() == 1  # what 'erpq queue recover' reports
    assert rt.huey.storage.inflight_count() == 0 and rt.huey.pending_count() == 0
    (row,) = failed_rows(rt)
    assert (row.task_name, row.reason, row.runner) == ("RemovedJob", "unknown_task", "ghost:2:y")
    assert "unknown task RemovedJob: not registered in this runner" == row.exception


def test_undecodable_data_on_recovery_goes_to_failed_jobs(rt):
    rt.huey.storage.enqueue(b"\x00not a pickle")
    add_dead_runner(rt, "ghost:3:z")
    claim_as(rt, "ghost:3:z")
    assert rt.recover_dead_runners() == 1
    (row,) = failed_rows(rt)
    assert row.reason == "unreadable" and bytes(row.payload) == b"\x00not a pickle"
    assert rt.huey.storage.inflight_count() == 0


def test_unknown_task_not_recorded_stays_in_flight(rt, monkeypatch):
    rt.huey.storage.enqueue(unknown_task_data(rt))
    add_dead_runner(rt, "ghost:4:w")
    claim_as(rt, "ghost:4:w")

    def broken(*a, **k):
        raise RuntimeError("database down")

    monkeypatch.setattr(rt.huey, "record_unreadable", broken)
    assert rt.recover_dead_runners() == 0
    assert rt.huey.storage.inflight_count() == 1  # kept for the next recovery
    monkeypatch.undo()
    assert rt.recover_dead_runners() == 1
    assert [r.reason for r in failed_rows(rt)] == ["unknown_task"]


# ---------------------------------------------------------------- retention of runners


def test_prune_drops_stopped_runners_past_history_days(rt):
    days = rt.settings.retention.history_days
    now = utcnow()
    with rt.session() as s:
        for rid, stopped in (("old", now - dt.timedelta(days=days + 1)),
                             ("recent", now - dt.timedelta(days=days - 1)), ("live", None)):
            s.add(Runner(id=rid, host="h", pid=1, workers=1, periodic=False, kind="consumer",
                         queue=rt.queue_label, started_at=now - dt.timedelta(days=days + 2),
                         heartbeat_at=now - dt.timedelta(days=days + 2), stopped_at=stopped))
    assert rt.prune()["runners"] == 1
    with rt.read_session() as s:
        assert sorted(s.scalars(sa.select(Runner.id))) == ["live", "recent"]


# ---------------------------------------------------------------- webhooks use the strategy


def test_webhook_backoff_is_the_delays_strategy_with_the_old_results():
    from erpq.webhooks.capability import WebhookSettings
    from erpq.webhooks.delivery import backoff_delay

    ws = WebhookSettings()

    def old(attempts, retry_after, rng):  # the formula delivery.py had before
        delay = ws.backoff_s[min(attempts, len(ws.backoff_s)) - 1] * (1 + rng.uniform(0, ws.jitter))
        return delay if retry_after is None else max(delay, min(retry_after, 86400.0))

    for attempts in range(1, len(ws.backoff_s) + 3):
        for retry_after in (None, 0, 7, 10**6):
            assert backoff_delay(ws, attempts, retry_after, random.Random(attempts)) == \
                old(attempts, retry_after, random.Random(attempts))
