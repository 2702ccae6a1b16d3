"""Every action of every CLI group goes through Ops: with ``--read-only`` it is
refused (exit 1, nothing changed, nothing audited); without, it writes exactly
one audit row with its equivalent command."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from erpq.cli import main
from erpq.config import load
from erpq.models import AuditLog, FailedJob
from erpq.runtime import Runtime, job, set_current
from test_cli import no_current_runtime, state  # noqa: F401  (fixtures)

pytestmark = pytest.mark.usefixtures("no_current_runtime")


@pytest.fixture
def cfg(tmp_path) -> str:
    path = tmp_path / "config.toml"
    path.write_text('[queue]\nurl = "sqlite:///q.db"\n[database]\nurl = "sqlite:///db.sqlite"\n'
                    '[log]\npath = "erpq.log"\n[webhooks]\nallow_hosts = ["127.0.0.1"]\n')
    return str(path)


@job("AuditBoom")
def audit_boom(n=0):
    raise ValueError(f"boom {n}")


def audit_rows(cfg: str) -> list[tuple[str, str]]:
    rt = Runtime(load(cfg))
    try:
        with rt.read_session() as s:
            return [(a.action, a.command) for a in s.scalars(sa.select(AuditLog).order_by(AuditLog.id))]
    finally:
        rt.close()


def seed(cfg: str) -> dict:
    """A tenant, a webhook with a delivery, two failed jobs, a paused task."""
    assert main(["--config", cfg, "tenant", "add", "acme"]) == 0
    assert main(["--config", cfg, "webhook", "add", "http://127.0.0.1:9/hook", "--tenant", "acme",
                 "--event", "deal.created"]) == 0
    assert main(["--config", cfg, "event", "emit", "deal.created", "--tenant", "acme"]) == 0
    for i in range(2):
        assert main(["--config", cfg, "queue", "dispatch", "AuditBoom", "--args", f"[{i}]"]) == 0
    rt = Runtime(load(cfg))
    set_current(rt)
    try:
        for _ in range(5):
            task = rt.huey.dequeue()
            if task is None:
                break
            if task.name == "AuditBoom":
                rt.huey.execute(task)
        rt.history.flush() if hasattr(rt.history, "flush") else None
        with rt.read_session() as s:
            failed = list(s.scalars(sa.select(FailedJob.id).order_by(FailedJob.id)))
            from erpq.models import WebhookDelivery

            delivery = s.scalar(sa.select(WebhookDelivery.delivery_id))
        with rt.session() as s:  # as if it had run out of attempts, so it can be redelivered
            s.execute(sa.update(WebhookDelivery).values(status="dead"))
    finally:
        set_current(None)
        rt.close()
    assert len(failed) == 2 and delivery
    return {"failed": failed, "delivery": delivery}


#: (argv, action) with placeholders filled from seed().
ACTIONS = [
    (["schedule", "run", "erp:check-system-health"], "schedule.run"),
    (["schedule", "pause", "erp:check-system-health"], "schedule.pause"),
    (["schedule", "resume", "erp:check-system-health"], "schedule.resume"),
    (["queue", "dispatch", "AuditBoom", "--args", "[7]"], "queue.dispatch"),
    (["queue", "recover"], "queue.recover"),
    (["queue", "retry", "{f0}"], "failed.retry"),
    (["queue", "forget", "{f1}"], "failed.forget"),
    (["queue", "flush", "--yes"], "failed.flush"),
    (["queue", "prune-failed", "--hours", "1000"], "failed.prune"),
    (["tenant", "add", "globex"], "tenant.add"),
    (["user", "add", "Ada", "--tenant", "acme", "--email", "ada@example.com"], "user.add"),
    (["event", "emit", "deal.created", "--tenant", "acme", "--data", '{{"id": 9}}'], "event.emit"),
    (["webhook", "add", "http://127.0.0.1:9/other", "--tenant", "acme"], "webhook.add"),
    (["webhook", "disable", "1", "--reason", "maintenance"], "webhook.disable"),
    (["webhook", "enable", "1"], "webhook.enable"),
    (["webhook", "rotate-secret", "1"], "webhook.rotate-secret"),
    (["webhook", "redeliver", "{delivery}"], "webhook.redeliver"),
    (["health", "--check"], "health.check"),
]


@pytest.mark.parametrize("argv, action", ACTIONS, ids=[a for _, a in ACTIONS])
def test_every_cli_action_is_audited_and_refused_read_only(cfg, capsys, argv, action):
    ids = seed(cfg)
    argv = [a.format(f0=ids["failed"][0], f1=ids["failed"][1], delivery=ids["delivery"]) for a in argv]
    before_audit, before = audit_rows(cfg), state(cfg)
    capsys.readouterr()

    assert main(["--config", cfg, "--read-only", *argv]) == 1
    err = capsys.readouterr().err
    assert "read-only" in err and len(err.strip().splitlines()) == 1
    assert audit_rows(cfg) == before_audit and state(cfg) == before

    # health --check exits 3/4 when the reading is warning/critical (no runner here: the probe fails)
    ok = (0, 3, 4) if action == "health.check" else (0,)
    assert main(["--config", cfg, *argv]) in ok, capsys.readouterr().err
    new = audit_rows(cfg)[len(before_audit):]
    assert [a for a, _ in new] == [action], new
    assert new[0][1].startswith("erpq ") and "whsec_" not in json.dumps(new)
