"""Delivering webhooks to a real HTTP receiver on 127.0.0.1: success, failures,
retries and backoff, Retry-After, 410, redirects, timeouts, big bodies,
refused connections, signatures, the SSRF guard at delivery time, ownership
of a delivery by one job, the retry task, dead deliveries and redelivery."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
import tracemalloc

import httpx
import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook as StandardWebhook
from werkzeug import Response

import webhook_fixtures
from conftest import free_port, make_settings
from erpq import events
from erpq.db import utcnow
from erpq.models import WebhookDelivery
from erpq.runtime import EmbeddedRunner, Runtime, set_current
from erpq.webhooks import delivery as wd
from erpq.webhooks import service
from erpq.webhooks.service import WebhookError, WebhookService
from webhook_fixtures import (
    add_tenant,
    deliveries,
    delivery,
    headers_of,
    hook_url,
    insert_webhook,
    run_queued,
    scheduled_ids,
    subscribe,
    wait_until,
    webhook,
)

receiver = webhook_fixtures.receiver  # the fixture, shared with other webhook test files


@pytest.fixture
def tenant(runtime: Runtime) -> int:
    return add_tenant(runtime)


def emit_one(rt: Runtime, tenant_id: int, event: str = "deal.created", payload=None) -> str:
    ids = WebhookService(rt).queue_delivery(event, payload or {"id": 7, "name": "Big deal"}, tenant_id)
    assert len(ids) == 1
    return ids[0]


def run_owner(rt: Runtime, pk: int = 1) -> str:
    """Run the attempt the delivery's current job would run (e.g. a due retry)."""
    return wd.deliver(rt, pk, delivery(rt, pk).job_id)


# ---------------------------------------------------------------- success and signing


def test_2xx_is_delivered_signed_and_recorded(runtime, tenant, receiver):
    receiver.expect_request("/hook", method="POST").respond_with_data("thanks", status=202)
    _, secret = subscribe(runtime, tenant, hook_url(receiver), ["deal.created"])
    delivery_id = emit_one(runtime, tenant)

    assert run_queued(runtime) == 1
    d = delivery(runtime)
    assert (d.status, d.attempts, d.response_code, d.response_body) == ("delivered", 1, 202, "thanks")
    assert d.delivered_at is not None and d.error is None and d.next_retry_at is None and d.job_id is None
    assert d.duration_ms > 0

    (request, _), = receiver.log
    h = headers_of(request)
    assert h["content-type"] == "application/json"
    assert h["webhook-id"] == delivery_id == d.delivery_id
    assert h["host"] == f"127.0.0.1:{receiver.port}"
    body = request.get_data()
    # The receiver's side: any Standard Webhooks verifier accepts the signature.
    verified = StandardWebhook(secret).verify(body, h)
    assert verified["type"] == "deal.created"
    assert verified["data"] == {"id": 7, "name": "Big deal"}
    with pytest.raises(Exception):  # noqa: B017 (the library raises its own type)
        StandardWebhook(wd.new_secret()).verify(body, h)


def test_sign_matches_the_standard_webhooks_library():
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"type":"lead.created","data":{}}'
    ts = int(time.time())
    sig = wd.sign(secret, "msg_1", ts, body)
    lib = StandardWebhook(secret).sign("msg_1", dt.datetime.fromtimestamp(ts, dt.UTC), body.decode())
    assert sig == lib


def test_only_active_subscribers_of_the_event_and_tenant_get_a_delivery(runtime, tenant, receiver):
    other = add_tenant(runtime, "globex")
    url = hook_url(receiver)
    deals, _ = subscribe(runtime, tenant, url, ["deal.created"])
    everything, _ = subscribe(runtime, tenant, url, None)
    leads, _ = subscribe(runtime, tenant, url, ["lead.created"])
    off, _ = subscribe(runtime, tenant, url, ["deal.created"])
    subscribe(runtime, other, url, ["deal.created"])
    with runtime.session() as s:
        service.disable_webhook(s, off)

    ids = WebhookService(runtime).queue_delivery("deal.created", {"id": 1}, tenant)
    assert len(set(ids)) == 2
    assert sorted(d.webhook_id for d in deliveries(runtime)) == [deals, everything]
    assert all(d.status == "pending" and d.job_id for d in deliveries(runtime))
    assert runtime.huey.pending_count() == 2
    assert leads not in [d.webhook_id for d in deliveries(runtime)]


def test_emit_fans_out_to_webhooks_and_other_handlers(runtime, tenant, receiver):
    subscribe(runtime, tenant, hook_url(receiver), ["lead.created"])
    seen = []

    @events.on("lead.created")
    def remember(event):
        seen.append((event.name, event.payload, event.tenant_id))

    try:
        results = events.emit("lead.created", {"id": 3}, "acme")
    finally:
        events._handlers[:] = [(n, h) for n, h in events._handlers if h is not remember]
    assert seen == [("lead.created", {"id": 3}, tenant)]
    assert len(results["erpq.webhooks.service.fan_out_to_webhooks"]) == 1
    with pytest.raises(events.UnknownEvent):
        events.emit("lead.exploded", {}, tenant)
    with pytest.raises(TypeError, match="not JSON"):
        events.emit("lead.created", {"when": object()}, tenant)
    with pytest.raises(LookupError):
        events.emit("lead.created", {}, "nobody")
    assert len(deliveries(runtime)) == 1


def test_a_failing_handler_does_not_stop_the_webhooks(runtime, tenant, receiver):
    subscribe(runtime, tenant, hook_url(receiver), ["deal.created"])

    @events.on("deal.created")
    def broken(event):
        raise RuntimeError("boom")

    try:
        with pytest.raises(events.EmitError, match="boom"):
            events.emit("deal.created", {"id": 1}, tenant)
    finally:
        events._handlers[:] = [(n, h) for n, h in events._handlers if h is not broken]
    assert len(deliveries(runtime)) == 1


# ---------------------------------------------------------------- failures and retries


def test_500_then_success_on_the_scheduled_retry(runtime, tenant, receiver):
    receiver.expect_oneshot_request("/hook").respond_with_data("oops", status=500)
    receiver.expect_request("/hook").respond_with_data("ok")
    subscribe(runtime, tenant, hook_url(receiver))
    delivery_id = emit_one(runtime, tenant)

    before = utcnow()
    run_queued(runtime)
    d = delivery(runtime)
    assert (d.status, d.attempts, d.response_code, d.response_body) == ("failed", 1, 500, "oops")
    assert d.error == "HTTP 500 INTERNAL SERVER ERROR"
    first = runtime.settings.webhooks.backoff_s[0]
    jitter = runtime.settings.webhooks.jitter
    assert before + dt.timedelta(seconds=first) <= d.next_retry_at
    assert d.next_retry_at <= utcnow() + dt.timedelta(seconds=first * (1 + jitter) + 1)
    assert scheduled_ids(runtime) == [d.job_id]  # the retry job, owned by the row's token
    assert webhook(runtime).consecutive_failures == 1

    assert run_owner(runtime) == "delivered"
    d = delivery(runtime)
    assert (d.status, d.attempts, d.response_code) == ("delivered", 2, 200)
    assert [headers_of(r)["webhook-id"] for r, _ in receiver.log] == [delivery_id, delivery_id]
    assert webhook(runtime).consecutive_failures == 0


def test_timeout_is_a_failure(tmp_path, receiver):
    rt = Runtime(make_settings(tmp_path, webhooks={"timeout_s": 0.5}))
    set_current(rt)
    try:
        release = threading.Event()

        def slow(request):
            release.wait(10)
            return Response("late")

        receiver.expect_request("/hook").respond_with_handler(slow)
        tenant = add_tenant(rt)
        subscribe(rt, tenant, hook_url(receiver))
        emit_one(rt, tenant)
        started = time.monotonic()
        run_queued(rt)
        assert time.monotonic() - started < 5
        release.set()
        d = delivery(rt)
        assert d.status == "failed" and d.response_code is None
        assert d.error.startswith("timeout after 0.5s")
    finally:
        set_current(None)
        rt.close()


def test_410_gone_disables_the_subscription_at_once(runtime, tenant, receiver):
    receiver.expect_request("/hook").respond_with_data("gone", status=410)
    hook_id, _ = subscribe(runtime, tenant, hook_url(receiver), ["deal.created"])
    emit_one(runtime, tenant)
    run_queued(runtime)
    d = delivery(runtime)
    assert (d.status, d.response_code, d.next_retry_at, d.job_id) == ("dead", 410, None, None)
    assert "subscription disabled" in d.error
    hook = webhook(runtime, hook_id)
    assert not hook.is_active and hook.disabled_at is not None
    assert "410 Gone" in hook.disabled_reason
    assert scheduled_ids(runtime) == []
    assert WebhookService(runtime).queue_delivery("deal.created", {}, tenant) == []


def test_3xx_is_not_followed(runtime, tenant, receiver):
    receiver.expect_request("/hook").respond_with_data("", status=302,
                                                       headers={"Location": hook_url(receiver, "/elsewhere")})
    receiver.expect_request("/elsewhere").respond_with_data("should never be asked")
    subscribe(runtime, tenant, hook_url(receiver))
    emit_one(runtime, tenant)
    run_queued(runtime)
    d = delivery(runtime)
    assert (d.status, d.response_code) == ("failed", 302)
    assert "redirect" in d.error and "not followed" in d.error
    assert [r.path for r, _ in receiver.log] == ["/hook"]


def test_429_retry_after_sets_the_next_attempt(runtime, tenant, receiver):
    receiver.expect_request("/hook").respond_with_data("slow down", status=429, headers={"Retry-After": "120"})
    subscribe(runtime, tenant, hook_url(receiver))
    emit_one(runtime, tenant)
    before = utcnow()
    run_queued(runtime)
    d = delivery(runtime)
    assert (d.status, d.response_code) == ("failed", 429)
    assert d.next_retry_at >= before + dt.timedelta(seconds=120)
    assert d.next_retry_at <= utcnow() + dt.timedelta(seconds=121)
    (task,) = runtime.huey.scheduled()
    assert task.eta.replace(tzinfo=dt.UTC) >= d.next_retry_at.replace(microsecond=0)


def test_503_retry_after_http_date(runtime, tenant, receiver):
    when = utcnow() + dt.timedelta(seconds=600)
    stamp = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    receiver.expect_request("/hook").respond_with_data("", status=503, headers={"Retry-After": stamp})
    subscribe(runtime, tenant, hook_url(receiver))
    emit_one(runtime, tenant)
    run_queued(runtime)
    assert delivery(runtime).next_retry_at >= when.replace(microsecond=0)


def test_retry_after_is_honoured_by_the_runner(tmp_path, receiver):
    """End to end through the scheduler: the second attempt waits for Retry-After."""
    rt = Runtime(make_settings(tmp_path, webhooks={"backoff_s": [0, 0], "jitter": 0}))
    set_current(rt)
    runner = EmbeddedRunner(rt, workers=2, periodic=False)
    try:
        receiver.expect_oneshot_request("/hook").respond_with_data("", status=429, headers={"Retry-After": "2"})
        receiver.expect_request("/hook").respond_with_data("ok")
        tenant = add_tenant(rt)
        subscribe(rt, tenant, hook_url(receiver))
        emit_one(rt, tenant)
        stamps = []
        receiver_log = receiver.log
        runner.start()
        wait_until(lambda: delivery(rt).status == "delivered", message="delivered")
        stamps = [r.headers["webhook-timestamp"] for r, _ in receiver_log]
        assert len(stamps) == 2 and int(stamps[1]) - int(stamps[0]) >= 2
    finally:
        runner.stop()
        set_current(None)
        rt.close()


class BigBodyServer:
    """A bare HTTP/1.1 server on 127.0.0.1 answering one POST with ``size`` bytes,
    sent from one preallocated chunk (so the test's memory trace sees only the client)."""

    def __init__(self, size: int):
        self.size, self.sent, self.reset = size, 0, False
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.chunk = b"x" * 65536
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % self.size)
            try:
                while self.sent < self.size:
                    n = min(len(self.chunk), self.size - self.sent)
                    conn.sendall(self.chunk[:n] if n < len(self.chunk) else self.chunk)
                    self.sent += n
            except OSError:
                self.reset = True

    def close(self) -> None:
        self.thread.join(10)
        self.sock.close()


@pytest.mark.parametrize("size", [5 * 1024 * 1024, 64 * 1024 * 1024], ids=["5MB", "64MB"])
def test_big_response_is_stored_truncated_and_never_read_whole(runtime, tenant, size):
    server = BigBodyServer(size)
    subscribe(runtime, tenant, f"http://127.0.0.1:{server.port}/hook")
    emit_one(runtime, tenant)
    tracemalloc.start()
    try:
        run_queued(runtime)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    server.close()
    d = delivery(runtime)
    assert d.status == "delivered"
    assert d.response_body == "x" * runtime.settings.webhooks.max_response_bytes
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes: the body was buffered"
    if size > 32 * 1024 * 1024:  # more than any socket buffer: only a dropped connection stops it
        assert server.reset and server.sent < size


def test_connection_refused(runtime, tenant):
    port = free_port()
    subscribe(runtime, tenant, f"http://127.0.0.1:{port}/hook")
    emit_one(runtime, tenant)
    run_queued(runtime)
    d = delivery(runtime)
    assert d.status == "failed" and d.response_code is None
    assert "connection to 127.0.0.1 failed" in d.error
    assert d.next_retry_at is not None


def test_all_attempts_used_ends_dead_and_can_be_redelivered(tmp_path, receiver):
    rt = Runtime(make_settings(tmp_path, webhooks={"backoff_s": [1, 1], "jitter": 0}))
    set_current(rt)
    try:
        receiver.expect_request("/hook").respond_with_data("no", status=500)
        tenant = add_tenant(rt)
        subscribe(rt, tenant, hook_url(receiver))
        delivery_id = emit_one(rt, tenant)
        run_queued(rt)
        assert run_owner(rt) == "failed"
        assert run_owner(rt) == "dead"
        d = delivery(rt)
        assert (d.status, d.attempts, d.next_retry_at, d.job_id) == ("dead", 3, None, None)
        with rt.read_session() as s:
            assert [x.delivery_id for x in service.list_deliveries(s, status="dead")[0]] == [delivery_id]

        receiver.clear()
        receiver.expect_request("/hook").respond_with_data("ok")
        WebhookService(rt).redeliver(delivery_id)
        assert delivery(rt).status == "pending" and delivery(rt).attempts == 0
        with pytest.raises(WebhookError, match="already on its way"):
            WebhookService(rt).redeliver(delivery_id)
        run_queued(rt)
        d = delivery(rt)
        assert (d.status, d.attempts, d.delivery_id) == ("delivered", 1, delivery_id)
        assert headers_of(receiver.log[0][0])["webhook-id"] == delivery_id
    finally:
        set_current(None)
        rt.close()


@pytest.mark.parametrize("period_s,disabled", [(0, True), (3600, False)])
def test_consecutive_failures_over_a_period_disable_the_subscription(tmp_path, receiver, period_s, disabled):
    rt = Runtime(make_settings(tmp_path, webhooks={
        "backoff_s": [1] * 5, "disable_after_failures": 3, "disable_after_s": period_s}))
    set_current(rt)
    try:
        receiver.expect_request("/hook").respond_with_data("no", status=500)
        tenant = add_tenant(rt)
        hook_id, _ = subscribe(rt, tenant, hook_url(receiver))
        emit_one(rt, tenant)
        run_queued(rt)
        run_owner(rt)
        run_owner(rt)
        hook = webhook(rt, hook_id)
        assert hook.consecutive_failures == 3
        assert hook.is_active is (not disabled)
        if disabled:
            assert "3 consecutive failed deliveries" in hook.disabled_reason
            assert "HTTP 500" in hook.disabled_reason
            # The pending retry finds its subscription off: dead, no request.
            requests = len(receiver.log)
            run_owner(rt)
            assert delivery(rt).status == "dead" and "subscription disabled" in delivery(rt).error
            assert len(receiver.log) == requests
    finally:
        set_current(None)
        rt.close()


# ---------------------------------------------------------------- SSRF at delivery time


@pytest.mark.parametrize("form", ["2130706433", "0x7f000001", "127.1", "0177.0.0.1", "[::ffff:127.0.0.1]",
                                  "127.0.0.1", "[::1]"])
def test_loopback_forms_are_refused_without_a_request(tmp_path, receiver, form):
    """Against a live listener on 127.0.0.1, with an empty allowlist: nothing arrives."""
    rt = Runtime(make_settings(tmp_path, webhooks={"allow_hosts": []}))
    set_current(rt)
    try:
        receiver.expect_request("/hook").respond_with_data("should never be asked")
        tenant = add_tenant(rt)
        url = f"http://{form}:{receiver.port}/hook"
        with pytest.raises(WebhookError, match="URL refused"):
            subscribe(rt, tenant, url)
        insert_webhook(rt, tenant, url)
        emit_one(rt, tenant)
        run_queued(rt)
        d = delivery(rt)
        assert d.status == "dead" and d.error.startswith("refused: ")
        assert d.next_retry_at is None and d.response_code is None
        assert receiver.log == []
    finally:
        set_current(None)
        rt.close()


class NoNetwork(httpx.BaseTransport):
    """A transport that fails the test if anything is sent at all."""

    def handle_request(self, request):
        raise AssertionError(f"a request was made to {request.url}")


@pytest.mark.parametrize("url,resolved,why", [
    ("http://169.254.169.254/latest/meta-data/", None, "link-local"),
    ("http://[::ffff:169.254.169.254]/", None, "IPv4-mapped 169.254.169.254"),
    ("http://100.64.0.1/", None, "carrier-grade NAT"),
    ("http://10.0.0.1/", None, "private"),
    ("http://192.168.0.10/", None, "private"),
    ("http://172.16.5.4/", None, "private"),
    ("http://metadata.example.test/", ["169.254.169.254"], "link-local"),
    ("http://rebind.example.test/", ["93.184.216.34", "10.0.0.7"], "private"),
    ("gopher://127.0.0.1/", None, "scheme"),
])
def test_internal_addresses_are_refused_and_recorded_without_sending(runtime, tenant, url, resolved, why):
    insert_webhook(runtime, tenant, url)
    emit_one(runtime, tenant)

    def resolve(host, port):
        assert resolved is not None, "literal addresses are never resolved"
        return resolved

    token = delivery(runtime).job_id
    with httpx.Client(transport=NoNetwork()) as http:
        assert wd.deliver(runtime, 1, token, http=http, resolve=resolve) == "dead"
    d = delivery(runtime)
    assert d.error.startswith("refused: ") and why in d.error


def test_the_checked_address_is_connected_to_without_a_second_lookup(runtime, tenant, receiver):
    """A host name is resolved once; the request goes to that address with the name as Host."""
    receiver.expect_request("/hook").respond_with_data("ok")
    url = f"http://localhost:{receiver.port}/hook"
    subscribe(runtime, tenant, url)
    emit_one(runtime, tenant)
    calls = []

    def resolve(host, port):
        calls.append(host)
        return ["127.0.0.1"] if len(calls) == 1 else ["169.254.169.254"]  # a rebinding DNS

    assert wd.deliver(runtime, 1, delivery(runtime).job_id, resolve=resolve) == "delivered"
    assert calls == ["localhost"]
    assert headers_of(receiver.log[0][0])["host"] == f"localhost:{receiver.port}"


# ---------------------------------------------------------------- one owner per delivery


def test_a_job_whose_token_was_replaced_does_nothing(runtime, tenant, receiver):
    receiver.expect_request("/hook").respond_with_data("ok")
    subscribe(runtime, tenant, hook_url(receiver))
    emit_one(runtime, tenant)
    stale = delivery(runtime).job_id
    with runtime.session() as s:  # as if the retry task had re-enqueued it
        s.execute(sa.update(WebhookDelivery).values(job_id="other-token"))
    assert wd.deliver(runtime, 1, stale) == "skipped"
    assert receiver.log == [] and delivery(runtime).attempts == 0
    assert wd.deliver(runtime, 1, "other-token") == "delivered"
    assert wd.deliver(runtime, 1, "other-token") == "skipped"  # already delivered
    assert len(receiver.log) == 1


def test_rows_are_committed_before_jobs_and_the_retry_task_finds_lost_ones(tmp_path, receiver, monkeypatch):
    rt = Runtime(make_settings(tmp_path, webhooks={"pending_grace_s": 0}))
    set_current(rt)
    try:
        receiver.expect_request("/hook").respond_with_data("ok")
        tenant = add_tenant(rt)
        subscribe(rt, tenant, hook_url(receiver))
        subscribe(rt, tenant, hook_url(receiver))

        def crash(*args, **kwargs):
            raise SystemExit("killed between commit and enqueue")

        monkeypatch.setattr(wd, "enqueue", crash)
        with pytest.raises(SystemExit):
            WebhookService(rt).queue_delivery("deal.created", {"id": 1}, tenant)
        monkeypatch.undo()
        assert [d.status for d in deliveries(rt)] == ["pending", "pending"]
        assert rt.huey.pending_count() == 0

        assert wd.retry_webhook_deliveries() == 2
        # With no grace the rows are still "lost" at once: handed new tokens again,
        # which turns the two jobs just queued into no-ops.
        assert wd.retry_webhook_deliveries() == 2
        assert rt.huey.pending_count() == 4
        assert run_queued(rt) == 4
        ds = deliveries(rt)
        assert [d.status for d in ds] == ["delivered", "delivered"]
        ids = sorted(headers_of(r)["webhook-id"] for r, _ in receiver.log)
        assert ids == sorted(d.delivery_id for d in ds)  # each delivered once, stale jobs did nothing
    finally:
        set_current(None)
        rt.close()


def test_retry_task_picks_due_failed_rows_only(runtime, tenant, receiver):
    receiver.expect_request("/hook").respond_with_data("ok")
    subscribe(runtime, tenant, hook_url(receiver))
    for _ in range(4):
        emit_one(runtime, tenant)
    assert run_queued(runtime) == 4
    grace = runtime.settings.webhooks.pending_grace_s
    now = utcnow()
    long_ago = now - dt.timedelta(seconds=grace + 60)
    D = WebhookDelivery
    with runtime.session() as s:
        s.execute(sa.update(D).where(D.id == 1).values(status="failed", attempts=1, job_id="lost",
                                                       next_retry_at=long_ago))
        s.execute(sa.update(D).where(D.id == 2).values(status="failed", attempts=1, job_id="waiting",
                                                       next_retry_at=now + dt.timedelta(hours=1)))
        s.execute(sa.update(D).where(D.id == 3).values(status="failed", attempts=99, job_id="spent",
                                                       next_retry_at=long_ago))
        s.execute(sa.update(D).where(D.id == 4).values(status="pending", attempts=0, job_id="dead-runner",
                                                       updated_at=now - dt.timedelta(hours=2)))
    assert wd.retry_webhook_deliveries() == 2
    assert delivery(runtime, 2).job_id == "waiting"
    assert delivery(runtime, 3).status == "dead"
    receiver.clear_log()
    assert run_queued(runtime) == 2
    assert [delivery(runtime, i).status for i in (1, 2, 3, 4)] == ["delivered", "failed", "dead", "delivered"]
    assert len(receiver.log) == 2


def test_periodic_task_is_registered_with_its_schedule(runtime):
    assert "erp:retry-webhook-deliveries" in runtime.tasks
    assert runtime.settings.schedule.cron["erp:retry-webhook-deliveries"] == "*/10 * * * *"
    assert "DeliverWebhookJob" in runtime.tasks


def test_payload_body_is_the_same_bytes_on_every_attempt(runtime, tenant, receiver):
    receiver.expect_oneshot_request("/hook").respond_with_data("", status=500)
    receiver.expect_request("/hook").respond_with_data("ok")
    subscribe(runtime, tenant, hook_url(receiver))
    emit_one(runtime, tenant, payload={"name": "Zoë", "amount": 12.5})
    run_queued(runtime)
    run_owner(runtime)
    bodies = [r.get_data() for r, _ in receiver.log]
    assert bodies[0] == bodies[1]
    assert json.loads(bodies[0])["data"] == {"name": "Zoë", "amount": 12.5}
