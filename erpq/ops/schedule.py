"""Ops section: the periodic tasks (list with last and next run, run now, pause, resume)."""

from __future__ import annotations

import datetime as dt
import shlex
import uuid
from dataclasses import dataclass

import sqlalchemy as sa

from ..db import utcnow
from ..models import JobRun, Lock, Runner, ScheduleState
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


@dataclass
class TickOutcome(_Record):
    tick: dt.datetime | None  # None: a manual run
    trigger: str | None
    status: str
    outcome: str  # the status in words, with the reason
    started_at: dt.datetime | None = None
    late_s: float | None = None
    runner: str | None = None


@dataclass
class ScheduleExplanation(_Record):
    """Why a periodic task did or did not fire, from the record (``erpq schedule explain``)."""

    name: str
    expression: str
    words: str
    timezone: str
    misfire: str
    paused: bool
    paused_by: str | None
    paused_at: dt.datetime | None
    ticks: list  # TickOutcome, newest first
    lock_holder: str | None
    lock_expires_at: dt.datetime | None
    schedulers: list  # live runners firing periodic tasks
    next_tick: dt.datetime | None  # UTC
    next_tick_local: str | None  # in the configured timezone

    def to_dict(self) -> dict:
        d = super().to_dict()
        d["ticks"] = [t.to_dict() for t in self.ticks]
        return d

    def lines(self) -> list[str]:
        out = [f"{self.name}: {self.expression} ({self.words}), timezone {self.timezone}, "
               f"misfire policy {self.misfire}"]
        if self.paused:
            out.append(f"Paused since {_t(self.paused_at)} by {self.paused_by or '?'}: ticks are recorded as missed")
        out.append("Next tick: " + (f"{self.next_tick_local} ({_t(self.next_tick)} UTC)" if self.next_tick
                                   else "none while paused"))
        out.append("Scheduler: " + (", ".join(self.schedulers) if self.schedulers
                                    else "NO live runner fires periodic tasks: ticks will be missed"))
        out.append("Lock: " + (f"held by {self.lock_holder}, lease until {_t(self.lock_expires_at)} UTC"
                               if self.lock_holder else "free"))
        out.append(f"Last {len(self.ticks)} tick(s), newest first:" if self.ticks else "No run on record yet")
        for t in self.ticks:
            when = _t(t.tick) + " UTC" if t.tick else "manual run"
            out.append(f"  {when}  {t.outcome}")
        return out


def _t(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _outcome(r: JobRun) -> str:
    late = f", started {r.late_s:.0f}s after the tick" if r.late_s is not None and r.late_s >= 1 else ""
    if r.status == "missed":
        reason = r.error or "?"
        if reason == "paused":
            return "missed: skipped because the task was paused"
        if reason.startswith("previous run still running"):
            return f"missed: skipped because the {reason}"
        return f"missed: {reason}"
    if r.status == "success":
        return f"ran (success on {r.runner}{late})"
    if r.status in ("failed", "retrying"):
        return f"ran ({r.status}{late}): {(r.error or '')[:120]}"
    if r.status in ("enqueued", "running"):
        return f"{r.status}{late}"
    return r.status + (f": {r.error}" if r.error else "")


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

    def explain(self, name: str, last: int = 10) -> ScheduleExplanation:
        """Why ``name`` did or did not fire: its last ticks with their outcome, the
        lock, the runners firing the schedule and the next tick."""
        self._periodic(name)
        rt, now = self.rt, utcnow()
        sched = rt.settings.schedule
        expr = sched.cron[name]
        with rt.read_session() as s:
            state = s.get(ScheduleState, name)
            runs = s.scalars(sa.select(JobRun).where(JobRun.task_name == name)
                             .order_by(JobRun.id.desc()).limit(last)).all()
            lock = s.get(Lock, f"periodic:{name}")
            alive = now - dt.timedelta(seconds=rt.settings.runner.dead_after_s)
            schedulers = [f"{r.id} (heartbeat {_t(r.heartbeat_at)} UTC)" for r in s.scalars(
                sa.select(Runner).where(Runner.periodic.is_(True), Runner.stopped_at.is_(None),
                                        Runner.heartbeat_at >= alive).order_by(Runner.id))]
        if lock is not None and lock.expires_at < now:
            lock = None
        paused = bool(state and state.paused)
        nxt = None if paused else next_tick(expr, now, sched.timezone)
        from zoneinfo import ZoneInfo

        kind, limit = sched.misfire.get(name, "skip").partition(":")[::2]
        return ScheduleExplanation(
            name=name, expression=expr, words=describe(expr), timezone=sched.timezone,
            misfire=f"catch_up (max {limit or sched.catch_up_max})" if kind == "catch_up" else kind,
            paused=paused, paused_by=state.changed_by if paused else None,
            paused_at=state.changed_at if paused else None,
            ticks=[TickOutcome(r.tick, r.trigger, r.status, _outcome(r), r.started_at, r.late_s, r.runner)
                   for r in runs],
            lock_holder=lock.holder if lock else None, lock_expires_at=lock.expires_at if lock else None,
            schedulers=schedulers, next_tick=nxt,
            next_tick_local=nxt.astimezone(ZoneInfo(sched.timezone)).strftime("%Y-%m-%d %H:%M %Z") if nxt else None,
        )

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
