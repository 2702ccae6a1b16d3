"""Ops section: jobs waiting, delayed and running; cancel, dispatch."""

from __future__ import annotations

import datetime as dt
import inspect
import shlex
import uuid
from dataclasses import dataclass

import sqlalchemy as sa

from ..models import FailedJob
from ..runtime import UnknownTask
from ..runtime.history import summarize_args
from ..runtime.registry import JOBS
from .base import (
    Invalid,
    NotFound,
    OpsCore,
    OpsError,
    Page,
    _audited,
    _Record,
    check_json_payload,
    check_page,
)

# ====================================================================== records



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
class TenantQueueInfo(_Record):
    """Queue depth, oldest waiting job and throughput of one tenant (0: no tenant)."""

    tenant_id: int
    tenant: str
    pending: int
    running: int
    oldest_age_s: float | None
    done_last_5m: int
    per_minute: float


#: Pending jobs decoded to count per tenant on a store without lanes (``queue.fair`` off).
TENANT_SCAN_LIMIT = 50_000


class QueueOps(OpsCore):
    def queue_by_tenant(self) -> list[TenantQueueInfo]:
        """Per tenant: pending jobs, running jobs, age of the oldest pending one and
        jobs finished in the last 5 minutes (``erpq queue list --by-tenant``)."""
        from ..db import utcnow
        from ..models import JobRun, Tenant

        rt, now = self.rt, utcnow()
        storage = rt.huey.storage
        depths: dict[int, tuple[int, bytes]] = {}
        running: dict[int, int] = {}
        if hasattr(storage, "tenant_depths"):
            depths, running = storage.tenant_depths(), storage.running_by_tenant()
        else:
            counts: dict[int, list] = {}
            pos = 0
            while pos < TENANT_SCAN_LIMIT:
                rows = storage.enqueued_page(pos, 1000)
                if not rows:
                    break
                pos += len(rows)
                for _key, data in rows:
                    tenant = rt.huey.lane_of(bytes(data))[0]
                    entry = counts.setdefault(tenant, [0, bytes(data)])
                    entry[0] += 1
            depths = {t: (n, d) for t, (n, d) in counts.items()}
            for _key, _runner, _ts, data in storage.inflight_page(0, 1000):
                tenant = rt.huey.lane_of(bytes(data))[0]
                running[tenant] = running.get(tenant, 0) + 1
        since = now - dt.timedelta(minutes=5)
        with rt.read_session() as s:
            done = dict(s.execute(sa.select(sa.func.coalesce(JobRun.tenant_id, 0), sa.func.count())
                                  .where(JobRun.finished_at >= since, JobRun.status == "success")
                                  .group_by(sa.func.coalesce(JobRun.tenant_id, 0))).all())
            slugs = dict(s.execute(sa.select(Tenant.id, Tenant.slug)).all())
        out = []
        for tenant in sorted(set(depths) | set(running) | set(done)):
            n, oldest = depths.get(tenant, (0, b""))
            age = None
            if n and oldest:
                try:
                    _msg, meta = rt.huey.decode(oldest)
                    age = max(0.0, now.timestamp() - float(meta["enqueued_at"]))
                except Exception:
                    age = None
            out.append(TenantQueueInfo(tenant, slugs.get(tenant, "-" if tenant == 0 else f"#{tenant}"), n,
                                       running.get(tenant, 0), age, done.get(tenant, 0), done.get(tenant, 0) / 5))
        return out


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
        check_page(offset, limit)
        storage = self.rt.huey.storage
        total = storage.queue_size()
        items = self._filtered(lambda o, n: storage.enqueued_page(o, n), offset, limit, search,
                               lambda key, data: self._job(data, "pending", key))
        return Page(items, total, offset, limit)

    def scheduled(self, offset: int = 0, limit: int = 50, search: str | None = None) -> Page:
        check_page(offset, limit)
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
        check_page(offset, limit)
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
        self._act("queue.cancel", job_id, f"erpq queue cancel {shlex.quote(job_id)}")
        # The audit row commits first; a job not found takes it back.
        self._after_commit(lambda: self._remove_job(job_id, key))

    def _remove_job(self, job_id: str, key: str | None) -> None:
        storage = self.rt.huey.storage
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

    def count_pending(self, task: str | None = None) -> int:
        """Pending jobs (of job ``task``): what ``clear_queue`` would remove now."""
        if task is None:
            return self.rt.huey.pending_count()
        self._known_task(task)
        return sum(1 for _key, t in self._pending_tasks() if t is not None and t.name == task)

    def clear_queue(self, task: str | None = None) -> int:
        """Remove every pending job (of job ``task``) from the queue; returns how
        many were removed. Scheduled (delayed, retrying) and running jobs stay.
        A cleared job counts as skipped: its idempotency key is freed, a
        periodic run is marked cancelled, a batch counts it done."""
        removed: list[int] = []
        self._clear_queue(task, removed)
        return sum(removed)

    @_audited
    def _clear_queue(self, task: str | None, removed: list[int]) -> None:
        if task is not None:
            self._known_task(task)
        cmd = "erpq queue clear" + (f" --task {shlex.quote(task)}" if task else "") + " --yes"
        self._act("queue.clear", task or "*", cmd)
        # The audit row commits first; the jobs are removed once it has.
        self._after_commit(lambda: removed.append(self._purge_pending(task)))

    def _known_task(self, task: str) -> None:
        if task not in self.rt.tasks:
            raise NotFound(f"unknown task {task!r} (known: {', '.join(sorted(self.rt.tasks))})")

    def _pending_tasks(self, chunk: int = 1000):
        """(key, task or None when unreadable) of every pending job, oldest first."""
        storage = self.rt.huey.storage
        pos = 0
        while True:
            rows = storage.enqueued_page(pos, chunk)
            if not rows:
                return
            pos += len(rows)
            for key, data in rows:
                yield key, self._decode(data)

    def _purge_pending(self, task: str | None) -> int:
        from ..db import utcnow
        from ..models import JobKey, JobRun

        storage = self.rt.huey.storage
        gone = []
        pos = 0
        while True:
            rows = storage.enqueued_page(pos, 1000)
            if not rows:
                break
            kept = 0
            for key, data in rows:
                t = self._decode(data)
                if task is not None and (t is None or t.name != task):
                    kept += 1
                    continue
                if storage.remove_enqueued(key):  # else a worker took it first
                    gone.append(t)
            pos += kept  # removed rows shift the rest forward
        if not gone:
            return 0
        ids = [t.id for t in gone if t is not None]
        now = utcnow()
        with self.rt.session() as s:
            for i in range(0, len(ids), 500):
                part = ids[i:i + 500]
                s.execute(sa.delete(JobKey).where(JobKey.task_id.in_(part), JobKey.finished_at.is_(None)))
                s.execute(sa.update(JobRun).where(JobRun.task_id.in_(part), JobRun.status == "enqueued")
                          .values(status="cancelled", finished_at=now, error="cleared (erpq queue clear)"))
        for t in gone:
            batch_id = (getattr(t, "erpq", None) or {}).get("batch_id") if t is not None else None
            if batch_id:
                self.rt.history.batch_done(batch_id, None)
        return len(gone)

    @_audited
    def dispatch(self, task_name: str, args: list | None = None, kwargs: dict | None = None,
                 key: str | None = None) -> str:
        """Enqueue any registered job by name; returns the task id. With an
        idempotency ``key`` a second dispatch while the first job is pending,
        running or recently finished returns that job's id and enqueues nothing."""
        if task_name not in self.rt.tasks:
            known = ", ".join(sorted(self.rt.tasks))
            raise NotFound(f"unknown task {task_name!r} (known: {known})")
        args, kwargs = list(args or []), dict(kwargs or {})
        spec = JOBS.get(task_name)
        if spec is not None and spec.periodic and (args or kwargs):
            raise Invalid(f"{task_name!r} is a periodic task and takes no arguments "
                          f"(run it with: erpq schedule run {task_name})")
        reserved = {"eta", "delay", "id", "retries", "retry_delay", "retry_backoff", "priority",
                    "expires", "timeout"} & set(kwargs)
        if reserved:
            raise OpsError(f"argument name(s) {', '.join(sorted(reserved))} are reserved by Huey")
        if key is not None and not 0 < len(key) <= 191:
            raise Invalid("--key: 1 to 191 characters")
        check_arguments(task_name, spec, args, kwargs)
        payload = (check_json_payload({"args": args, "kwargs": kwargs}, "--args",
                                      self.rt.settings.queue.max_args_bytes) if (args or kwargs) else "")
        self._act("queue.dispatch", task_name,
                  f"erpq queue dispatch {shlex.quote(task_name)}" + (f" --args {shlex.quote(payload)}" if payload else "")
                  + (f" --key {shlex.quote(key)}" if key is not None else ""))
        if key is not None:
            # A keyed job is enqueued at once: the answer is the id of the job holding the key,
            # which may be an earlier one; the key makes a repeated dispatch harmless.
            try:
                return self.rt.enqueue(task_name, *args, trigger="manual", key=key, **kwargs)
            except UnknownTask as exc:
                raise NotFound(str(exc)) from None
        task_id = str(uuid.uuid4())

        def enqueue() -> None:
            try:
                self.rt.enqueue(task_name, *args, trigger="manual", task_id=task_id, **kwargs)
            except UnknownTask as exc:
                raise NotFound(str(exc)) from None

        # The audit row commits first, the job is enqueued last (a failed enqueue takes the row back).
        self._after_commit(enqueue)
        return task_id


# ====================================================================== conversions


def check_arguments(task_name: str, spec, args: list, kwargs: dict) -> None:
    """Refuse arguments the job's function cannot be called with (before enqueueing)."""
    func = getattr(spec, "func", None)
    if func is None:
        return
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return
    try:
        sig.bind(*args, **kwargs)
    except TypeError as exc:
        params = ", ".join(str(p) for p in sig.parameters.values())
        raise Invalid(f"{task_name}: arguments do not fit the job ({exc}); it takes ({params})") from None


def _matches(info: JobInfo, search: str) -> bool:
    s = search.lower()
    return s in info.task_name.lower() or s in info.args_summary.lower() or s in info.id.lower()


def _key_text(key) -> str:
    return key.hex() if isinstance(key, bytes | memoryview) else f"#{key}"


def _key_value(text: str):
    return int(text[1:]) if text.startswith("#") else bytes.fromhex(text)
