"""The round-trip health probe: a job through the real queue, failed when no
worker runs it (stopped or stuck pool), ok again when workers return."""

from __future__ import annotations

import pytest

import testjobs
from conftest import make_settings
from erpq.cli import main
from erpq.health.service import check_system_health
from erpq.ops import Actor, Ops
from erpq.runtime import EmbeddedRunner, Runtime, set_current
from polling import wait_until


@pytest.fixture
def rt(tmp_path):
    runtime = Runtime(make_settings(tmp_path, health={"probe_timeout_s": 0.5}))
    set_current(runtime)
    testjobs.reset()
    yield runtime
    set_current(None)
    testjobs.reset()
    runtime.close()


def test_probe_fails_with_workers_stopped_and_recovers_when_they_return(rt):
    ops = Ops(rt, Actor("tester", None, "cli"))
    lost = ops.health.probe(wait_s=0.3)
    assert lost.status == "failed" and "no worker took it" in lost.error
    alive = ops.health.liveness()
    assert alive.status == "critical" and alive.live_runners == 0

    runner = EmbeddedRunner(rt, workers=1, periodic=False)
    runner.start()
    try:
        ok = ops.health.probe(wait_s=30)
        assert ok.status == "ok" and ok.wait_s >= 0 and ok.run_s >= 0 and ok.runner == rt.runner_id
        alive = ops.health.liveness()
        assert alive.status == "ok" and alive.live_runners == 1 and alive.probe_status == "ok"
    finally:
        runner.stop()
    probes = ops.health.probes()
    assert [p.status for p in probes] == ["failed", "ok"]
    assert "ran" in probes[0].error  # the lost probe ran late when workers came back: on record


def test_stuck_pool_is_a_failed_probe(rt):
    ops = Ops(rt, Actor("tester", None, "cli"))
    started, release = testjobs.block("stuck")
    runner = EmbeddedRunner(rt, workers=1, periodic=False)
    runner.start()
    try:
        rt.enqueue("TestBlock", "stuck")
        assert started.wait(30)
        assert ops.health.probe(wait_s=0.3).status == "failed"  # the only worker is busy forever
        assert ops.health.liveness().live_runners == 1  # heart-beating, yet not working: the probe tells
        release.set()
        assert ops.health.probe(wait_s=30).status == "ok"
    finally:
        release.set()
        runner.stop()


def test_health_check_sends_probe_and_next_check_reads_it(rt):
    with rt.session() as s:
        check_system_health(s, rt)  # sends a probe; no worker running
    wait_until(lambda: Ops(rt).health.liveness().probe_status == "failed", message="the probe to time out")
    with rt.session() as s:
        host = check_system_health(s, rt)[0]
    assert host.status == "critical" and host.details["probe"]["status"] == "failed"
    assert host.details["runners"]["live"] == 0
    assert len(Ops(rt).health.probes()) == 2


def test_cli_probe_exit_code(tmp_path, capsys):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[queue]\nurl = "sqlite:///queue.db"\n[database]\nurl = "sqlite:///erpq.db"\n'
                   '[log]\npath = "erpq.log"\n')
    assert main(["--config", str(cfg), "health", "--probe", "--wait", "0.2"]) == 1
    assert "failed" in capsys.readouterr().out
    set_current(None)
    assert main(["--config", str(cfg), "health", "--probes", "--json"]) == 0
    assert '"status": "failed"' in capsys.readouterr().out
    set_current(None)
