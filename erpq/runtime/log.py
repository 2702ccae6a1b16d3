"""erpq's log file: records are queued by the workers and written in batches
by one thread per file (``configure_logging``), plus ``job_logger``, the cheap
per-job line writer the runtime uses twice per job."""

from __future__ import annotations

import atexit
import logging
import logging.handlers
import os
import queue
import threading
import time

from ..config import Settings


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
