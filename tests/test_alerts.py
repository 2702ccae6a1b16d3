"""Alerts that cannot be missed (issue 8, item 1): each alert from real state,
read through Ops (``erpq.alerts.collect``), and the console's alert line."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from erpq.alerts import collect
from erpq.db import utcnow
from erpq.models import Runner, SystemHealth, Webhook, WebhookDelivery
from erpq.ops import Ops
from polling import wait_until
from webhook_fixtures import add_tenant, insert_webhook


def texts(ops: Ops) -> list[str]:
    return [a.text for a in collect(ops)]


def add_runner(rt, pid: int, *, host: str | None = None, started_s: float = 0, heartbeat_s: float = 0,
               periodic: bool = True) -> str:
    rid = f"{host or socket.gethostname()}:{pid}:t{abs(hash((pid, host))) % 10000}"
    now = utcnow()
    with rt.session() as s:
        s.add(Runner(id=rid, host=host or socket.gethostname(), pid=pid, workers=1, periodic=periodic,
                     kind="consumer", queue="sqlite", started_at=now - dt.timedelta(seconds=started_s),
                     heartbeat_at=now - dt.timedelta(seconds=heartbeat_s), stopped_at=None))
    return rid


def test_no_runner_alive_is_critical(runtime):
    runtime.enqueue("DeliverWebhookJob", 1)
    alerts = collect(Ops(runtime))
    assert alerts[0].severity == "critical"
    assert alerts[0].text == "no runner alive: jobs are not processed (1 pending)"


def test_a_runner_elsewhere_is_judged_by_heartbeat_age(runtime):
    add_runner(runtime, 1, host="elsewhere", heartbeat_s=300)
    add_runner(runtime, os.getpid(), started_s=1)
    found = texts(Ops(runtime))
    assert "runner elsewhere:1 died (no heartbeat for 5m)" in found
    assert not any(t.startswith("no runner alive") for t in found)


def test_a_sigkilled_runner_on_this_host_is_dead_at_once(runtime, tmp_path: Path):
    """dead_after_s is 120 s here: only the PID check can see the death this soon."""
    cfg = tmp_path / "k.toml"
    cfg.write_text('[queue]\nurl = "sqlite:///queue.db"\nworkers = 1\n[database]\nurl = "sqlite:///erpq.db"\n'
                   '[log]\npath = "k.log"\n[runner]\nheartbeat_s = 0.5\ndead_after_s = 120\n')
    proc = subprocess.Popen([sys.executable, "-m", "erpq.cli", "--config", str(cfg), "queue", "work"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def registered():
            with runtime.read_session() as s:
                return s.scalar(sa.select(Runner.id).where(Runner.pid == proc.pid, Runner.stopped_at.is_(None)))

        wait_until(registered, timeout=60, message="the runner to register")
        ops = Ops(runtime)
        assert not any("no runner alive" in t for t in texts(ops))
        proc.send_signal(signal.SIGKILL)  # not reaped yet: a zombie counts as dead too
        found = wait_until(lambda: [t for t in texts(ops) if "died" in t], timeout=10,
                           message="the killed runner reported dead")
        assert found == [f"runner {socket.gethostname()}:{proc.pid} died (pid {proc.pid} gone)"]
        assert any(t.startswith("no runner alive") for t in texts(ops))
    finally:
        proc.kill()
        proc.wait()


def test_scheduler_not_firing(runtime):
    """A runner that heartbeats but whose scheduler fired nothing for an hour."""
    add_runner(runtime, os.getpid(), started_s=3600)
    late = [a for a in collect(Ops(runtime)) if a.source == "scheduler"]
    assert len(late) == 1 and late[0].severity == "critical"
    assert late[0].text.startswith("scheduler not firing: ") and "ago, not run" in late[0].text


def test_no_periodic_runner_means_no_scheduler(runtime):
    add_runner(runtime, os.getpid(), periodic=False)
    assert "no scheduler: no alive runner runs periodic tasks" in texts(Ops(runtime))


def test_health_critical_on_a_tenant(runtime):
    tid = add_tenant(runtime, "acme")
    now = utcnow()
    with runtime.session() as s:
        s.add(SystemHealth(tenant_id=None, checked_at=now, host="h", status="ok"))
        s.add(SystemHealth(tenant_id=tid, checked_at=now, host="h", status="critical"))
    assert "health critical: Acme" in texts(Ops(runtime))


def test_failing_and_disabled_webhooks(runtime):
    tid = add_tenant(runtime, "acme")
    hook = insert_webhook(runtime, tid, "http://127.0.0.1:9/a")
    dead = insert_webhook(runtime, tid, "http://127.0.0.1:9/b")
    with runtime.session() as s:
        s.get(Webhook, hook).consecutive_failures = 2
        h = s.get(Webhook, dead)
        h.is_active, h.disabled_at, h.disabled_reason = False, utcnow(), "10 consecutive failures"
        s.add(WebhookDelivery(tenant_id=tid, webhook_id=hook, delivery_id="msg_1", event="deal.created",
                              payload={}, status="failed", attempts=1))
    found = {a.text: a.severity for a in collect(Ops(runtime)) if a.source == "webhooks"}
    assert found == {f"webhooks: 1 subscription disabled after failures (#{dead})": "critical",
                     "webhooks failing: 1 to retry, 0 dead, 1 subscription failing": "warning"}


def test_jobs_failing_now(runtime):
    from console_fixtures import seed_failed

    seed_failed(runtime, 3, task="DeliverWebhookJob")
    assert "3 jobs failed in the last 15 min" in texts(Ops(runtime))


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("size", [(80, 24), (200, 50)])
async def test_console_alert_line_fits_and_names_the_worst(runtime, size, anyio_backend):
    from tui.app import ErpqConsole

    tid, now = add_tenant(runtime, "acme"), utcnow()
    with runtime.session() as s:
        s.add(SystemHealth(tenant_id=None, checked_at=now, host="h", status="ok"))
        s.add(SystemHealth(tenant_id=tid, checked_at=now, host="h", status="critical"))
    app = ErpqConsole(Ops(runtime, read_only=True), runtime.settings, poll=False)
    async with app.run_test(size=size) as pilot:
        for _ in range(3):
            await app.workers.wait_for_complete()
            await pilot.pause()
        line = app.query_one("#alerts")
        assert line.has_class("critical") and line.display
        text = line.line(size[0]).plain
        assert len(text) <= size[0]
        assert text.startswith(" ALERTS 2  no runner alive")
        if size[0] >= 200:
            assert "health critical: Acme" in text
        else:
            assert text.endswith("+1 more (:alerts)")
        status = app.query_one("#status").text
        assert status.startswith(" erpq READ-ONLY │")
        await pilot.press("exclamation_mark")
        await pilot.pause()
        assert "health critical: Acme" in str(app.screen.query_one("#body-text").render())
