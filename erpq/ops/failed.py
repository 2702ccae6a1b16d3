"""Ops section: failed jobs (list, detail, clusters, retry, forget, restore, flush, prune)."""

from __future__ import annotations

import datetime as dt
import math
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ..db import utcnow
from ..models import FailedJob, JobRun
from ..runtime.history import summarize_args
from ..runtime.registry import JOBS
from .base import (
    BULK_CHUNK,
    Invalid,
    NotFound,
    OpsCore,
    Page,
    _audited,
    _Record,
    check_id,
    normalise_message,
    order_by,
    text_search,
)

#: ``progress(done, total)`` after each chunk of a bulk action; False stops the rest.
Progress = Callable[[int, int], "bool | None"]

#: The orders ``failed(sort=...)`` offers, each along an index (``-`` first: descending).
FAILED_SORTS = {"id": FailedJob.id, "task": FailedJob.task_name, "failed": FailedJob.failed_at}

#: Most ids one filter or drill-down may name (a failure cluster keeps at most this many).
MAX_IDS = 10_000


class _NothingDone(Exception):
    """A chunk of a bulk action changed nothing: its transaction (and a pending audit row) rolls back."""


def _ids(ids: Sequence[int] | None, what: str = "failed job id") -> list[int] | None:
    if ids is None:
        return None
    ids = list(ids)
    if len(ids) > MAX_IDS:
        raise Invalid(f"at most {MAX_IDS:,} {what}s at once (got {len(ids):,})")
    return [check_id(i, what) for i in ids]


def _id_list(ids: list[int]) -> str:
    return " ".join(map(str, ids[:20])) + (" …" if len(ids) > 20 else "")

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
    def _failed_query(self, task: str | None, search: str | None, include_retried: bool = False,
                      ids: list[int] | None = None, task_ids: Sequence[str] | None = None,
                      by_order: bool = False):
        live = FailedJob.deleted_at.is_(None)
        if by_order and self.rt.engine.dialect.name == "sqlite":
            # Most failed jobs are live: said so, SQLite reads a sorted page along the
            # order's index (ix_failed_jobs_task, ..._failed_at) instead of taking the
            # index of deleted_at and sorting every live row in a temporary B-tree.
            live = sa.func.likely(live)
        q = sa.select(FailedJob).where(live)
        if ids is not None:
            q = q.where(FailedJob.id.in_(ids))
        if task_ids is not None:
            q = q.where(FailedJob.task_id.in_([str(t) for t in list(task_ids)[:MAX_IDS]]))
        if not include_retried:
            q = q.where(FailedJob.retried_at.is_(None))
        if task:
            q = q.where(FailedJob.task_name == task)
        if search:
            q = q.where(text_search((FailedJob.task_name, FailedJob.exception, FailedJob.exception_type,
                                     FailedJob.task_id), search))
        return q

    def failed(self, offset: int = 0, limit: int = 50, task: str | None = None,
               search: str | None = None, include_retried: bool = False, ids: list[int] | None = None,
               task_ids: list[str] | None = None, sort: str | None = None) -> Page:
        """A page of failed jobs, newest first or by ``sort`` (``FAILED_SORTS``, ``-`` for
        descending: the order is the database's, so a page of a million rows is a page);
        ``ids`` / ``task_ids`` keep only those failed jobs (a cluster's, a batch's, a run's)."""
        ids = _ids(ids)
        q = self._failed_query(task, search, include_retried, ids, task_ids)
        by_order = bool(sort) and sort.lstrip("-") != "id" and ids is None and task_ids is None
        with self.rt.read_session() as s:
            total = s.scalar(sa.select(sa.func.count()).select_from(q.subquery()))
            if by_order:
                q = self._failed_query(task, search, include_retried, ids, task_ids, by_order=True)
            q = order_by(q, sort, FAILED_SORTS, FailedJob.id, [FailedJob.id.desc()])
            rows = s.scalars(q.offset(offset).limit(limit)).all()
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

    def retry(self, ids: list[int], progress: Progress | None = None) -> list[str]:
        """Re-enqueue failed jobs as new attempts; returns the new task ids.

        Each failed row is marked retried in the same transaction that checks it
        was not, so two operators cannot retry one failure twice. Many ids go in
        chunks of ``BULK_CHUNK``, one transaction each, audited once (with the
        first chunk that retried something); see ``_bulk``.
        """
        ids = list(ids)
        if not ids:
            return []
        audit = ("failed.retry", ",".join(map(str, ids[:20])) + ("…" if len(ids) > 20 else ""),
                 "erpq queue retry " + _id_list(ids), {"count": len(ids)})
        new_ids = self._bulk(ids, audit, self._retry_chunk, progress)
        if not new_ids:
            raise NotFound(f"no failed job awaiting retry with id {', '.join(map(str, ids[:20]))} "
                           "(unknown, forgotten or already retried)")
        return new_ids

    def _retry_chunk(self, chunk: list[int]) -> list[str]:
        return [t for t in map(self._retry_one, chunk) if t is not None]

    def _bulk(self, ids: list[int], audit: tuple, step: Callable[[list[int]], list],
              progress: Progress | None) -> list:
        """Do ``step`` over ``ids`` in chunks of ``BULK_CHUNK``, each in its own
        transaction, so a bulk action of thousands of rows never holds the
        database for its whole length and a front end can show how far it got
        (``progress(done, total)``; returning False stops after that chunk).

        The action is audited once: the audit row (``audit``: the ``_act``
        arguments) commits with the first chunk that changed something; a
        chunk that changed nothing rolls back. Returns what the steps returned.
        """
        out: list = []
        pending: tuple | None = audit
        total = len(ids)
        for start in range(0, total, BULK_CHUNK):
            chunk = ids[start:start + BULK_CHUNK]
            try:
                out.extend(self._bulk_chunk(pending, step, chunk))
                pending = None
            except _NothingDone:
                pass
            if progress is not None and progress(start + len(chunk), total) is False:
                break
        return out

    @_audited
    def _bulk_chunk(self, audit: tuple | None, step: Callable[[list[int]], list], chunk: list[int]) -> list:
        if audit is not None:
            self._act(*audit)
        done = step(chunk)
        if not done:
            raise _NothingDone
        return done

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

    def retry_all(self, task: str | None = None, search: str | None = None, ids: list[int] | None = None,
                  progress: Progress | None = None) -> int:
        """Retry every failed job awaiting action (of ``task``, matching ``search``, among
        ``ids``), in chunks as ``retry`` does, audited once; returns how many."""
        only = _ids(ids)
        with self.rt.read_session() as s:
            fids = list(s.scalars(self._failed_query(task, search, ids=only)
                                  .with_only_columns(FailedJob.id).order_by(FailedJob.id)))
        if not fids:
            return 0
        # The equivalent command is the one that selects the same jobs, not 3,000 ids.
        if only is not None:
            cmd = "erpq queue retry " + _id_list(fids)
        else:
            cmd = "erpq queue retry --all" + (f" --task {shlex.quote(task)}" if task else "") \
                + (f" --search {shlex.quote(search)}" if search else "")
        audit = ("failed.retry", task or search or "*", cmd, {"count": len(fids), "task": task, "search": search})
        return len(self._bulk(fids, audit, self._retry_chunk, progress))

    def count_failed(self, task: str | None = None, search: str | None = None, ids: list[int] | None = None) -> int:
        q = self._failed_query(task, search, ids=_ids(ids))
        with self.rt.read_session() as s:
            return s.scalar(sa.select(sa.func.count()).select_from(q.subquery())) or 0

    def failed_since(self, since: dt.datetime) -> int:
        """How many jobs failed at or after ``since`` (hidden ones included): alerts read it."""
        with self.rt.read_session() as s:
            return s.scalar(sa.select(sa.func.count()).select_from(FailedJob)
                            .where(FailedJob.failed_at >= since)) or 0

    def forget(self, ids: list[int] | int, progress: Progress | None = None) -> int:
        """Hide failed jobs (restorable with ``restore`` for retention.undo_minutes);
        many ids go in chunks, audited once (see ``_bulk``)."""
        ids = [ids] if isinstance(ids, int) else list(ids)
        audit = ("failed.forget", ",".join(map(str, ids[:20])), "erpq queue forget " + _id_list(ids))
        n = len(self._bulk(ids, audit, self._forget_chunk, progress)) if ids else 0
        if not n:
            if self.read_only:
                self._act(*audit)  # refused, as every action is in read-only mode
            raise NotFound(f"no failed job with id {', '.join(map(str, ids[:20]))}")
        return n

    def _forget_chunk(self, chunk: list[int]) -> list[int]:
        with self._tx() as s:
            hide = list(s.scalars(sa.select(FailedJob.id).where(FailedJob.id.in_(chunk),
                                                                 FailedJob.deleted_at.is_(None))))
            if hide:
                s.execute(sa.update(FailedJob).where(FailedJob.id.in_(hide))
                          .values(deleted_at=utcnow(), deleted_by=self.actor.user))
        return hide

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

    def restore(self, ids: list[int] | int | None = None, since: dt.datetime | None = None,
                everything: bool = False, progress: Progress | None = None) -> int:
        """Undo forget/flush: bring back forgotten failed jobs, by id or hidden since a time.

        Without ids or ``since`` nothing is assumed: ``everything=True`` must ask
        for every hidden failure explicitly. Ids none of which is hidden raise
        ``NotFound``, as ``forget`` does.
        """
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if not ids and since is None and not everything:
            raise Invalid("restore what? give failed job ids, a time (since) or everything=True")
        audit = ("failed.restore", ",".join(map(str, ids[:20])) or (str(since) if since else "*"),
                 "erpq queue restore" + (" " + _id_list(ids) if ids else ""))
        if not ids:  # one statement, however many rows
            n = self._restore_all(audit, since)
            if progress is not None:
                progress(n, n)
            return n

        def chunk(part: list[int]) -> list[int]:
            q = sa.update(FailedJob).where(FailedJob.deleted_at.is_not(None), FailedJob.id.in_(part))
            if since is not None:
                q = q.where(FailedJob.deleted_at >= since)
            with self._tx() as s:
                return [1] * s.execute(q.values(deleted_at=None, deleted_by=None)).rowcount

        n = len(self._bulk(ids, audit, chunk, progress))
        if not n:
            if self.read_only:
                self._act(*audit)
            raise NotFound(f"no forgotten failed job with id {', '.join(map(str, ids[:20]))}")
        return n

    @_audited
    def _restore_all(self, audit: tuple, since: dt.datetime | None) -> int:
        self._act(*audit)
        q = sa.update(FailedJob).where(FailedJob.deleted_at.is_not(None))
        if since is not None:
            q = q.where(FailedJob.deleted_at >= since)
        with self._tx() as s:
            return s.execute(q.values(deleted_at=None, deleted_by=None)).rowcount

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
