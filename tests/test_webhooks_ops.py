"""Operators' access to webhooks through ``erpq.ops``: subscriptions without
their secret, paged and searchable deliveries, counts, and the actions
(redeliver, disable, enable) audited and refused in read-only mode; the
``erpq webhook`` CLI's actions leave the same audit rows."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

import webhook_fixtures
from erpq.models import AuditLog, WebhookDelivery
from erpq.ops import Actor, Conflict, NotFound, Ops, OpsError, ReadOnly
from erpq.webhooks.service import WebhookService
from test_webhooks_cli import cli
from webhook_fixtures import add_tenant, delivery, hook_url, run_queued, subscribe, webhook

receiver = webhook_fixtures.receiver


@pytest.fixture
def ops(runtime) -> Ops:
    return Ops(runtime, Actor("tester", "10.0.0.9", "console"))


@pytest.fixture
def tenant(runtime) -> int:
    return add_tenant(runtime)


def audit_rows(rt) -> list[tuple[str, str | None, str | None]]:
    with rt.read_session() as s:
        return [(a.action, a.target, a.command)
                for a in s.scalars(sa.select(AuditLog).order_by(AuditLog.id))]


def test_webhooks_never_show_the_secret(runtime, ops, tenant, receiver):
    other = add_tenant(runtime, "globex")
    _, secret = subscribe(runtime, tenant, hook_url(receiver), ["deal.created"])
    _, other_secret = subscribe(runtime, other, hook_url(receiver, "/other"))
    hooks = ops.webhooks.subscriptions()
    assert [(h.tenant, h.url, h.events) for h in hooks] == [
        ("acme", hook_url(receiver), ["deal.created"]), ("globex", hook_url(receiver, "/other"), ["*"])]
    assert [h.id for h in ops.webhooks.subscriptions("globex")] == [hooks[1].id]
    assert [h.id for h in ops.webhooks.subscriptions(tenant)] == [hooks[0].id]
    with pytest.raises(NotFound):
        ops.webhooks.subscriptions("nobody")

    WebhookService(runtime).queue_delivery("deal.created", {"id": 1}, tenant)
    records = [*ops.webhooks.subscriptions(), *ops.webhooks.deliveries().items, ops.webhooks.disable(hooks[0].id),
               ops.webhooks.enable(hooks[0].id)]
    text = json.dumps([r.to_dict() for r in records])
    assert secret not in text and other_secret not in text and "whsec_" not in text
    assert all("secret" not in r.to_dict() for r in records)


def test_deliveries_are_paged_newest_first_filtered_and_searched(runtime, ops, tenant, receiver):
    receiver.expect_request("/hook").respond_with_data("ok")
    a, _ = subscribe(runtime, tenant, hook_url(receiver), ["deal.created"])
    b, _ = subscribe(runtime, tenant, hook_url(receiver), ["lead.created"])
    svc = WebhookService(runtime)
    deal_ids = [svc.queue_delivery("deal.created", {"n": n}, tenant)[0] for n in range(7)]
    lead_ids = [svc.queue_delivery("lead.created", {"n": n}, tenant)[0] for n in range(3)]
    run_queued(runtime, limit=4)  # the four oldest are delivered

    page = ops.webhooks.deliveries(offset=0, limit=4)
    assert (page.total, page.offset, page.limit) == (10, 0, 4)
    assert [d.delivery_id for d in page.items] == (deal_ids + lead_ids)[::-1][:4]
    last = ops.webhooks.deliveries(offset=8, limit=4)
    assert [d.delivery_id for d in last.items] == deal_ids[1::-1]
    assert ops.webhooks.deliveries(offset=20).items == []

    assert ops.webhooks.deliveries(status="delivered").total == 4
    assert ops.webhooks.deliveries(status="pending", webhook_id=a).total == 3
    assert ops.webhooks.deliveries(webhook_id=b).total == 3
    assert [d.delivery_id for d in ops.webhooks.deliveries(search=lead_ids[1]).items] == [lead_ids[1]]
    assert ops.webhooks.deliveries(search="lead.").total == 3
    with pytest.raises(OpsError, match="unknown delivery status 'nope'"):
        ops.webhooks.deliveries(status="nope")

    first = ops.webhooks.deliveries(status="delivered", limit=1).items[0]
    d = first.to_dict()
    assert set(d) == {"id", "delivery_id", "webhook_id", "tenant_id", "event", "status", "attempts",
                      "response_code", "error", "duration_ms", "next_retry_at", "delivered_at", "created_at"}
    assert (d["status"], d["attempts"], d["response_code"]) == ("delivered", 1, 200)
    assert d["delivered_at"].endswith("Z") and d["created_at"].endswith("Z")

    counts = ops.webhooks.delivery_counts()
    assert counts == {"pending": 6, "delivered": 4, "failed": 0, "dead": 0}


def test_actions_are_audited_and_do_what_they_say(runtime, ops, tenant, receiver):
    receiver.expect_request("/hook").respond_with_data("ok")
    hook_id, _ = subscribe(runtime, tenant, hook_url(receiver))
    (delivery_id,) = WebhookService(runtime).queue_delivery("deal.created", {"id": 1}, tenant)
    run_queued(runtime)

    info = ops.webhooks.redeliver(delivery_id)
    assert (info.delivery_id, info.status, info.attempts) == (delivery_id, "pending", 0)
    run_queued(runtime)
    assert delivery(runtime).status == "delivered"

    off = ops.webhooks.disable(hook_id, "maintenance window")
    assert (off.is_active, off.disabled_reason) == (False, "maintenance window")
    assert not webhook(runtime, hook_id).is_active
    on = ops.webhooks.enable(hook_id)
    assert on.is_active and on.disabled_reason is None and on.consecutive_failures == 0

    assert audit_rows(runtime) == [
        ("webhook.redeliver", delivery_id, f"erpq webhook redeliver {delivery_id}"),
        ("webhook.disable", str(hook_id), f"erpq webhook disable {hook_id} --reason 'maintenance window'"),
        ("webhook.enable", str(hook_id), f"erpq webhook enable {hook_id}"),
    ]
    with runtime.read_session() as s:
        row = s.scalars(sa.select(AuditLog)).first()
    assert (row.actor, row.client, row.source) == ("tester", "10.0.0.9", "console")


def test_failed_actions_raise_one_line_errors_and_leave_no_audit_row(runtime, ops, tenant, receiver):
    hook_id, _ = subscribe(runtime, tenant, hook_url(receiver))
    (delivery_id,) = WebhookService(runtime).queue_delivery("deal.created", {"id": 1}, tenant)
    with pytest.raises(NotFound, match="unknown webhook id 99"):
        ops.webhooks.disable(99)
    with pytest.raises(NotFound, match="unknown webhook id 99"):
        ops.webhooks.enable(99)
    with pytest.raises(NotFound, match="unknown delivery 'msg_nope'"):
        ops.webhooks.redeliver("msg_nope")
    with pytest.raises(Conflict, match="already on its way"):
        ops.webhooks.redeliver(delivery_id)
    assert audit_rows(runtime) == []


def test_read_only_refuses_every_action_and_changes_nothing(runtime, tenant, receiver):
    receiver.expect_request("/hook").respond_with_data("ok")
    hook_id, _ = subscribe(runtime, tenant, hook_url(receiver))
    (delivery_id,) = WebhookService(runtime).queue_delivery("deal.created", {"id": 1}, tenant)
    run_queued(runtime)
    ro = Ops(runtime, Actor("viewer", None, "console"), read_only=True)
    for action in (lambda: ro.webhooks.redeliver(delivery_id), lambda: ro.webhooks.disable(hook_id),
                   lambda: ro.webhooks.enable(hook_id), lambda: ro.audit("webhook.add", "1", "erpq webhook add")):
        with pytest.raises(ReadOnly, match="read-only mode"):
            action()
    assert webhook(runtime, hook_id).is_active and delivery(runtime).status == "delivered"
    assert audit_rows(runtime) == []
    assert [h.id for h in ro.webhooks.subscriptions()] == [hook_id]  # reads still work
    assert ro.webhooks.deliveries().total == 1 and ro.webhooks.delivery_counts()["delivered"] == 1


def test_cli_actions_are_audited_without_the_secret(runtime, tenant, receiver, capsys):
    receiver.expect_request("/hook").respond_with_data("ok")
    cli(runtime, "webhook", "add", hook_url(receiver), "--tenant", "acme", "--event", "deal.created",
        "--description", "CRM sync")
    cli(runtime, "webhook", "rotate-secret", "1")
    cli(runtime, "webhook", "disable", "1", "--reason", "maintenance")
    cli(runtime, "webhook", "enable", "1")
    cli(runtime, "event", "emit", "deal.created", "--tenant", "acme")
    run_queued(runtime)
    with runtime.read_session() as s:
        delivery_id = s.scalar(sa.select(WebhookDelivery.delivery_id))
    cli(runtime, "webhook", "redeliver", delivery_id)
    out = capsys.readouterr().out
    secret = webhook(runtime).secret
    rows = audit_rows(runtime)
    assert [a for a, _, _ in rows] == ["webhook.add", "webhook.rotate-secret", "webhook.disable",
                                       "webhook.enable", "event.emit", "webhook.redeliver"]
    assert rows[0][2] == (f"erpq webhook add {hook_url(receiver)} --tenant acme --event deal.created "
                          "--description 'CRM sync'")
    assert "whsec_" not in json.dumps(rows) and secret in out  # printed once to the operator, never audited
    with runtime.read_session() as s:
        assert {a.source for a in s.scalars(sa.select(AuditLog))} == {"cli"}


def test_cli_errors_from_ops_are_one_line(runtime, tenant):
    from erpq.cli_support import CliError

    with pytest.raises(CliError, match="unknown webhook id 5"):
        cli(runtime, "webhook", "disable", "5")
    assert audit_rows(runtime) == []
