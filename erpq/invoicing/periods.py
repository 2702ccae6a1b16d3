"""The calendar of a recurring invoice template.

Occurrence ``n`` (0-based) is computed from the start, never from the previous
date, so a month-end anchor comes back: anchored on the 31st, a monthly
template issues on Jan 31, Feb 28 (29 in a leap year), Mar 31, Apr 30, ...

- daily: ``start + n * interval`` days;
- weekly: the first ``anchor_day`` ISO weekday (1 = Monday; default: the start's
  weekday) on or after the start, then every ``interval`` weeks;
- monthly / quarterly / yearly: day ``anchor_day`` (default: the start's day,
  clamped to the month's last day) of the first month on or after the start
  where that day is not before the start, then every ``interval`` months
  (x 3 for quarterly, x 12 for yearly).

A period runs from its occurrence to the day before the next one.
"""

from __future__ import annotations

import calendar
import datetime as dt

FREQUENCIES = ("daily", "weekly", "monthly", "quarterly", "yearly")
MONTHS = {"monthly": 1, "quarterly": 3, "yearly": 12}


def _clamped(year: int, month: int, day: int) -> dt.date:
    return dt.date(year, month, min(day, calendar.monthrange(year, month)[1]))


def _add_months(year: int, month: int, months: int) -> tuple[int, int]:
    total = year * 12 + (month - 1) + months
    return total // 12, total % 12 + 1


def occurrence(frequency: str, interval: int, start: dt.date, anchor_day: int | None, n: int) -> dt.date:
    """The start date of period ``n`` (0-based)."""
    if frequency == "daily":
        return start + dt.timedelta(days=n * interval)
    if frequency == "weekly":
        weekday = anchor_day or start.isoweekday()
        first = start + dt.timedelta(days=(weekday - start.isoweekday()) % 7)
        return first + dt.timedelta(weeks=n * interval)
    step = MONTHS[frequency] * interval
    day = anchor_day or start.day
    year, month = start.year, start.month
    if _clamped(year, month, day) < start:
        year, month = _add_months(year, month, 1)
    year, month = _add_months(year, month, n * step)
    return _clamped(year, month, day)


def validate(frequency: str, interval: int, anchor_day: int | None) -> str | None:
    """Why these schedule settings are wrong, or None."""
    if frequency not in FREQUENCIES:
        return f"frequency {frequency!r} is not one of {', '.join(FREQUENCIES)}"
    if interval < 1:
        return f"interval must be at least 1 (got {interval})"
    if anchor_day is not None:
        if frequency == "weekly" and not 1 <= anchor_day <= 7:
            return f"anchor day of a weekly template is an ISO weekday 1-7 (got {anchor_day})"
        if frequency in MONTHS and not 1 <= anchor_day <= 31:
            return f"anchor day must be 1-31 (got {anchor_day})"
    return None
