"""erpq's log: one format for every line (runner, scheduler, CLI, Huey's own
warnings), as text or JSON lines (``log.format``), written to the log file or to
stderr (``log.output``: ``auto`` is stderr under systemd or supervisord, which
keep stderr themselves, else the file).

Records are queued by the threads that log and written in batches by one
thread per destination (``configure_logging``); ``job_logger`` is the cheap
per-job line writer the runtime uses twice per job. A line logged while a job
runs carries its task name and job id (JSON: ``task``, ``job_id``). Configured
secrets (passwords, tokens, the passwords in the database and queue URLs) are
replaced by ``********`` in every line.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import logging.handlers
import os
import queue
import sys
import threading
import time
import traceback
from typing import Any

from ..config import Settings

#: The job the current thread is running: (task name, job id), set by the runtime.
current_job = threading.local()

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s"
MASK = "********"


def under_supervisor(environ=None) -> str | None:
    """Which supervisor keeps this process's stderr, if any: systemd sets
    ``JOURNAL_STREAM`` when stderr goes to the journal, supervisord sets
    ``SUPERVISOR_ENABLED``. (A container says so with ``ERPQ_LOG__OUTPUT=stderr``,
    as deploy/Dockerfile does: there is no reliable sign of one.)"""
    environ = os.environ if environ is None else environ
    if environ.get("JOURNAL_STREAM"):
        return "systemd"
    if environ.get("SUPERVISOR_ENABLED"):
        return "supervisord"
    return None


def destination(settings: Settings) -> str:
    """``"stderr"`` or the log file's path, following ``log.output``."""
    output = settings.log.output
    if output == "stderr" or (output == "auto" and under_supervisor()):
        return "stderr"
    return str(settings.path(settings.log.path))


def secrets_of(settings: Settings) -> list[str]:
    """The secret values of ``settings`` that must never be written to a log."""
    from urllib.parse import urlsplit

    from ..envconfig import _walk, is_secret

    found = set()
    items = list(_walk(settings, ""))
    for name, section in getattr(settings, "sections", {}).items():
        items += list(_walk(section, f"{name}."))
    for key, value in items:
        if isinstance(value, str) and is_secret(key):
            found.add(value)
        elif isinstance(value, str) and "://" in value:
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password:
                found.add(password)
    return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)


class LineFormatter(logging.Formatter):
    """Formats a record, or a job line tuple, as text or as one JSON object."""

    def __init__(self, fmt: str = "text", secrets: list[str] | None = None):
        super().__init__(TEXT_FORMAT)
        self.json = fmt == "json"
        self.secrets = secrets or []

    def _mask(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def format(self, record: Any) -> str:  # a LogRecord or a job line tuple
        if isinstance(record, tuple):  # from job_log(): (epoch, level, logger, thread, msg, args, task, job)
            ts, level, name, thread, msg, args, task, job = record
            message, exc = msg % args, None
        else:
            ts, level, name, thread = record.created, record.levelname, record.name, record.threadName
            message = record.getMessage()
            task, job = getattr(record, "task", None), getattr(record, "job_id", None)
            exc = None
            if record.exc_info:
                exc = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            elif record.exc_text:
                exc = record.exc_text
        if self.json:
            obj = {"time": dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")
                   .replace("+00:00", "Z"), "level": level, "logger": name, "thread": thread,
                   "message": message}
            if task is not None:
                obj["task"], obj["job_id"] = task, job
            if exc:
                obj["exc"] = exc
            return self._mask(json.dumps(obj, ensure_ascii=False, default=str))
        line = f"{self._asctime(ts)} {level} {name} [{thread}] {message}"
        if exc:
            line = f"{line}\n{exc}"
        return self._mask(line)

    _second: tuple[int, str] = (-1, "")

    def _asctime(self, ts: float) -> str:
        sec = int(ts)
        if sec != self._second[0]:
            self._second = (sec, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sec)))
        return f"{self._second[1]},{int((ts - sec) * 1000):03d}"


class _FastQueueHandler(logging.handlers.QueueHandler):
    """Queue the record as is: the writer formats it (erpq's log arguments are
    immutable strings and numbers, so deferring the formatting is safe). The job
    the logging thread is running is noted on the record now, in that thread."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if getattr(record, "task", None) is None:
            job = getattr(current_job, "job", None)
            if job is not None:
                record.task, record.job_id = job
        return record


class _BatchWriter:
    """Writes queued log records to a file (or stderr) in batches: one write, one
    flush and one rotation check (reopen when logrotate moved the file) per batch,
    instead of per line, so two lines per job cost the workers almost nothing."""

    INTERVAL_S = 0.2

    def __init__(self, path: str, records: queue.SimpleQueue, formatter: LineFormatter):
        self.path, self.records, self.formatter = path, records, formatter
        self.stream = path == "stderr"
        if self.stream:
            self._fh, self._ino = None, None
        else:
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
                if self._fh is not None:
                    self._fh.close()
                return

    def _format(self, record) -> str:
        try:
            return self.formatter.format(record)
        except Exception:
            return f"(unformattable log record: {record!r})"

    def _write(self, text: str) -> None:
        if self.stream:
            try:
                sys.stderr.write(text)
                sys.stderr.flush()
            except (OSError, ValueError):  # stderr closed: nothing to write to
                pass
            return
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
    """Send erpq's log lines (and Huey's warnings) to the configured destination.

    Writers are shared per destination and counted; ``release_logging`` with the
    returned key detaches them when the last runtime using it closes.
    """
    where = destination(settings)
    key = where if where == "stderr" else os.path.realpath(where)
    logging.getLogger("erpq").setLevel(settings.log.level.upper())
    with _log_lock:
        if key in _log_handlers:
            handlers, count = _log_handlers[key]
            _log_handlers[key] = (handlers, count + 1)
            return key
        fmt = LineFormatter(settings.log.format, secrets_of(settings))
        records: queue.SimpleQueue = queue.SimpleQueue()
        try:
            if where != "stderr":
                os.makedirs(os.path.dirname(key), exist_ok=True)
            writer = _BatchWriter(where, records, fmt)
        except OSError as exc:
            logging.getLogger("erpq").warning("cannot open log file %s: %s", where, exc)
            return None
        erpq_handler = _FastQueueHandler(records)
        huey_handler = _FastQueueHandler(records)
        huey_handler.setLevel(logging.WARNING)  # Huey's own warnings: task exceptions with tracebacks
        logging.getLogger("erpq").addHandler(erpq_handler)
        logging.getLogger("huey").addHandler(huey_handler)
        # Nothing of erpq's or Huey's reaches the root logger's handlers as well (huey_consumer
        # puts one there): each line once, in one format.
        for name in ("erpq", "huey"):
            logging.getLogger(name).propagate = False
        _log_handlers[key] = ([erpq_handler, huey_handler, writer], 1)
        atexit.register(writer.stop)  # write what is queued when the process ends
        return key


def adopt_huey_logger() -> int:
    """Remove the handlers something else put on Huey's logger (``huey_consumer`` adds
    a stream handler of its own format) while erpq's are attached: every Huey
    warning, with its traceback, is then written once, in erpq's format. Returns
    how many were removed."""
    ours = {id(h) for handlers, _count in _log_handlers.values() for h in handlers[:2]}
    if not ours:
        return 0
    logger = logging.getLogger("huey")
    foreign = [h for h in logger.handlers if id(h) not in ours]
    for handler in foreign:
        logger.removeHandler(handler)
    return len(foreign)


def job_logger(key: str | None):
    """A cheap ``log(level, msg, *args, task=, job_id=)`` for the per-job lines: it
    queues a tuple for the writer instead of building a LogRecord (two lines per job)."""
    logger = logging.getLogger("erpq.runner")
    if key is None or key not in _log_handlers:
        def fallback(level: int, msg: str, *args, task=None, job_id=None) -> None:
            logger.log(level, msg, *args, extra={"task": task, "job_id": job_id})

        return fallback
    records = _log_handlers[key][0][2].records
    names = logging.getLevelName

    def log(level: int, msg: str, *args, task: str | None = None, job_id: str | None = None) -> None:
        if logger.isEnabledFor(level):
            records.put((time.time(), names(level), "erpq.runner", threading.current_thread().name, msg, args,
                         task, job_id))

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
        if not _log_handlers:
            for name in ("erpq", "huey"):
                logging.getLogger(name).propagate = True
    if not handlers:
        return
    erpq_handler, huey_handler, writer = handlers
    logging.getLogger("erpq").removeHandler(erpq_handler)
    logging.getLogger("huey").removeHandler(huey_handler)
    writer.stop()  # writes what is still queued
