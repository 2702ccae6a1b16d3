"""The delivery hot path on every database: statements compiled once per
dialect and run on the DBAPI connection (``erpq.webhooks.prepared``) must read
and write exactly what the Core statements would, including times and JSON;
plus the attempt-counting rules of the read-only claim."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

import webhook_fixtures
from conftest import backend_settings, make_settings
from erpq.db import utcnow
from erpq.models import WebhookDelivery
from erpq.runtime import Runtime, set_current
from erpq.webhooks import delivery as wd
from erpq.webhooks.service import WebhookService
from webhook_fixtures import add_tenant, delivery, headers_of, hook_url, subscribe, webhook

receiver = webhook_fixtures.receiver


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def any_db_runtime(request, tmp_path):
    settings = backend_settings(request, tmp_path, request.param)
    rt = Runtime(settings)
    set_current(rt)
    yield rt
    set_current(None)
    rt.close()


def test_deliver_reads_and_writes_through_the_dbapi_on_each_database(any_db_runtime, receiver):
    rt = any_db_runtime
    receiver.expect_oneshot_request("/hook").respond_with_data("nope", status=500)
    receiver.expect_request("/hook").respond_with_data("thanks", status=200)
    tenant = add_tenant(rt)
    hook_id, _ = subscribe(rt, tenant, hook_url(receiver))
    (delivery_id,) = WebhookService(rt).queue_delivery("deal.created", {"id": 7, "name": "Zoë"}, tenant)
    token = delivery(rt).job_id

    assert wd.deliver(rt, 1, "not-the-token") == "skipped"
    assert wd.deliver(rt, 1, token) == "failed"
    assert webhook(rt, hook_id).consecutive_failures == 1
    d = delivery(rt)
    assert (d.status, d.attempts) == ("failed", 1) and d.job_id != token

    before = utcnow()
    assert wd.deliver(rt, 1, d.job_id) == "delivered"
    d = delivery(rt)
    assert (d.status, d.attempts, d.response_code, d.response_body, d.job_id) == ("delivered", 2, 200,
                                                                                  "thanks", None)
    assert d.error is None and d.next_retry_at is None and d.duration_ms > 0
    assert d.delivered_at.tzinfo is not None
    assert before - dt.timedelta(seconds=1) <= d.delivered_at <= utcnow() + dt.timedelta(seconds=1)
    assert d.updated_at == d.delivered_at
    assert webhook(rt, hook_id).consecutive_failures == 0  # reset by the success
    (first, _), (second, _) = receiver.log
    assert headers_of(first)["webhook-id"] == headers_of(second)["webhook-id"] == delivery_id
    assert first.get_data() == second.get_data()
    assert b'"data":{"id":7,"name":"Zo\xc3\xab"}' in first.get_data()
    assert wd.deliver(rt, 1, d.job_id or "x") == "skipped"  # finished: nothing to read


def test_claim_reads_without_writing(runtime, receiver):
    tenant = add_tenant(runtime)
    subscribe(runtime, tenant, hook_url(receiver))
    WebhookService(runtime).queue_delivery("deal.created", {"id": 1}, tenant)
    before = delivery(runtime)
    c = wd.claim(runtime.engine, 1, before.job_id, runtime.settings.webhooks)
    assert isinstance(c, wd.Claimed) and c.attempts == 1
    after = delivery(runtime)
    assert (after.status, after.attempts, after.updated_at) == ("pending", 0, before.updated_at)


def test_a_delivery_out_of_attempts_ends_dead_without_a_request(runtime, receiver):
    tenant = add_tenant(runtime)
    subscribe(runtime, tenant, hook_url(receiver))
    WebhookService(runtime).queue_delivery("deal.created", {"id": 1}, tenant)
    spent = wd.max_attempts(runtime.settings.webhooks)
    with runtime.session() as s:
        s.execute(sa.update(WebhookDelivery).values(attempts=spent, error="HTTP 500"))
    assert wd.deliver(runtime, 1, delivery(runtime).job_id) == "dead"
    d = delivery(runtime)
    assert d.error == "HTTP 500 (out of attempts)" and d.attempts == spent and d.job_id is None
    assert receiver.log == []


def test_the_retry_task_counts_a_lost_job_as_an_attempt(tmp_path, receiver):
    """A job whose runner keeps dying mid-POST records nothing; the retry task
    counting each lost job makes such a delivery run out of attempts."""
    rt = Runtime(make_settings(tmp_path, webhooks={"pending_grace_s": 0, "backoff_s": [1]}))
    set_current(rt)
    try:
        tenant = add_tenant(rt)
        subscribe(rt, tenant, hook_url(receiver))
        WebhookService(rt).queue_delivery("deal.created", {"id": 1}, tenant)
        rt.huey.flush()  # the jobs are lost
        for attempts in (1, 2):
            assert wd.retry_webhook_deliveries() == 1
            assert delivery(rt).attempts == attempts
            rt.huey.flush()
        assert wd.retry_webhook_deliveries() == 1  # requeued; its job finds it out of attempts
        assert wd.deliver(rt, 1, delivery(rt).job_id) == "dead"
        assert receiver.log == []
    finally:
        set_current(None)
        rt.close()
