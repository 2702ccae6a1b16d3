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
cron expression comes from ``[schedule.cron]`` in config (defaults in
``erpq.config.DEFAULT_SCHEDULE``).

``CAPABILITY_MODULES`` lists the modules that hold jobs and periodic tasks;
``load_capabilities()`` imports them all so the registry is complete.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from ..config import DEFAULT_SCHEDULE

#: Modules holding jobs and periodic tasks; each capability adds itself here.
CAPABILITY_MODULES: tuple[str, ...] = (
    "erpq.health",
    "erpq.webhooks",
)


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
    timeout: float | None = None,
    description: str = "",
) -> Callable[[Callable], Callable]:
    """Declare a queued job. ``retries`` extra attempts, ``retry_delay`` seconds
    before the first, multiplied by ``retry_backoff`` each time (0: constant)."""

    def decorator(func: Callable) -> Callable:
        doc = (func.__doc__ or "").strip().splitlines()
        summary = description or (doc[0] if doc else "")
        _register(JobSpec(name, func, retries, retry_delay, retry_backoff, timeout, summary))
        return func

    return decorator


def periodic(name: str, *, description: str, retries: int = 0) -> Callable[[Callable], Callable]:
    """Declare a periodic task; ``name`` must be one of SPEC's (DEFAULT_SCHEDULE)."""
    if name not in DEFAULT_SCHEDULE:
        raise ValueError(f"periodic task {name!r} has no default schedule in erpq.config.DEFAULT_SCHEDULE")

    def decorator(func: Callable) -> Callable:
        _register(JobSpec(name, func, retries, description=description, periodic=True))
        return func

    return decorator


def load_capabilities() -> None:
    for module in CAPABILITY_MODULES:
        importlib.import_module(module)


def periodic_specs() -> list[JobSpec]:
    return [s for s in JOBS.values() if s.periodic]
