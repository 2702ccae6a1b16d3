"""Cron arithmetic for periodic tasks: the due tick, the next run, words.

Expressions use croniter's syntax (standard five-field cron, where day-of-month
and day-of-week are ORed like cron does, unlike Huey's crontab) and are read in
the configured timezone.

Daylight saving, like classic cron (see ``fixed_time``):

- a *fixed-time* expression (no ``*`` in the minute and hour fields, e.g. a daily
  ``30 2 * * *``) fires once per local day: on the fall-back day its wall time
  occurs twice, and only the first occurrence is a tick (Berlin 2027-10-31:
  00:30Z, not 01:30Z too);
- a wall time skipped by the spring-forward change fires once, at the first
  instant after the gap (Berlin ``30 2 * * *`` on 2027-03-28 fires at 03:00
  CEST = 01:00Z; New York ``30 2 * * *`` on 2027-03-14 at 03:00 EDT = 07:00Z);
- a sub-daily expression (``*/15 * * * *``, ``0 * * * *``) fires in both passes
  of a repeated hour: that time did pass.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo

from croniter import croniter

UTC = dt.UTC


@lru_cache(maxsize=256)
def fixed_time(expr: str) -> bool:
    """Whether ``expr`` fires at fixed wall times (no ``*`` in minute or hour):
    such a task runs once per local day across a fall-back change."""
    minute, hour = expr.split()[:2]
    return "*" not in minute and "*" not in hour


def repeated_wall_time(tick: dt.datetime, tz: str) -> bool:
    """Whether ``tick`` (UTC) is the second occurrence of a local wall time (fall back)."""
    if tz == "UTC":
        return False
    local = tick.astimezone(ZoneInfo(tz))
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


def latest_tick(expr: str, now: dt.datetime, tz: str = "UTC") -> dt.datetime:
    """The latest time <= now (to the minute) that ``expr`` matches, in UTC."""
    local = now.astimezone(ZoneInfo(tz)).replace(second=0, microsecond=0)
    itr = croniter(expr, local + dt.timedelta(minutes=1))
    tick = itr.get_prev(dt.datetime).astimezone(UTC)
    if fixed_time(expr):
        while repeated_wall_time(tick, tz):
            tick = itr.get_prev(dt.datetime).astimezone(UTC)
    return tick


def next_tick(expr: str, now: dt.datetime, tz: str = "UTC") -> dt.datetime:
    """The first time strictly after now that ``expr`` matches, in UTC."""
    itr = croniter(expr, now.astimezone(ZoneInfo(tz)))
    tick = itr.get_next(dt.datetime).astimezone(UTC)
    if fixed_time(expr):
        while repeated_wall_time(tick, tz):
            tick = itr.get_next(dt.datetime).astimezone(UTC)
    return tick


def ticks_between(expr: str, after: dt.datetime, until: dt.datetime, tz: str = "UTC",
                  limit: int = 1000) -> list[dt.datetime]:
    """The ticks t with after < t <= until, oldest first (at most the newest ``limit``)."""
    out: list[dt.datetime] = []
    t = after
    while True:
        t = next_tick(expr, t, tz)
        if t > until:
            return out[-limit:]
        out.append(t)
        if len(out) > 2 * limit:
            out = out[-limit:]


def due_tick(expr: str, now: dt.datetime, grace_s: float, tz: str = "UTC") -> dt.datetime | None:
    """The tick to fire now, or None when the latest tick is older than the grace
    period (after downtime a missed tick is skipped, not replayed)."""
    tick = latest_tick(expr, now, tz)
    return tick if (now - tick).total_seconds() <= grace_s else None


@lru_cache(maxsize=256)
def describe(expr: str) -> str:
    """The expression in words, e.g. 'Every 5 minutes'."""
    try:
        from cron_descriptor import Options, get_description

        opts = Options()
        opts.use_24hour_time_format = True
        opts.verbose = False
        return get_description(expr, opts)
    except Exception:
        return expr
