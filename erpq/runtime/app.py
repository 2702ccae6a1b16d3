"""``ErpqHuey``: Huey plus what erpq needs around every execution.

- Each task message carries a small ``meta`` dict beside Huey's own message
  (enqueued_at, attempt, tenant_id, batch_id, trigger, periodic run id,
  recoveries, retry_of), so history and failure records need no extra reads.
- ``execute`` records the outcome (history row, failed_jobs on the final
  failure, batch progress), then releases the storage's in-flight claim. A run
  that did not finish (interrupted) keeps its claim, so it is recovered.
- ``read_periodic`` replaces Huey's crontab check: croniter expressions from
  config, pause state, one enqueue per task and tick across every runner
  (a unique run-history row per task+tick), missed ticks skipped.
- A periodic run takes a lease lock first and is skipped, not queued behind,
  while a previous run of the same task still holds it.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sqlalchemy as sa
from huey import Huey
from huey.exceptions import CancelExecution, HueyException
from sqlalchemy.exc import IntegrityError

from ..db import session_scope, utcnow
from ..models import FailedJob, JobRun
from . import locks, retry
from .history import json_safe
from .registry import JOBS, periodic_specs
from .schedule import due_tick

if TYPE_CHECKING:
    from .core import Runtime

log = logging.getLogger("erpq.runner")


@dataclass
class _Run:
    """What one execution saw, collected in the worker thread."""

    started: float
    attempt: int
    signals: list[str] = field(default_factory=list)
    executed: bool = False
    exception: BaseException | None = None
    final: bool = False
    skip: str | None = None
    lock: str | None = None


class UnknownTaskError(LookupError):
    """Task data naming a job that is not registered in this runner."""

    def __init__(self, huey_name: str):
        #: Huey's identifier is "module.JobName"; the job's name is its last part.
        self.huey_name, self.name = huey_name, job_name(huey_name)
        super().__init__(f"unknown task {self.name}: not registered in this runner")


def job_name(huey_name: str) -> str:
    """The job name in Huey's task identifier ("module.JobName")."""
    return huey_name.rsplit(".", 1)[-1]


_VERBS = {"success": "Processed", "retrying": "Retrying", "failed": "Failed"}


def lock_name(task_name: str) -> str:
    return f"periodic:{task_name}"


class ErpqHuey(Huey):
    def __init__(self, runtime: Runtime, **kwargs):
        self.runtime = runtime
        self._ctx = threading.local()
        super().__init__(**kwargs)
        self.signal()(self._on_signal)
        self.pre_execute("erpq")(self._before_run)
        self.post_execute("erpq")(self._after_run)
        self.on_shutdown("erpq")(self._release_pending)

    # ------------------------------------------------------------ messages
    # PRIVATE Huey name: Huey._registry (create_message, create_task,
    # string_to_task), used here and in deserialize_task/record_failure because
    # erpq's envelope is (Huey message, meta): Huey's public serialize_task and
    # deserialize_task only handle the bare message, and are what this overrides.
    def serialize_task(self, task):
        meta = getattr(task, "erpq", None)
        if meta is None:
            meta = task.erpq = {}
        meta.setdefault("enqueued_at", time.time())
        return self.serializer.serialize((self._registry.create_message(task), meta))

    def decode(self, data) -> tuple:
        """(Huey message, erpq meta) of serialized task data."""
        obj = self.serializer.deserialize(data)
        if isinstance(obj, tuple) and len(obj) == 2 and isinstance(obj[1], dict):
            return obj
        return obj, {}  # a message enqueued by plain Huey

    def deserialize_task(self, data):
        message, meta = self.decode(data)
        try:
            self._registry.string_to_task(message.name)
        except HueyException:  # Huey's "X not found in TaskRegistry"
            raise UnknownTaskError(message.name) from None
        task = self._registry.create_task(message)
        task.erpq = meta
        return task

    def dequeue(self):
        """The next task; a task that cannot be read (unknown to this runner,
        undecodable) goes to failed_jobs and the next one is taken. Plain Huey
        would log it and lose it."""
        while True:
            data = self.storage.dequeue()
            if data is None:
                return None
            try:
                return self.deserialize_task(data)
            except Exception as exc:
                try:
                    self.record_unreadable(data, exc)
                except Exception:
                    # Not recorded: keep the claim, so recovery finds it later.
                    if hasattr(self.storage, "drop_claim"):
                        self.storage.drop_claim()
                    raise
                if hasattr(self.storage, "finish_claim"):
                    self.storage.finish_claim()

    def delete(self, key):
        # Huey clears a finished task's revoke flag here, one transaction per
        # job; the SQLite storage folds it into the worker's next dequeue.
        run = getattr(self._ctx, "run", None)
        if run is not None and key.startswith("r:") and hasattr(self.storage, "delete_later"):
            self.storage.delete_later(key)
            return True
        return super().delete(key)

    def create_consumer(self, **options):
        from .runner import ErpqConsumer

        return ErpqConsumer(self, **options)

    # ------------------------------------------------------------ execution
    def execute(self, task, timestamp=None):
        meta = getattr(task, "erpq", None)
        if meta is None:
            meta = task.erpq = {}
        run = _Run(started=time.time(), attempt=meta.get("attempt", 1))
        outer, self._ctx.run = getattr(self._ctx, "run", None), run
        finished = False
        try:
            value = super().execute(task, timestamp)
            finished = "interrupted" not in run.signals
            return value
        finally:
            self._ctx.run = outer
            try:
                if finished:
                    self._record(task, run)
            except Exception:
                log.exception("could not record the outcome of %s %s", task.name, task.id)
            finally:
                storage = self.storage
                if hasattr(storage, "finish_claim"):
                    storage.finish_claim() if finished else storage.drop_claim()

    def _on_signal(self, signal, task, *args, **kwargs):
        run = getattr(self._ctx, "run", None)
        if run is not None:
            run.signals.append(signal)
        if signal == "error" and args and retry.is_permanent(args[0]):
            # Retrying cannot fix it: Huey decides "final" right after this signal.
            task.retries = 0

    def _before_run(self, task):
        run: _Run = self._ctx.run
        run.started = time.time()
        meta = task.erpq
        rt = self.runtime
        batch_id = meta.get("batch_id")
        if batch_id and rt.batch_cancelled(batch_id):
            run.skip = "batch cancelled"
            raise CancelExecution(retry=False)
        spec = JOBS.get(task.name)
        if spec is not None and spec.periodic:
            name = lock_name(task.name)
            if not locks.acquire(rt.Session, name, rt.runner_id, rt.settings.schedule.lock_lease_s, task.id):
                holder = locks.holder_of(rt.Session, name)
                run.skip = f"previous run still running (lock held by {holder.holder if holder else '?'})"
                raise CancelExecution(retry=False)
            run.lock = name
            self._update_periodic_run(task, status="running", started_at=utcnow(), runner=rt.runner_id)
        self.runtime.job_log(logging.INFO, "Processing job: %s %s", task.name, task.id)

    def _after_run(self, task, value, exception):
        run: _Run = self._ctx.run
        run.executed = True
        run.exception = exception
        run.final = exception is not None and not task.retries
        if exception is not None and task.retries:
            # Huey re-queues this same task object right after this hook, after
            # task.retry_delay seconds (none: straight to the queue). The job's
            # strategy sets that delay; retry_backoff is zeroed so Huey does not
            # multiply it on top.
            spec = JOBS.get(task.name)
            if spec is not None:
                task.retry_delay = spec.strategy.delay(run.attempt, retry.not_before(exception))
                task.retry_backoff = 0
            task.erpq["attempt"] = run.attempt + 1
            task.erpq["enqueued_at"] = time.time()

    def _release_pending(self):
        if hasattr(self.storage, "release_pending"):
            self.storage.release_pending()

    # ------------------------------------------------------------ outcomes
    def _record(self, task, run: _Run) -> None:
        if run.executed:
            exc = run.exception
            if exc is None:
                status = "success"
            elif isinstance(exc, CancelExecution):
                status = "cancelled"
            else:
                status = "failed" if run.final else "retrying"
        elif run.skip:
            status = "skipped"
        elif "revoked" in run.signals:
            status = "revoked"
        elif "expired" in run.signals:
            status = "expired"
        elif "canceled" in run.signals:
            status = "cancelled"
        else:
            return  # not due yet: Huey put it back on the schedule

        rt = self.runtime
        meta = task.erpq
        finished = time.time()
        duration = finished - run.started
        error = run.skip
        if run.exception is not None:
            error = f"{type(run.exception).__name__}: {run.exception}"[:2000]

        if status == "failed":
            self.record_failure(task, run.exception, attempts=run.attempt)

        if run.lock:
            locks.release(rt.Session, run.lock, rt.runner_id)

        if meta.get("run_id") is not None:
            self._update_periodic_run(
                task, status=status, finished_at=_dt(finished), duration_s=duration, error=error,
                **({} if run.lock else {"started_at": _dt(run.started), "runner": rt.runner_id}),
            )
        else:
            rt.history.add_job_run(task, meta, status, run.attempt, run.started, finished, duration, error)
        if meta.get("batch_id") and status != "retrying":
            rt.history.batch_done(meta["batch_id"], task.id if status == "failed" else None)

        if status in ("success", "retrying", "failed"):
            rt.job_log(logging.INFO if status == "success" else logging.WARNING,
                       "%s job: %s %s (%.3fs)%s", _VERBS[status], task.name, task.id, duration,
                       f": {error}" if error else "")
        else:
            rt.job_log(logging.INFO, "Skipped job: %s %s (%s)", task.name, task.id, error or status)

    def record_failure(self, task, exc: BaseException | None, attempts: int,
                       reason: str = "error", message: str | None = None) -> int:
        """Write a failed_jobs row for ``task`` (synchronously: failures must not be lost)."""
        meta = task.erpq
        if exc is not None:
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            exc_type, text = type(exc).__name__, str(exc) or type(exc).__name__
        else:
            tb, exc_type, text = None, "Abandoned", message or "abandoned"
        return self._write_failure(
            task_id=task.id, task_name=task.name, args=list(task.args), kwargs=task.kwargs, meta=meta,
            payload=self.serializer.serialize((self._registry.create_message(task), meta)),
            exc_type=exc_type, text=text, tb=tb, attempts=attempts, reason=reason,
        )

    def record_unreadable(self, data: bytes, exc: BaseException, runner: str | None = None) -> int:
        """Write a failed_jobs row for task data this runner cannot run: its job is
        not registered here (reason ``unknown_task``) or it cannot be decoded
        (``unreadable``). The row keeps the exact data, for a retry once the job
        is back. A job of a batch counts as failed there."""
        try:
            message, meta = self.decode(data)
            task_id, name = str(message.id), job_name(str(message.name))
            args, kwargs = list(message.args or ()), dict(message.kwargs or {})
        except Exception:
            message, meta, task_id, name, args, kwargs = None, {}, "?", "?", [], {}
        if isinstance(exc, UnknownTaskError):
            reason, exc_type, text, tb = "unknown_task", "UnknownTask", str(exc), None
        else:
            reason, exc_type = "unreadable", type(exc).__name__
            text = f"cannot read the task: {exc}"
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        row_id = self._write_failure(
            task_id=task_id, task_name=name, args=args, kwargs=kwargs, meta=meta, payload=bytes(data),
            exc_type=exc_type, text=text, tb=tb, attempts=meta.get("attempt", 1), reason=reason,
            runner=runner,
        )
        if meta.get("run_id") is not None:
            with session_scope(self.runtime.Session) as s:
                s.execute(sa.update(JobRun).where(JobRun.id == meta["run_id"]).values(
                    status="failed", finished_at=utcnow(), error=text[:2000]))
        if meta.get("batch_id"):
            self.runtime.history.batch_done(meta["batch_id"], task_id)
        log.error("Failed job: %s %s (%s)", name, task_id, text)
        return row_id

    def _write_failure(self, *, task_id, task_name, args, kwargs, meta, payload, exc_type, text, tb,
                       attempts, reason, runner=None) -> int:
        rt = self.runtime
        with session_scope(rt.Session) as s:
            row = FailedJob(
                task_id=task_id,
                task_name=task_name,
                args=json_safe({"args": args, "kwargs": kwargs}),
                payload=payload,
                exception_type=exc_type[:128],
                exception=text[:4000],
                traceback=tb,
                attempts=attempts,
                reason=reason,
                tenant_id=meta.get("tenant_id") or kwargs.get("tenant_id"),
                batch_id=meta.get("batch_id"),
                runner=runner or rt.runner_id,
                retry_of=meta.get("retry_of"),
            )
            s.add(row)
            s.flush()
            return row.id

    def _update_periodic_run(self, task, **values) -> None:
        with session_scope(self.runtime.Session) as s:
            s.execute(sa.update(JobRun).where(JobRun.id == task.erpq["run_id"]).values(**values))

    # ------------------------------------------------------------ periodic
    def read_periodic(self, timestamp=None):
        rt = self.runtime
        sched = rt.settings.schedule
        now = utcnow()
        paused = rt.paused_tasks()
        due = []
        for spec in periodic_specs():
            if spec.name in paused:
                continue
            tick = due_tick(sched.cron[spec.name], now, sched.missed_grace_s, sched.timezone)
            if tick is None:
                continue
            task = rt.tasks[spec.name].s()
            if self.claim_run(task, tick=tick, trigger="schedule"):
                log.info("Running scheduled command: %s", spec.name)
                due.append(task)
        return due

    def claim_run(self, task, tick=None, trigger: str = "schedule") -> bool:
        """Insert the run-history row of a periodic run; False if that tick is taken."""
        now = utcnow()
        try:
            with session_scope(self.runtime.Session) as s:
                row = JobRun(task_id=task.id, task_name=task.name, kind="periodic", trigger=trigger,
                             status="enqueued", tick=tick, enqueued_at=now, attempt=1)
                s.add(row)
                s.flush()
                task.erpq = {"run_id": row.id, "trigger": trigger, "enqueued_at": now.timestamp()}
            return True
        except IntegrityError:
            return False


def _dt(ts: float | None):
    import datetime as dt

    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC)
