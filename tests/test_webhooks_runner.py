"""Webhooks through real runners: the embedded runner on each queue store, and
``huey_consumer`` processes killed with SIGKILL mid-delivery (at-least-once:
the receiver may see a delivery id twice, but there is exactly one delivered
row per delivery id and never two ids for one delivery)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import webhook_fixtures
from conftest import REDIS_URL, _reset_redis, need, redis_available
from erpq.config import load as load_settings
from erpq.runtime import EmbeddedRunner, Runtime, set_current
from erpq.webhooks.service import WebhookService
from webhook_fixtures import add_tenant, deliveries, hook_url, subscribe, wait_until

receiver = webhook_fixtures.receiver

CONSUMER = str(Path(sys.executable).with_name("huey_consumer"))


def test_embedded_runner_delivers_and_retries(store_runtime: Runtime, receiver):
    rt = store_runtime
    rt.settings.webhooks.backoff_s = [1, 1]
    receiver.expect_oneshot_request("/flaky").respond_with_data("", status=500)
    receiver.expect_request("/flaky").respond_with_data("ok")
    receiver.expect_request("/hook").respond_with_data("ok")
    tenant = add_tenant(rt)
    subscribe(rt, tenant, hook_url(receiver), ["deal.created"])
    subscribe(rt, tenant, hook_url(receiver, "/flaky"), ["deal.created"])
    ids = [i for n in range(10) for i in WebhookService(rt).queue_delivery("deal.created", {"n": n}, tenant)]
    assert len(set(ids)) == 20
    runner = EmbeddedRunner(rt, workers=2, periodic=False)
    runner.start()
    try:
        wait_until(lambda: all(d.status == "delivered" for d in deliveries(rt)), message="all delivered")
    finally:
        runner.stop()
    rows = deliveries(rt)
    assert sorted(d.delivery_id for d in rows) == sorted(ids)
    assert sorted(d.attempts for d in rows) == [1] * 19 + [2]
    seen = [r.headers["webhook-id"] for r, _ in receiver.log]
    assert len(seen) == 21 and set(seen) == set(ids)


# ---------------------------------------------------------------- SIGKILL mid-delivery


class Receiver(ThreadingHTTPServer):
    """Records every delivery id; the very first request hangs until released."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.ids: list[str] = []
        self.lock = threading.Lock()
        self.first_arrived = threading.Event()
        self.release = threading.Event()


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            self.server.ids.append(self.headers["webhook-id"])
            first = len(self.server.ids) == 1
        if first:
            self.server.first_arrived.set()
            self.server.release.wait(60)
        try:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        except OSError:
            pass  # the client was killed

    def log_message(self, *args) -> None:
        pass


def write_config(tmp: Path, queue: dict) -> Path:
    path = tmp / "config.toml"
    lines = ["[queue]"] + [f"{k} = {json.dumps(v)}" for k, v in queue.items()] + [
        "", "[database]", 'url = "sqlite:///erpq.db"',
        "", "[log]", 'path = "erpq.log"',
        "", "[runner]", "heartbeat_s = 0.5", "dead_after_s = 2.0", "periodic_check_s = 1",
        "", "[webhooks]", 'allow_hosts = ["127.0.0.1", "::1"]', "timeout_s = 30.0", "backoff_s = [1, 1, 1]",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def start_consumer(config: Path, log_name: str) -> subprocess.Popen:
    env = {**os.environ, "ERPQ_CONFIG": str(config)}
    out = open(config.parent / log_name, "wb")  # noqa: SIM115 (closed with the process)
    return subprocess.Popen([CONSUMER, "erpq.tasks.huey", "-w", "2", "-k", "thread"],
                            cwd=config.parent, env=env, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_sigkill_mid_delivery_ends_with_one_delivered_row_per_delivery_id(tmp_path: Path, store: str):
    if store == "redis":
        need("Redis", redis_available(), REDIS_URL)
        queue = {"url": REDIS_URL, "name": f"t{uuid.uuid4().hex[:10]}"}
    else:
        queue = {"url": "sqlite:///queue.db"}
    config = write_config(tmp_path, queue)
    rt = Runtime(load_settings(config))
    set_current(rt)
    server = Receiver()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    first = second = None
    try:
        tenant = add_tenant(rt)
        subscribe(rt, tenant, f"http://127.0.0.1:{server.server_address[1]}/hook")
        ids = [WebhookService(rt).queue_delivery("deal.created", {"n": n}, tenant)[0] for n in range(6)]

        first = start_consumer(config, "consumer-1.log")
        assert server.first_arrived.wait(30), "the first consumer never delivered anything"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        # The hung delivery was only read before its POST: nothing says "in progress".
        assert [d.status for d in deliveries(rt)].count("delivered") < len(ids)

        second = start_consumer(config, "consumer-2.log")
        wait_until(lambda: all(d.status == "delivered" for d in deliveries(rt)), timeout=45,
                   message="every delivery delivered after the kill")
        rows = deliveries(rt)
        assert sorted(d.delivery_id for d in rows) == sorted(ids)
        assert all(d.delivered_at is not None for d in rows)
        with server.lock:
            seen = list(server.ids)
        assert set(seen) == set(ids)  # never an id that is not a delivery's
        hung = seen[0]
        assert seen.count(hung) == 2  # delivered again after the kill, under the same id
        # An attempt is counted with its outcome: the one cut off by the kill never had one.
        assert next(d for d in rows if d.delivery_id == hung).attempts == 1
    finally:
        server.release.set()
        for proc in (first, second):
            if proc is not None:
                stop(proc)
        server.shutdown()
        server.server_close()
        set_current(None)
        if store == "redis":
            _reset_redis(REDIS_URL, queue["name"])
        rt.close()
