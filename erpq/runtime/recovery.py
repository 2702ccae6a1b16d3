"""Recovery: putting the in-flight work of dead runners back on the queue.

A runner is dead when it stopped heart-beating for ``runner.dead_after_s``,
marked itself stopped, or (same host) its process is gone. Each in-flight task
of a dead runner is re-enqueued with its ``recoveries`` count raised; past
``runner.max_recoveries`` it goes to ``failed_jobs`` as ``abandoned``. A task
this runner cannot read (its job is not registered here, e.g. a capability no
longer installed) goes to ``failed_jobs`` too, never silently dropped.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import time
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..db import db_now, utcnow
from ..models import JobRun, Runner
from . import locks

if TYPE_CHECKING:
    from .core import Runtime

log = logging.getLogger("erpq.runner")

REAPER_LOCK = "erpq:reaper"


def recover_dead_runners(rt: Runtime) -> int:
    """Re-enqueue the in-flight work of runners that stopped heart-beating.

    Returns how many jobs were re-enqueued, abandoned or failed as unreadable.
    Safe to call from several runners at once: a lease lock makes one of them do it.
    """
    storage = rt.huey.storage
    holders = storage.inflight_runners()
    holders.pop(rt.runner_id, None)
    mark_silent_runners_stopped(rt, busy=set(holders))
    if not holders:
        return 0
    dead = dead_runners(rt, holders)
    if not dead:
        return 0
    if not locks.acquire(rt.Session, REAPER_LOCK, rt.runner_id, 60):
        return 0
    try:
        return sum(recover_runner(rt, r) for r in dead)
    finally:
        locks.release(rt.Session, REAPER_LOCK, rt.runner_id)


def mark_silent_runners_stopped(rt: Runtime, busy: set[str] = frozenset()) -> int:
    """Mark runners silent for ``runner.dead_after_s`` that hold no in-flight work
    stopped (a runner killed while idle never marks itself), and drop them from
    the queue store's runner list. Runners with work are left to recovery."""
    with rt.session() as s:
        now = db_now(s)  # heartbeats are written on the database's clock
        cutoff = now - dt.timedelta(seconds=rt.settings.runner.dead_after_s)
        q = (sa.update(Runner).where(Runner.stopped_at.is_(None), Runner.heartbeat_at < cutoff,
                                     Runner.id != rt.runner_id))
        if busy:
            q = q.where(Runner.id.not_in(list(busy)))
        n = s.execute(q.values(stopped_at=now)).rowcount
    forget = getattr(rt.huey.storage, "forget_idle_runners", None)
    if forget is not None:
        with rt.read_session() as s:
            alive = set(s.scalars(sa.select(Runner.id).where(Runner.stopped_at.is_(None),
                                                             Runner.heartbeat_at >= cutoff)))
        forget(alive | {rt.runner_id})
    return n


def dead_runners(rt: Runtime, holders: dict[str, float | None]) -> list[str]:
    """Of the runners holding in-flight work (id -> oldest claim time), the dead ones."""
    limit = rt.settings.runner.dead_after_s
    host = socket.gethostname()
    with rt.read_session() as s:
        now = db_now(s)
        rows = {r.id: r for r in s.scalars(sa.select(Runner).where(Runner.id.in_(list(holders))))}
    dead = []
    for rid, oldest in holders.items():
        r = rows.get(rid)
        if r is None:
            if oldest is None or time.time() - oldest > limit:
                dead.append(rid)
        elif (r.stopped_at is not None or (now - r.heartbeat_at).total_seconds() > limit
              or (r.host == host and not pid_alive(r.pid))):
            dead.append(rid)
    return dead


def recover_runner(rt: Runtime, runner: str) -> int:
    huey, storage = rt.huey, rt.huey.storage
    decisions: list[tuple[object, bytes | None]] = []
    max_rec = rt.settings.runner.max_recoveries
    for key, _, _, data in storage.inflight_of(runner):
        try:
            task = huey.deserialize_task(data)
        except Exception as exc:
            try:
                huey.record_unreadable(data, exc, runner=runner)
            except Exception:  # keep the claim: the next recovery tries again
                log.exception("could not record unreadable in-flight task of runner %s", runner)
                continue
            decisions.append((key, None))
            continue
        n = task.erpq.get("recoveries", 0) + 1
        task.erpq["recoveries"] = n
        if n > max_rec:
            msg = f"abandoned: its runner died while running it {n} times (runner.max_recoveries={max_rec})"
            huey.record_failure(task, None, attempts=task.erpq.get("attempt", 1),
                                reason="abandoned", message=msg)
            close_abandoned_run(rt, task, msg)
            log.warning("Abandoned job: %s %s (%s)", task.name, task.id, msg)
            decisions.append((key, None))
        else:
            log.warning("Recovered job: %s %s from dead runner %s (recovery %d)",
                        task.name, task.id, runner, n)
            decisions.append((key, huey.serialize_task(task)))
    taken = storage.requeue_claims(decisions, runner=runner)
    locks.release_all(rt.Session, runner)
    with rt.session() as s:
        s.execute(sa.update(Runner).where(Runner.id == runner, Runner.stopped_at.is_(None))
                  .values(stopped_at=utcnow()))
    return taken


def close_abandoned_run(rt: Runtime, task, error: str) -> None:
    """The run history shows an abandoned job as such: its periodic run row is
    closed, a job gets a row of its own."""
    now, meta = utcnow(), task.erpq
    if meta.get("run_id") is not None:
        with rt.session() as s:
            s.execute(sa.update(JobRun).where(JobRun.id == meta["run_id"])
                      .values(status="abandoned", finished_at=now, error=error[:2000]))
        return
    started = meta.get("enqueued_at") or time.time()
    rt.history.add_job_run(task, meta, "abandoned", meta.get("attempt", 1), started,
                           now.timestamp(), now.timestamp() - started, error)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
