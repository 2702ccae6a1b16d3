"""Retention: deleting history, failed jobs, health rows and stopped runners
past the ``[retention]`` limits of config. Runners call ``prune`` now and then
from their heartbeat thread."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..db import utcnow
from ..models import FailedJob, HealthProbe, JobKey, JobRun, Runner, SystemHealth

if TYPE_CHECKING:
    from .core import Runtime


def prune(rt: Runtime) -> dict[str, int]:
    """Delete rows past their retention; returns how many per table."""
    r = rt.settings.retention
    now = utcnow()
    history_cutoff = now - dt.timedelta(days=r.history_days)
    out = {}
    with rt.session() as s:
        out["job_runs"] = s.execute(sa.delete(JobRun).where(JobRun.finished_at < history_cutoff)).rowcount
        cutoff = s.scalar(sa.select(JobRun.id).order_by(JobRun.id.desc())
                          .offset(r.history_rows).limit(1))
        if cutoff is not None:
            out["job_runs"] += s.execute(sa.delete(JobRun).where(JobRun.id <= cutoff)).rowcount
        out["failed_jobs"] = s.execute(sa.delete(FailedJob).where(sa.or_(
            FailedJob.failed_at < now - dt.timedelta(days=r.failed_days),
            FailedJob.deleted_at < now - dt.timedelta(minutes=r.undo_minutes)))).rowcount
        out["system_health"] = s.execute(sa.delete(SystemHealth).where(
            SystemHealth.checked_at < now - dt.timedelta(days=r.health_days))).rowcount
        out["job_keys"] = s.execute(sa.delete(JobKey).where(JobKey.expires_at < now)).rowcount
        out["health_probes"] = s.execute(sa.delete(HealthProbe).where(
            HealthProbe.enqueued_at < now - dt.timedelta(days=r.health_days))).rowcount
        # A stopped runner's row is history too; a live runner's is never deleted.
        out["runners"] = s.execute(sa.delete(Runner).where(
            Runner.stopped_at.is_not(None), Runner.stopped_at < history_cutoff)).rowcount
    return out
