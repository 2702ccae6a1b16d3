"""Report schedules: ``erp:generate-scheduled-reports`` and ``ExportReportJob``.

Every minute the periodic task takes the active schedules whose
``next_run_at`` has passed and claims each with one conditional UPDATE
(``WHERE next_run_at = <the value read>``), which also moves ``next_run_at``
to the next cron time after *now*: two runners cannot both claim a run, and a
schedule that missed many ticks during downtime runs once, not once per tick.
Cron times are computed by croniter from an aware datetime in the schedule's
own zone (DST-correct; see shared notes) and stored in UTC. A bad cron
expression or zone marks that schedule errored (and unscheduled) without
disturbing the others.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from croniter import croniter

from ..db import utcnow
from ..runtime import current
from .capability import CAPABILITY
from .export import FORMATS, MIME
from .kinds import ReportError
from .models import Report, ReportSchedule
from .service import export_report, get_report, prune_exports

log = logging.getLogger("erpq.reports")
JOB = "ExportReportJob"
EMAIL_RE = r"[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+"


class ScheduleError(ValueError):
    """A bad cron expression, zone, format or recipient: one line."""


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ScheduleError(f"unknown time zone {name!r}") from None


def next_run(cron: str, tz: str, after: dt.datetime) -> dt.datetime:
    """The first time ``cron`` fires in zone ``tz`` strictly after ``after`` (aware), in UTC."""
    z = zone(tz)
    if not croniter.is_valid(cron):
        raise ScheduleError(f"invalid cron expression {cron!r}")
    try:
        nxt = croniter(cron, after.astimezone(z)).get_next(dt.datetime)
    except Exception as exc:  # croniter raises several types for odd expressions
        raise ScheduleError(f"invalid cron expression {cron!r}: {exc}") from None
    return nxt.astimezone(dt.UTC)


def check_recipients(recipients: list[str]) -> list[str]:
    import re

    out = [r.strip() for r in recipients if r and r.strip()]
    bad = [r for r in out if not re.fullmatch(EMAIL_RE, r)]
    if bad:
        raise ScheduleError(f"not an email address: {', '.join(bad)}")
    return out


def add_schedule(s, report_id: int, cron: str, tz: str = "UTC", fmt: str = "pdf",
                 recipients: list[str] | None = None, now: dt.datetime | None = None) -> ReportSchedule:
    report = get_report(s, report_id)
    if fmt not in FORMATS:
        raise ScheduleError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    recips = check_recipients(recipients or [])
    nxt = next_run(cron, tz, now or utcnow())
    row = ReportSchedule(tenant_id=report.tenant_id, report_id=report.id, cron_expression=cron.strip(),
                         timezone=tz, format=fmt, recipients=recips, is_active=True, next_run_at=nxt)
    s.add(row)
    s.flush()
    return row


def set_active(s, schedule_id: int, active: bool, now: dt.datetime | None = None) -> ReportSchedule:
    row = s.get(ReportSchedule, int(schedule_id))
    if row is None:
        raise ScheduleError(f"no report schedule with id {schedule_id}")
    row.is_active = active
    if active:  # from now on; an errored schedule is re-checked here
        row.next_run_at = next_run(row.cron_expression, row.timezone, now or utcnow())
        if row.last_status == "error":
            row.last_status, row.last_error = None, None
    return row


def due_schedules(s, now: dt.datetime) -> list[tuple[int, str, str, dt.datetime]]:
    q = sa.select(ReportSchedule.id, ReportSchedule.cron_expression, ReportSchedule.timezone,
                  ReportSchedule.next_run_at).where(ReportSchedule.is_active.is_(True),
                                                    ReportSchedule.next_run_at.is_not(None),
                                                    ReportSchedule.next_run_at <= now) \
        .order_by(ReportSchedule.next_run_at, ReportSchedule.id)
    return [tuple(r) for r in s.execute(q)]


def claim_due(rt, now: dt.datetime | None = None) -> list[tuple[int, int, str, dt.datetime]]:
    """Claim every due schedule; returns (schedule id, report id, format, run time) of the claimed ones."""
    now = now or utcnow()
    claimed = []
    with rt.read_session() as s:
        due = due_schedules(s, now)
    for sid, cron, tz, was in due:
        with rt.session() as s:
            try:
                nxt = next_run(cron, tz, now)
            except ScheduleError as exc:
                s.execute(sa.update(ReportSchedule).where(ReportSchedule.id == sid,
                                                          ReportSchedule.next_run_at == was)
                          .values(last_status="error", last_error=str(exc), next_run_at=None))
                log.warning("report schedule %s: %s", sid, exc)
                continue
            n = s.execute(sa.update(ReportSchedule).where(ReportSchedule.id == sid, ReportSchedule.is_active.is_(True),
                                                          ReportSchedule.next_run_at == was)
                          .values(next_run_at=nxt, last_run_at=now, last_status="running", last_error=None)).rowcount
            if n:
                rid, fmt = s.execute(sa.select(ReportSchedule.report_id, ReportSchedule.format)
                                     .where(ReportSchedule.id == sid)).one()
                claimed.append((sid, rid, fmt, was))
    return claimed


@CAPABILITY.periodic("erp:generate-scheduled-reports", cron="* * * * *",
                     description="Enqueue ExportReportJob for every report schedule that is due")
def generate_scheduled_reports() -> int:
    rt = current()
    claimed = claim_due(rt)
    with rt.read_session() as s:
        tenants = dict(s.execute(sa.select(ReportSchedule.id, ReportSchedule.tenant_id)
                                 .where(ReportSchedule.id.in_([c[0] for c in claimed]))).all()) if claimed else {}
    for sid, rid, fmt, was in claimed:
        rt.enqueue(JOB, rid, fmt, sid, was.isoformat(), tenant_id=tenants.get(sid))
    prune_exports(rt)
    return len(claimed)


# ---------------------------------------------------------------- the job


def run_export(rt, report_id: int, fmt: str, schedule_id: int | None = None, run_at: str | None = None,
               recipients: list[str] | None = None, out: str | None = None) -> Path:
    """Build the file; email it to the schedule's (or the given) recipients; record the outcome."""
    from ..mailer import Mailer, MailError, TransientMailError, build_message, message_id

    try:
        with rt.read_session() as s:
            report = get_report(s, report_id)
            name = report.name
            if schedule_id is not None:
                sched = s.get(ReportSchedule, schedule_id)
                if sched is None:
                    raise ReportError(f"no report schedule with id {schedule_id}")
                recipients = recipients if recipients is not None else list(sched.recipients or [])
        path = export_report(rt, report_id, fmt, out)
        if recipients:
            mailer = Mailer.from_settings(rt.settings.mail)
            when = run_at or path.stem.rsplit("-", 1)[-1]
            msg = build_message(
                mailer.from_address, recipients, f"Report: {name}",
                text=f"The report \"{name}\" ({fmt}) is attached.\n\nGenerated by erpq.\n",
                message_id=message_id("report", f"{schedule_id or 'manual'}.{report_id}.{when}", ",".join(recipients)),
                attachments=[(path.name, path.read_bytes(), MIME[fmt])])
            mailer.send(msg)
    except TransientMailError as exc:
        _record(rt, schedule_id, "retrying", str(exc))
        raise
    except (MailError, ReportError, OSError) as exc:
        _record(rt, schedule_id, "error", f"{type(exc).__name__}: {exc}")
        raise
    _record(rt, schedule_id, "ok", None)
    return path


def _record(rt, schedule_id: int | None, status: str, error: str | None) -> None:
    if schedule_id is None:
        return
    with rt.session() as s:
        s.execute(sa.update(ReportSchedule).where(ReportSchedule.id == schedule_id)
                  .values(last_status=status, last_error=(error or None) and error[:2000]))


@CAPABILITY.job(JOB, retries=3, retry_delay=60, retry_backoff=2)
def export_report_job(report_id: int, fmt: str, schedule_id: int | None = None, run_at: str | None = None,
                      recipients: list[str] | None = None) -> str:
    """Export a report (scheduled or manual) and email it; returns the file's path."""
    from ..mailer import TransientMailError

    rt = current()
    try:
        return str(run_export(rt, report_id, fmt, schedule_id, run_at, recipients))
    except TransientMailError:
        raise  # retried with backoff
    except Exception as exc:
        log.error("ExportReportJob report %s schedule %s: %s", report_id, schedule_id, exc)
        return f"error: {exc}"


def schedules_query():
    return sa.select(ReportSchedule, Report.name).join(Report, Report.id == ReportSchedule.report_id)
