"""Cron arithmetic for periodic tasks: the due tick, the next run, words.

Expressions use croniter's syntax (standard five-field cron, where day-of-month
and day-of-week are ORed like cron does, unlike Huey's crontab) and are read in
the configured timezone.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from zoneinfo import ZoneInfo

from croniter import croniter

UTC = dt.UTC


def latest_tick(expr: str, now: dt.datetime, tz: str = "UTC") -> dt.datetime:
    """The latest time <= now (to the minute) that ``expr`` matches, in UTC."""
    local = now.astimezone(ZoneInfo(tz)).replace(second=0, microsecond=0)
    itr = croniter(expr, local + dt.timedelta(minutes=1))
    return itr.get_prev(dt.datetime).astimezone(UTC)


def next_tick(expr: str, now: dt.datetime, tz: str = "UTC") -> dt.datetime:
    """The first time strictly after now that ``expr`` matches, in UTC."""
    itr = croniter(expr, now.astimezone(ZoneInfo(tz)))
    return itr.get_next(dt.datetime).astimezone(UTC)


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
