"""``ErpqHuey``: Huey plus what erpq needs around every execution.

- Each task message carries a small ``meta`` dict beside Huey's own message
  (enqueued_at, attempt, tenant_id, batch_id, trigger, periodic run id,
  recoveries, retry_of), so history and failure records need no extra reads.
- ``execute`` records the outcome (history row, failed_jobs on the final
  failure, batch progress), then releases the storage's in-flight claim. A run
  that did not finish (interrupted) keeps its claim, so it is recovered.
- ``read_periodic`` replaces Huey's crontab check: croniter expressions from
  config, pause state, one enqueue per task and tick across every runner
  (a unique run-history row per task+tick). Every tick that does not run gets a
  ``missed`` row with its reason (paused, runner down, lock held); ticks missed
  while no runner fired them follow the task's misfire policy (skip, run_once,
  catch_up); a late run records how late it started (``late_s``).
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

from ..db import db_now, session_scope, utcnow
from ..models import FailedJob, JobRun
from . import locks, retry
from .history import json_safe
from .log import current_job
from .outage import retrying, unreachable
from .registry import JOBS, periodic_specs
from .schedule import latest_tick, ticks_between

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


def _tenant_int(value) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


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
        self._seen_ticks: dict = {}  # periodic task -> the latest tick this runner handled
        super().__init__(**kwargs)
        self.signal()(self._on_signal)
        self.pre_execute("erpq")(self._before_run)
        self.post_execute("erpq")(self._after_run)
        self.on_shutdown("erpq")(self._release_pending)
        if getattr(self.storage, "fair", False):
            self.storage.lane_of = self.lane_of

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
        data = self.serializer.serialize((self._registry.create_message(task), meta))
        # the lane of this data, for a fair store's enqueue (no decoding there)
        self._ctx.lane = (data, (_tenant_int(meta.get("tenant_id") or task.kwargs.get("tenant_id")), task.name))
        return data

    def lane_of(self, data) -> tuple[int, str]:
        """(tenant id or 0, job name) of serialized task data (``erpq.runtime.fair``)."""
        last = getattr(self._ctx, "lane", None)
        if last is not None and last[0] is data:
            return last[1]
        try:
            message, meta = self.decode(data)
            tenant = meta.get("tenant_id") or (message.kwargs or {}).get("tenant_id")
            return _tenant_int(tenant), job_name(str(message.name))
        except Exception:
            return 0, ""

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
        outer_job, current_job.job = getattr(current_job, "job", None), (task.name, task.id)
        finished = False
        try:
            value = self._execute_claimed(task, timestamp, run)
            finished = "interrupted" not in run.signals
            return value
        except Exception as exc:
            if "executing" in run.signals and unreachable(exc) and hasattr(self.storage, "requeue_current"):
                # It ran, but Huey could not hand it back (its retry not scheduled:
                # the store is away). Claimed by a live runner it would wait for
                # this runner to stop: put it back on the queue once the store is back.
                if retrying(lambda: self.storage.requeue_current(self.serialize_task(task)),
                            f"requeueing {task.name} {task.id}"):
                    log.warning("Requeued job: %s %s (its retry could not be scheduled)", task.name, task.id)
            raise
        finally:
            self._ctx.run = outer
            current_job.job = outer_job
            try:
                if finished:
                    self._record(task, run)
            except Exception:
                log.exception("could not record the outcome of %s %s", task.name, task.id)
            finally:
                storage = self.storage
                if hasattr(storage, "finish_claim"):
                    storage.finish_claim() if finished else storage.drop_claim()

    def _execute_claimed(self, task, timestamp, run: _Run):
        """Huey's execute; while the store cannot be read before the task starts
        (Huey checks its revoke flag there), try again: the task is still claimed
        by this runner, and a live runner's claims are never recovered."""
        deadline = time.monotonic() + 30
        while True:
            try:
                return super().execute(task, timestamp)
            except Exception as exc:
                down = unreachable(exc)
                if "executing" in run.signals or down is None or time.monotonic() > deadline:
                    raise
                log.warning("job %s %s waits to start: %s", task.name, task.id, down)
                time.sleep(0.5)

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
                run.skip = ("previous run still running (lock held by "
                            + (f"{holder.holder}, lease until {holder.expires_at:%Y-%m-%d %H:%M:%S}Z)"
                               if holder else "?)"))
                raise CancelExecution(retry=False)
            run.lock = name
            started = utcnow()
            tick = meta.get("tick")
            self._update_periodic_run(task, status="running", started_at=started, runner=rt.runner_id,
                                      late_s=None if tick is None else max(0.0, started.timestamp() - tick))
        self.runtime.job_log(logging.INFO, "Processing job: %s %s", task.name, task.id, task=task.name,
                             job_id=task.id)

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
            # A scheduled tick that did not run is missed (with the reason); a
            # manual run or a cancelled batch's job is skipped.
            status = "missed" if task.erpq.get("tick") is not None else "skipped"
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

        # Each write waits out a database outage (retrying), step by step, so a
        # job that ran while the database restarted is still recorded, once.
        what = f"recording {task.name} {task.id}"
        if status == "failed":
            retrying(lambda: self.record_failure(task, run.exception, attempts=run.attempt), what)

        if run.lock:
            retrying(lambda: locks.release(rt.Session, run.lock, rt.runner_id), what)

        if meta.get("run_id") is not None:
            retrying(lambda: self._update_periodic_run(
                task, status=status, finished_at=_dt(finished), duration_s=duration, error=error,
                **({} if run.lock else {"started_at": _dt(run.started), "runner": rt.runner_id}),
            ), what)
        else:
            rt.history.add_job_run(task, meta, status, run.attempt, run.started, finished, duration, error)
        if meta.get("key") and status != "retrying":
            retrying(lambda: rt.finish_key(meta["key"], task.id), what)
        if meta.get("batch_id") and status != "retrying":
            rt.history.batch_done(meta["batch_id"], task.id if status == "failed" else None)

        if status in ("success", "retrying", "failed"):
            rt.job_log(logging.INFO if status == "success" else logging.WARNING,
                       "%s job: %s %s (%.3fs)%s", _VERBS[status], task.name, task.id, duration,
                       f": {error}" if error else "", task=task.name, job_id=task.id)
        else:
            rt.job_log(logging.INFO, "Skipped job: %s %s (%s)", task.name, task.id, error or status,
                       task=task.name, job_id=task.id)

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
        log.error("Failed job: %s %s (%s)", name, task_id, text, extra={"task": name, "job_id": task_id})
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
        """The periodic tasks to enqueue now, each claimed once across runners.

        Cheap while nothing is new: each task's latest tick is computed and
        compared with the last one this runner handled; only a new tick costs
        database reads. For a new tick every tick since the task's last recorded
        one is accounted for: fired (on time, or late by the misfire policy) or
        written to the run history as ``missed`` with its reason.
        """
        rt = self.runtime
        sched = rt.settings.schedule
        with rt.read_session() as s:
            now = db_now(s)  # one clock for every runner: a stepped wall clock fires nothing early
        seen = self._seen_ticks
        latest = {}
        for spec in periodic_specs():
            tick = latest_tick(sched.cron[spec.name], now, sched.timezone)
            if seen.get(spec.name) != tick:
                latest[spec.name] = tick
        if not latest:
            return []
        paused = rt.paused_tasks()
        with rt.read_session() as s:
            last = dict(s.execute(sa.select(JobRun.task_name, sa.func.max(JobRun.tick))
                                  .where(JobRun.task_name.in_(list(latest)), JobRun.tick.is_not(None))
                                  .group_by(JobRun.task_name)).all())
        due = []
        for name, tick in sorted(latest.items()):
            expr = sched.cron[name]
            prev = last.get(name)
            if prev is not None and prev >= tick:
                seen[name] = tick
                continue
            # No tick on record (a new install or task): nothing before now counts as missed.
            ticks = [tick] if prev is None else ticks_between(expr, prev, tick, sched.timezone, limit=MISSED_LIMIT)
            if prev is None and (now - tick).total_seconds() > sched.missed_grace_s and name not in paused:
                seen[name] = tick
                continue
            if name in paused:
                self.record_missed(name, ticks, "paused")
                seen[name] = tick
                continue
            on_time = ticks[-1] if (now - ticks[-1]).total_seconds() <= sched.missed_grace_s else None
            late = ticks[:-1] if on_time is not None else ticks
            run_late, missed, reason = misfire_plan(misfire_policy(sched, name), late)
            if missed:
                self.record_missed(name, missed, reason)
            for t in [*run_late, *([on_time] if on_time is not None else [])]:
                task = rt.tasks[name].s()
                if self.claim_run(task, tick=t, trigger="schedule"):
                    log.info("Running scheduled command: %s%s", name,
                             f" (late: tick {t:%Y-%m-%d %H:%M}Z)" if t is not on_time else "")
                    due.append(task)
            seen[name] = tick
        return due

    def record_missed(self, name: str, ticks: list, reason: str) -> int:
        """Write a ``missed`` run-history row per tick (a tick already recorded,
        e.g. by another runner, is left alone); returns how many were written."""
        if not ticks:
            return 0
        now = utcnow()
        rows = [{"task_id": "-", "task_name": name, "kind": "periodic", "trigger": "schedule",
                 "status": "missed", "tick": t, "enqueued_at": None, "finished_at": now, "attempt": 1,
                 "error": reason} for t in ticks]
        try:
            with self.runtime.engine.begin() as conn:
                conn.execute(sa.insert(JobRun), rows)
            return len(rows)
        except IntegrityError:
            written = 0
            for row in rows:
                try:
                    with self.runtime.engine.begin() as conn:
                        conn.execute(sa.insert(JobRun), [row])
                    written += 1
                except IntegrityError:
                    pass
            return written

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
                if tick is not None:
                    task.erpq["tick"] = tick.timestamp()
            return True
        except IntegrityError:
            return False


#: At most this many missed ticks of one task are written after an outage (the newest).
MISSED_LIMIT = 1000

RUNNER_DOWN = "no runner fired the schedule at the tick (runner down)"


def misfire_policy(sched, name: str) -> tuple[str, int]:
    """(policy, catch-up maximum) of a periodic task, from ``[schedule.misfire]``."""
    kind, _, n = sched.misfire.get(name, "skip").partition(":")
    return kind, int(n) if n else sched.catch_up_max


def misfire_plan(policy: tuple[str, int], late: list) -> tuple[list, list, str]:
    """(late ticks to run now, ticks to record as missed, the reason) for ticks
    that passed while no runner fired them."""
    kind, limit = policy
    if not late:
        return [], [], ""
    if kind == "run_once":
        return late[-1:], late[:-1], f"{RUNNER_DOWN}; misfire policy run_once ran the latest missed tick only"
    if kind == "catch_up":
        return late[-limit:], late[:-limit], f"{RUNNER_DOWN}; misfire policy catch_up ran the latest {limit} only"
    return [], late, f"{RUNNER_DOWN}; misfire policy skip"


def _dt(ts: float | None):
    import datetime as dt

    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC)
