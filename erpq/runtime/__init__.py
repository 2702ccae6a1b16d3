"""The queue runtime every job and periodic task stands on.

- ``registry``: the ``@job`` and ``@periodic`` decorators capability modules use;
- ``core``: ``Runtime`` (settings + database + Huey) and ``current()``;
- ``app``: ``ErpqHuey`` (outcome recording, periodic ticks, overlap locks);
- ``store``: storages that track in-flight work (at-least-once delivery);
- ``runner``: the consumer with heartbeats and recovery, and the embedded runner;
- ``history``, ``locks``, ``schedule``: run history, lease locks, cron arithmetic.
"""

from .core import Runtime, SchemaOutOfDate, UnknownTask, current, set_current
from .registry import JOBS, job, periodic
from .runner import EmbeddedRunner

__all__ = ["JOBS", "EmbeddedRunner", "Runtime", "SchemaOutOfDate", "UnknownTask", "current",
           "job", "periodic", "set_current"]
