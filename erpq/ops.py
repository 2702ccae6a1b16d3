"""THE read/act API for operators: the CLI and the console call only this.

Reads return plain dataclasses (``to_dict()`` gives the stable JSON field names
the CLI's ``--json`` prints; times are aware UTC datetimes, ISO 8601 in JSON).
Lists are paged (``offset``/``limit``) and read only the page they show, so a
list stays fast with 100,000 rows behind it.

Actions take effect at once, are written to the audit log with the OS user,
the SSH client address when there is one, and the equivalent ``erpq`` command
line. An ``Ops`` made with ``read_only=True`` refuses every action with
``ReadOnly``. Errors an operator can cause (unknown task, missing record, bad
arguments) raise ``OpsError`` subclasses whose message is one line.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import getpass
import json
import os
import re
import shlex
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from .db import utcnow
from .models import (
    AuditLog,
    FailedJob,
    JobBatch,
    JobRun,
    Lock,
    Runner,
    ScheduleState,
    SystemHealth,
    Tenant,
    User,
)
from .runtime import Runtime, UnknownTask, locks
from .runtime.history import summarize_args
from .runtime.registry import JOBS, periodic_specs
from .runtime.schedule import describe, next_tick

# ====================================================================== errors


class OpsError(Exception):
    """An operator-caused error; the message is one line naming what and why."""


class NotFound(OpsError):
    pass


class ReadOnly(OpsError):
    pass


class Conflict(OpsError):
    pass


# ====================================================================== records


class _Record:
    def to_dict(self) -> dict[str, Any]:
        return {k: _jsonable(v) for k, v in dataclasses.asdict(self).items()}


def _jsonable(v: Any) -> Any:
    if isinstance(v, dt.datetime):
        return v.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    return v


@dataclass
class Page:
    items: list
    total: int
    offset: int
    limit: int


@dataclass
class ScheduleEntry(_Record):
    name: str
    expression: str
    description: str
    paused: bool
    last_run_at: dt.datetime | None
    last_status: str | None
    last_duration_s: float | None
    next_run_at: dt.datetime | None
    running_since: dt.datetime | None = None
    lock_holder: str | None = None
    summary: str = ""


@dataclass
class JobInfo(_Record):
    id: str
    task_name: str
    args_summary: str
    state: str  # pending | scheduled | running
    enqueued_at: dt.datetime | None = None
    eta: dt.datetime | None = None
    runner: str | None = None
    started_at: dt.datetime | None = None
    attempt: int = 1
    tenant_id: int | None = None
    batch_id: str | None = None
    key: str | None = None  # opaque handle for cancel_job (pending/scheduled only)


@dataclass
class FailedInfo(_Record):
    id: int
    task_id: str
    task_name: str
    args_summary: str
    exception_type: str
    exception: str
    attempts: int
    failed_at: dt.datetime
    reason: str
    tenant_id: int | None
    retried_at: dt.datetime | None
    retry_task_id: str | None
    args: Any = None
    traceback: str | None = None  # only filled by failed_detail()


@dataclass
class FailureCluster(_Record):
    key: str
    task_name: str
    exception_type: str
    message: str  # normalised: numbers, ids and quoted values replaced
    count: int
    first_seen: dt.datetime
    last_seen: dt.datetime
    ids: list[int] = field(default_factory=list)


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


@dataclass
class HealthInfo(_Record):
    tenant_id: int | None
    tenant: str  # slug, or "host"
    checked_at: dt.datetime
    status: str
    cpu_percent: float | None
    memory_percent: float | None
    disk_percent: float | None
    db_connections: int | None
    queue_pending: int
    queue_scheduled: int
    failed_last_hour: int
    details: Any = None


@dataclass
class AuditInfo(_Record):
    id: int
    at: dt.datetime
    actor: str
    client: str | None
    source: str
    action: str
    target: str | None
    command: str | None
    detail: str | None


@dataclass
class TenantInfo(_Record):
    id: int
    slug: str
    name: str
    is_active: bool
    created_at: dt.datetime


@dataclass
class UserInfo(_Record):
    id: int
    tenant_id: int
    tenant: str
    name: str
    email: str | None
    is_active: bool


@dataclass
class WebhookInfo(_Record):
    """A webhook subscription as operators see it: everything but its secret."""

    id: int
    tenant_id: int
    tenant: str
    url: str
    events: list[str]
    description: str | None
    is_active: bool
    consecutive_failures: int
    first_failure_at: dt.datetime | None
    disabled_at: dt.datetime | None
    disabled_reason: str | None
    created_at: dt.datetime | None


@dataclass
class DeliveryInfo(_Record):
    id: int
    delivery_id: str  # the webhook-id header: the same on every attempt
    webhook_id: int
    tenant_id: int
    event: str
    status: str  # pending | delivering | delivered | failed | dead
    attempts: int
    response_code: int | None
    error: str | None
    duration_ms: float | None
    next_retry_at: dt.datetime | None
    delivered_at: dt.datetime | None
    created_at: dt.datetime


@dataclass
class Actor:
    """Who is acting, for the audit log."""

    user: str
    client: str | None
    source: str  # cli | console

    @classmethod
    def detect(cls, source: str) -> Actor:
        try:
            user = getpass.getuser()
        except Exception:
            user = str(os.getuid())
        ssh = os.environ.get("SSH_CLIENT") or os.environ.get("SSH_CONNECTION")
        return cls(user=user, client=ssh.split()[0] if ssh else None, source=source)


# ====================================================================== the API


_NORMALISE = [
    (re.compile(r"'[^']*'|\"[^\"]*\""), "'…'"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I), "<uuid>"),
    (re.compile(r"0x[0-9a-f]+", re.I), "<hex>"),
    (re.compile(r"\d+(\.\d+)?"), "<n>"),
]


def normalise_message(message: str) -> str:
    """A failure message with its variable parts replaced, for clustering."""
    text = (message or "").splitlines()[0] if message else ""
    for pattern, repl in _NORMALISE:
        text = pattern.sub(repl, text)
    return text[:200]


def _audited(method):
    """Write the audit rows an action queued with ``_act`` only if it succeeds."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        state = self._audit_state
        outer = getattr(state, "pending", None)
        if outer is not None:  # nested action: the outermost one writes
            return method(self, *args, **kwargs)
        state.pending = []
        try:
            result = method(self, *args, **kwargs)
            rows = state.pending
        finally:
            state.pending = None
        self._write_audit(rows)
        return result

    return wrapper


class Ops:
    def __init__(self, runtime: Runtime, actor: Actor | None = None, read_only: bool = False):
        self.rt = runtime
        self.actor = actor or Actor.detect("api")
        self.read_only = read_only
        self._audit_state = threading.local()
        self._clusters_cache: dict[str | None, tuple[tuple, list[FailureCluster]]] = {}

    # ------------------------------------------------------------ helpers
    def _act(self, action: str, target: str | None, command: str, detail: Any = None) -> None:
        """Refuse in read-only mode; else audit the action.

        Inside an ``@_audited`` method the row is written only once the method
        succeeds (a refused or failed action leaves no audit entry); elsewhere
        it is written at once.
        """
        if self.read_only:
            raise ReadOnly(f"read-only mode: '{action}' is refused (equivalent: {command})")
        self._audit_state.command = command
        row = AuditLog(actor=self.actor.user, client=self.actor.client, source=self.actor.source,
                       action=action, target=target, command=command,
                       detail=json.dumps(detail, default=str) if detail is not None else None)
        pending = getattr(self._audit_state, "pending", None)
        if pending is not None:
            pending.append(row)
        else:
            self._write_audit([row])

    def take_command(self) -> str | None:
        """The equivalent ``erpq`` command line of the last action on this thread
        (then forgotten), for a front end to show next to the outcome."""
        command = getattr(self._audit_state, "command", None)
        self._audit_state.command = None
        return command

    def _write_audit(self, rows: list[AuditLog]) -> None:
        if rows:
            with self.rt.session() as s:
                s.add_all(rows)

    def check_writable(self, action: str) -> None:
        if self.read_only:
            raise ReadOnly(f"read-only mode: '{action}' is refused")

    def _decode(self, data: bytes):
        try:
            return self.rt.huey.deserialize_task(data)
        except Exception:
            return None

    @staticmethod
    def _ts(epoch: float | None) -> dt.datetime | None:
        return None if epoch is None else dt.datetime.fromtimestamp(epoch, dt.UTC)

    # ------------------------------------------------------------ schedule
    def schedule(self) -> list[ScheduleEntry]:
        rt, now = self.rt, utcnow()
        sched = rt.settings.schedule
        specs = sorted(periodic_specs(), key=lambda s: s.name)
        names = [s.name for s in specs]
        with rt.read_session() as s:
            paused = {r.name: r.paused for r in s.scalars(sa.select(ScheduleState))}
            last: dict[str, JobRun] = {}
            running: dict[str, JobRun] = {}
            for name in names:
                row = s.scalars(sa.select(JobRun).where(JobRun.task_name == name,
                                                        JobRun.finished_at.is_not(None))
                                .order_by(JobRun.id.desc()).limit(1)).first()
                if row is not None:
                    last[name] = row
                run = s.scalars(sa.select(JobRun).where(JobRun.task_name == name, JobRun.status == "running")
                                .order_by(JobRun.id.desc()).limit(1)).first()
                if run is not None:
                    running[name] = run
            held = {lk.name: lk for lk in s.scalars(sa.select(Lock).where(Lock.expires_at >= now))}
        out = []
        for spec in specs:
            expr = sched.cron[spec.name]
            lr = last.get(spec.name)
            lock = held.get(f"periodic:{spec.name}")
            run = running.get(spec.name)
            out.append(ScheduleEntry(
                name=spec.name, expression=expr, description=describe(expr),
                paused=paused.get(spec.name, False),
                last_run_at=lr.started_at or lr.enqueued_at if lr else None,
                last_status=lr.status if lr else None,
                last_duration_s=lr.duration_s if lr else None,
                next_run_at=None if paused.get(spec.name) else next_tick(expr, now, sched.timezone),
                running_since=run.started_at if run and lock else None,
                lock_holder=lock.holder if lock else None,
                summary=spec.description,
            ))
        return out

    def _periodic(self, name: str) -> str:
        if name not in {s.name for s in periodic_specs()}:
            known = ", ".join(sorted(s.name for s in periodic_specs()))
            raise NotFound(f"unknown scheduled task {name!r} (known: {known})")
        return name

    @_audited
    def trigger(self, name: str) -> str:
        """Run a periodic task now (in addition to its schedule); returns the task id."""
        self._periodic(name)
        self._act("schedule.run", name, f"erpq schedule run {shlex.quote(name)}")
        return self.rt.trigger_periodic(name, trigger="manual")

    @_audited
    def pause(self, name: str) -> None:
        self._set_paused(name, True)

    @_audited
    def resume(self, name: str) -> None:
        self._set_paused(name, False)

    def _set_paused(self, name: str, paused: bool) -> None:
        self._periodic(name)
        verb = "pause" if paused else "resume"
        self._act(f"schedule.{verb}", name, f"erpq schedule {verb} {shlex.quote(name)}")
        with self.rt.session() as s:
            s.merge(ScheduleState(name=name, paused=paused, changed_at=utcnow(), changed_by=self.actor.user))

    # ------------------------------------------------------------ queue
    def queue_counts(self) -> dict[str, int]:
        huey = self.rt.huey
        with self.rt.read_session() as s:
            failed = s.scalar(sa.select(sa.func.count()).select_from(FailedJob)
                              .where(FailedJob.deleted_at.is_(None), FailedJob.retried_at.is_(None)))
        return {"pending": huey.pending_count(), "scheduled": huey.scheduled_count(),
                "running": huey.storage.inflight_count(), "failed": failed or 0}

    def _job_info(self, task, state: str, key=None, **extra) -> JobInfo:
        meta = getattr(task, "erpq", {}) or {}
        return JobInfo(id=task.id, task_name=task.name, args_summary=summarize_args(task.args, task.kwargs),
                       state=state, enqueued_at=self._ts(meta.get("enqueued_at")),
                       attempt=meta.get("attempt", 1),
                       tenant_id=meta.get("tenant_id") or task.kwargs.get("tenant_id"),
                       batch_id=meta.get("batch_id"), key=key, **extra)

    def pending(self, offset: int = 0, limit: int = 50, search: str | None = None) -> Page:
        storage = self.rt.huey.storage
        total = storage.queue_size()
        items = self._filtered(lambda o, n: storage.enqueued_page(o, n), offset, limit, search,
                               lambda key, data: self._job(data, "pending", key))
        return Page(items, total, offset, limit)

    def scheduled(self, offset: int = 0, limit: int = 50, search: str | None = None) -> Page:
        storage = self.rt.huey.storage
        total = storage.schedule_size()

        def make(item):
            key, data, ts = item
            info = self._job(data, "scheduled", key)
            if info is not None:
                info.eta = self._ts(ts)
            return info

        items = self._filtered(lambda o, n: storage.scheduled_page(o, n), offset, limit, search,
                               lambda *item: make(item), triple=True)
        return Page(items, total, offset, limit)

    def running(self, offset: int = 0, limit: int = 50, search: str | None = None) -> Page:
        storage = self.rt.huey.storage
        total = storage.inflight_count()
        items = []
        for _key, runner, claimed_at, data in storage.inflight_page(offset, limit):
            task = self._decode(data)
            if task is None:
                continue
            info = self._job_info(task, "running", runner=runner, started_at=self._ts(claimed_at))
            if search and not _matches(info, search):
                continue
            items.append(info)
        return Page(items, total, offset, limit)

    def _job(self, data: bytes, state: str, key) -> JobInfo | None:
        task = self._decode(data)
        if task is None:
            return None
        return self._job_info(task, state, key=_key_text(key))

    def _filtered(self, fetch, offset, limit, search, make, triple=False):
        """Read a page; with a search, scan forward (in chunks) for matches, up to 20,000 jobs."""
        if not search:
            rows = fetch(offset, limit)
            items = [make(*r) if triple else make(r[0], r[1]) for r in rows]
            return [i for i in items if i is not None]
        found, pos, scanned = [], 0, 0
        while len(found) < offset + limit and scanned < 20_000:
            rows = fetch(pos, 1000)
            if not rows:
                break
            pos += len(rows)
            scanned += len(rows)
            for r in rows:
                info = make(*r) if triple else make(r[0], r[1])
                if info is not None and _matches(info, search):
                    found.append(info)
        return found[offset: offset + limit]

    @_audited
    def cancel_job(self, job_id: str, key: str | None = None) -> None:
        """Remove a pending or scheduled job before it runs."""
        storage = self.rt.huey.storage
        self._act("queue.cancel", job_id, f"erpq queue cancel {job_id}")
        if key is not None and self._remove_by_key(key):
            return
        for page, remove in ((storage.enqueued_page, storage.remove_enqueued),
                             (storage.scheduled_page, storage.remove_scheduled)):
            pos = 0
            while True:
                rows = page(pos, 1000)
                if not rows:
                    break
                for row in rows:
                    task = self._decode(row[1])
                    if task is not None and task.id == job_id and remove(row[0]):
                        return
                pos += len(rows)
        raise NotFound(f"no pending or scheduled job with id {job_id!r}")

    def _remove_by_key(self, key: str) -> bool:
        storage = self.rt.huey.storage
        k = _key_value(key)
        return storage.remove_enqueued(k) or storage.remove_scheduled(k)

    @_audited
    def dispatch(self, task_name: str, args: list | None = None, kwargs: dict | None = None) -> str:
        """Enqueue any registered job by name; returns the task id."""
        if task_name not in self.rt.tasks:
            known = ", ".join(sorted(self.rt.tasks))
            raise NotFound(f"unknown task {task_name!r} (known: {known})")
        args, kwargs = list(args or []), dict(kwargs or {})
        reserved = {"eta", "delay", "id", "retries", "retry_delay", "retry_backoff", "priority",
                    "expires", "timeout"} & set(kwargs)
        if reserved:
            raise OpsError(f"argument name(s) {', '.join(sorted(reserved))} are reserved by Huey")
        payload = json.dumps({"args": args, "kwargs": kwargs}) if (args or kwargs) else ""
        self._act("queue.dispatch", task_name,
                  f"erpq queue dispatch {shlex.quote(task_name)}" + (f" --args {shlex.quote(payload)}" if payload else ""))
        try:
            return self.rt.enqueue(task_name, *args, trigger="manual", **kwargs)
        except UnknownTask as exc:
            raise NotFound(str(exc)) from None

    # ------------------------------------------------------------ failed
    def _failed_query(self, task: str | None, search: str | None, include_retried: bool = False):
        q = sa.select(FailedJob).where(FailedJob.deleted_at.is_(None))
        if not include_retried:
            q = q.where(FailedJob.retried_at.is_(None))
        if task:
            q = q.where(FailedJob.task_name == task)
        if search:
            like = f"%{search}%"
            q = q.where(sa.or_(FailedJob.task_name.like(like), FailedJob.exception.like(like),
                               FailedJob.exception_type.like(like), FailedJob.task_id.like(like)))
        return q

    def failed(self, offset: int = 0, limit: int = 50, task: str | None = None,
               search: str | None = None, include_retried: bool = False) -> Page:
        q = self._failed_query(task, search, include_retried)
        with self.rt.read_session() as s:
            total = s.scalar(sa.select(sa.func.count()).select_from(q.subquery()))
            rows = s.scalars(q.order_by(FailedJob.id.desc()).offset(offset).limit(limit)).all()
            return Page([_failed_info(r) for r in rows], total or 0, offset, limit)

    def failed_detail(self, failed_id: int) -> FailedInfo:
        with self.rt.read_session() as s:
            row = s.get(FailedJob, failed_id)
            if row is None or row.deleted_at is not None:
                raise NotFound(f"no failed job with id {failed_id}")
            return _failed_info(row, detail=True)

    def failure_clusters(self, limit: int = 50, task: str | None = None) -> list[FailureCluster]:
        """Failed jobs grouped by task, exception type and normalised message.

        Grouping reads every failure awaiting action (up to 100,000), so the
        result is cached until the set changes (its count or newest id).
        """
        q = self._failed_query(task, None).with_only_columns(
            FailedJob.id, FailedJob.task_name, FailedJob.exception_type, FailedJob.exception, FailedJob.failed_at)
        live = q.subquery()
        with self.rt.read_session() as s:
            stamp = tuple(s.execute(sa.select(sa.func.count(), sa.func.max(live.c.id))).one())
        cached = self._clusters_cache.get(task)
        if cached is not None and cached[0] == stamp:
            return cached[1][:limit]
        clusters: dict[str, FailureCluster] = {}
        with self.rt.read_session() as s:
            for fid, name, etype, msg, at in s.execute(q.order_by(FailedJob.id.desc()).limit(100_000)):
                norm = normalise_message(msg)
                key = f"{name}|{etype}|{norm}"
                c = clusters.get(key)
                if c is None:
                    clusters[key] = FailureCluster(key, name, etype, norm, 1, at, at, [fid])
                else:
                    c.count += 1
                    c.first_seen = min(c.first_seen, at)
                    c.last_seen = max(c.last_seen, at)
                    if len(c.ids) < 10_000:
                        c.ids.append(fid)
        ordered = sorted(clusters.values(), key=lambda c: (-c.count, c.task_name))
        self._clusters_cache[task] = (stamp, ordered)
        return ordered[:limit]

    @_audited
    def retry(self, ids: list[int]) -> list[str]:
        """Re-enqueue failed jobs as new attempts; returns the new task ids.

        Each failed row is marked retried in the same transaction that checks it
        was not, so two operators cannot retry one failure twice.
        """
        if not ids:
            return []
        self._act("failed.retry", ",".join(map(str, ids[:20])) + ("…" if len(ids) > 20 else ""),
                  "erpq queue retry " + " ".join(map(str, ids[:20])) + (" …" if len(ids) > 20 else ""),
                  {"count": len(ids)})
        new_ids = []
        missing = []
        for fid in ids:
            task_id = self._retry_one(fid)
            if task_id is None:
                missing.append(fid)
            else:
                new_ids.append(task_id)
        if missing and not new_ids:
            raise NotFound(f"no failed job awaiting retry with id {', '.join(map(str, missing))} "
                           "(unknown, forgotten or already retried)")
        return new_ids

    def _retry_one(self, fid: int) -> str | None:
        rt = self.rt
        with rt.session() as s:
            row = s.get(FailedJob, fid)
            if row is None or row.deleted_at is not None or row.retried_at is not None:
                return None
            taken = s.execute(sa.update(FailedJob)
                              .where(FailedJob.id == fid, FailedJob.retried_at.is_(None))
                              .values(retried_at=utcnow(), retried_by=self.actor.user)).rowcount
            if not taken:
                return None
            old = rt.huey.deserialize_task(row.payload)
            wrapper = rt.tasks.get(old.name)
            if wrapper is None:
                raise NotFound(f"failed job {fid}: task {old.name!r} is no longer registered")
            if JOBS[old.name].periodic:
                task = wrapper.s()
                # The run row goes in this transaction (a second writer would wait on SQLite's lock).
                run = JobRun(task_id=task.id, task_name=task.name, kind="periodic", trigger="retry",
                             status="enqueued", enqueued_at=utcnow(), attempt=1)
                s.add(run)
                s.flush()
                task.erpq = {"run_id": run.id, "trigger": "retry", "retry_of": fid}
            else:
                task = wrapper.s(*old.args, **old.kwargs)
                task.erpq = {k: v for k, v in old.erpq.items()
                             if k in ("tenant_id", "batch_id")}
                task.erpq.update(trigger="retry", retry_of=fid)
            row.retry_task_id = task.id
            s.flush()
            rt.huey.enqueue(task)  # inside the transaction: a failed enqueue un-marks the row
            return task.id

    @_audited
    def retry_all(self, task: str | None = None, search: str | None = None) -> int:
        with self.rt.read_session() as s:
            ids = list(s.scalars(self._failed_query(task, search)
                                 .with_only_columns(FailedJob.id).order_by(FailedJob.id)))
        return len(self.retry(ids)) if ids else 0

    def count_failed(self, task: str | None = None, search: str | None = None) -> int:
        with self.rt.read_session() as s:
            return s.scalar(sa.select(sa.func.count()).select_from(self._failed_query(task, search).subquery())) or 0

    @_audited
    def forget(self, ids: list[int] | int) -> int:
        """Hide failed jobs (restorable with ``restore`` for retention.undo_minutes)."""
        ids = [ids] if isinstance(ids, int) else list(ids)
        self._act("failed.forget", ",".join(map(str, ids[:20])), "erpq queue forget " + " ".join(map(str, ids[:20])))
        with self.rt.session() as s:
            n = s.execute(sa.update(FailedJob).where(FailedJob.id.in_(ids), FailedJob.deleted_at.is_(None))
                          .values(deleted_at=utcnow(), deleted_by=self.actor.user)).rowcount
        if not n:
            raise NotFound(f"no failed job with id {', '.join(map(str, ids))}")
        return n

    @_audited
    def flush_failed(self, task: str | None = None) -> tuple[int, dt.datetime]:
        """Hide every failed job awaiting action (of a task); returns (count, mark) for
        ``restore(since=mark)``."""
        cmd = "erpq queue flush" + (f" --task {shlex.quote(task)}" if task else "")
        self._act("failed.flush", task or "*", cmd)
        mark = utcnow()
        with self.rt.session() as s:
            # The failures awaiting action (retried ones stay, as the history of their retry).
            q = sa.update(FailedJob).where(FailedJob.deleted_at.is_(None), FailedJob.retried_at.is_(None))
            if task:
                q = q.where(FailedJob.task_name == task)
            n = s.execute(q.values(deleted_at=mark, deleted_by=self.actor.user)).rowcount
        return n, mark

    @_audited
    def restore(self, ids: list[int] | None = None, since: dt.datetime | None = None) -> int:
        """Undo forget/flush: bring back forgotten failed jobs (by id, or hidden since a time)."""
        self._act("failed.restore", ",".join(map(str, ids or [])) or str(since), "erpq queue restore"
                  + (" " + " ".join(map(str, ids)) if ids else ""))
        q = sa.update(FailedJob).where(FailedJob.deleted_at.is_not(None))
        if ids:
            q = q.where(FailedJob.id.in_(ids))
        if since is not None:
            q = q.where(FailedJob.deleted_at >= since)
        with self.rt.session() as s:
            return s.execute(q.values(deleted_at=None, deleted_by=None)).rowcount

    @_audited
    def prune_failed(self, hours: float) -> int:
        if hours < 0:
            raise OpsError("--hours must be 0 or more")
        self._act("failed.prune", f"{hours}h", f"erpq queue prune-failed --hours {hours:g}")
        cutoff = utcnow() - dt.timedelta(hours=hours)
        with self.rt.session() as s:
            return s.execute(sa.delete(FailedJob).where(FailedJob.failed_at < cutoff)).rowcount

    # ------------------------------------------------------------ history
    def runs(self, offset: int = 0, limit: int = 50, task: str | None = None, status: str | None = None,
             search: str | None = None, with_total: bool = False) -> Page:
        """Recent runs, newest first. Counting 1,000,000 rows is slow, so total is -1
        unless asked for."""
        q = sa.select(JobRun)
        if task:
            q = q.where(JobRun.task_name == task)
        if status:
            q = q.where(JobRun.status == status)
        if search:
            like = f"%{search}%"
            q = q.where(sa.or_(JobRun.task_name.like(like), JobRun.args_summary.like(like),
                               JobRun.error.like(like), JobRun.task_id.like(like)))
        with self.rt.read_session() as s:
            rows = s.scalars(q.order_by(JobRun.id.desc()).offset(offset).limit(limit)).all()
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
    def batches(self, offset: int = 0, limit: int = 50, active_only: bool = False) -> Page:
        q = sa.select(JobBatch)
        if active_only:
            q = q.where(JobBatch.finished_at.is_(None), JobBatch.cancelled_at.is_(None))
        with self.rt.read_session() as s:
            total = s.scalar(sa.select(sa.func.count()).select_from(q.subquery())) or 0
            rows = s.scalars(q.order_by(JobBatch.created_at.desc()).offset(offset).limit(limit)).all()
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
        with self.rt.session() as s:
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
        locks.release(self.rt.Session, name)

    # ------------------------------------------------------------ health
    def health_latest(self) -> list[HealthInfo]:
        """The latest reading of the host and of every tenant."""
        with self.rt.read_session() as s:
            latest = s.scalar(sa.select(sa.func.max(SystemHealth.checked_at)).where(SystemHealth.tenant_id.is_(None)))
            if latest is None:
                return []
            rows = s.execute(sa.select(SystemHealth, Tenant.slug)
                             .outerjoin(Tenant, Tenant.id == SystemHealth.tenant_id)
                             .where(SystemHealth.checked_at == latest)
                             .order_by(SystemHealth.tenant_id.is_not(None), Tenant.slug)).all()
            return [_health_info(h, slug) for h, slug in rows]

    def health_history(self, tenant_id: int | None = None, limit: int = 60) -> list[HealthInfo]:
        """Readings of the host (or a tenant), oldest first, the last ``limit`` of them."""
        with self.rt.read_session() as s:
            q = sa.select(SystemHealth, Tenant.slug).outerjoin(Tenant, Tenant.id == SystemHealth.tenant_id)
            q = q.where(SystemHealth.tenant_id.is_(None) if tenant_id is None else SystemHealth.tenant_id == tenant_id)
            rows = s.execute(q.order_by(SystemHealth.id.desc()).limit(limit)).all()
            return [_health_info(h, slug) for h, slug in reversed(rows)]

    def health_thresholds(self) -> dict[str, tuple[float, float]]:
        h = self.rt.settings.health
        return {m: (getattr(h, f"{m}_warning"), getattr(h, f"{m}_critical"))
                for m in ("cpu", "memory", "disk", "db_connections", "queue", "failed_per_hour")}

    def check_health(self) -> list[HealthInfo]:
        """Take a reading now (what erp:check-system-health does) and return it."""
        from . import health

        self.check_writable("health.check")
        with self.rt.session() as s:
            health.check_system_health(s, self.rt)
        return self.health_latest()

    # ------------------------------------------------------------ tenants and users
    def tenants(self) -> list[TenantInfo]:
        with self.rt.read_session() as s:
            return [TenantInfo(t.id, t.slug, t.name, t.is_active, t.created_at)
                    for t in s.scalars(sa.select(Tenant).order_by(Tenant.slug))]

    @_audited
    def add_tenant(self, slug: str, name: str | None = None) -> TenantInfo:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,63}", slug or ""):
            raise OpsError(f"tenant slug {slug!r} is invalid: use lowercase letters, digits and '-' (max 64)")
        self.check_writable("tenant.add")
        with self.rt.session() as s:
            if s.scalar(sa.select(Tenant.id).where(Tenant.slug == slug)) is not None:
                raise Conflict(f"tenant {slug!r} already exists")
            t = Tenant(slug=slug, name=name or slug)
            s.add(t)
            s.flush()
            info = TenantInfo(t.id, t.slug, t.name, t.is_active, t.created_at)
        self._act("tenant.add", slug, f"erpq tenant add {shlex.quote(slug)}")
        return info

    def tenant_id(self, ref: str | int) -> int:
        """A tenant id from a slug or an id."""
        with self.rt.read_session() as s:
            q = sa.select(Tenant.id)
            q = q.where(Tenant.id == int(ref)) if str(ref).isdigit() else q.where(Tenant.slug == str(ref))
            tid = s.scalar(q)
        if tid is None:
            raise NotFound(f"no tenant {ref!r} (see 'erpq tenant list')")
        return tid

    def users(self, tenant: str | None = None) -> list[UserInfo]:
        q = sa.select(User, Tenant.slug).join(Tenant, Tenant.id == User.tenant_id).order_by(Tenant.slug, User.name)
        if tenant:
            q = q.where(User.tenant_id == self.tenant_id(tenant))
        with self.rt.read_session() as s:
            return [UserInfo(u.id, u.tenant_id, slug, u.name, u.email, u.is_active) for u, slug in s.execute(q)]

    @_audited
    def add_user(self, tenant: str, name: str, email: str | None = None) -> UserInfo:
        tid = self.tenant_id(tenant)
        if not name.strip():
            raise OpsError("user name must not be empty")
        if email and not re.fullmatch(r"[^@\s]+@[^@\s]+", email):
            raise OpsError(f"email {email!r} is not an address")
        self.check_writable("user.add")
        with self.rt.session() as s:
            if email and s.scalar(sa.select(User.id).where(User.tenant_id == tid, User.email == email)):
                raise Conflict(f"tenant {tenant!r} already has a user with email {email!r}")
            u = User(tenant_id=tid, name=name.strip(), email=email)
            s.add(u)
            s.flush()
            slug = s.scalar(sa.select(Tenant.slug).where(Tenant.id == tid))
            info = UserInfo(u.id, tid, slug, u.name, u.email, u.is_active)
        self._act("user.add", f"{tenant}/{name}", f"erpq user add --tenant {shlex.quote(str(tenant))} "
                  f"{shlex.quote(name)}" + (f" --email {shlex.quote(email)}" if email else ""))
        return info

    # ------------------------------------------------------------ audit
    def audit_log(self, offset: int = 0, limit: int = 50) -> Page:
        with self.rt.read_session() as s:
            total = s.scalar(sa.select(sa.func.count()).select_from(AuditLog)) or 0
            rows = s.scalars(sa.select(AuditLog).order_by(AuditLog.id.desc()).offset(offset).limit(limit)).all()
            return Page([AuditInfo(a.id, a.at, a.actor, a.client, a.source, a.action, a.target, a.command, a.detail)
                         for a in rows], total, offset, limit)

    # --- webhooks
    def webhooks(self, tenant: str | int | None = None) -> list[WebhookInfo]:
        """Subscriptions (of one tenant), with failure counts and why disabled; never the secret."""
        from .models import Webhook

        q = sa.select(Webhook, Tenant.slug).join(Tenant, Tenant.id == Webhook.tenant_id).order_by(Webhook.id)
        if tenant is not None:
            q = q.where(Webhook.tenant_id == self.tenant_id(tenant))
        with self.rt.read_session() as s:
            return [_webhook_info(h, slug) for h, slug in s.execute(q)]

    def webhook_deliveries(self, offset: int = 0, limit: int = 50, status: str | None = None,
                           webhook_id: int | None = None, search: str | None = None) -> Page:
        """Deliveries, newest first; ``search`` matches the delivery id, event or error."""
        from .models import WebhookDelivery as D
        from .webhooks.service import STATUSES

        if status is not None and status not in STATUSES:
            raise OpsError(f"unknown delivery status {status!r} (one of {', '.join(STATUSES)})")
        q = sa.select(D)
        if status is not None:
            q = q.where(D.status == status)
        if webhook_id is not None:
            q = q.where(D.webhook_id == webhook_id)
        if search:
            like = f"%{search}%"
            q = q.where(sa.or_(D.delivery_id.like(like), D.event.like(like), D.error.like(like)))
        with self.rt.read_session() as s:
            total = s.scalar(sa.select(sa.func.count()).select_from(q.subquery())) or 0
            rows = s.scalars(q.order_by(D.id.desc()).offset(offset).limit(limit)).all()
            return Page([_delivery_info(d) for d in rows], total, offset, limit)

    def delivery_counts(self) -> dict[str, int]:
        """Deliveries per status (every status present, zero when none)."""
        from .webhooks import service

        with self.rt.read_session() as s:
            counts = service.delivery_counts(s)
        return {status: counts.get(status, 0) for status in service.STATUSES}

    @_audited
    def redeliver(self, ref: str | int) -> DeliveryInfo:
        """Send a finished delivery again (same delivery id, a full set of attempts)."""
        from .webhooks.service import WebhookError, WebhookService

        self._act("webhook.redeliver", str(ref), f"erpq webhook redeliver {shlex.quote(str(ref))}")
        try:
            d = WebhookService(self.rt).redeliver(ref)
        except WebhookError as exc:
            raise _webhook_error(exc) from None
        return _delivery_info(d)

    @_audited
    def disable_webhook(self, webhook_id: int, reason: str | None = None) -> WebhookInfo:
        """Stop sending to a subscription (its queued deliveries end as dead)."""
        from .webhooks import service

        reason = reason or "disabled by operator"
        self._act("webhook.disable", str(webhook_id),
                  f"erpq webhook disable {webhook_id} --reason {shlex.quote(reason)}")
        try:
            with self.rt.session() as s:
                service.disable_webhook(s, webhook_id, reason)
        except service.WebhookError as exc:
            raise _webhook_error(exc) from None
        return self._webhook(webhook_id)

    @_audited
    def enable_webhook(self, webhook_id: int) -> WebhookInfo:
        """Send to a subscription again, with a clean failure count."""
        from .webhooks import service

        self._act("webhook.enable", str(webhook_id), f"erpq webhook enable {webhook_id}")
        try:
            with self.rt.session() as s:
                service.enable_webhook(s, webhook_id)
        except service.WebhookError as exc:
            raise _webhook_error(exc) from None
        return self._webhook(webhook_id)

    def audit(self, action: str, target: str | None, command: str) -> None:
        """Audit an action done elsewhere (e.g. by a capability's CLI); refused in read-only mode.

        Call it before the action, inside an ``@_audited`` caller, or after it succeeded.
        """
        self._act(action, target, command)

    def _webhook(self, webhook_id: int) -> WebhookInfo:
        from .models import Webhook

        with self.rt.read_session() as s:
            row = s.execute(sa.select(Webhook, Tenant.slug).join(Tenant, Tenant.id == Webhook.tenant_id)
                            .where(Webhook.id == webhook_id)).first()
        if row is None:
            raise NotFound(f"unknown webhook id {webhook_id}")
        return _webhook_info(*row)


# ====================================================================== conversions


def _matches(info: JobInfo, search: str) -> bool:
    s = search.lower()
    return s in info.task_name.lower() or s in info.args_summary.lower() or s in info.id


def _key_text(key) -> str:
    return key.hex() if isinstance(key, bytes | memoryview) else f"#{key}"


def _key_value(text: str):
    return int(text[1:]) if text.startswith("#") else bytes.fromhex(text)


def _failed_info(r: FailedJob, detail: bool = False) -> FailedInfo:
    args = r.args or {}
    summary = summarize_args(args.get("args", []), args.get("kwargs", {})) if isinstance(args, dict) else str(args)
    return FailedInfo(r.id, r.task_id, r.task_name, summary, r.exception_type, r.exception, r.attempts,
                      r.failed_at, r.reason, r.tenant_id, r.retried_at, r.retry_task_id,
                      args=args if detail else None, traceback=r.traceback if detail else None)


def _run_info(r: JobRun) -> RunInfo:
    return RunInfo(r.id, r.task_id, r.task_name, r.kind, r.trigger, r.status, r.args_summary, r.tenant_id,
                   r.attempt, r.enqueued_at, r.started_at, r.finished_at, r.duration_s, r.runner, r.error)


def _batch_info(b: JobBatch) -> BatchInfo:
    done = max(0, b.total - b.pending)
    progress = done / b.total if b.total else 1.0
    eta = None
    if b.finished_at is None and b.cancelled_at is None and done:
        elapsed = (utcnow() - b.created_at).total_seconds()
        eta = elapsed / done * b.pending
    return BatchInfo(b.id, b.name, b.kind, b.tenant_id, b.total, b.pending, b.failed, done, progress,
                     b.created_at, b.finished_at, b.cancelled_at, eta, list(b.failed_job_ids or []))


def _health_info(h: SystemHealth, slug: str | None) -> HealthInfo:
    return HealthInfo(h.tenant_id, slug or "host", h.checked_at, h.status, h.cpu_percent, h.memory_percent,
                      h.disk_percent, h.db_connections, h.queue_pending, h.queue_scheduled, h.failed_last_hour,
                      h.details)


def _webhook_info(h, slug: str) -> WebhookInfo:
    return WebhookInfo(h.id, h.tenant_id, slug, h.url, list(h.events or []), h.description, h.is_active,
                       h.consecutive_failures or 0, h.first_failure_at, h.disabled_at, h.disabled_reason,
                       h.created_at)


def _delivery_info(d) -> DeliveryInfo:
    return DeliveryInfo(d.id, d.delivery_id, d.webhook_id, d.tenant_id, d.event, d.status, d.attempts,
                        d.response_code, d.error, d.duration_ms, d.next_retry_at, d.delivered_at, d.created_at)


def _webhook_error(exc: Exception) -> OpsError:
    """A webhook service error as the ops error an operator caused."""
    message = str(exc)
    return NotFound(message) if message.startswith("unknown") else Conflict(message)

