"""Helpers for the webhook tests: a receiver on 127.0.0.1, tenants, subscriptions,
running queued jobs in the test thread, waiting with a deadline.

Everything here talks to 127.0.0.1 only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from pytest_httpserver import HTTPServer

from draining import drain
from erpq.models import Tenant, Webhook, WebhookDelivery
from erpq.runtime import Runtime
from erpq.webhooks import service
from polling import wait_until  # noqa: F401  (re-exported for the webhook tests)

T = TypeVar("T")


@pytest.fixture
def receiver() -> Iterator[HTTPServer]:
    """A pytest-httpserver bound to 127.0.0.1 (not 'localhost', which may be ::1)."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


def hook_url(server: HTTPServer, path: str = "/hook") -> str:
    return f"http://127.0.0.1:{server.port}{path}"


def add_tenant(rt: Runtime, slug: str = "acme") -> int:
    with rt.session() as s:
        t = Tenant(slug=slug, name=slug.title())
        s.add(t)
        s.flush()
        return t.id


def subscribe(rt: Runtime, tenant_id: int, url: str, events: list[str] | None = None) -> tuple[int, str]:
    """A subscription through the service (URL checked); returns (id, secret)."""
    with rt.session() as s:
        hook, secret = service.create_webhook(s, tenant_id, url, events,
                                              allow=rt.settings.webhooks.allow_hosts)
        return hook.id, secret


def insert_webhook(rt: Runtime, tenant_id: int, url: str, events: list[str] | None = None) -> int:
    """A subscription written directly, bypassing the URL check (as if the
    allowlist or DNS changed after it was made): what the delivery-time guard must catch."""
    from erpq.webhooks.delivery import new_secret

    with rt.session() as s:
        hook = Webhook(tenant_id=tenant_id, url=url, events=events or ["*"], secret=new_secret(),
                       is_active=True, consecutive_failures=0)
        s.add(hook)
        s.flush()
        return hook.id


def deliveries(rt: Runtime) -> list[WebhookDelivery]:
    with rt.read_session() as s:
        return list(s.scalars(sa.select(WebhookDelivery).order_by(WebhookDelivery.id)))


def delivery(rt: Runtime, pk: int = 1) -> WebhookDelivery:
    with rt.read_session() as s:
        return s.get(WebhookDelivery, pk)


def webhook(rt: Runtime, pk: int = 1) -> Webhook:
    with rt.read_session() as s:
        return s.get(Webhook, pk)


def run_queued(rt: Runtime, limit: int = 100) -> int:
    """Execute the jobs waiting in the queue (not the scheduled ones) in this thread."""
    return drain(rt, limit)


def scheduled_ids(rt: Runtime) -> list[str]:
    return [t.id for t in rt.huey.scheduled()]


def headers_of(request: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers.items()}
