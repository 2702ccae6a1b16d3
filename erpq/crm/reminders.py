"""``crm:check-activity-reminders`` and ``SendActivityReminderJob``.

The periodic task claims due activities one conditional UPDATE each
(``reminder_claimed_at`` set only where the reminder is unsent and unclaimed,
or claimed longer ago than the lease), so two runs or two runners never claim
one activity twice; each claim enqueues one job. A claim whose job died is
claimed again after ``[crm] reminder_lease_s``. An activity created (or moved)
already inside the window is claimed at once by the ``activity.created`` /
``activity.updated`` handler, after the creating transaction commits.

The job notifies the assigned user (the creator when unassigned) once (the
notification's de-duplication key names the activity and its due time) and
mails them once when they have an address (a deterministic Message-ID and the
sent-mail ledger); SMTP trouble raises and Huey retries with backoff. Only
then is ``reminder_sent_at`` set.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .. import events
from ..db import utcnow
from ..models import User
from ..runtime import current
from . import service
from .capability import CAPABILITY
from .mail import send_once
from .models import Activity

log = logging.getLogger("erpq.crm.reminders")


def _due_filter(now: dt.datetime, window_min: int, lease_s: int):
    return sa.and_(
        Activity.status == "open",
        Activity.reminder_sent_at.is_(None),
        Activity.due_at.is_not(None),
        Activity.due_at <= now + dt.timedelta(minutes=window_min),
        sa.or_(Activity.reminder_claimed_at.is_(None),
               Activity.reminder_claimed_at < now - dt.timedelta(seconds=lease_s)),
    )


def claim_due(rt: Any, now: dt.datetime | None = None, activity_id: int | None = None,
              limit: int = 1000, session: Any = None) -> list[tuple[int, int]]:
    """Claim due activities (or just ``activity_id``); returns (activity id, tenant id) of each claim won.

    Each claim commits on its own, unless ``session`` is given: then every claim is
    written in that session and commits with the caller's transaction."""
    now = now or utcnow()
    cfg = rt.settings.crm
    due = _due_filter(now, cfg.reminder_window_min, cfg.reminder_lease_s)
    with contextlib.nullcontext(session) if session is not None else rt.read_session() as s:
        q = sa.select(Activity.id, Activity.tenant_id).where(due)
        if activity_id is not None:
            q = q.where(Activity.id == activity_id)
        candidates = s.execute(q.order_by(Activity.due_at).limit(limit)).all()
    won = []
    for aid, tenant_id in candidates:
        # One conditional UPDATE per activity: the database decides who claims it.
        with contextlib.nullcontext(session) if session is not None else rt.session() as s:
            claimed = s.execute(sa.update(Activity).where(Activity.id == aid, due)
                                .values(reminder_claimed_at=now)
                                .execution_options(synchronize_session=False)).rowcount
        if claimed:
            won.append((aid, tenant_id))
    return won


def unclaim(rt: Any, activity_id: int) -> None:
    """Take back a claim whose reminder job was never enqueued (it is due again at once)."""
    with rt.session() as s:
        s.execute(sa.update(Activity).where(Activity.id == activity_id, Activity.reminder_sent_at.is_(None))
                  .values(reminder_claimed_at=None).execution_options(synchronize_session=False))


def check_activity_reminders(rt: Any, now: dt.datetime | None = None) -> int:
    """Claim every due activity and enqueue its reminder job; returns how many."""
    claims = claim_due(rt, now)
    for aid, tenant_id in claims:
        rt.enqueue("SendActivityReminderJob", aid, tenant_id=tenant_id)
    if claims:
        log.info("Claimed %d activity reminder(s)", len(claims))
    return len(claims)


@CAPABILITY.periodic("crm:check-activity-reminders", cron="*/5 * * * *",
                     description="Remind users of open activities due within the next 15 minutes")
def check_activity_reminders_task() -> None:
    check_activity_reminders(current())


@events.on("activity.created")
@events.on("activity.updated")
def remind_at_once_if_due(event: events.Event) -> int:
    """An activity created (or moved) inside the window gets its reminder now, not at the next tick."""
    p = event.payload
    if p.get("status") != "open" or not p.get("due_at") or p.get("reminder_sent_at"):
        return 0
    rt = current()
    claims = claim_due(rt, activity_id=int(p["id"]))
    for aid, tenant_id in claims:
        rt.enqueue("SendActivityReminderJob", aid, tenant_id=tenant_id)
    return len(claims)


@CAPABILITY.job("SendActivityReminderJob", retries=5, retry_delay=30, retry_backoff=2)
def send_activity_reminder_job(activity_id: int) -> str:
    """Notify (and mail) an activity's assignee, or its creator, that it is due soon."""
    return send_activity_reminder(current(), activity_id)


def reminder_recipient(s: Session, activity: Activity) -> User | None:
    user_id = activity.assigned_to or activity.created_by
    return s.get(User, user_id) if user_id else None


def send_activity_reminder(rt: Any, activity_id: int) -> str:
    """The job's body; returns what it did ("sent", "already sent", "no recipient", ...)."""
    with rt.session() as s:
        activity = s.get(Activity, activity_id)
        if activity is None:
            return "gone"
        if activity.reminder_sent_at is not None:
            return "already sent"
        if activity.status != "open":
            return "not open"
        user = reminder_recipient(s, activity)
        if user is None:
            activity.reminder_sent_at = utcnow()
            return "no recipient"
        tz = service.user_timezone(s, user.id, rt.settings.crm.default_timezone)
        due_local = service.local_time(activity.due_at, tz)
        key = f"activity:{activity.id}:reminder:{service.jsonable(activity.due_at)}"
        title = f"Reminder: {activity.subject} due {due_local}"
        service.notify(s, activity.tenant_id, user.id, "activity.reminder", title,
                       f"{activity.type.title()} '{activity.subject}' is due {due_local}.",
                       {"activity_id": activity.id, "due_at": service.jsonable(activity.due_at),
                        "subject": activity.subject}, key)
        tenant_id, email, subject, atype = activity.tenant_id, user.email, activity.subject, activity.type
        name = user.name
    # The notification is committed before the mail: a failing SMTP server
    # retries the mail only.
    if email:
        send_once(rt, tenant_id, "activity-reminder", key, email, title,
                  f"Hello {name},\n\nyour {atype} '{subject}' is due {due_local}.\n")
    with rt.session() as s:
        s.execute(sa.update(Activity).where(Activity.id == activity_id).values(reminder_sent_at=utcnow()))
    return "sent"


def due_activities(s: Session, within_min: int, offset: int = 0, limit: int = 50, search: str | None = None,
                   now: dt.datetime | None = None) -> tuple[list[tuple[Activity, str, User | None]], int]:
    """Open activities due within ``within_min`` (overdue included), soonest first,
    with the tenant slug and the reminder's recipient."""
    from ..models import Tenant

    now = now or utcnow()
    recipient = sa.func.coalesce(Activity.assigned_to, Activity.created_by)
    q = (sa.select(Activity, Tenant.slug, User)
         .join(Tenant, Tenant.id == Activity.tenant_id)
         .outerjoin(User, User.id == recipient)
         .where(Activity.status == "open", Activity.due_at.is_not(None),
                Activity.due_at <= now + dt.timedelta(minutes=within_min)))
    if search:
        from ..ops.base import text_search

        q = q.where(text_search((Activity.subject, Tenant.slug, User.name), search))
    total = s.scalar(sa.select(sa.func.count()).select_from(q.subquery())) or 0
    rows = s.execute(q.order_by(Activity.due_at).offset(offset).limit(limit)).all()
    return [(a, slug, u) for a, slug, u in rows], total
