"""Run history and batch progress, written in batches off the hot path.

Workers hand finished-job rows and batch counter changes to a ``HistoryWriter``;
a background thread writes them every ``interval`` seconds in one transaction
(SQLAlchemy Core executemany), so recording a job costs a list append, not a
database round trip. ``flush()`` writes everything now (used on stop and by
tests). A process killed with SIGKILL loses at most one interval of history
rows; the jobs themselves are protected by the in-flight claims, not by this.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from ..db import utcnow
from ..models import JobBatch, JobRun

log = logging.getLogger("erpq.history")


def summarize_args(args: tuple | list, kwargs: dict, width: int = 255) -> str:
    """A short, single-line rendering of a call's arguments for lists and logs."""
    parts = [_short(a) for a in args] + [f"{k}={_short(v)}" for k, v in kwargs.items()]
    text = ", ".join(parts)
    return text if len(text) <= width else text[: width - 1] + "…"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def json_safe(value: Any) -> Any:
    """A JSON-serialisable rendering of arbitrary task arguments."""
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        if isinstance(value, dict):
            return {str(k): json_safe(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [json_safe(v) for v in value]
        return repr(value)


def _dt(ts: float | None) -> dt.datetime | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.UTC)


class HistoryWriter:
    def __init__(self, engine: sa.Engine, runner_id: str = "", interval: float = 0.5):
        self.engine = engine
        self.runner_id = runner_id
        self.interval = interval
        self._rows: list[dict] = []
        self._batches: dict[str, list] = defaultdict(lambda: [0, 0, []])
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- producers (worker threads)
    def add_job_run(self, task, meta: dict, status: str, attempt: int, started: float,
                    finished: float, duration: float, error: str | None) -> None:
        """Record a finished job; the row is built by the writer thread, not the worker."""
        with self._lock:
            self._rows.append((task, meta, status, attempt, started, finished, duration, error))
        self._ensure_thread()

    def _job_row(self, item) -> dict:
        task, meta, status, attempt, started, finished, duration, error = item
        return {
            "task_id": task.id,
            "task_name": task.name,
            "kind": "job",
            "trigger": meta.get("trigger"),
            "args_summary": summarize_args(task.args, task.kwargs),
            "tenant_id": meta.get("tenant_id") or task.kwargs.get("tenant_id"),
            "batch_id": meta.get("batch_id"),
            "status": status,
            "attempt": attempt,
            "tick": None,
            "enqueued_at": _dt(meta.get("enqueued_at")),
            "started_at": _dt(started),
            "finished_at": _dt(finished),
            "duration_s": duration,
            "runner": self.runner_id,
            "error": error,
        }

    def batch_done(self, batch_id: str, failed_job_id: str | None = None) -> None:
        with self._lock:
            delta = self._batches[batch_id]
            delta[0] += 1
            if failed_job_id is not None:
                delta[1] += 1
                delta[2].append(failed_job_id)
        self._ensure_thread()

    # -- the writer
    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._stop.clear()
                    self._thread = threading.Thread(target=self._loop, name="erpq-history", daemon=True)
                    self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:
                log.exception("could not write run history (will retry)")

    def flush(self) -> int:
        with self._flush_lock:
            with self._lock:
                rows, self._rows = self._rows, []
                batches, self._batches = dict(self._batches), defaultdict(lambda: [0, 0, []])
            if not rows and not batches:
                return 0
            try:
                with self.engine.begin() as conn:
                    if rows:
                        conn.execute(sa.insert(JobRun), [self._job_row(r) for r in rows])
                    for batch_id, (done, failed, failed_ids) in batches.items():
                        self._apply_batch(conn, batch_id, done, failed, failed_ids)
            except Exception:
                with self._lock:  # keep them for the next attempt
                    self._rows[:0] = rows
                    for bid, (d, f, ids) in batches.items():
                        cur = self._batches[bid]
                        cur[0] += d
                        cur[1] += f
                        cur[2][:0] = ids
                raise
            return len(rows)

    @staticmethod
    def _apply_batch(conn, batch_id: str, done: int, failed: int, failed_ids: list) -> None:
        t = JobBatch.__table__
        values: dict = {"pending": t.c.pending - done, "failed": t.c.failed + failed}
        if failed_ids:
            current = conn.execute(sa.select(t.c.failed_job_ids).where(t.c.id == batch_id)).scalar()
            values["failed_job_ids"] = list(current or []) + failed_ids
        conn.execute(sa.update(t).where(t.c.id == batch_id).values(**values))
        conn.execute(
            sa.update(t)
            .where(t.c.id == batch_id, t.c.pending <= 0, t.c.finished_at.is_(None))
            .values(finished_at=utcnow())
        )

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()
