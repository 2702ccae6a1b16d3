"""The round-trip health probe: a tiny job sent through the real queue.

Every health check (``erp:check-system-health``, ``erpq health --check``)
enqueues one ``ErpqHealthProbeJob`` with a ``health_probes`` row. The job, when a
worker runs it, writes how long it waited in the queue and how long it ran.
A probe still not run ``health.probe_timeout_s`` after it was enqueued is
failed — whoever looks first (the next check, or any read of the probe status)
records that — so a stopped or stuck worker pool shows as a failed probe within
one health period even when no check can run any more. The latencies over time
are what the console plots.

Health is read from the record: runner heartbeats, the latest scheduler tick and
the probe; never from a config flag.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..db import utcnow
from ..models import HealthProbe, JobRun, Runner
from ..runtime import current
from ..runtime.registry import periodic_specs
from .capability import CAPABILITY


@CAPABILITY.job("ErpqHealthProbeJob", description="Round-trip probe of the queue (records wait and run time)")
def health_probe_job(probe_id: int) -> None:
    rt = current()
    started = utcnow()
    with rt.session() as s:
        probe = s.get(HealthProbe, probe_id)
        if probe is None:
            return
        finished = utcnow()
        probe.started_at, probe.finished_at = started, finished
        probe.wait_s = max(0.0, (started - probe.enqueued_at).total_seconds())
        probe.run_s = (finished - started).total_seconds()
        probe.runner = rt.runner_id
        if probe.status == "failed":  # declared lost before it ran: the record keeps that, and the late run
            probe.error = f"{probe.error}; ran {probe.wait_s:.0f}s after it was enqueued"
        else:
            probe.status = "ok"


def send_probe(rt, session=None) -> int:
    """Enqueue a probe job through the real queue; returns the probe's id.

    With ``session`` the probe row rides in the caller's transaction and the job
    is enqueued when it commits (a job never looks for a row not yet there)."""
    if session is None:
        with rt.session() as s:
            return send_probe(rt, s)
    probe_id, enqueue = add_probe(rt, session)
    sa.event.listen(session, "after_commit", lambda _s: enqueue(), once=True)
    return probe_id


def add_probe(rt, session) -> tuple[int, Any]:
    """Add a pending probe row in ``session``; returns its id and the function that
    enqueues its job (call it once ``session`` committed)."""
    task_id = uuid.uuid4().hex
    probe = HealthProbe(task_id=task_id, enqueued_at=utcnow(), status="pending")
    session.add(probe)
    session.flush()
    probe_id = probe.id
    return probe_id, lambda: rt.enqueue("ErpqHealthProbeJob", probe_id, trigger="health", task_id=task_id)


def fail_lost_probes(rt, session=None) -> int:
    """Mark probes still pending after ``health.probe_timeout_s`` as failed."""
    if session is None:
        with rt.session() as s:
            return fail_lost_probes(rt, s)
    timeout = rt.settings.health.probe_timeout_s
    cutoff = utcnow() - dt.timedelta(seconds=timeout)
    return session.execute(sa.update(HealthProbe).where(HealthProbe.status == "pending",
                                                        HealthProbe.enqueued_at < cutoff).values(
        status="failed",
        error=f"not run within {timeout:g}s: no worker took it (workers stopped, stuck or all busy)")).rowcount


@dataclass
class Liveness:
    """What the record says about the runtime being alive."""

    probe_status: str  # ok | failed | pending | none
    probe_wait_s: float | None
    probe_run_s: float | None
    probe_at: dt.datetime | None
    probe_error: str | None
    live_runners: int
    live_schedulers: int
    last_tick_at: dt.datetime | None  # the latest scheduler tick on record (any task)

    @property
    def status(self) -> str:
        if self.probe_status == "failed" or self.live_runners == 0:
            return "critical"
        return "ok" if self.probe_status in ("ok", "pending", "none") else "warning"


def liveness(rt, session=None) -> Liveness:
    """Read the probe, heartbeats and ticks (in ``session``, else a new one);
    lost probes are marked failed first."""
    if session is None:
        with rt.session() as s:
            return liveness(rt, s)
    fail_lost_probes(rt, session)
    now = utcnow()
    alive = now - dt.timedelta(seconds=rt.settings.runner.dead_after_s)
    s = session
    # the newest probe that has an outcome, unless the newest is still within its time
    probe = s.scalars(sa.select(HealthProbe).order_by(HealthProbe.id.desc()).limit(1)).first()
    if probe is not None and probe.status == "pending":
        done = s.scalars(sa.select(HealthProbe).where(HealthProbe.status != "pending")
                         .order_by(HealthProbe.id.desc()).limit(1)).first()
        probe = done or probe
    live = s.execute(sa.select(Runner.periodic).where(Runner.stopped_at.is_(None),
                                                      Runner.heartbeat_at >= alive)).scalars().all()
    names = [spec.name for spec in periodic_specs()]  # (task_name, tick) is indexed: no table scan
    last_tick = s.scalar(sa.select(sa.func.max(JobRun.tick)).where(JobRun.task_name.in_(names))) if names else None
    return Liveness(
        probe_status=probe.status if probe else "none",
        probe_wait_s=probe.wait_s if probe else None, probe_run_s=probe.run_s if probe else None,
        probe_at=probe.enqueued_at if probe else None, probe_error=probe.error if probe else None,
        live_runners=len(live), live_schedulers=sum(1 for p in live if p), last_tick_at=last_tick,
    )
