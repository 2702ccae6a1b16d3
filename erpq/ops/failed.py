"""Ops section: failed jobs (list, detail, clusters, retry, forget, restore, flush, prune)."""

from __future__ import annotations

import datetime as dt
import math
import shlex
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ..db import utcnow
from ..models import FailedJob, JobRun
from ..runtime.history import summarize_args
from ..runtime.registry import JOBS
from .base import (
    Invalid,
    NotFound,
    OpsCore,
    Page,
    _audited,
    _Record,
    normalise_message,
    text_search,
)

# ====================================================================== records



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


class FailedOps(OpsCore):
    # ------------------------------------------------------------ failed
    def _failed_query(self, task: str | None, search: str | None, include_retried: bool = False):
        q = sa.select(FailedJob).where(FailedJob.deleted_at.is_(None))
        if not include_retried:
            q = q.where(FailedJob.retried_at.is_(None))
        if task:
            q = q.where(FailedJob.task_name == task)
        if search:
            q = q.where(text_search((FailedJob.task_name, FailedJob.exception, FailedJob.exception_type,
                                     FailedJob.task_id), search))
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
        return self._retry_ids(ids)

    def _retry_ids(self, ids: list[int]) -> list[str]:
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
        """Mark failed job ``fid`` retried in the action's transaction; its new job is
        enqueued once that commits (a failed enqueue un-marks the row)."""
        rt = self.rt
        with self._tx() as s:
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
            run_id = task.erpq.get("run_id")

            def unmark() -> None:
                with rt.session() as s2:
                    s2.execute(sa.update(FailedJob).where(FailedJob.id == fid)
                               .values(retried_at=None, retried_by=None, retry_task_id=None))
                    if run_id is not None:
                        s2.execute(sa.delete(JobRun).where(JobRun.id == run_id))

            self._after_commit(lambda: rt.huey.enqueue(task), unmark)
            return task.id

    @_audited
    def retry_all(self, task: str | None = None, search: str | None = None) -> int:
        with self.rt.read_session() as s:
            ids = list(s.scalars(self._failed_query(task, search)
                                 .with_only_columns(FailedJob.id).order_by(FailedJob.id)))
        if not ids:
            return 0
        # The equivalent command is the one that selects the same jobs, not 3,000 ids.
        cmd = "erpq queue retry --all" + (f" --task {shlex.quote(task)}" if task else "") \
            + (f" --search {shlex.quote(search)}" if search else "")
        self._act("failed.retry", task or search or "*", cmd, {"count": len(ids), "task": task, "search": search})
        return len(self._retry_ids(ids))

    def count_failed(self, task: str | None = None, search: str | None = None) -> int:
        with self.rt.read_session() as s:
            return s.scalar(sa.select(sa.func.count()).select_from(self._failed_query(task, search).subquery())) or 0

    def failed_since(self, since: dt.datetime) -> int:
        """How many jobs failed at or after ``since`` (hidden ones included): alerts read it."""
        with self.rt.read_session() as s:
            return s.scalar(sa.select(sa.func.count()).select_from(FailedJob)
                            .where(FailedJob.failed_at >= since)) or 0

    @_audited
    def forget(self, ids: list[int] | int) -> int:
        """Hide failed jobs (restorable with ``restore`` for retention.undo_minutes)."""
        ids = [ids] if isinstance(ids, int) else list(ids)
        self._act("failed.forget", ",".join(map(str, ids[:20])), "erpq queue forget " + " ".join(map(str, ids[:20])))
        with self._tx() as s:
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
        with self._tx() as s:
            # The failures awaiting action (retried ones stay, as the history of their retry).
            q = sa.update(FailedJob).where(FailedJob.deleted_at.is_(None), FailedJob.retried_at.is_(None))
            if task:
                q = q.where(FailedJob.task_name == task)
            n = s.execute(q.values(deleted_at=mark, deleted_by=self.actor.user)).rowcount
        return n, mark

    @_audited
    def restore(self, ids: list[int] | int | None = None, since: dt.datetime | None = None,
                everything: bool = False) -> int:
        """Undo forget/flush: bring back forgotten failed jobs, by id or hidden since a time.

        Without ids or ``since`` nothing is assumed: ``everything=True`` must ask
        for every hidden failure explicitly. Ids none of which is hidden raise
        ``NotFound``, as ``forget`` does.
        """
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if not ids and since is None and not everything:
            raise Invalid("restore what? give failed job ids, a time (since) or everything=True")
        self._act("failed.restore", ",".join(map(str, ids[:20])) or (str(since) if since else "*"),
                  "erpq queue restore" + (" " + " ".join(map(str, ids[:20])) if ids else ""))
        q = sa.update(FailedJob).where(FailedJob.deleted_at.is_not(None))
        if ids:
            q = q.where(FailedJob.id.in_(ids))
        if since is not None:
            q = q.where(FailedJob.deleted_at >= since)
        with self._tx() as s:
            n = s.execute(q.values(deleted_at=None, deleted_by=None)).rowcount
        if ids and not n:
            raise NotFound(f"no forgotten failed job with id {', '.join(map(str, ids))}")
        return n

    @_audited
    def prune_failed(self, hours: float) -> int:
        if not isinstance(hours, int | float) or not math.isfinite(hours) or not 0 <= hours <= 876_000:
            raise Invalid(f"--hours must be a number from 0 to 876000 (got {hours!r})")
        self._act("failed.prune", f"{hours}h", f"erpq queue prune-failed --hours {hours:g}")
        cutoff = utcnow() - dt.timedelta(hours=hours)
        with self._tx() as s:
            return s.execute(sa.delete(FailedJob).where(FailedJob.failed_at < cutoff)).rowcount


# ====================================================================== conversions


def _failed_info(r: FailedJob, detail: bool = False) -> FailedInfo:
    args = r.args or {}
    summary = summarize_args(args.get("args", []), args.get("kwargs", {})) if isinstance(args, dict) else str(args)
    return FailedInfo(r.id, r.task_id, r.task_name, summary, r.exception_type, r.exception, r.attempts,
                      r.failed_at, r.reason, r.tenant_id, r.retried_at, r.retry_task_id,
                      args=args if detail else None, traceback=r.traceback if detail else None)
