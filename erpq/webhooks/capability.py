"""The webhooks capability: signed event delivery to subscribed URLs."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ..capability import Capability, PanelAction, PanelSpec


@dataclass
class WebhookSettings:
    """``[webhooks]``: delivery timeouts, retry schedule, SSRF allow-list."""

    timeout_s: float = 15.0
    max_response_bytes: int = 2048
    #: Delay before each retry, in seconds (Standard Webhooks' schedule).
    backoff_s: list[int] = field(default_factory=lambda: [5, 300, 1800, 7200, 18000, 36000, 36000])
    #: Fraction of random jitter added to each delay.
    jitter: float = 0.1
    #: Disable a subscription after this many consecutive failed deliveries ...
    disable_after_failures: int = 20
    #: ... spread over at least this many seconds.
    disable_after_s: int = 5 * 24 * 3600
    #: Hosts or networks (CIDR) allowed even though not globally routable.
    allow_hosts: list[str] = field(default_factory=list)
    #: A pending delivery with no job this old is re-enqueued by the retry task.
    pending_grace_s: int = 300
    user_agent: str = "erpq-webhooks/0.1"

    def validate(self, err) -> None:
        if self.timeout_s <= 0:
            raise err("timeout_s", "must be positive")
        if not self.backoff_s or any(b < 0 for b in self.backoff_s):
            raise err("backoff_s", "must be a non-empty list of seconds >= 0")
        if not 0 <= self.jitter <= 1:
            raise err("jitter", "must be between 0 and 1")
        for i, host in enumerate(self.allow_hosts):
            try:
                ipaddress.ip_network(host, strict=False)
            except ValueError:
                if not host or "/" in host or " " in host:
                    raise err(f"allow_hosts[{i}]", f"not a host name, address or network: {host!r}") from None


CAPABILITY = Capability(
    "webhooks",
    title="Webhooks",
    description="Tenants subscribe URLs to events; each event is POSTed, signed, with retries",
    modules=("erpq.webhooks.service", "erpq.webhooks.delivery"),
    settings=WebhookSettings,
    cli="erpq.webhooks.cli:register",
    ops="erpq.webhooks.ops:WebhookOps",
    events=("contact.created", "deal.created", "deal.status_changed", "lead.created", "invoice.created",
            "product.updated", "purchase_order.created", "import.finished"),
    panels=(
        PanelSpec("webhook_subscriptions", "Subscriptions", read="subscription_page",
                  columns=(("id", "Id", 4), ("tenant", "Tenant", 10), ("consecutive_failures", "Fails", 5),
                           ("state", "State", 18), ("url", "URL", None)),
                  actions=(PanelAction("e", "Enable", "enable", "Enable webhook {id} (failure count reset)?"),
                           PanelAction("x", "Disable", "disable", prompt="Disable webhook {id}: why?",
                                       default="disabled by operator")),
                  summary="subscriptions: {summary}", summary_read="subscription_summary", order=100),
        PanelSpec("webhooks", "Deliveries", read="deliveries",
                  columns=(("id", "Id", 7), ("event", "Event", 20), ("status", "Status", 9),
                           ("attempts", "Tries", 5), ("response_code", "Code", 5),
                           ("next_retry_at", "Next retry", 19), ("error", "Error", None)),
                  actions=(PanelAction("r", "Redeliver", "redeliver", "Redeliver delivery {id}?"),),
                  summary="deliveries: {summary}", order=101),
    ),
)
