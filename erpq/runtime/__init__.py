"""The queue runtime every job and periodic task stands on.

- ``registry``: the ``@job`` and ``@periodic`` decorators capability modules use;
- ``core``: ``Runtime`` (settings + database + Huey) and ``current()``;
- ``app``: ``ErpqHuey`` (outcome recording, periodic ticks, overlap locks);
- ``store``: storages that track in-flight work (at-least-once delivery);
- ``runner``: the consumer with heartbeats, and the embedded runner;
- ``wake``: same-host wake-ups of idle SQLite runners after each enqueue;
- ``retry``: retry strategies (``Fixed``, ``Exponential``, ``Delays``) and
  ``RetryAfter``/``RetryAt`` for ``@job(retry=...)``;
- ``recovery``: dead runners' in-flight work back on the queue (or to failed_jobs);
- ``retention``: pruning of history, failed jobs, health rows and stopped runners;
- ``log``: the batched log-file writer;
- ``history``, ``locks``, ``schedule``: run history, lease locks, cron arithmetic.
"""

from .core import Runtime, SchemaOutOfDate, UnknownTask, current, set_current
from .registry import JOBS, job, periodic
from .retry import Delays, Exponential, Fixed, Permanent, RetryAfter, RetryAt
from .runner import EmbeddedRunner

__all__ = ["JOBS", "Delays", "EmbeddedRunner", "Exponential", "Fixed", "Permanent", "RetryAfter", "RetryAt",
           "Runtime", "SchemaOutOfDate", "UnknownTask", "current", "job", "periodic", "set_current"]
