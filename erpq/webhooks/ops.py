"""Ops section ``webhooks``: subscriptions, deliveries, and the audited actions on them."""

from __future__ import annotations

import datetime as dt
import shlex
from dataclasses import dataclass

from ..models import Webhook
from ..ops import Conflict, Invalid, NotFound, OpsError, OpsSection, Page, audited
from ..ops.base import _Record, check_columns, check_id, check_page, check_text


@dataclass
class WebhookInfo(_Record):
    """A webhook subscription as operators see it: everything but its secret."""

    id: int
    tenant_id: int
    tenant: str
    url: str
    events: list[str]
    description: str | None
    is_active: bool
    consecutive_failures: int
    first_failure_at: dt.datetime | None
    disabled_at: dt.datetime | None
    disabled_reason: str | None
    created_at: dt.datetime | None

    @property
    def state(self) -> str:
        """``active``, ``failing (N)`` or ``disabled: reason``."""
        if not self.is_active:
            return f"disabled: {self.disabled_reason or 'no reason given'}"
        return f"failing ({self.consecutive_failures})" if self.consecutive_failures else "active"


@dataclass
class DeliveryInfo(_Record):
    id: int
    delivery_id: str  # the webhook-id header: the same on every attempt
    webhook_id: int
    tenant_id: int
    event: str
    status: str  # pending | delivered | failed | dead
    attempts: int
    response_code: int | None
    error: str | None
    duration_ms: float | None
    next_retry_at: dt.datetime | None
    delivered_at: dt.datetime | None
    created_at: dt.datetime


class WebhookOps(OpsSection):
    """``ops.webhooks``: what operators see and do with webhooks (never a secret)."""

    def subscriptions(self, tenant: str | int | None = None) -> list[WebhookInfo]:
        """Subscriptions (of one tenant), with failure counts and why disabled; never the secret."""
        from . import service

        tenant_id = self.ops.tenant_id(tenant) if tenant is not None else None
        with self.rt.read_session() as s:
            return [_webhook_info(h, slug) for h, slug in service.list_webhooks(s, tenant_id)]

    def subscription_page(self, offset: int = 0, limit: int = 50, search: str | None = None) -> Page:
        """A page of subscriptions (the disabled and failing first) for the console panel."""
        from . import service

        check_page(offset, limit)
        with self.rt.read_session() as s:
            rows, total = service.page_webhooks(s, offset, limit, search)
            return Page([_webhook_info(h, slug) for h, slug in rows], total, offset, limit)

    def subscription_summary(self) -> str:
        """Subscriptions per state in one line, for the console panel."""
        from . import service

        with self.rt.read_session() as s:
            subs = [h for h, _ in service.list_webhooks(s)]
        active = sum(1 for h in subs if h.is_active and not h.consecutive_failures)
        failing = sum(1 for h in subs if h.is_active and h.consecutive_failures)
        return f"active {active:,}, failing {failing:,}, disabled {len(subs) - active - failing:,}"

    def deliveries(self, offset: int = 0, limit: int = 50, status: str | None = None,
                   webhook_id: int | None = None, search: str | None = None) -> Page:
        """Deliveries, newest first; ``search`` matches the delivery id, event or error."""
        from . import service

        check_page(offset, limit)
        try:
            with self.rt.read_session() as s:
                rows, total = service.list_deliveries(s, status=status, webhook_id=webhook_id, limit=limit,
                                                      offset=offset, search=search)
                return Page([_delivery_info(d) for d in rows], total, offset, limit)
        except service.WebhookError as exc:
            raise Invalid(str(exc)) from None

    def delivery_counts(self) -> dict[str, int]:
        """Deliveries per status (every status present, zero when none)."""
        from . import service

        with self.rt.read_session() as s:
            counts = service.delivery_counts(s)
        return {status: counts.get(status, 0) for status in service.STATUSES}

    @audited
    def redeliver(self, ref: str | int) -> DeliveryInfo:
        """Send a finished delivery again (same delivery id, a full set of attempts)."""
        import sqlalchemy as sa

        from ..models import WebhookDelivery
        from . import delivery
        from .service import WebhookError, get_delivery, prepare_redelivery

        check_text(str(ref), "delivery", 64)
        self._act("webhook.redeliver", str(ref), f"erpq webhook redeliver {shlex.quote(str(ref))}")
        try:
            with self._tx() as s:
                d = get_delivery(s, ref)
                was = {"status": d.status, "attempts": d.attempts, "job_id": d.job_id,
                       "next_retry_at": d.next_retry_at}
                d, token = prepare_redelivery(s, ref)
                info = _delivery_info(d)
        except WebhookError as exc:
            raise _webhook_error(exc) from None
        rt = self.rt

        def undo() -> None:  # the job was not enqueued: the delivery is as it was
            with rt.session() as s2:
                s2.execute(sa.update(WebhookDelivery).where(WebhookDelivery.id == info.id,
                                                            WebhookDelivery.job_id == token).values(**was))

        self._after_commit(lambda: delivery.enqueue(rt, info.id, token, info.tenant_id), undo)
        return info

    @audited
    def disable(self, webhook_id: int, reason: str | None = None) -> WebhookInfo:
        """Stop sending to a subscription (its queued deliveries end as dead)."""
        from . import service

        reason = reason or "disabled by operator"
        check_id(webhook_id, "webhook id")
        check_columns(Webhook, "webhook", disabled_reason=reason)
        self._act("webhook.disable", str(webhook_id),
                  f"erpq webhook disable {webhook_id} --reason {shlex.quote(reason)}")
        try:
            with self._tx() as s:
                service.disable_webhook(s, webhook_id, reason)
                return self._webhook(webhook_id, s)
        except service.WebhookError as exc:
            raise _webhook_error(exc) from None

    @audited
    def enable(self, webhook_id: int) -> WebhookInfo:
        """Send to a subscription again, with a clean failure count."""
        from . import service

        check_id(webhook_id, "webhook id")
        self._act("webhook.enable", str(webhook_id), f"erpq webhook enable {webhook_id}")
        try:
            with self._tx() as s:
                service.enable_webhook(s, webhook_id)
                return self._webhook(webhook_id, s)
        except service.WebhookError as exc:
            raise _webhook_error(exc) from None

    def _webhook(self, webhook_id: int, s=None) -> WebhookInfo:
        """One subscription, read in session ``s`` (the action's, to see its own writes)."""
        from . import service

        if s is not None:
            s.flush()
            rows = service.list_webhooks(s, webhook_id=webhook_id)
        else:
            with self.rt.read_session() as rs:
                rows = service.list_webhooks(rs, webhook_id=webhook_id)
        if not rows:
            raise NotFound(f"unknown webhook id {webhook_id}")
        return _webhook_info(*rows[0])

    @audited
    def add(self, tenant: str | int, url: str, event_names: list[str] | None = None,
            description: str | None = None) -> tuple[WebhookInfo, str]:
        """Subscribe ``url`` to events of ``tenant``; returns the subscription and its
        secret (the only time the secret is handed out)."""
        from . import service

        names = list(event_names or [])
        check_columns(Webhook, "webhook", url=url, description=description)
        for n in names:
            check_text(n, "event name", 64)
        tid = self.ops.tenant_id(tenant)
        self._act("webhook.add", url, f"erpq webhook add {shlex.quote(url)} --tenant {shlex.quote(str(tenant))}"
                  + "".join(f" --event {shlex.quote(n)}" for n in names)
                  + (f" --description {shlex.quote(description)}" if description else ""))
        try:
            with self._tx() as s:
                hook, secret = service.create_webhook(s, tid, url, names, description=description,
                                                      allow=self.settings.allow_hosts)
                return self._webhook(hook.id, s), secret
        except service.WebhookError as exc:
            raise Invalid(str(exc)) from None

    @audited
    def rotate_secret(self, webhook_id: int) -> str:
        """Give a subscription a new secret; returns it (shown once)."""
        from . import service

        check_id(webhook_id, "webhook id")
        self._act("webhook.rotate-secret", str(webhook_id), f"erpq webhook rotate-secret {webhook_id}")
        try:
            with self._tx() as s:
                return service.rotate_secret(s, webhook_id)
        except service.WebhookError as exc:
            raise _webhook_error(exc) from None

    def alerts(self, now=None) -> list:
        """Subscriptions disabled (critical) or failing, and deliveries failing or dead."""
        from ..alerts import CRITICAL, WARNING, Alert

        out = []
        subs = self.subscriptions()
        disabled = [h for h in subs if not h.is_active and h.disabled_reason]
        failing = [h for h in subs if h.is_active and h.consecutive_failures > 0]
        if disabled:
            out.append(Alert(CRITICAL, "webhooks", f"webhooks: {len(disabled):,} subscription"
                             f"{'' if len(disabled) == 1 else 's'} disabled after failures "
                             f"(#{', #'.join(str(h.id) for h in disabled[:3])})", "erpq webhook list"))
        counts = self.delivery_counts()
        bad = counts.get("failed", 0) + counts.get("dead", 0)
        if failing or bad:
            out.append(Alert(WARNING, "webhooks", f"webhooks failing: {counts.get('failed', 0):,} to retry, "
                             f"{counts.get('dead', 0):,} dead, {len(failing):,} subscription"
                             f"{'' if len(failing) == 1 else 's'} failing", "erpq webhook deliveries"))
        return out

    def metrics(self) -> list:
        """Prometheus families (``erpq.metrics``): deliveries by status, subscriptions by state."""
        subs = self.subscriptions()
        return [
            ("webhook_deliveries", "gauge", "Webhook deliveries per status.",
             [({"status": k}, v) for k, v in self.delivery_counts().items()]),
            ("webhook_subscriptions", "gauge", "Webhook subscriptions: active, failing, disabled.",
             [({"state": "active"}, sum(1 for h in subs if h.is_active)),
              ({"state": "failing"}, sum(1 for h in subs if h.is_active and h.consecutive_failures)),
              ({"state": "disabled"}, sum(1 for h in subs if not h.is_active))]),
        ]

    def summary(self) -> str:
        """Deliveries per status in one line, for the console panel."""
        counts = self.delivery_counts()
        return ", ".join(f"{k} {v:,}" for k, v in counts.items())


def _webhook_info(h, slug: str) -> WebhookInfo:
    return WebhookInfo(h.id, h.tenant_id, slug, h.url, list(h.events or []), h.description, h.is_active,
                       h.consecutive_failures or 0, h.first_failure_at, h.disabled_at, h.disabled_reason,
                       h.created_at)

def _delivery_info(d) -> DeliveryInfo:
    return DeliveryInfo(d.id, d.delivery_id, d.webhook_id, d.tenant_id, d.event, d.status, d.attempts,
                        d.response_code, d.error, d.duration_ms, d.next_retry_at, d.delivered_at, d.created_at)

def _webhook_error(exc: Exception) -> OpsError:
    """A webhook service error as the ops error an operator caused."""
    from .service import WebhookNotFound

    return NotFound(str(exc)) if isinstance(exc, WebhookNotFound) else Conflict(str(exc))
