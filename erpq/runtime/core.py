"""``Runtime``: one process's view of erpq (settings, database, Huey, runner id).

``Runtime(settings)`` builds the engine and sessions, makes sure the database
schema is current (a SQLite database upgrades itself; a server database must be
upgraded with ``erpq db upgrade``), builds ``ErpqHuey`` on the configured store
and registers every job and periodic task of the registry on it.

Recovery of dead runners' work, retention pruning and the log file live in
``recovery``, ``retention`` and ``log``; ``Runtime.recover_dead_runners`` and
``Runtime.prune`` delegate to them.

``current()`` returns the process's runtime, built from the config found by
``erpq.config.find_config`` on first use; jobs use it to reach the database.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from ..config import Settings
from ..config import load as load_settings
from ..db import (
    current_revision,
    head_revision,
    make_engine,
    make_sessionmaker,
    session_scope,
    upgrade,
    utcnow,
)
from ..models import JobBatch, JobKey, ScheduleState
from . import recovery, retention
from .app import ErpqHuey
from .fair import FairRedisStorage, FairSqliteStorage
from .history import HistoryWriter
from .log import configure_logging, job_logger, release_logging
from .registry import JOBS, load_capabilities
from .store import ReliableRedisStorage, ReliableSqliteStorage

log = logging.getLogger("erpq.runner")


class SchemaOutOfDate(RuntimeError):
    pass


class UnknownTask(LookupError):
    pass


def redact_url(url: str) -> str:
    """The URL without its password, for display and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def new_runner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Runtime:
    def __init__(self, settings: Settings, *, upgrade_sqlite: bool = True, check_schema: bool = True):
        self.settings = settings
        self.runner_id = new_runner_id()
        self.engine = make_engine(settings.database_url, settings.database.echo,
                                  settings.database.busy_timeout_s)
        self.Session = make_sessionmaker(self.engine)
        self.ReadSession = make_sessionmaker(self.engine, readonly=True)
        if check_schema:
            self._prepare_database(upgrade_sqlite)
        self.history = HistoryWriter(self.engine, self.runner_id)
        self._log_key = configure_logging(settings)
        self.job_log = job_logger(self._log_key)
        load_capabilities()
        self.huey = self._build_huey()
        self.tasks = {
            spec.name: self.huey.task(
                name=spec.name, retries=spec.retries, retry_delay=spec.retry_delay,
                retry_backoff=spec.retry_backoff, timeout=spec.timeout,
            )(spec.func)
            for spec in JOBS.values()
        }
        self._cancelled_cache: tuple[float, set[str]] = (0.0, set())
        self._cache_lock = threading.Lock()

    # ------------------------------------------------------------ construction
    def _prepare_database(self, upgrade_sqlite: bool) -> None:
        head = head_revision()
        rev = current_revision(self.engine)
        if rev == head:
            return
        if self.engine.dialect.name == "sqlite" and upgrade_sqlite:
            upgrade(self.engine)
            return
        raise SchemaOutOfDate(
            f"database {redact_url(self.settings.database.url)} is at revision {rev or 'none'}, "
            f"erpq needs {head}: run 'erpq db upgrade'"
        )

    def _build_huey(self) -> ErpqHuey:
        q = self.settings.queue
        common = {"name": q.name, "results": False, "utc": True, "runtime": self}
        if q.fair:
            common.update(tenant_cap=q.tenant_concurrency, task_caps=q.task_concurrency)
        path = self.settings.sqlite_path(q.url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            return ErpqHuey(storage_class=FairSqliteStorage if q.fair else ReliableSqliteStorage,
                            filename=str(path), timeout=q.busy_timeout_s, runner_id=self.runner_id, **common)
        from ..db import require_redis

        require_redis()
        return ErpqHuey(storage_class=FairRedisStorage if q.fair else ReliableRedisStorage, url=q.url,
                        runner_id=self.runner_id, **common)

    @property
    def queue_label(self) -> str:
        path = self.settings.sqlite_path(self.settings.queue.url)
        return f"sqlite:///{path}" if path is not None else redact_url(self.settings.queue.url)

    def close(self) -> None:
        try:
            self.history.close()
        finally:
            release_logging(self._log_key)
            self.engine.dispose()
            storage = self.huey.storage
            if hasattr(storage, "close"):
                storage.close()
            if hasattr(storage, "pool"):
                storage.pool.disconnect()

    # ------------------------------------------------------------ sessions
    @contextmanager
    def session(self) -> Iterator[Session]:
        """A read-write session that commits at the end of the block."""
        with session_scope(self.Session) as s:
            yield s

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reads only (no write lock on SQLite)."""
        s = self.ReadSession()
        try:
            yield s
        finally:
            s.close()  # not rollback(): that would expire the rows handed out

    # ------------------------------------------------------------ enqueueing
    def task_wrapper(self, name: str):
        try:
            return self.tasks[name]
        except KeyError:
            raise UnknownTask(f"unknown task {name!r} (known: {', '.join(sorted(self.tasks))})") from None

    def enqueue(self, name: str, *args, delay: float | None = None, eta: dt.datetime | None = None,
                tenant_id: int | None = None, batch_id: str | None = None, trigger: str | None = None,
                meta: dict | None = None, task_id: str | None = None, key: str | None = None,
                **kwargs) -> str:
        """Enqueue job ``name`` with arguments; returns the task id (``task_id``
        if given, e.g. a token the job's row already carries).

        ``key``: an idempotency key. While a job enqueued with that key is
        pending or running, and for ``queue.key_ttl_s`` after it finished, the
        same key enqueues nothing and returns that job's id. The database's
        unique constraint on ``job_keys.key`` decides, so concurrent callers in
        any number of processes get one job.

        Huey reserves some keyword names (eta, delay, id, retries, ...): job
        functions must not use them as parameters.
        """
        wrapper = self.task_wrapper(name)
        if JOBS[name].periodic:
            return self.trigger_periodic(name, task_id=task_id)
        task = wrapper.s(*args, **kwargs) if task_id is None else wrapper.s(*args, id=task_id, **kwargs)
        if key is not None:
            holder = self.claim_key(key, name, task.id, tenant_id)
            if holder is not None:
                return holder
            meta = {**(meta or {}), "key": key}
        if delay is not None or eta is not None:
            from huey.utils import normalize_time

            task.eta = normalize_time(eta.astimezone(dt.UTC).replace(tzinfo=None) if eta else None,
                                      delay, utc=True)
        task.erpq = {k: v for k, v in {"tenant_id": tenant_id, "batch_id": batch_id,
                                       "trigger": trigger, **(meta or {})}.items() if v is not None}
        if task.eta is not None:
            self.huey.add_schedule(task)  # straight to the schedule, not via a worker
        else:
            self.huey.enqueue(task)
        return task.id

    def claim_key(self, key: str, task_name: str, task_id: str, tenant_id: int | None = None) -> str | None:
        """Take idempotency key ``key`` for ``task_id``; None if taken, else the id
        of the job holding it. An expired key is taken over in the same transaction."""
        if not key or len(key) > 191:
            raise ValueError("idempotency key: 1 to 191 characters")
        for attempt in range(5):
            now = utcnow()
            try:
                with self.session() as s:
                    s.execute(sa.delete(JobKey).where(JobKey.key == key, JobKey.expires_at < now))
                    s.add(JobKey(key=key, task_name=task_name, task_id=task_id, tenant_id=tenant_id,
                                 created_at=now))
                return None
            except IntegrityError:
                with self.read_session() as s:
                    holder = s.scalar(sa.select(JobKey.task_id).where(JobKey.key == key))
                if holder is not None:
                    return holder
            except OperationalError:  # a deadlock between two takers (MariaDB): try again
                if attempt == 4:
                    raise
            time.sleep(0.01 * (attempt + 1))
        raise RuntimeError(f"idempotency key {key!r}: could not be taken")

    def finish_key(self, key: str, task_id: str) -> None:
        """The key's job finished: it stays taken for ``queue.key_ttl_s`` more."""
        now = utcnow()
        with self.session() as s:
            s.execute(sa.update(JobKey).where(JobKey.key == key, JobKey.task_id == task_id).values(
                finished_at=now, expires_at=now + dt.timedelta(seconds=self.settings.queue.key_ttl_s)))

    def trigger_periodic(self, name: str, trigger: str = "manual", task_id: str | None = None) -> str:
        task = self.task_wrapper(name).s() if task_id is None else self.task_wrapper(name).s(id=task_id)
        self.huey.claim_run(task, tick=None, trigger=trigger)
        log.info("Running scheduled command: %s (%s)", name, trigger)
        self.huey.enqueue(task)
        return task.id

    def dispatch_batch(self, name: str, job: str, calls: Iterable[tuple[tuple, dict]], *,
                       kind: str = "jobs", tenant_id: int | None = None) -> str:
        """Enqueue one job per (args, kwargs) as a batch; returns the batch id.

        The batch row is written first with its total, so progress is right
        from the first finished job.
        """
        calls = list(calls)
        batch_id = str(uuid.uuid4())
        with self.session() as s:
            s.add(JobBatch(id=batch_id, name=name, kind=kind, tenant_id=tenant_id,
                           total=len(calls), pending=len(calls), failed=0, failed_job_ids=[],
                           finished_at=utcnow() if not calls else None))
        for args, kwargs in calls:
            self.enqueue(job, *args, batch_id=batch_id, tenant_id=tenant_id, **kwargs)
        return batch_id

    def batch_cancelled(self, batch_id: str) -> bool:
        """Whether a batch is cancelled (cached for a second: checked per job)."""
        with self._cache_lock:
            stamp, ids = self._cancelled_cache
            if time.monotonic() - stamp > 1.0:
                with self.read_session() as s:
                    ids = set(s.scalars(sa.select(JobBatch.id).where(JobBatch.cancelled_at.is_not(None),
                                                                     JobBatch.finished_at.is_(None))))
                self._cancelled_cache = (time.monotonic(), ids)
        return batch_id in ids

    def paused_tasks(self) -> set[str]:
        with self.read_session() as s:
            return set(s.scalars(sa.select(ScheduleState.name).where(ScheduleState.paused.is_(True))))

    # ------------------------------------------------------------ recovery, retention
    def recover_dead_runners(self) -> int:
        """Re-enqueue the in-flight work of dead runners (``recovery.recover_dead_runners``)."""
        return recovery.recover_dead_runners(self)

    def prune(self) -> dict[str, int]:
        """Delete rows past their retention (``retention.prune``)."""
        return retention.prune(self)


# ------------------------------------------------------------ the process's runtime

_current: Runtime | None = None
_current_lock = threading.Lock()


def current() -> Runtime:
    global _current
    if _current is None:
        with _current_lock:
            if _current is None:
                _current = Runtime(load_settings())
    return _current


def set_current(runtime: Runtime | None) -> None:
    global _current
    _current = runtime
