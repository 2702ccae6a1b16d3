"""Periodic tasks: cron arithmetic, one enqueue per task and tick across runners,
pause/resume, missed ticks skipped, overlap locks with leases."""

from __future__ import annotations

import datetime as dt
import threading
import uuid

import pytest
import sqlalchemy as sa

from conftest import REDIS_URL, _reset_redis, make_settings, need, redis_available
from draining import drain
from erpq.db import utcnow
from erpq.models import JobRun, Lock
from erpq.ops import Actor, Ops
from erpq.runtime import EmbeddedRunner, Runtime, locks
from erpq.runtime import app as runtime_app
from erpq.runtime.registry import JOBS, JobSpec, load_capabilities
from erpq.runtime.schedule import describe, due_tick, latest_tick, next_tick
from polling import wait_until

UTC = dt.UTC
NAME = "crm:check-activity-reminders"
LOCK = f"periodic:{NAME}"


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


# ---------------------------------------------------------------- cron arithmetic


def test_latest_tick():
    assert latest_tick("*/5 * * * *", at("2030-01-01T12:07:30")) == at("2030-01-01T12:05:00")
    assert latest_tick("*/5 * * * *", at("2030-01-01T12:05:00")) == at("2030-01-01T12:05:00")
    assert latest_tick("*/5 * * * *", at("2030-01-01T12:04:59.999")) == at("2030-01-01T12:00:00")
    assert latest_tick("0 1 * * *", at("2030-01-01T00:30:00")) == at("2029-12-31T01:00:00")


def test_next_tick_is_strictly_after():
    assert next_tick("*/5 * * * *", at("2030-01-01T12:07:30")) == at("2030-01-01T12:10:00")
    assert next_tick("*/5 * * * *", at("2030-01-01T12:05:00")) == at("2030-01-01T12:10:00")
    assert next_tick("0 2 * * *", at("2030-01-01T02:00:01")) == at("2030-01-02T02:00:00")


def test_due_tick_respects_missed_grace():
    expr = "0 * * * *"
    assert due_tick(expr, at("2030-01-01T12:00:00"), 120) == at("2030-01-01T12:00:00")
    assert due_tick(expr, at("2030-01-01T12:01:59"), 120) == at("2030-01-01T12:00:00")
    assert due_tick(expr, at("2030-01-01T12:02:00"), 120) == at("2030-01-01T12:00:00")
    assert due_tick(expr, at("2030-01-01T12:02:01"), 120) is None
    assert due_tick(expr, at("2030-01-01T12:59:00"), 120) is None


def test_day_of_month_and_weekday_are_ored_like_cron():
    # 2030-01-05 is a Saturday: "the 1st, or any Saturday" matches it (Huey's crontab ANDs).
    assert latest_tick("0 0 1 * 6", at("2030-01-05T10:00:00")) == at("2030-01-05T00:00:00")


def test_timezone():
    # 09:00 in Berlin is 07:00 UTC in summer (CEST) and 08:00 UTC in winter (CET).
    assert latest_tick("0 9 * * *", at("2030-07-01T08:00:00"), "Europe/Berlin") == at("2030-07-01T07:00:00")
    assert latest_tick("0 9 * * *", at("2030-01-15T09:00:00"), "Europe/Berlin") == at("2030-01-15T08:00:00")
    assert next_tick("0 9 * * *", at("2030-07-01T06:00:00"), "Europe/Berlin") == at("2030-07-01T07:00:00")
    assert next_tick("0 9 * * *", at("2030-07-01T07:00:00"), "Europe/Berlin") == at("2030-07-02T07:00:00")
    # ... and the same instant in UTC is a different tick
    assert latest_tick("0 9 * * *", at("2030-07-01T08:00:00")) == at("2030-06-30T09:00:00")
    # a time zone east of UTC: the local day starts on the previous UTC day
    assert due_tick("0 0 * * *", at("2030-03-01T15:01:00"), 120, "Asia/Tokyo") == at("2030-03-01T15:00:00")


def test_describe():
    assert "5 minutes" in describe("*/5 * * * *")
    assert describe("not a cron") == "not a cron"


# ---------------------------------------------------------------- periodic ticks


@pytest.fixture
def calls(monkeypatch) -> list:
    """Make NAME the only periodic task, recording its runs in the returned list."""
    calls: list = []

    def check_activity_reminders():
        calls.append(utcnow())

    load_capabilities()  # first, so a capability imported later cannot add its periodic tasks back
    for name, spec in list(JOBS.items()):
        if spec.periodic:
            monkeypatch.delitem(JOBS, name)
    monkeypatch.setitem(JOBS, NAME, JobSpec(NAME, check_activity_reminders, periodic=True,
                                            description="test stand-in"))
    return calls


@pytest.fixture
def clock(monkeypatch):
    """Freeze the time the periodic check sees; ``clock.now`` can be moved."""

    class Clock:
        now = at("2030-01-01T12:00:10")

    c = Clock()
    monkeypatch.setattr(runtime_app, "utcnow", lambda: c.now)
    monkeypatch.setattr(runtime_app, "db_now", lambda _session: c.now)  # the periodic check's clock
    return c


@pytest.fixture
def runtimes(tmp_path, calls):
    made: list[Runtime] = []
    redis_names: list[str] = []

    def make(**sections) -> Runtime:
        sections.setdefault("schedule", {})
        sections["schedule"] = {"cron": {NAME: "* * * * *"}, **sections["schedule"]}
        q = sections.get("queue", {})
        if q.get("url", "").startswith("redis"):
            redis_names.append(q["name"])
        rt = Runtime(make_settings(tmp_path, **sections))
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.close()
    for name in redis_names:
        _reset_redis(REDIS_URL, name)


def tick(rt: Runtime) -> list:
    """What the consumer's scheduler does each periodic check."""
    tasks = rt.huey.read_periodic(None)
    for task in tasks:
        rt.huey.enqueue(task)
    return tasks


def periodic_runs(rt: Runtime) -> list[JobRun]:
    with rt.read_session() as s:
        return list(s.scalars(sa.select(JobRun).where(JobRun.task_name == NAME).order_by(JobRun.id)))


def queued(rt: Runtime) -> list:
    return [rt.huey.deserialize_task(d) for _k, d in rt.huey.storage.enqueued_page(0, 100)]


execute_all = drain

def test_due_task_is_enqueued_once_and_runs(runtimes, clock, calls):
    rt = runtimes()
    (task,) = tick(rt)
    assert task.name == NAME
    (run,) = periodic_runs(rt)
    assert (run.kind, run.trigger, run.status, run.tick) == ("periodic", "schedule", "enqueued",
                                                             at("2030-01-01T12:00:00"))
    assert run.task_id == task.id
    assert tick(rt) == []  # same tick again: nothing
    clock.now = at("2030-01-01T12:00:55")
    assert tick(rt) == []

    assert execute_all(rt) == 1
    assert len(calls) == 1
    (run,) = periodic_runs(rt)
    assert run.status == "success" and run.runner == rt.runner_id
    assert run.started_at is not None and run.finished_at is not None and run.duration_s >= 0

    clock.now = at("2030-01-01T12:01:00")
    assert len(tick(rt)) == 1
    assert [r.tick for r in periodic_runs(rt)] == [at("2030-01-01T12:00:00"), at("2030-01-01T12:01:00")]


def _two_runners_one_tick(rt1: Runtime, rt2: Runtime) -> None:
    fired = tick(rt1) + tick(rt2) + tick(rt2) + tick(rt1)
    assert len(fired) == 1
    assert len(periodic_runs(rt1)) == 1
    assert [t.id for t in queued(rt1)] == [fired[0].id]
    assert rt2.huey.pending_count() == 1


def test_two_runners_on_sqlite_fire_once_per_tick(runtimes, clock):
    _two_runners_one_tick(runtimes(), runtimes())


def test_two_runners_on_redis_fire_once_per_tick(runtimes, clock):
    need("Redis", redis_available(), REDIS_URL)
    queue = {"url": REDIS_URL, "name": f"t{uuid.uuid4().hex[:10]}"}
    _two_runners_one_tick(runtimes(queue=queue), runtimes(queue=queue))


def test_concurrent_checks_fire_once(runtimes, clock):
    rts = [runtimes() for _ in range(4)]
    barrier = threading.Barrier(len(rts))
    fired: list = []
    errors: list = []

    def check(rt):
        barrier.wait()
        try:
            fired.extend(tick(rt))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=check, args=(rt,)) for rt in rts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(fired) == 1 and len(periodic_runs(rts[0])) == 1
    assert rts[0].huey.pending_count() == 1


def test_pause_and_resume_persist(runtimes, clock):
    rt = runtimes()
    ops = Ops(rt, actor=Actor("tester", None, "cli"))
    ops.pause(NAME)
    assert tick(rt) == []
    (missed,) = periodic_runs(rt)  # the tick that passed while paused is on record
    assert (missed.status, missed.error, missed.tick) == ("missed", "paused", at("2030-01-01T12:00:00"))
    assert rt.huey.pending_count() == 0

    rt2 = runtimes()  # a new runtime (e.g. after a restart) sees the pause
    assert NAME in rt2.paused_tasks()
    assert tick(rt2) == []
    entry = next(e for e in Ops(rt2).schedule() if e.name == NAME)
    assert entry.paused and entry.next_run_at is None

    ops.resume(NAME)
    assert NAME not in rt2.paused_tasks()
    assert tick(rt2) == []  # the paused tick stays missed
    clock.now = at("2030-01-01T12:01:10")
    assert len(tick(rt2)) == 1
    assert rt.huey.pending_count() == 1


def test_missed_tick_is_skipped(runtimes, clock):
    rt = runtimes(schedule={"cron": {NAME: "0 * * * *"}, "missed_grace_s": 120})
    clock.now = at("2030-01-01T12:05:00")  # five minutes late: past the grace period
    assert tick(rt) == [] and periodic_runs(rt) == []  # first check of a new install: nothing on record
    clock.now = at("2030-01-01T13:01:30")  # 90 s late: within it
    assert len(tick(rt)) == 1
    assert [r.tick for r in periodic_runs(rt)] == [at("2030-01-01T13:00:00")]
    clock.now = at("2030-01-01T15:05:00")  # 14:00 and 15:00 passed unfired: on record as missed
    assert tick(rt) == []
    assert [(r.tick, r.status) for r in periodic_runs(rt)][1:] == [(at("2030-01-01T14:00:00"), "missed"),
                                                                    (at("2030-01-01T15:00:00"), "missed")]
    assert "runner down" in periodic_runs(rt)[-1].error


def test_run_is_skipped_while_a_live_holder_has_the_lock(runtimes, clock, calls):
    rt = runtimes()
    assert locks.acquire(rt.Session, LOCK, "other-runner:1:abc", 120)
    tick(rt)
    assert execute_all(rt) == 1
    assert calls == []
    (run,) = periodic_runs(rt)
    assert run.status == "missed"  # a scheduled tick that did not run
    assert "other-runner:1:abc" in run.error and "lease until" in run.error
    assert locks.holder_of(rt.Session, LOCK).holder == "other-runner:1:abc"  # not stolen
    assert rt.huey.pending_count() == 0  # skipped, not queued behind


def test_lock_with_expired_lease_is_taken(runtimes, clock, calls):
    rt = runtimes()
    past = utcnow() - dt.timedelta(seconds=5)
    with rt.session() as s:
        s.add(Lock(name=LOCK, holder="dead-runner:1:abc", acquired_at=past - dt.timedelta(minutes=5),
                   expires_at=past))
    tick(rt)
    assert execute_all(rt) == 1
    assert len(calls) == 1
    (run,) = periodic_runs(rt)
    assert run.status == "success" and run.runner == rt.runner_id
    with rt.read_session() as s:
        assert s.get(Lock, LOCK) is None  # released after the run


def test_manual_trigger_runs_besides_the_schedule(runtimes, clock, calls):
    rt = runtimes()
    tick(rt)
    task_id = Ops(rt, actor=Actor("tester", None, "cli")).trigger(NAME)
    assert execute_all(rt) == 2
    assert len(calls) == 2
    runs = periodic_runs(rt)
    assert sorted(r.trigger for r in runs) == ["manual", "schedule"]
    manual = next(r for r in runs if r.trigger == "manual")
    assert manual.task_id == task_id and manual.tick is None and manual.status == "success"


def test_embedded_runner_fires_due_task(runtimes, calls):
    rt = runtimes()
    runner = EmbeddedRunner(rt, workers=1, periodic=True)
    runner.start()
    try:
        wait_until(lambda: calls, message="the periodic task to run")
        wait_until(lambda: [r for r in periodic_runs(rt) if r.status == "success"], message="its success row")
    finally:
        runner.stop()
    done = [r for r in periodic_runs(rt) if r.status == "success"]
    # one run per tick (two if the test straddled a minute boundary)
    assert 1 <= len(done) <= 2 and len({r.tick for r in done}) == len(done)
    assert all(r.trigger == "schedule" and r.tick <= utcnow() for r in done)


def test_failed_periodic_run_is_recorded(runtimes, clock, calls, monkeypatch):
    def broken():
        calls.append("broken")
        raise RuntimeError("reminders exploded")

    monkeypatch.setitem(JOBS, NAME, JobSpec(NAME, broken, periodic=True, description="broken"))
    rt = runtimes()
    tick(rt)
    execute_all(rt)
    (run,) = periodic_runs(rt)
    assert run.status == "failed" and "reminders exploded" in run.error
    assert run.finished_at is not None and run.runner == rt.runner_id
    assert locks.holder_of(rt.Session, LOCK) is None  # released after a failure too
    (failed,) = Ops(rt).failed().items
    assert failed.task_name == NAME and failed.exception == "reminders exploded"


def test_failed_periodic_run_can_be_retried(runtimes, clock, calls, monkeypatch):
    spec = JOBS[NAME]

    def broken():
        calls.append("broken")
        raise RuntimeError("reminders exploded")

    monkeypatch.setitem(JOBS, NAME, JobSpec(NAME, broken, periodic=True, description="broken"))
    rt = runtimes(database={"busy_timeout_s": 1.0})  # a lock-up fails after 1 s, not 30
    tick(rt)
    execute_all(rt)
    (run,) = periodic_runs(rt)
    assert run.status == "failed" and "reminders exploded" in run.error
    assert locks.holder_of(rt.Session, LOCK) is None  # released after a failure too
    ops = Ops(rt, actor=Actor("tester", None, "cli"))
    (failed,) = ops.failed().items
    assert failed.task_name == NAME and failed.exception == "reminders exploded"

    monkeypatch.setitem(JOBS, NAME, spec)  # "fixed" (the runtime looks the spec up by name)
    rt2 = runtimes(database={"busy_timeout_s": 1.0})
    (new_id,) = Ops(rt2, actor=Actor("tester", None, "cli")).retry([failed.id])
    execute_all(rt2)
    retry_run = next(r for r in periodic_runs(rt2) if r.task_id == new_id)
    assert (retry_run.trigger, retry_run.status, retry_run.tick) == ("retry", "success", None)


def test_heartbeat_renews_the_lease_of_held_locks(runtimes):
    rt = runtimes()
    assert locks.acquire(rt.Session, LOCK, rt.runner_id, 10)
    first = locks.holder_of(rt.Session, LOCK).expires_at
    assert locks.renew(rt.Session, rt.runner_id, 600) == 1
    assert locks.holder_of(rt.Session, LOCK).expires_at >= first + dt.timedelta(seconds=500)
    assert not locks.acquire(rt.Session, LOCK, "someone-else", 10)
    assert locks.acquire(rt.Session, LOCK, rt.runner_id, 10)  # re-entrant for its holder


def test_abandoned_periodic_run_is_closed_in_history(runtimes, clock):
    from erpq.models import Runner

    rt = runtimes()
    tick(rt)
    ghost = "ghost:1:x"
    with rt.session() as s:
        s.add(Runner(id=ghost, host="elsewhere", pid=1, workers=1, periodic=True, kind="consumer",
                     queue=rt.queue_label, started_at=utcnow(), heartbeat_at=utcnow() - dt.timedelta(hours=1)))
    storage = rt.huey.storage
    for _ in range(rt.settings.runner.max_recoveries + 1):
        own, storage.runner_id = storage.runner_id, ghost
        try:
            storage.register_runner() if hasattr(storage, "register_runner") else None
            assert storage.dequeue() is not None
        finally:
            storage.runner_id = own
            storage.drop_claim()
        assert rt.recover_dead_runners() == 1
    (failed,) = Ops(rt).failed().items
    assert failed.task_name == NAME
    (run,) = periodic_runs(rt)
    assert run.status == "abandoned" and run.finished_at is not None
