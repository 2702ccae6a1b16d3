"""Ops section: run history, the log, batches, runners and locks."""

from __future__ import annotations

import datetime as dt
import os
import shlex
from collections import deque
from dataclasses import dataclass, field

import sqlalchemy as sa

from ..db import utcnow
from ..models import JobBatch, JobRun, Lock, Runner
from .base import Conflict, NotFound, OpsCore, Page, _audited, _Record, order_by, text_search

#: The orders ``runs(sort=...)`` offers, each along an index (``-`` first: descending).
RUN_SORTS = {"id": JobRun.id, "task": JobRun.task_name, "status": JobRun.status}
#: ... and ``batches(sort=...)`` (a table of batches, not of jobs).
BATCH_SORTS = {"created": JobBatch.created_at, "name": JobBatch.name, "kind": JobBatch.kind,
               "failed": JobBatch.failed}

# ====================================================================== records



@dataclass
class RunInfo(_Record):
    id: int
    task_id: str
    task_name: str
    kind: str
    trigger: str | None
    status: str
    args_summary: str | None
    tenant_id: int | None
    attempt: int
    enqueued_at: dt.datetime | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    duration_s: float | None
    runner: str | None
    error: str | None
    tick: dt.datetime | None = None  # a scheduled periodic run's tick
    late_s: float | None = None  # ... and how late after it the run started


@dataclass
class BatchInfo(_Record):
    id: str
    name: str
    kind: str
    tenant_id: int | None
    total: int
    pending: int
    failed: int
    done: int
    progress: float  # 0..1
    created_at: dt.datetime
    finished_at: dt.datetime | None
    cancelled_at: dt.datetime | None
    eta_s: float | None  # seconds to go at the rate so far
    failed_job_ids: list = field(default_factory=list)


@dataclass
class RunnerInfo(_Record):
    id: str
    host: str
    pid: int
    kind: str
    workers: int
    periodic: bool
    queue: str
    started_at: dt.datetime
    heartbeat_at: dt.datetime
    heartbeat_age_s: float
    stopped_at: dt.datetime | None
    alive: bool
    current_jobs: int


@dataclass
class LockInfo(_Record):
    name: str
    holder: str
    task_id: str | None
    acquired_at: dt.datetime
    expires_at: dt.datetime
    age_s: float
    stale: bool  # lease expired, or holder not alive


class FleetOps(OpsCore):
    # ------------------------------------------------------------ history
    def runs(self, offset: int = 0, limit: int = 50, task: str | None = None, status: str | None = None,
             search: str | None = None, with_total: bool = False, sort: str | None = None) -> Page:
        """Recent runs, newest first (or by ``sort``, one of ``RUN_SORTS``, ``-`` for
        descending, ordered by the database). Counting 1,000,000 rows is slow, so
        total is -1 unless asked for."""
        q = sa.select(JobRun)
        if task:
            q = q.where(JobRun.task_name == task)
        if status:
            q = q.where(JobRun.status == status)
        if search:
            q = q.where(text_search((JobRun.task_name, JobRun.args_summary, JobRun.error, JobRun.task_id), search))
        with self.rt.read_session() as s:
            ordered = order_by(q, sort, RUN_SORTS, JobRun.id, [JobRun.id.desc()])
            rows = s.scalars(ordered.offset(offset).limit(limit)).all()
            total = (s.scalar(sa.select(sa.func.count()).select_from(q.subquery())) or 0) if with_total else -1
            return Page([_run_info(r) for r in rows], total, offset, limit)

    def log_tail(self, lines: int = 200) -> list[str]:
        path = self.rt.settings.path(self.rt.settings.log.path)
        try:
            with open(path, encoding="utf-8", errors="replace") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - lines * 300))
                return [line.rstrip("\n") for line in deque(fh, maxlen=lines)]
        except FileNotFoundError:
            return []

    # ------------------------------------------------------------ batches
    def batches(self, offset: int = 0, limit: int = 50, active_only: bool = False,
                sort: str | None = None) -> Page:
        q = sa.select(JobBatch)
        if active_only:
            q = q.where(JobBatch.finished_at.is_(None), JobBatch.cancelled_at.is_(None))
        with self.rt.read_session() as s:
            total = s.scalar(sa.select(sa.func.count()).select_from(q.subquery())) or 0
            q = order_by(q, sort, BATCH_SORTS, JobBatch.id, [JobBatch.created_at.desc()])
            rows = s.scalars(q.offset(offset).limit(limit)).all()
            return Page([_batch_info(r) for r in rows], total, offset, limit)

    def batch(self, batch_id: str) -> BatchInfo:
        with self.rt.read_session() as s:
            row = s.get(JobBatch, batch_id)
            if row is None:
                raise NotFound(f"no batch with id {batch_id!r}")
            return _batch_info(row)

    @_audited
    def cancel_batch(self, batch_id: str) -> None:
        """Cancel a batch: its jobs not yet started are skipped."""
        self.batch(batch_id)
        self._act("batch.cancel", batch_id, f"erpq batch cancel {batch_id}")
        with self._tx() as s:
            n = s.execute(sa.update(JobBatch).where(JobBatch.id == batch_id, JobBatch.cancelled_at.is_(None),
                                                    JobBatch.finished_at.is_(None))
                          .values(cancelled_at=utcnow())).rowcount
        if not n:
            raise Conflict(f"batch {batch_id} is already finished or cancelled")

    # ------------------------------------------------------------ runners and locks
    def runners(self, include_stopped: bool = False, limit: int = 100) -> list[RunnerInfo]:
        now = utcnow()
        limit_s = self.rt.settings.runner.dead_after_s
        counts: dict[str, int] = {}
        for _k, runner, _ts, _d in self.rt.huey.storage.inflight_page(0, 10_000):
            counts[runner] = counts.get(runner, 0) + 1
        q = sa.select(Runner).order_by(Runner.started_at.desc()).limit(limit)
        if not include_stopped:
            q = q.where(Runner.stopped_at.is_(None))
        with self.rt.read_session() as s:
            rows = s.scalars(q).all()
        out = []
        for r in rows:
            age = (now - r.heartbeat_at).total_seconds()
            out.append(RunnerInfo(r.id, r.host, r.pid, r.kind, r.workers, r.periodic, r.queue, r.started_at,
                                  r.heartbeat_at, age, r.stopped_at, r.stopped_at is None and age <= limit_s,
                                  counts.get(r.id, 0)))
        return out

    def locks(self) -> list[LockInfo]:
        now = utcnow()
        with self.rt.read_session() as s:
            rows = s.scalars(sa.select(Lock).order_by(Lock.acquired_at)).all()
            alive = {r.id for r in s.scalars(sa.select(Runner).where(
                Runner.stopped_at.is_(None),
                Runner.heartbeat_at >= now - dt.timedelta(seconds=self.rt.settings.runner.dead_after_s)))}
        return [LockInfo(r.name, r.holder, r.task_id, r.acquired_at, r.expires_at,
                         (now - r.acquired_at).total_seconds(),
                         r.expires_at < now or r.holder not in alive) for r in rows]

    @_audited
    def release_lock(self, name: str, force: bool = False) -> None:
        """Release a lock whose holder is gone (``force`` releases a live one too)."""
        info = next((lk for lk in self.locks() if lk.name == name), None)
        if info is None:
            raise NotFound(f"no lock named {name!r}")
        if not info.stale and not force:
            raise Conflict(f"lock {name!r} is held by live runner {info.holder}; use --force to release it anyway")
        self._act("lock.release", name, f"erpq lock release {shlex.quote(name)}" + (" --force" if force else ""))
        with self._tx() as s:
            s.execute(sa.delete(Lock).where(Lock.name == name))

    @_audited
    def recover(self) -> int:
        """Re-enqueue the in-flight work of dead runners now; returns how many jobs.

        Recovery moves work inside the queue store (no database transaction can
        hold it), so it runs once the audit row committed; what it re-enqueued
        stands if it fails midway (so does the audit row)."""
        self._act("queue.recover", None, "erpq queue recover")
        done: list[int] = []
        self._after_commit(lambda: done.append(self.rt.recover_dead_runners()), keep_audit=True)
        return self._then(lambda: done[0])


# ====================================================================== conversions


def _run_info(r: JobRun) -> RunInfo:
    return RunInfo(r.id, r.task_id, r.task_name, r.kind, r.trigger, r.status, r.args_summary, r.tenant_id,
                   r.attempt, r.enqueued_at, r.started_at, r.finished_at, r.duration_s, r.runner, r.error,
                   r.tick, r.late_s)


def _batch_info(b: JobBatch) -> BatchInfo:
    done = max(0, b.total - b.pending)
    progress = done / b.total if b.total else 1.0
    eta = None
    if b.finished_at is None and b.cancelled_at is None and done:
        elapsed = (utcnow() - b.created_at).total_seconds()
        eta = elapsed / done * b.pending
    return BatchInfo(b.id, b.name, b.kind, b.tenant_id, b.total, b.pending, b.failed, done, progress,
                     b.created_at, b.finished_at, b.cancelled_at, eta, list(b.failed_job_ids or []))
