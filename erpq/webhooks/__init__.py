"""Webhooks: tenants subscribe URLs to events; erpq POSTs each event, signed.

- ``service``: subscriptions, ``WebhookService.queue_delivery``, redelivery,
  the reads operators use; the ``erpq.events`` handler that fans events out;
- ``delivery``: signing (Standard Webhooks), the HTTP attempt, recording and
  retries, ``DeliverWebhookJob`` and ``erp:retry-webhook-deliveries``;
- ``guard``: the SSRF guard (which URLs and addresses may be requested);
- ``cli``: ``erpq webhook ...`` and ``erpq event emit``.
"""

from .delivery import deliver, deliver_webhook_job, retry_webhook_deliveries, sign
from .service import (
    WebhookError,
    WebhookService,
    create_webhook,
    list_deliveries,
    list_webhooks,
)

__all__ = ["WebhookError", "WebhookService", "create_webhook", "deliver", "deliver_webhook_job",
           "list_deliveries", "list_webhooks", "retry_webhook_deliveries", "sign"]
