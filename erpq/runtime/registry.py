"""The registry of jobs and periodic tasks.

Capability modules declare their work with two decorators, at import time and
without a Huey instance; every ``Runtime`` then registers all of them on the
Huey it builds from config::

    @job("DeliverWebhookJob", retries=0)
    def deliver_webhook_job(delivery_id: int) -> None: ...

    @periodic("erp:retry-webhook-deliveries", description="Re-enqueue due webhook retries")
    def retry_webhook_deliveries() -> None: ...

A job takes JSON-friendly arguments; it reaches the database through
``erpq.runtime.current().session()``. A periodic task takes no arguments; its
default cron expression is part of its declaration and ``[schedule.cron]`` in
config overrides it.

Capabilities declare their work through their ``Capability`` object
(``@CAPABILITY.job``, ``@CAPABILITY.periodic``), which calls these decorators;
``load_capabilities()`` loads every capability (``erpq.capability.load_all``)
so the registry is complete.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .retry import Strategy, legacy


@dataclass(frozen=True)
class JobSpec:
    name: str
    func: Callable
    retries: int = 0
    retry_delay: float = 0
    retry_backoff: float = 0
    timeout: float | None = None
    description: str = ""
    periodic: bool = False
    #: Default cron expression of a periodic task.
    cron: str = ""
    #: The capability that declared it ("" for jobs declared outside one, e.g. in tests).
    capability: str = ""
    #: How long to wait before each retry (None: ``retry_delay``/``retry_backoff``, Huey's pair).
    retry: Strategy | None = None

    @property
    def strategy(self) -> Strategy:
        """The retry strategy in effect (the declared one, else the legacy pair's)."""
        return self.retry if self.retry is not None else legacy(self.retry_delay, self.retry_backoff)


JOBS: dict[str, JobSpec] = {}


def _register(spec: JobSpec) -> None:
    existing = JOBS.get(spec.name)
    if existing is not None and existing.func is not spec.func:
        same = (existing.func.__module__, existing.func.__qualname__) == (
            spec.func.__module__,
            spec.func.__qualname__,
        )
        if not same:  # a module reloaded in tests re-registers itself; anything else is a clash
            raise ValueError(f"job name {spec.name!r} is registered twice")
    JOBS[spec.name] = spec


def job(
    name: str,
    *,
    retries: int = 0,
    retry_delay: float = 0,
    retry_backoff: float = 0,
    retry: Strategy | None = None,
    timeout: float | None = None,
    description: str = "",
    capability: str = "",
) -> Callable[[Callable], Callable]:
    """Declare a queued job. ``retries`` extra attempts, each after the delay of
    the ``retry`` strategy (``erpq.runtime.retry``: ``Fixed``, ``Exponential``,
    ``Delays``); without one, ``retry_delay`` seconds before the first,
    multiplied by ``retry_backoff`` each time (0: constant)."""
    if retry is not None and (retry_delay or retry_backoff):
        raise ValueError(f"job {name!r}: give retry= or retry_delay/retry_backoff, not both")
    if retry is not None and not isinstance(retry, Strategy):
        raise TypeError(f"job {name!r}: retry= takes a retry strategy (erpq.runtime.retry), not {retry!r}")

    def decorator(func: Callable) -> Callable:
        doc = (func.__doc__ or "").strip().splitlines()
        summary = description or (doc[0] if doc else "")
        _register(JobSpec(name, func, retries, retry_delay, retry_backoff, timeout, summary,
                          capability=capability, retry=retry))
        return func

    return decorator


def periodic(name: str, *, cron: str, description: str, retries: int = 0,
             retry: Strategy | None = None, capability: str = "") -> Callable[[Callable], Callable]:
    """Declare a periodic task firing on ``cron`` (five fields) unless config overrides it."""
    from croniter import croniter

    if len(cron.split()) != 5 or not croniter.is_valid(cron):
        raise ValueError(f"periodic task {name!r}: invalid default cron expression {cron!r}")

    def decorator(func: Callable) -> Callable:
        _register(JobSpec(name, func, retries, description=description, periodic=True, cron=cron,
                          capability=capability, retry=retry))
        return func

    return decorator


def load_capabilities() -> None:
    """Load every capability, so every job and periodic task is registered."""
    from ..capability import load_all

    load_all()


def periodic_specs() -> list[JobSpec]:
    return [s for s in JOBS.values() if s.periodic]
