"""Subscriptions, queueing deliveries, redelivery, and the reads operators use.

Everything here is a plain function over a Session, except ``WebhookService``,
which adds the queue: ``queue_delivery`` writes and commits one delivery row
per subscriber first and enqueues the jobs after, so a crash in between leaves
pending rows that ``erp:retry-webhook-deliveries`` picks up, never a job
without its row or a lost delivery.

Secrets: ``create_webhook`` and ``rotate_secret`` return the secret once; no
other function returns or logs it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .. import events
from ..db import utcnow
from ..models import Tenant, Webhook, WebhookDelivery
from . import delivery, guard

STATUSES = ("pending", "delivered", "failed", "dead")


class WebhookError(ValueError):
    """Bad input to a webhook operation; the message names what and why."""


class WebhookNotFound(WebhookError):
    """The subscription, delivery or tenant named does not exist."""


# ---------------------------------------------------------------- subscriptions


def normalize_events(names: Iterable[str] | None) -> list[str]:
    """Subscribed event names, checked; ``["*"]`` for all (None, empty or "*")."""
    names = [n.strip() for n in (names or []) if n.strip()]
    if not names or events.ALL in names:
        return [events.ALL]
    for name in names:
        try:
            events.check_event(name)
        except events.UnknownEvent as exc:
            raise WebhookError(str(exc)) from None
    return sorted(set(names))


def check_url(url: str, allow: Sequence[str] = ()) -> str:
    """The URL if it may be subscribed (syntax, scheme, literal addresses; no DNS)."""
    if len(url) > 2048:
        raise WebhookError("URL is longer than 2048 characters")
    try:
        guard.check(url, allow, resolve=None)
    except guard.Refused as exc:
        raise WebhookError(f"URL refused: {exc}") from None
    return url


def create_webhook(s: Session, tenant_id: int, url: str, event_names: Iterable[str] | None = None,
                   *, description: str | None = None, allow: Sequence[str] = ()) -> tuple[Webhook, str]:
    """A new active subscription and its secret (the only time the secret is returned)."""
    if s.get(Tenant, tenant_id) is None:
        raise WebhookNotFound(f"unknown tenant id {tenant_id}")
    hook = Webhook(tenant_id=tenant_id, url=check_url(url, allow), events=normalize_events(event_names),
                   secret=delivery.new_secret(), description=description, is_active=True,
                   consecutive_failures=0)
    s.add(hook)
    s.flush()
    return hook, hook.secret


def get_webhook(s: Session, webhook_id: int) -> Webhook:
    hook = s.get(Webhook, webhook_id)
    if hook is None:
        raise WebhookNotFound(f"unknown webhook id {webhook_id}")
    return hook


def list_webhooks(s: Session, tenant_id: int | None = None,
                  webhook_id: int | None = None) -> list[tuple[Webhook, str]]:
    """Subscriptions (of one tenant, or one by id) with their tenant's slug, oldest first."""
    q = sa.select(Webhook, Tenant.slug).join(Tenant, Tenant.id == Webhook.tenant_id).order_by(Webhook.id)
    if tenant_id is not None:
        q = q.where(Webhook.tenant_id == tenant_id)
    if webhook_id is not None:
        q = q.where(Webhook.id == webhook_id)
    return [(h, slug) for h, slug in s.execute(q)]


def page_webhooks(s: Session, offset: int = 0, limit: int = 50,
                  search: str | None = None) -> tuple[list[tuple[Webhook, str]], int]:
    """A page of subscriptions with their tenant's slug, the disabled and failing first;
    ``search`` matches the URL, description or tenant slug."""
    q = sa.select(Webhook, Tenant.slug).join(Tenant, Tenant.id == Webhook.tenant_id)
    if search:
        like = f"%{search}%"
        q = q.where(sa.or_(Webhook.url.ilike(like), Webhook.description.ilike(like), Tenant.slug.ilike(like)))
    total = s.scalar(sa.select(sa.func.count()).select_from(q.subquery())) or 0
    q = q.order_by(Webhook.is_active, Webhook.consecutive_failures.desc(), Webhook.id).offset(offset).limit(limit)
    return [(h, slug) for h, slug in s.execute(q)], total


def disable_webhook(s: Session, webhook_id: int, reason: str = "disabled by operator") -> Webhook:
    hook = get_webhook(s, webhook_id)
    delivery.disable(s, webhook_id, reason)
    s.refresh(hook)
    return hook


def enable_webhook(s: Session, webhook_id: int) -> Webhook:
    """Turn a subscription back on with a clean failure count (deliveries that
    died while it was off stay dead: redeliver them by hand)."""
    hook = get_webhook(s, webhook_id)
    hook.is_active = True
    hook.disabled_at = None
    hook.disabled_reason = None
    hook.consecutive_failures = 0
    hook.first_failure_at = None
    s.flush()
    return hook


def rotate_secret(s: Session, webhook_id: int) -> str:
    """A new secret, returned once; deliveries signed from now on use it."""
    hook = get_webhook(s, webhook_id)
    hook.secret = delivery.new_secret()
    s.flush()
    return hook.secret


def subscribers(s: Session, tenant_id: int, event: str) -> list[Webhook]:
    """Active subscriptions of ``tenant_id`` to ``event`` (filtered in Python:
    JSON containment differs per database, and a tenant has few webhooks)."""
    hooks = s.scalars(sa.select(Webhook).where(Webhook.tenant_id == tenant_id,
                                               Webhook.is_active.is_(True)).order_by(Webhook.id))
    return [h for h in hooks if events.ALL in (h.events or []) or event in (h.events or [])]


# ---------------------------------------------------------------- deliveries


def new_delivery_id(event_id: str | None = None, webhook_id: int | None = None) -> str:
    """A fresh delivery id; for an outbox event, the same one every time it is fanned out."""
    if event_id is not None and webhook_id is not None:
        return f"msg_{uuid.uuid5(uuid.NAMESPACE_URL, f'erpq-event:{event_id}:{webhook_id}').hex}"
    return f"msg_{uuid.uuid4().hex}"


def create_deliveries(s: Session, tenant_id: int, event: str, payload: Any,
                      event_id: str | None = None) -> list[WebhookDelivery]:
    """One pending row per subscriber, each already owned by the token of the job to come.

    With ``event_id`` (an outbox event fanned out again after a crash), a
    subscriber that already has this event's delivery gets no second one.
    """
    hooks = subscribers(s, tenant_id, event)
    ids = {h.id: new_delivery_id(event_id, h.id) for h in hooks}
    if event_id is not None and ids:
        done = set(s.scalars(sa.select(WebhookDelivery.delivery_id)
                             .where(WebhookDelivery.delivery_id.in_(list(ids.values())))))
        hooks = [h for h in hooks if ids[h.id] not in done]
    rows = [WebhookDelivery(tenant_id=tenant_id, webhook_id=h.id, delivery_id=ids[h.id],
                            event=event, payload=payload, status="pending", attempts=0,
                            job_id=delivery.new_token())
            for h in hooks]
    s.add_all(rows)
    s.flush()
    return rows


def get_delivery(s: Session, ref: str | int) -> WebhookDelivery:
    """A delivery by its delivery id (``msg_...``) or its row number."""
    d = None
    if (isinstance(ref, int) or str(ref).isdecimal()) and 0 < int(ref) <= 2**31 - 1:  # an id column's range
        d = s.get(WebhookDelivery, int(ref))
    if d is None:
        d = s.scalar(sa.select(WebhookDelivery).where(WebhookDelivery.delivery_id == str(ref)))
    if d is None:
        raise WebhookNotFound(f"unknown delivery {ref!r}")
    return d


def prepare_redelivery(s: Session, ref: str | int) -> tuple[WebhookDelivery, str]:
    """Reset a finished delivery for a new series of attempts; returns it and its new token.

    The delivery id (webhook-id) stays the same: it is the same message.
    A delivery still pending or being delivered is refused (it is in flight).
    """
    d = get_delivery(s, ref)
    if d.status == "pending":
        raise WebhookError(f"delivery {d.delivery_id} is {d.status}: it is already on its way")
    hook = s.get(Webhook, d.webhook_id)
    if hook is None or not hook.is_active:
        raise WebhookError(f"delivery {d.delivery_id}: webhook {d.webhook_id} is disabled; enable it first")
    token = delivery.new_token()
    hit = s.execute(sa.update(WebhookDelivery)
                    .where(WebhookDelivery.id == d.id, WebhookDelivery.status == d.status,
                           WebhookDelivery.updated_at == d.updated_at)
                    .values(status="pending", attempts=0, job_id=token, next_retry_at=None,
                            updated_at=utcnow())).rowcount
    if hit != 1:
        raise WebhookError(f"delivery {d.delivery_id} changed meanwhile; try again")
    s.refresh(d)
    return d, token


def list_deliveries(s: Session, status: str | None = None, webhook_id: int | None = None,
                    limit: int = 50, offset: int = 0, tenant_id: int | None = None,
                    search: str | None = None) -> tuple[list[WebhookDelivery], int]:
    """A page of deliveries, newest first, and how many match (operators' view);
    ``search`` matches the delivery id, event or error, ignoring case."""
    from ..ops.base import text_search

    if status is not None and status not in STATUSES:
        raise WebhookError(f"unknown delivery status {status!r} (one of {', '.join(STATUSES)})")
    D = WebhookDelivery
    q = sa.select(D)
    if status is not None:
        q = q.where(D.status == status)
    if webhook_id is not None:
        q = q.where(D.webhook_id == webhook_id)
    if tenant_id is not None:
        q = q.where(D.tenant_id == tenant_id)
    if search:
        q = q.where(text_search((D.delivery_id, D.event, D.error), search))
    total = s.scalar(sa.select(sa.func.count()).select_from(q.subquery())) or 0
    return list(s.scalars(q.order_by(D.id.desc()).offset(offset).limit(limit))), total


def delivery_counts(s: Session) -> dict[str, int]:
    """Deliveries per status (for dashboards)."""
    D = WebhookDelivery
    return dict(s.execute(sa.select(D.status, sa.func.count()).group_by(D.status)).all())


# ---------------------------------------------------------------- with the queue


class WebhookService:
    """The queueing side: rows first (committed), then jobs."""

    def __init__(self, runtime=None):
        from ..runtime import current

        self.rt = runtime or current()

    def queue_delivery(self, event: str, payload: Any, tenant: Any, event_id: str | None = None) -> list[str]:
        """Queue ``event`` to every active subscriber of ``tenant``; returns the delivery ids.

        ``event_id`` (the outbox id) makes a repeated fan-out add nothing.
        """
        try:
            events.check_event(event)
        except events.UnknownEvent as exc:
            raise WebhookError(str(exc)) from None
        tenant_id = events._tenant_id(tenant)
        with self.rt.read_session() as s:  # most events have no subscriber: no write transaction then
            if not subscribers(s, tenant_id, event):
                return []
        with self.rt.session() as s:
            rows = create_deliveries(s, tenant_id, event, payload, event_id)
            todo = [(d.id, d.job_id, d.delivery_id) for d in rows]
        for pk, token, _ in todo:
            delivery.enqueue(self.rt, pk, token, tenant_id)
        return [delivery_id for _, _, delivery_id in todo]

    def redeliver(self, ref: str | int) -> WebhookDelivery:
        """Send a delivery again by hand (same delivery id), with a full set of attempts."""
        with self.rt.session() as s:
            d, token = prepare_redelivery(s, ref)
        delivery.enqueue(self.rt, d.id, token, d.tenant_id)
        return d


@events.on(batch=True)
def fan_out_to_webhooks(batch: list[events.Event]) -> dict[str, list[str]]:
    """Every event goes to the tenant's webhooks subscribed to it.

    One fan-out's events are handled together: one read of the active
    subscriptions of the tenants involved, one write transaction for every
    delivery row, then the jobs. Returns the delivery ids of each event.
    """
    from ..runtime import current

    rt = current()
    tenants = {e.tenant_id for e in batch}
    with rt.read_session() as s:
        hooks = list(s.scalars(sa.select(Webhook).where(Webhook.tenant_id.in_(tenants),
                                                        Webhook.is_active.is_(True)).order_by(Webhook.id)))
    out: dict[str, list[str]] = {e.id: [] for e in batch}
    if not hooks:  # most events have no subscriber: no write transaction then
        return out
    todo: list[tuple[int, str, int, str, str]] = []
    with rt.session() as s:
        for e in batch:
            if any(h.tenant_id == e.tenant_id and (events.ALL in (h.events or []) or e.name in (h.events or []))
                   for h in hooks):
                for d in create_deliveries(s, e.tenant_id, e.name, e.payload, e.id):
                    todo.append((d.id, d.job_id, d.tenant_id, d.delivery_id, e.id))
    for pk, token, tenant_id, delivery_id, event_id in todo:
        delivery.enqueue(rt, pk, token, tenant_id)
        out[event_id].append(delivery_id)
    return out
