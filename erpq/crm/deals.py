"""``SendDealNotificationJob``: on ``deal.status_changed``, notify the deal's
assigned user and its creator (once each, even when they are the same person)
with the old and new status, by notification and by mail.

The handler enqueues one job per event; the event's outbox id is in every
de-duplication key and Message-ID, so a re-run fan-out or a retried job
notifies nobody twice.
"""

from __future__ import annotations

from typing import Any

from .. import events
from ..models import User
from ..runtime import current
from . import service
from .capability import CAPABILITY
from .mail import send_once
from .models import Deal


@events.on("deal.status_changed")
def enqueue_deal_notification(event: events.Event) -> str:
    p = event.payload
    return current().enqueue("SendDealNotificationJob", int(p["id"]), p.get("old_status"), p.get("new_status"),
                             str(event.id), tenant_id=event.tenant_id)


@CAPABILITY.job("SendDealNotificationJob", retries=5, retry_delay=30, retry_backoff=2)
def send_deal_notification_job(deal_id: int, old_status: str, new_status: str, event_id: str) -> int:
    """Notify a deal's assignee and creator of its status change."""
    return send_deal_notification(current(), deal_id, old_status, new_status, event_id)


def send_deal_notification(rt: Any, deal_id: int, old_status: str, new_status: str, event_id: str) -> int:
    """Returns how many people were notified now."""
    with rt.session() as s:
        deal = s.get(Deal, deal_id)
        if deal is None:
            return 0
        people = [s.get(User, uid) for uid in dict.fromkeys(u for u in (deal.assigned_to, deal.created_by) if u)]
        key = f"deal:{deal.id}:status:{event_id}"
        title = f"Deal '{deal.title}': {old_status} -> {new_status}"
        mails = []
        done = 0
        for user in filter(None, people):
            if service.notify(s, deal.tenant_id, user.id, "deal.status_changed", title,
                              f"The deal '{deal.title}' changed from {old_status} to {new_status}.",
                              {"deal_id": deal.id, "old_status": old_status, "new_status": new_status}, key):
                done += 1
            if user.email:
                mails.append((user.email, user.name))
        tenant_id, deal_title = deal.tenant_id, deal.title
    for email, name in mails:
        send_once(rt, tenant_id, "deal-status", key, email, title,
                  f"Hello {name},\n\nthe deal '{deal_title}' changed from {old_status} to {new_status}.\n")
    return done
