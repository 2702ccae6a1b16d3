"""Misfire policies after an outage, missed ticks on record with their reason,
lateness of late runs, and ``schedule explain`` answering "why didn't it fire"."""

from __future__ import annotations

import pytest

from draining import drain
from erpq.cli import main
from erpq.ops import Actor, Ops
from erpq.runtime import locks
from test_schedule import LOCK, NAME, at, calls, clock, periodic_runs, runtimes, tick  # noqa: F401

HOURLY = "0 * * * *"


def outage(rt, clock) -> list:  # noqa: F811
    """An hourly task runs at 07:00; no runner fires the schedule from then until 12:30
    (five ticks, 08:00-12:00, pass unfired); the first check after it."""
    clock.now = at("2030-01-01T07:00:10")
    assert len(tick(rt)) == 1 and drain(rt) == 1
    clock.now = at("2030-01-01T12:30:00")
    return tick(rt)


@pytest.mark.parametrize(("policy", "runs", "missed"), [
    ("skip", [], ["08", "09", "10", "11", "12"]),
    ("run_once", ["12"], ["08", "09", "10", "11"]),
    ("catch_up:3", ["10", "11", "12"], ["08", "09"]),
    ("catch_up", ["08", "09", "10", "11", "12"], []),  # catch_up_max (10) not reached
])
def test_misfire_policy_after_five_hour_outage(runtimes, clock, calls, policy, runs, missed):  # noqa: F811
    rt = runtimes(schedule={"cron": {NAME: HOURLY}, "misfire": {NAME: policy}})
    enqueued = outage(rt, clock)
    assert len(enqueued) == len(runs)
    assert drain(rt) == len(runs)
    assert len(calls) == 1 + len(runs)  # counted by the task itself
    rows = [r for r in periodic_runs(rt) if r.tick > at("2030-01-01T07:00:00")]
    assert sorted(f"{r.tick:%H}" for r in rows if r.status == "missed") == missed
    ran = sorted((r for r in rows if r.status == "success"), key=lambda r: r.tick)
    assert [f"{r.tick:%H}" for r in ran] == runs
    assert len(rows) == 5  # every tick accounted for, once
    for r in rows:
        if r.status == "missed":
            assert "runner down" in r.error and policy.split(":")[0] in r.error
    for r in ran:  # late runs record how late they started
        assert r.late_s == pytest.approx((at("2030-01-01T12:30:00") - r.tick).total_seconds())
    assert tick(rt) == []  # nothing more on the next check
    assert Ops(rt).runs(status="missed").total == -1 and len(Ops(rt).runs(status="missed").items) == len(missed)


def test_on_time_run_records_its_lateness(runtimes, clock, calls):  # noqa: F811
    rt = runtimes(schedule={"cron": {NAME: HOURLY}})
    clock.now = at("2030-01-01T07:00:40")
    tick(rt)
    drain(rt)
    (run,) = periodic_runs(rt)
    assert run.status == "success" and run.late_s == pytest.approx(40)


def test_invalid_misfire_policy_is_one_line_error(tmp_path):
    from conftest import make_settings
    from erpq.config import ConfigError

    with pytest.raises(ConfigError, match=r"schedule\.misfire\.crm:check-activity-reminders: unknown policy 'sometimes'"):
        make_settings(tmp_path, schedule={"misfire": {NAME: "sometimes"}})


def test_explain_after_pause_outage_and_overlap(runtimes, clock, calls, tmp_path, capsys):  # noqa: F811
    rt = runtimes(schedule={"cron": {NAME: HOURLY}})
    ops = Ops(rt, actor=Actor("tester", None, "cli"))
    clock.now = at("2030-01-01T07:00:10")
    tick(rt)
    drain(rt)                                                 # 07:00 ran
    ops.pause(NAME)
    clock.now = at("2030-01-01T08:00:10")
    assert tick(rt) == []                                     # 08:00 paused
    ops.resume(NAME)
    clock.now = at("2030-01-01T11:30:00")
    assert tick(rt) == []                                     # 09:00-11:00: no runner
    assert locks.acquire(rt.Session, LOCK, "other-runner:1:abc", 600)
    clock.now = at("2030-01-01T12:00:10")
    tick(rt)
    drain(rt)                                                 # 12:00: lock held by a previous run

    ex = ops.explain(NAME)
    outcomes = [(f"{t.tick:%H}", t.status) for t in ex.ticks]
    assert outcomes == [("12", "missed"), ("11", "missed"), ("10", "missed"), ("09", "missed"),
                        ("08", "missed"), ("07", "success")]
    assert "lock held by other-runner:1:abc" in ex.ticks[0].outcome
    assert all("runner down" in t.outcome for t in ex.ticks[1:4])
    assert "paused" in ex.ticks[4].outcome and ex.ticks[5].outcome.startswith("ran")
    assert ex.lock_holder == "other-runner:1:abc" and ex.lock_expires_at is not None
    assert ex.schedulers == []  # no runner heart-beating: said so
    assert ex.next_tick is not None and ex.timezone == "UTC" and ex.misfire == "skip"
    assert "hour" in ex.words.lower()

    cfg = tmp_path / "config.toml"
    cfg.write_text('[queue]\nurl = "sqlite:///queue.db"\n[database]\nurl = "sqlite:///erpq.db"\n'
                   f'[log]\npath = "erpq.log"\n[schedule.cron]\n"{NAME}" = "{HOURLY}"\n')
    capsys.readouterr()
    assert main(["--config", str(cfg), "schedule", "explain", NAME]) == 0
    text = capsys.readouterr().out
    assert "NO live runner fires periodic tasks" in text
    assert "held by other-runner:1:abc" in text
    assert "skipped because the task was paused" in text
    assert "skipped because the previous run still running" in text
    assert "2030-01-01 10:00:00 UTC  missed: no runner fired the schedule" in text
    assert main(["--config", str(cfg), "schedule", "explain", "nope"]) != 0
    capsys.readouterr()
    assert main(["--config", str(cfg), "runs", "--status", "missed"]) == 0
    text = capsys.readouterr().out
    assert text.count("missed") >= 5 and "2030-01-01" in text and "paused" in text


def test_explain_names_the_live_scheduler(runtimes):  # noqa: F811
    from erpq.runtime.runner import Heartbeat

    rt = runtimes(schedule={"cron": {NAME: "30 2 * * *"}, "timezone": "Europe/Berlin"})
    hb = Heartbeat(rt, workers=1, periodic=True, kind="consumer")
    hb.register()
    try:
        ex = Ops(rt).explain(NAME)
        assert [s.split(" ")[0] for s in ex.schedulers] == [rt.runner_id]
        assert ex.next_tick_local.endswith(("CET", "CEST")) and " 02:30 " in ex.next_tick_local + " "
        assert ex.lock_holder is None
    finally:
        hb.stop()
