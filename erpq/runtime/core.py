"""``Runtime``: one process's view of erpq (settings, database, Huey, runner id).

``Runtime(settings)`` builds the engine and sessions, makes sure the database
schema is current (a SQLite database upgrades itself; a server database must be
upgraded with ``erpq db upgrade``), builds ``ErpqHuey`` on the configured store
and registers every job and periodic task of the registry on it.

``current()`` returns the process's runtime, built from the config found by
``erpq.config.find_config`` on first use; jobs use it to reach the database.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import logging.handlers
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import sqlalchemy as sa
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
from ..models import FailedJob, JobBatch, JobRun, Runner, ScheduleState, SystemHealth
from . import locks
from .app import ErpqHuey
from .history import HistoryWriter
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
        self.engine = make_engine(settings.database_url, settings.database.echo)
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
        path = self.settings.sqlite_path(q.url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            return ErpqHuey(storage_class=ReliableSqliteStorage, filename=str(path),
                            runner_id=self.runner_id, **common)
        return ErpqHuey(storage_class=ReliableRedisStorage, url=q.url, runner_id=self.runner_id, **common)

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
                meta: dict | None = None, task_id: str | None = None, **kwargs) -> str:
        """Enqueue job ``name`` with arguments; returns the task id (``task_id``
        if given, e.g. a token the job's row already carries).

        Huey reserves some keyword names (eta, delay, id, retries, ...): job
        functions must not use them as parameters.
        """
        wrapper = self.task_wrapper(name)
        if JOBS[name].periodic:
            return self.trigger_periodic(name)
        task = wrapper.s(*args, **kwargs) if task_id is None else wrapper.s(*args, id=task_id, **kwargs)
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

    def trigger_periodic(self, name: str, trigger: str = "manual") -> str:
        task = self.task_wrapper(name).s()
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

    # ------------------------------------------------------------ recovery
    def recover_dead_runners(self) -> int:
        """Re-enqueue the in-flight work of runners that stopped heart-beating.

        Returns how many jobs were re-enqueued or abandoned. Safe to call from
        several runners at once: a lease lock makes one of them do it.
        """
        storage = self.huey.storage
        holders = storage.inflight_runners()
        holders.pop(self.runner_id, None)
        if not holders:
            return 0
        dead = self._dead_runners(holders)
        if not dead:
            return 0
        if not locks.acquire(self.Session, "erpq:reaper", self.runner_id, 60):
            return 0
        try:
            return sum(self._recover_runner(r) for r in dead)
        finally:
            locks.release(self.Session, "erpq:reaper", self.runner_id)

    def _dead_runners(self, holders: dict[str, float | None]) -> list[str]:
        now = utcnow()
        limit = self.settings.runner.dead_after_s
        host = socket.gethostname()
        with self.read_session() as s:
            rows = {r.id: r for r in s.scalars(sa.select(Runner).where(Runner.id.in_(list(holders))))}
        dead = []
        for rid, oldest in holders.items():
            r = rows.get(rid)
            if r is None:
                if oldest is None or time.time() - oldest > limit:
                    dead.append(rid)
            elif (r.stopped_at is not None or (now - r.heartbeat_at).total_seconds() > limit
                  or (r.host == host and not _pid_alive(r.pid))):
                dead.append(rid)
        return dead

    def _recover_runner(self, runner: str) -> int:
        huey, storage = self.huey, self.huey.storage
        decisions: list[tuple[object, bytes | None]] = []
        max_rec = self.settings.runner.max_recoveries
        for key, _, _, data in storage.inflight_of(runner):
            try:
                task = huey.deserialize_task(data)
            except Exception:
                log.exception("dropping unreadable in-flight task of runner %s", runner)
                decisions.append((key, None))
                continue
            n = task.erpq.get("recoveries", 0) + 1
            task.erpq["recoveries"] = n
            if n > max_rec:
                msg = f"abandoned: its runner died while running it {n} times (runner.max_recoveries={max_rec})"
                huey.record_failure(task, None, attempts=task.erpq.get("attempt", 1),
                                    reason="abandoned", message=msg)
                self._close_abandoned_run(task, msg)
                log.warning("Abandoned job: %s %s (%s)", task.name, task.id, msg)
                decisions.append((key, None))
            else:
                log.warning("Recovered job: %s %s from dead runner %s (recovery %d)",
                            task.name, task.id, runner, n)
                decisions.append((key, huey.serialize_task(task)))
        taken = storage.requeue_claims(decisions, runner=runner)
        locks.release_all(self.Session, runner)
        with self.session() as s:
            s.execute(sa.update(Runner).where(Runner.id == runner, Runner.stopped_at.is_(None))
                      .values(stopped_at=utcnow()))
        return taken

    def _close_abandoned_run(self, task, error: str) -> None:
        """The run history shows an abandoned job as such: its periodic run row is
        closed, a job gets a row of its own."""
        now, meta = utcnow(), task.erpq
        if meta.get("run_id") is not None:
            with self.session() as s:
                s.execute(sa.update(JobRun).where(JobRun.id == meta["run_id"])
                          .values(status="abandoned", finished_at=now, error=error[:2000]))
            return
        started = meta.get("enqueued_at") or time.time()
        self.history.add_job_run(task, meta, "abandoned", meta.get("attempt", 1), started,
                                 now.timestamp(), now.timestamp() - started, error)

    # ------------------------------------------------------------ retention
    def prune(self) -> dict[str, int]:
        """Delete history, failed jobs and health rows past their retention."""
        r = self.settings.retention
        now = utcnow()
        out = {}
        with self.session() as s:
            out["job_runs"] = s.execute(sa.delete(JobRun).where(
                JobRun.finished_at < now - dt.timedelta(days=r.history_days))).rowcount
            cutoff = s.scalar(sa.select(JobRun.id).order_by(JobRun.id.desc())
                              .offset(r.history_rows).limit(1))
            if cutoff is not None:
                out["job_runs"] += s.execute(sa.delete(JobRun).where(JobRun.id <= cutoff)).rowcount
            out["failed_jobs"] = s.execute(sa.delete(FailedJob).where(sa.or_(
                FailedJob.failed_at < now - dt.timedelta(days=r.failed_days),
                FailedJob.deleted_at < now - dt.timedelta(minutes=r.undo_minutes)))).rowcount
            out["system_health"] = s.execute(sa.delete(SystemHealth).where(
                SystemHealth.checked_at < now - dt.timedelta(days=r.health_days))).rowcount
        return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _FastQueueHandler(logging.handlers.QueueHandler):
    """Queue the record as is: the writer formats it (erpq's log arguments are
    immutable strings and numbers, so deferring the formatting is safe)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record


class _BatchFileWriter:
    """Writes queued log records to a file in batches: one write, one flush and
    one rotation check (reopen when logrotate moved the file) per batch, instead
    of per line, so two lines per job cost the workers almost nothing."""

    INTERVAL_S = 0.2

    def __init__(self, path, records: queue.SimpleQueue, formatter: logging.Formatter):
        self.path, self.records, self.formatter = str(path), records, formatter
        self._fh = open(self.path, "a", encoding="utf-8")
        self._ino = os.fstat(self._fh.fileno()).st_ino
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="erpq-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Poll rather than block on get(): a blocked reader is woken by every
        # put, and that wake-up (a GIL hand-over per log line) is what costs.
        while True:
            self._stopping.wait(self.INTERVAL_S)
            batch = []
            while True:
                try:
                    batch.append(self.records.get_nowait())
                except queue.Empty:
                    break
            stop = any(r is None for r in batch)
            lines = [self._format(r) for r in batch if r is not None]
            if lines:
                self._write("\n".join(lines) + "\n")
            if stop:
                self._fh.close()
                return

    def _format(self, record) -> str:
        try:
            if isinstance(record, tuple):  # from job_log(): (epoch, level, thread, msg, args)
                ts, level, thread, msg, args = record
                return f"{self._asctime(ts)} {level} [{thread}] {msg % args}"
            return self.formatter.format(record)
        except Exception:
            return f"(unformattable log record: {record!r})"

    _second: tuple[int, str] = (-1, "")

    def _asctime(self, ts: float) -> str:
        sec = int(ts)
        if sec != self._second[0]:
            self._second = (sec, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sec)))
        return f"{self._second[1]},{int((ts - sec) * 1000):03d}"

    def _write(self, text: str) -> None:
        try:
            if os.stat(self.path).st_ino != self._ino:
                raise FileNotFoundError
        except FileNotFoundError:
            self._fh.close()
            self._fh = open(self.path, "a", encoding="utf-8")
            self._ino = os.fstat(self._fh.fileno()).st_ino
        self._fh.write(text)
        self._fh.flush()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.records.put(None)
            self._stopping.set()
            self._thread.join(timeout=5)


_log_handlers: dict[str, tuple[list, int]] = {}
_log_lock = threading.Lock()


def configure_logging(settings: Settings) -> str | None:
    """Send erpq's log lines (and Huey's warnings) to the configured file.

    Writers are shared per file and counted; ``release_logging`` with the
    returned key detaches them when the last runtime using the file closes.
    """
    path = settings.path(settings.log.path)
    key = str(path.resolve())
    logging.getLogger("erpq").setLevel(settings.log.level.upper())
    with _log_lock:
        if key in _log_handlers:
            handlers, count = _log_handlers[key]
            _log_handlers[key] = (handlers, count + 1)
            return key
        fmt = logging.Formatter("%(asctime)s %(levelname)s [%(threadName)s] %(message)s")
        records: queue.SimpleQueue = queue.SimpleQueue()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = _BatchFileWriter(path, records, fmt)
        except OSError as exc:
            logging.getLogger("erpq").warning("cannot open log file %s: %s", path, exc)
            return None
        erpq_handler = _FastQueueHandler(records)
        huey_handler = _FastQueueHandler(records)
        huey_handler.setLevel(logging.WARNING)  # Huey's own warnings: task exceptions with tracebacks
        logging.getLogger("erpq").addHandler(erpq_handler)
        logging.getLogger("huey").addHandler(huey_handler)
        _log_handlers[key] = ([erpq_handler, huey_handler, writer], 1)
        atexit.register(writer.stop)  # write what is queued when the process ends
        return key


def job_logger(key: str | None):
    """A cheap ``log(level, msg, *args)`` for the per-job lines: it queues a tuple
    for the file writer instead of building a LogRecord (two lines per job)."""
    logger = logging.getLogger("erpq.runner")
    if key is None or key not in _log_handlers:
        return logger.log
    records = _log_handlers[key][0][2].records
    names = logging.getLevelName

    def log(level: int, msg: str, *args) -> None:
        if logger.isEnabledFor(level):
            records.put((time.time(), names(level), threading.current_thread().name, msg, args))

    return log


def release_logging(key: str | None) -> None:
    if key is None:
        return
    with _log_lock:
        handlers, count = _log_handlers.get(key, ([], 0))
        if count > 1:
            _log_handlers[key] = (handlers, count - 1)
            return
        _log_handlers.pop(key, None)
    erpq_handler, huey_handler, writer = handlers
    logging.getLogger("erpq").removeHandler(erpq_handler)
    logging.getLogger("huey").removeHandler(huey_handler)
    writer.stop()  # writes what is still queued


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
