"""Ops section ``reports``: report definitions, exports, schedules and their actions."""

from __future__ import annotations

import datetime as dt
import json
import shlex
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..models import Tenant
from ..ops import Conflict, Invalid, NotFound, OpsSection, Page, audited
from ..ops.base import _Record
from . import kinds, schedules, service
from .kinds import ReportError
from .models import Report, ReportSchedule


@dataclass
class ReportInfo(_Record):
    id: int
    tenant: str
    name: str
    kind: str
    filters: Any
    columns: Any
    created_at: dt.datetime


@dataclass
class ScheduleInfo(_Record):
    id: int
    tenant: str
    report_id: int
    report: str
    cron_expression: str
    timezone: str
    format: str
    recipients: list[str]
    is_active: bool
    next_run_at: dt.datetime | None
    last_run_at: dt.datetime | None
    last_status: str | None
    last_error: str | None


@dataclass
class KindInfo(_Record):
    kind: str
    description: str


def _report_info(r: Report, slug: str) -> ReportInfo:
    return ReportInfo(r.id, slug, r.name, r.report_type, r.filters or {}, r.columns, r.created_at)


def _schedule_info(sc: ReportSchedule, name: str, slug: str) -> ScheduleInfo:
    return ScheduleInfo(sc.id, slug, sc.report_id, name, sc.cron_expression, sc.timezone, sc.format,
                        list(sc.recipients or []), bool(sc.is_active), sc.next_run_at, sc.last_run_at,
                        sc.last_status, sc.last_error)


def _invalid(exc: Exception) -> Invalid:
    return Invalid(str(exc))


class ReportOps(OpsSection):
    """Reports (``ops.reports``)."""

    def kinds(self) -> list[KindInfo]:
        return [KindInfo(k, d) for k, (d, _) in kinds.KINDS.items()]

    def reports(self, offset: int = 0, limit: int = 50, search: str | None = None,
                tenant: str | int | None = None) -> Page:
        q = sa.select(Report, Tenant.slug).join(Tenant, Tenant.id == Report.tenant_id)
        if tenant is not None:
            q = q.where(Report.tenant_id == self.ops.tenant_id(tenant))
        if search:
            q = q.where(sa.or_(Report.name.like(f"%{search}%"), Report.report_type == search))
        with self.rt.read_session() as s:
            total = s.scalar(sa.select(sa.func.count()).select_from(q.subquery())) or 0
            rows = s.execute(q.order_by(Report.id).offset(offset).limit(limit)).all()
            return Page([_report_info(r, slug) for r, slug in rows], total, offset, limit)

    def report(self, report_id: int) -> ReportInfo:
        with self._read() as s:
            row = s.execute(sa.select(Report, Tenant.slug).join(Tenant, Tenant.id == Report.tenant_id)
                            .where(Report.id == int(report_id))).first()
            if row is None:
                raise NotFound(f"no report with id {report_id}")
            return _report_info(*row)

    def schedules(self, offset: int = 0, limit: int = 50, search: str | None = None) -> Page:
        """Report schedules with next and last run, last status and error."""
        q = schedules.schedules_query().add_columns(Tenant.slug).join(Tenant, Tenant.id == ReportSchedule.tenant_id)
        if search:
            q = q.where(sa.or_(Report.name.like(f"%{search}%"), ReportSchedule.last_status == search))
        with self.rt.read_session() as s:
            total = s.scalar(sa.select(sa.func.count()).select_from(q.subquery())) or 0
            rows = s.execute(q.order_by(ReportSchedule.id).offset(offset).limit(limit)).all()
            return Page([_schedule_info(sc, name, slug) for sc, name, slug in rows], total, offset, limit)

    def schedule(self, schedule_id: int) -> ScheduleInfo:
        q = schedules.schedules_query().add_columns(Tenant.slug).join(Tenant, Tenant.id == ReportSchedule.tenant_id)
        with self._read() as s:
            row = s.execute(q.where(ReportSchedule.id == int(schedule_id))).first()
            if row is None:
                raise NotFound(f"no report schedule with id {schedule_id}")
            return _schedule_info(*row)

    def summary(self) -> str:
        with self.rt.read_session() as s:
            active = s.scalar(sa.select(sa.func.count()).where(ReportSchedule.is_active.is_(True))) or 0
            paused = s.scalar(sa.select(sa.func.count()).where(ReportSchedule.is_active.is_(False))) or 0
            errored = s.scalar(sa.select(sa.func.count()).where(ReportSchedule.last_status == "error")) or 0
        return f"{active} active, {paused} paused, {errored} errored"

    # ------------------------------------------------------------ actions
    @audited
    def create(self, tenant: str | int, name: str, kind: str, filters: dict | None = None,
               columns: list[str] | None = None) -> ReportInfo:
        tenant_id = self.ops.tenant_id(tenant)
        cmd = f"erpq report create {shlex.quote(name)} --kind {kind} --tenant {shlex.quote(str(tenant))}"
        if filters:
            cmd += f" --filters {shlex.quote(json.dumps(filters))}"
        if columns:
            cmd += f" --columns {shlex.quote(','.join(columns))}"
        self._act("report.create", name, cmd)
        try:
            with self._tx() as s:
                rid = service.create_report(s, tenant_id, name, kind, filters, columns).id
        except ReportError as exc:
            raise _invalid(exc) from None
        return self.report(rid)

    @audited
    def run(self, report_id: int, fmt: str = "pdf", out: str | None = None) -> str:
        """Export a report now, in this process; returns the file's path."""
        self.report(report_id)
        self._act("report.run", str(report_id), f"erpq report run {report_id} --format {fmt}"
                  + (f" --out {shlex.quote(str(out))}" if out else ""))
        # The export writes a file, no rows: it runs once the audit row committed (a
        # failed export takes the audit row back).
        done: list[str] = []

        def export() -> None:
            try:
                done.append(str(service.export_report(self.rt, int(report_id), fmt, out)))
            except ReportError as exc:
                raise _invalid(exc) from None

        self._after_commit(export)
        return self._then(lambda: done[0])

    @audited
    def email(self, report_id: int, fmt: str, recipients: list[str]) -> str:
        """Queue ExportReportJob for a manual export emailed to ``recipients``; returns the job id."""
        self.report(report_id)
        try:
            recips = schedules.check_recipients(recipients)
        except schedules.ScheduleError as exc:
            raise _invalid(exc) from None
        self._act("report.email", str(report_id), f"erpq report run {report_id} --format {fmt} --email "
                  + shlex.quote(",".join(recips)))
        task_id = str(uuid.uuid4())
        self._after_commit(lambda: self.rt.enqueue(schedules.JOB, int(report_id), fmt, None, None, recips,
                                                   task_id=task_id))
        return task_id

    @audited
    def add_schedule(self, report_id: int, cron: str, tz: str = "UTC", fmt: str = "pdf",
                     recipients: list[str] | None = None) -> ScheduleInfo:
        self.report(report_id)
        self._act("report.schedule.add", str(report_id),
                  f"erpq report schedule add {report_id} --cron {shlex.quote(cron)} --timezone {shlex.quote(tz)} "
                  f"--format {fmt}" + (f" --to {shlex.quote(','.join(recipients))}" if recipients else ""))
        try:
            with self._tx() as s:
                sid = schedules.add_schedule(s, int(report_id), cron, tz, fmt, recipients).id
        except (schedules.ScheduleError, ReportError) as exc:
            raise _invalid(exc) from None
        return self.schedule(sid)

    def _set_active(self, schedule_id: int, active: bool) -> ScheduleInfo:
        info = self.schedule(schedule_id)
        if info.is_active == active:
            raise Conflict(f"report schedule {schedule_id} is already {'active' if active else 'paused'}")
        verb = "resume" if active else "pause"
        self._act(f"report.schedule.{verb}", str(schedule_id), f"erpq report schedule {verb} {schedule_id}")
        try:
            with self._tx() as s:
                schedules.set_active(s, int(schedule_id), active)
        except schedules.ScheduleError as exc:
            raise _invalid(exc) from None
        return self.schedule(schedule_id)

    @audited
    def pause_schedule(self, schedule_id: int) -> ScheduleInfo:
        return self._set_active(schedule_id, False)

    @audited
    def resume_schedule(self, schedule_id: int) -> ScheduleInfo:
        """Resume (and re-check the cron expression and zone of) a schedule; next run from now."""
        return self._set_active(schedule_id, True)

    @audited
    def remove_schedule(self, schedule_id: int) -> None:
        self.schedule(schedule_id)
        self._act("report.schedule.remove", str(schedule_id), f"erpq report schedule remove {schedule_id}")
        with self._tx() as s:
            s.execute(sa.delete(ReportSchedule).where(ReportSchedule.id == int(schedule_id)))

    @audited
    def run_schedule_now(self, schedule_id: int) -> str:
        """Queue the schedule's export and email now (its next_run_at is unchanged); returns the job id."""
        info = self.schedule(schedule_id)
        self._act("report.schedule.run", str(schedule_id), f"erpq report schedule run {schedule_id}")
        task_id = str(uuid.uuid4())
        self._after_commit(lambda: self.rt.enqueue(schedules.JOB, info.report_id, info.format, info.id,
                                                   dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
                                                   task_id=task_id))
        return task_id
