"""``erpq queue clear`` (purge pending jobs: confirmed, audited, refused read-only,
``--task``, on SQLite and Redis) and ``erpq queue work --burst`` (drain the queue,
then exit; 1 when a job failed)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import test_cli
from conftest import REDIS_URL, _reset_redis, need, redis_available
from erpq.config import load
from erpq.ops import Ops
from erpq.runtime import Runtime

no_current_runtime = test_cli.no_current_runtime
sqlite_cfg = test_cli.cfg  # for what does not depend on the queue store
run = test_cli.run
pytestmark = pytest.mark.usefixtures("no_current_runtime")


@pytest.fixture(params=["sqlite", "redis"])
def cfg(request, tmp_path: Path):
    queue = 'url = "sqlite:///q.db"'
    name = None
    if request.param == "redis":
        need("Redis", redis_available(), REDIS_URL)
        name = f"t{uuid.uuid4().hex[:10]}"
        queue = f'url = "{REDIS_URL}"\nname = "{name}"'
    path = tmp_path / "config.toml"
    path.write_text(f'[queue]\n{queue}\nworkers = 2\n[database]\nurl = "sqlite:///db.sqlite"\n'
                    '[log]\npath = "erpq.log"\n[runner]\nheartbeat_s = 0.5\ndead_after_s = 2.0\n')
    yield str(path)
    if name:
        _reset_redis(REDIS_URL, name)


def pending(cfg: str, capsys) -> list[str]:
    capsys.readouterr()
    assert run(cfg, "queue", "list", "--pending", "--json") == 0
    return sorted(j["task_name"] for j in json.loads(capsys.readouterr().out))


def audit_actions(cfg: str) -> list[tuple[str, str]]:
    rt = Runtime(load(cfg))
    try:
        return [(a.action, a.command) for a in Ops(rt).audit_log().items]
    finally:
        rt.close()


def test_clear_removes_pending_jobs_by_task_then_all_and_is_audited(cfg, capsys):
    for i in range(3):
        run(cfg, "queue", "dispatch", "CliEcho", "--args", f"[{i}]")
    run(cfg, "queue", "dispatch", "CliBoom")
    run(cfg, "queue", "dispatch", "CliBoom", "--args", "[2]")
    rt = Runtime(load(cfg))
    rt.enqueue("CliEcho", "later", delay=3600)  # scheduled: clear leaves it
    rt.close()
    capsys.readouterr()
    assert run(cfg, "queue", "clear", "--task", "CliBoom", "--yes") == 0
    assert capsys.readouterr().out.strip() == "Cleared 2 pending job(s) of CliBoom"
    assert pending(cfg, capsys) == ["CliEcho"] * 3
    assert run(cfg, "queue", "clear", "--yes") == 0
    assert capsys.readouterr().out.strip() == "Cleared 3 pending job(s)"
    assert pending(cfg, capsys) == []
    assert run(cfg, "queue", "list", "--scheduled", "--json") == 0
    assert len(json.loads(capsys.readouterr().out)) == 1
    actions = audit_actions(cfg)
    assert actions[:2] == [("queue.clear", "erpq queue clear --yes"),
                           ("queue.clear", "erpq queue clear --task CliBoom --yes")]


def test_clear_is_refused_read_only_and_without_a_terminal_and_for_an_unknown_task(sqlite_cfg, capsys):
    cfg = sqlite_cfg
    run(cfg, "queue", "dispatch", "CliEcho", "--args", "[1]")
    capsys.readouterr()
    assert main_read_only(cfg) == 1
    assert "read-only mode" in capsys.readouterr().err
    proc = subprocess.run([sys.executable, "-m", "erpq.cli", "--config", cfg, "queue", "clear"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 2 and "add --yes" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert run(cfg, "queue", "clear", "--task", "NoSuchJob", "--yes") == 1
    err = capsys.readouterr().err
    assert "unknown task 'NoSuchJob'" in err and len(err.strip().splitlines()) == 1
    assert pending(cfg, capsys) == ["CliEcho"]
    assert [a for a, _ in audit_actions(cfg)] == ["queue.dispatch"]


def main_read_only(cfg: str) -> int:
    from erpq.cli import main

    return main(["--config", cfg, "--read-only", "queue", "clear", "--yes"])


def test_clear_asks_on_a_terminal(tmp_path):
    """The user's path: `erpq queue clear` on a terminal asks for 'clear'."""
    cfg = tmp_path / "config.toml"
    cfg.write_text('[queue]\nurl = "sqlite:///q.db"\n[database]\nurl = "sqlite:///db.sqlite"\n'
                   '[log]\npath = "erpq.log"\n')

    def erpq(*argv, answer):
        master, slave = pty.openpty()  # stdin is a terminal: the command asks
        try:
            p = subprocess.Popen([sys.executable, "-m", "erpq.cli", "--config", str(cfg), *argv], stdin=slave,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            os.write(master, (answer + "\n").encode())
            out, err = p.communicate(timeout=120)
            return subprocess.CompletedProcess(p.args, p.returncode, out, err)
        finally:
            os.close(master)
            os.close(slave)

    rt = Runtime(load(cfg))
    try:
        for _ in range(2):
            rt.trigger_periodic("erp:check-system-health")
    finally:
        rt.close()
    proc = erpq("queue", "clear", answer="no")
    assert proc.returncode == 1 and "Remove 2 pending job(s) from the queue" in proc.stdout
    assert "Not cleared." in proc.stdout
    proc = erpq("queue", "clear", answer="clear")
    assert proc.returncode == 0 and "Cleared 2 pending job(s)" in proc.stdout, proc.stderr
    rt = Runtime(load(cfg))
    try:
        runs = Ops(rt).runs().items
    finally:
        rt.close()
    assert [r.status for r in runs] == ["cancelled", "cancelled"]  # the periodic runs say so


def test_clear_frees_the_idempotency_key_of_a_cleared_job(sqlite_cfg, capsys):
    cfg = sqlite_cfg
    run(cfg, "queue", "dispatch", "CliEcho", "--args", "[1]", "--key", "k-1")
    first = capsys.readouterr().out.split("job ")[1].split()[0]
    assert run(cfg, "queue", "clear", "--yes") == 0
    run(cfg, "queue", "dispatch", "CliEcho", "--args", "[1]", "--key", "k-1")
    second = capsys.readouterr().out.split("job ")[1].split()[0]
    assert second != first  # enqueued again, not "already held by the cleared job"
    assert pending(cfg, capsys) == ["CliEcho"]


# ---------------------------------------------------------------- work --burst
def test_burst_drains_the_queue_and_says_whether_a_job_failed(cfg, capsys):
    for i in range(5):
        run(cfg, "queue", "dispatch", "CliEcho", "--args", f"[{i}]")
    run(cfg, "queue", "dispatch", "CliBoom")
    capsys.readouterr()
    assert run(cfg, "queue", "work", "--burst", "--workers", "2") == 1
    assert capsys.readouterr().out.strip() == "Processed 6 job(s), 1 failed"
    assert pending(cfg, capsys) == []
    assert run(cfg, "queue", "failed", "--json") == 0
    assert [f["task_name"] for f in json.loads(capsys.readouterr().out)] == ["CliBoom"]
    for i in range(3):
        run(cfg, "queue", "dispatch", "CliEcho", "--args", f"[{i}]")
    capsys.readouterr()
    assert run(cfg, "queue", "work", "--burst") == 0
    assert capsys.readouterr().out.strip() == "Processed 3 job(s), 0 failed"
    assert run(cfg, "queue", "work", "--burst") == 0  # nothing waiting is not a failure
    assert capsys.readouterr().out.strip() == "Processed 0 job(s), 0 failed"
    assert run(cfg, "runner", "list", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []  # the burst runner said it stopped


def test_once_and_burst_together_is_a_usage_error(sqlite_cfg, capsys):
    cfg = sqlite_cfg
    assert run(cfg, "queue", "work", "--once", "--burst") == 2
    assert "not both" in capsys.readouterr().err
