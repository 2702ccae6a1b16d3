"""Running the work: Huey's consumer with heartbeats, recovery and embedding.

``ErpqConsumer`` is what ``huey_consumer erpq.tasks.huey`` runs (through
``ErpqHuey.create_consumer``) and what ``erpq queue work`` and the console's
embedded runner start. Beside Huey's scheduler and workers it runs one
``Heartbeat`` thread that, every ``runner.heartbeat_s``:

- writes this runner's heartbeat row and renews the leases of its locks;
- moves the in-flight work of dead runners back to the queue (``recover``);
- now and then prunes history past its retention.

Its workers (``ErpqWorker``) wait for work on the storage's wake-up listener
when it has one (SQLite: ``erpq.runtime.wake``): an enqueue on this host wakes
an idle worker at once and resets its polling backoff; without a wake-up they
poll as Huey's workers do (0.1 s growing by 1.15x to ``max_delay``, 1 s here).

Embedded (``EmbeddedRunner``) it installs no signal handlers, so it can be
started and stopped from any thread.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING

from huey.consumer import Consumer, Scheduler, Worker

from .. import events
from ..db import db_now, session_scope
from ..models import Runner
from . import locks
from .outage import unreachable

if TYPE_CHECKING:
    from .core import Runtime

log = logging.getLogger("erpq.runner")

PRUNE_EVERY_S = 600


class Heartbeat:
    def __init__(self, runtime: Runtime, workers: int, periodic: bool, kind: str):
        self.rt = runtime
        self.workers, self.periodic, self.kind = workers, periodic, kind
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = 0.0

    def register(self) -> None:
        rt = self.rt
        with session_scope(rt.Session) as s:
            now = db_now(s)  # the database's clock: heartbeats are compared across runners
            s.merge(Runner(id=rt.runner_id, host=socket.gethostname(), pid=os.getpid(),
                           workers=self.workers, periodic=self.periodic, kind=self.kind,
                           queue=rt.queue_label, started_at=now, heartbeat_at=now,
                           stopped_at=None))
        register = getattr(rt.huey.storage, "register_runner", None)
        if register is not None:
            register()

    def start(self) -> None:
        self.register()
        self._safe(self.rt.recover_dead_runners)
        self._thread = threading.Thread(target=self._loop, name="erpq-heartbeat", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        interval = self.rt.settings.runner.heartbeat_s
        while not self._stop.wait(interval):
            self.beat()

    def beat(self) -> None:
        rt = self.rt
        self._safe(self._write_heartbeat)
        self._safe(lambda: locks.renew(rt.Session, rt.runner_id, rt.settings.schedule.lock_lease_s))
        self._safe(rt.recover_dead_runners)
        reclaim = getattr(rt.huey.storage, "reclaim_orphans", None)
        if reclaim is not None:
            def reclaim_orphans():
                if n := reclaim():
                    log.warning("Requeued %d job(s) this runner had taken while the queue store "
                                "connection dropped (the reply was lost)", n)

            self._safe(reclaim_orphans)
        self._safe(lambda: events.sweep(rt))
        if time.monotonic() - self._last_prune > PRUNE_EVERY_S:
            self._last_prune = time.monotonic()
            self._safe(rt.prune)

    def _write_heartbeat(self) -> None:
        rt = self.rt
        with session_scope(rt.Session) as s:
            runner = s.get(Runner, rt.runner_id)
            if runner is None or runner.stopped_at is not None:
                # Declared dead by another runner (e.g. after a long stall): come back.
                s.rollback()
                self.register()
                return
            runner.heartbeat_at = db_now(s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        rt = self.rt
        self._safe(rt.history.flush)
        self._safe(lambda: locks.release_all(rt.Session, rt.runner_id))

        def mark_stopped():
            with session_scope(rt.Session) as s:
                runner = s.get(Runner, rt.runner_id)
                if runner is not None:
                    runner.stopped_at = db_now(s)

        self._safe(mark_stopped)

    @staticmethod
    def _safe(fn) -> None:
        try:
            fn()
        except Exception as exc:
            what = getattr(fn, "__name__", fn)
            down = unreachable(exc)
            if down:  # the store or the database is away: one line per beat, no traceback
                log.warning("runner housekeeping (%s) skipped, will retry: %s", what, down)
            else:
                log.exception("runner housekeeping failed: %s", what)


class ErpqScheduler(Scheduler):
    """Huey's scheduler checking periodic tasks every ``runner.periodic_check_s``
    (Huey: 60 s); set through the consumer's public ``scheduler_class``."""

    def __init__(self, huey, *args, **kwargs):
        super().__init__(huey, *args, **kwargs)
        self.periodic_task_seconds = huey.runtime.settings.runner.periodic_check_s

    def enqueue_periodic_tasks(self, now):
        # Huey lets an error here end the scheduler thread (and an embedded runner
        # never restarts it): a database or store outage must only skip this check.
        try:
            super().enqueue_periodic_tasks(now)
        except Exception as exc:
            down = unreachable(exc)
            if down:
                log.warning("periodic check skipped, will retry: %s", down)
            else:
                log.exception("periodic check failed (will retry)")


class ErpqWorker(Worker):
    """Huey's worker, waiting for a wake-up instead of sleeping when idle (set
    through the consumer's public ``worker_class``)."""

    _seen = 0

    def loop(self, now=None):
        listener = getattr(self.huey.storage, "wake_listener", None)
        # The generation before the dequeue: a wake-up sent after it is never missed.
        self._seen = listener.generation if listener is not None else 0
        super().loop(now)

    def sleep(self):
        listener = getattr(self.huey.storage, "wake_listener", None)
        if listener is None or not listener.listening:
            return super().sleep()
        delay = min(self.delay, self.max_delay)
        if listener.wait(self._seen, delay, self.stop_flag):
            self.delay = self.default_delay  # woken: poll eagerly again, as after a job
        else:
            self.delay = delay * self.backoff


class ErpqConsumer(Consumer):
    scheduler_class = ErpqScheduler
    worker_class = ErpqWorker

    def __init__(self, huey, embedded: bool = False, kind: str = "consumer", **options):
        self.embedded = embedded
        options.setdefault("workers", huey.runtime.settings.queue.workers)
        options.setdefault("max_delay", 1.0)
        super().__init__(huey, **options)
        if self.worker_type != "thread":
            from huey.exceptions import ConfigurationError

            raise ConfigurationError("erpq runs thread workers only: use -k thread")
        self.heartbeat = Heartbeat(huey.runtime, self.workers, self.periodic, kind)
        if not embedded:  # huey_consumer: its handler on Huey's logger would write every traceback twice
            from .log import adopt_huey_logger

            adopt_huey_logger()

    def start(self):
        self.heartbeat.start()
        listen = getattr(self.huey.storage, "listen", None)
        if listen is not None:
            listen()  # before the workers start: no enqueue after it goes unnoticed
        super().start()

    # PRIVATE Huey name: Consumer._set_signal_handlers, the only way to start a
    # consumer off the main thread (start() installs handlers; no public switch).
    def _set_signal_handlers(self):
        if not self.embedded:
            super()._set_signal_handlers()

    def stop(self, graceful=False):
        self.stop_flag.set()
        stop_listening = getattr(self.huey.storage, "stop_listening", None)
        if stop_listening is not None:
            stop_listening()  # wakes the waiting workers, so they see the stop flag now
        super().stop(graceful=graceful)
        self.heartbeat.stop()


class EmbeddedRunner:
    """Scheduler and workers inside another process; start/stop from any thread."""

    def __init__(self, runtime: Runtime, workers: int | None = None, periodic: bool = True, **options):
        """``options``: more of Huey's consumer options (e.g. ``initial_delay``,
        ``max_delay``: the polling interval of idle workers)."""
        self.rt = runtime
        self.workers = workers or runtime.settings.queue.workers
        self.periodic = periodic
        self.options = options
        self.consumer: ErpqConsumer | None = None

    @property
    def running(self) -> bool:
        return self.consumer is not None

    def start(self) -> None:
        if self.consumer is not None:
            return
        self.consumer = self.rt.huey.create_consumer(
            workers=self.workers, periodic=self.periodic, worker_type="thread",
            embedded=True, kind="embedded", check_worker_health=False,
            shutdown_timeout=self.rt.settings.runner.shutdown_timeout_s, **self.options,
        )
        self.consumer.start()

    def stop(self) -> None:
        """Stop taking work, wait for running jobs (up to runner.shutdown_timeout_s)."""
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            consumer.stop(graceful=True)


def work_once(runtime: Runtime) -> str | None:
    """Process one waiting job in this thread and return a line saying which.

    Due scheduled jobs are moved to the queue first, and dead runners' work is
    recovered, so ``erpq queue work --once`` sees what a runner would.
    """
    hb = Heartbeat(runtime, workers=1, periodic=False, kind="once")
    hb.register()
    huey = runtime.huey
    try:
        runtime.recover_dead_runners()
        for task in huey.read_schedule():
            huey.enqueue(task)
        task = huey.dequeue()
        if task is None:
            return None
        started = time.monotonic()
        huey.execute(task)
        return f"Processed job: {task.name} {task.id} ({time.monotonic() - started:.3f}s)"
    finally:
        huey.storage.release_pending()
        hb.stop()


def work_burst(runtime: Runtime, workers: int = 1, stop: threading.Event | None = None) -> tuple[int, int]:
    """Process jobs with ``workers`` threads until none is waiting, then return
    ``(processed, failed)``; ``failed`` counts jobs that raised (retrying ones too,
    as ``work_once`` does). Periodic tasks are not fired. Due scheduled jobs (and a
    retry without delay) are taken as they come; a retry later than the end is
    left on the schedule. The runner heartbeats while it works, so other runners
    never take it for dead. ``stop`` set: no new job is taken, running ones finish.
    """
    from huey.signals import SIGNAL_ERROR

    huey = runtime.huey
    stop = stop or threading.Event()
    hb = Heartbeat(runtime, workers=workers, periodic=False, kind="burst")
    hb.start()
    state = {"busy": 0, "processed": 0, "failed": 0}
    cv = threading.Condition()

    def on_error(signal, task, *args, **kwargs) -> None:
        with cv:
            state["failed"] += 1

    huey.signal(SIGNAL_ERROR)(on_error)

    def next_task():
        with cv:  # one thread at a time moves due scheduled jobs to the queue
            for task in huey.read_schedule():
                huey.enqueue(task)
        return huey.dequeue()

    def work() -> None:
        try:
            while not stop.is_set():
                task = next_task()
                if task is None:
                    with cv:
                        if state["busy"] == 0:  # nobody can add work any more: done
                            cv.notify_all()
                            return
                        cv.wait(0.2)  # a running job may still enqueue a retry or a follow-up
                    continue
                with cv:
                    state["busy"] += 1
                try:
                    huey.execute(task)
                finally:
                    with cv:
                        state["busy"] -= 1
                        state["processed"] += 1
                        cv.notify_all()
        finally:
            huey.storage.release_pending()  # this thread's last claim

    threads = [threading.Thread(target=work, name=f"erpq-burst-{i + 1}", daemon=True) for i in range(workers)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    finally:
        huey.disconnect_signal(on_error, SIGNAL_ERROR)
        hb.stop()
    return state["processed"], state["failed"]
