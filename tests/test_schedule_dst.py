"""Daily jobs run once per local day across daylight-saving changes (2027).

Measured through ``due_tick`` minute by minute (what the scheduler sees every
check) and through the runtime's periodic check with a frozen clock."""

from __future__ import annotations

import datetime as dt

import pytest

from erpq.runtime.schedule import due_tick, fixed_time, next_tick
from test_schedule import NAME, at, calls, clock, periodic_runs, runtimes, tick  # noqa: F401


def fired(expr: str, tz: str, start: str, hours: int = 8, step_s: int = 30) -> list[dt.datetime]:
    """Every distinct tick due_tick hands out, checking every ``step_s`` from ``start`` (UTC)."""
    t0, out = at(start), []
    for i in range(hours * 3600 // step_s):
        d = due_tick(expr, t0 + dt.timedelta(seconds=i * step_s), 120, tz)
        if d is not None and d not in out:
            out.append(d)
    return out


@pytest.mark.parametrize(("tz", "expr", "start", "expected"), [
    # fall back: 02:30 happens twice in Berlin on 2027-10-31 (CEST 00:30Z, CET 01:30Z): once, the first
    ("Europe/Berlin", "30 2 * * *", "2027-10-30T22:00:00", ["2027-10-31T00:30:00"]),
    # spring forward: 02:30 does not exist on 2027-03-28: once, at 03:00 CEST (01:00Z)
    ("Europe/Berlin", "30 2 * * *", "2027-03-27T22:00:00", ["2027-03-28T01:00:00"]),
    # New York falls back on 2027-11-07 (01:30 twice: EDT 05:30Z, EST 06:30Z): once
    ("America/New_York", "30 1 * * *", "2027-11-07T03:00:00", ["2027-11-07T05:30:00"]),
    # and springs forward on 2027-03-14 (02:30 missing): once, at 03:00 EDT (07:00Z)
    ("America/New_York", "30 2 * * *", "2027-03-14T04:00:00", ["2027-03-14T07:00:00"]),
    # a weekly job (Sunday 02:30) on the fall-back Sunday: once too
    ("Europe/Berlin", "30 2 * * 0", "2027-10-30T22:00:00", ["2027-10-31T00:30:00"]),
])
def test_fixed_time_job_fires_once_on_change_day(tz, expr, start, expected):
    assert fired(expr, tz, start) == [at(e) for e in expected]


def test_day_after_the_change_is_back_at_its_wall_time():
    assert next_tick("30 2 * * *", at("2027-03-28T01:00:00"), "Europe/Berlin") == at("2027-03-29T00:30:00")
    assert next_tick("30 2 * * *", at("2027-10-31T00:30:00"), "Europe/Berlin") == at("2027-11-01T01:30:00")
    assert next_tick("30 1 * * *", at("2027-11-07T05:30:00"), "America/New_York") == at("2027-11-08T06:30:00")


def test_sub_daily_job_fires_in_both_passes_of_the_repeated_hour():
    assert not fixed_time("30 * * * *") and fixed_time("30 2 * * *") and fixed_time("0 2,14 * * *")
    got = fired("30 * * * *", "Europe/Berlin", "2027-10-30T23:00:00", hours=3)
    # 01:30 CEST (23:30Z), 02:30 CEST (00:30Z), 02:30 CET (01:30Z): time did pass
    assert got == [at("2027-10-30T23:30:00"), at("2027-10-31T00:30:00"), at("2027-10-31T01:30:00")]


@pytest.mark.parametrize(("tz", "expr", "start", "expected"), [
    ("Europe/Berlin", "30 2 * * *", "2027-10-30T23:50:10", "2027-10-31T00:30:00"),
    ("America/New_York", "30 2 * * *", "2027-03-14T06:50:10", "2027-03-14T07:00:00"),
])
def test_runtime_fires_once_across_the_change(runtimes, clock, tz, expr, start, expected):  # noqa: F811
    """The scheduler's own check, every 20 s for 3 hours: one run-history row, one enqueue."""
    rt = runtimes(schedule={"cron": {NAME: expr}, "timezone": tz})
    clock.now = at(start)
    enqueued = []
    for _ in range(3 * 180):
        enqueued += tick(rt)
        clock.now += dt.timedelta(seconds=20)
    assert len(enqueued) == 1
    runs = periodic_runs(rt)
    assert [(r.tick, r.status) for r in runs] == [(at(expected), "enqueued")]
