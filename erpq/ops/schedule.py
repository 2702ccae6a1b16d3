"""Ops section: the periodic tasks (list with last and next run, run now, pause, resume)."""

from __future__ import annotations

import datetime as dt
import shlex
import uuid
from dataclasses import dataclass

import sqlalchemy as sa

from ..db import utcnow
from ..models import JobRun, Lock, ScheduleState
from ..runtime.registry import periodic_specs
from ..runtime.schedule import describe, next_tick
from .base import NotFound, OpsCore, _audited, _Record

# ====================================================================== records



@dataclass
class ScheduleEntry(_Record):
    name: str
    expression: str
    description: str
    paused: bool
    last_run_at: dt.datetime | None
    last_status: str | None
    last_duration_s: float | None
    next_run_at: dt.datetime | None
    running_since: dt.datetime | None = None
    lock_holder: str | None = None
    summary: str = ""


class ScheduleOps(OpsCore):
    # ------------------------------------------------------------ schedule
    def schedule(self) -> list[ScheduleEntry]:
        rt, now = self.rt, utcnow()
        sched = rt.settings.schedule
        specs = sorted(periodic_specs(), key=lambda s: s.name)
        names = [s.name for s in specs]
        with rt.read_session() as s:
            paused = {r.name: r.paused for r in s.scalars(sa.select(ScheduleState))}
            last: dict[str, JobRun] = {}
            running: dict[str, JobRun] = {}
            for name in names:
                row = s.scalars(sa.select(JobRun).where(JobRun.task_name == name,
                                                        JobRun.finished_at.is_not(None))
                                .order_by(JobRun.id.desc()).limit(1)).first()
                if row is not None:
                    last[name] = row
                run = s.scalars(sa.select(JobRun).where(JobRun.task_name == name, JobRun.status == "running")
                                .order_by(JobRun.id.desc()).limit(1)).first()
                if run is not None:
                    running[name] = run
            held = {lk.name: lk for lk in s.scalars(sa.select(Lock).where(Lock.expires_at >= now))}
        out = []
        for spec in specs:
            expr = sched.cron[spec.name]
            lr = last.get(spec.name)
            lock = held.get(f"periodic:{spec.name}")
            run = running.get(spec.name)
            out.append(ScheduleEntry(
                name=spec.name, expression=expr, description=describe(expr),
                paused=paused.get(spec.name, False),
                last_run_at=lr.started_at or lr.enqueued_at if lr else None,
                last_status=lr.status if lr else None,
                last_duration_s=lr.duration_s if lr else None,
                next_run_at=None if paused.get(spec.name) else next_tick(expr, now, sched.timezone),
                running_since=run.started_at if run and lock else None,
                lock_holder=lock.holder if lock else None,
                summary=spec.description,
            ))
        return out

    def _periodic(self, name: str) -> str:
        if name not in {s.name for s in periodic_specs()}:
            known = ", ".join(sorted(s.name for s in periodic_specs()))
            raise NotFound(f"unknown scheduled task {name!r} (known: {known})")
        return name

    @_audited
    def trigger(self, name: str) -> str:
        """Run a periodic task now (in addition to its schedule); returns the task id."""
        self._periodic(name)
        self._act("schedule.run", name, f"erpq schedule run {shlex.quote(name)}")
        task_id = str(uuid.uuid4())
        self._after_commit(lambda: self.rt.trigger_periodic(name, trigger="manual", task_id=task_id))
        return task_id

    @_audited
    def pause(self, name: str) -> None:
        self._set_paused(name, True)

    @_audited
    def resume(self, name: str) -> None:
        self._set_paused(name, False)

    def _set_paused(self, name: str, paused: bool) -> None:
        self._periodic(name)
        verb = "pause" if paused else "resume"
        self._act(f"schedule.{verb}", name, f"erpq schedule {verb} {shlex.quote(name)}")
        with self._tx() as s:
            s.merge(ScheduleState(name=name, paused=paused, changed_at=utcnow(), changed_by=self.actor.user))
