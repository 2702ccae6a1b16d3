"""Small text formatters shared by the views (times, ages, countdowns, bars)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from rich.text import Text

STATUS_STYLE = {
    "success": "green", "ok": "green", "running": "cyan", "enqueued": "cyan",
    "retrying": "yellow", "warning": "yellow", "skipped": "dim", "cancelled": "dim",
    "failed": "bold red", "critical": "bold red", "abandoned": "bold red", "revoked": "dim",
    "expired": "dim",
}


def status_text(status: str | None) -> Text:
    if not status:
        return Text("—", style="dim")
    return Text(status, style=STATUS_STYLE.get(status, ""))


def clock(t: dt.datetime | None, tz: str = "UTC", now: dt.datetime | None = None) -> str:
    """``HH:MM:SS`` when on the day of ``now``, else ``MM-DD HH:MM``, in ``tz``."""
    if t is None:
        return "—"
    zone = ZoneInfo(tz)
    local = t.astimezone(zone)
    if now is not None and now.astimezone(zone).date() == local.date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%m-%d %H:%M")


def span(seconds: float | None) -> str:
    """A length of time, short: ``42s``, ``4m12s``, ``3h05m``, ``2d04h``."""
    if seconds is None:
        return "—"
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def ago(t: dt.datetime | None, now: dt.datetime) -> str:
    if t is None:
        return "—"
    return span((now - t).total_seconds()) + " ago"


def stamp(t: dt.datetime | None, tz: str, now: dt.datetime) -> str:
    """Absolute and relative: ``17:03:12 (4m12s ago)`` / ``11-28 09:00 (1d08h ago)``."""
    if t is None:
        return "—"
    delta = (now - t).total_seconds()
    rel = f"{span(delta)} ago" if delta >= 0 else f"in {span(-delta)}"
    return f"{clock(t, tz, now)} ({rel})"


def countdown(t: dt.datetime | None, now: dt.datetime) -> str:
    """Time until ``t``; only the seconds of the last hour tick."""
    if t is None:
        return "—"
    left = (t - now).total_seconds()
    if left <= 0:
        return "due"
    return "in " + span(left)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 10:
        return f"{seconds:.2f}s"
    return span(seconds)


def bar(fraction: float, width: int = 12) -> str:
    fraction = min(1.0, max(0.0, fraction))
    full = round(fraction * width)
    return "█" * full + "░" * (width - full)


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], width: int = 20) -> str:
    vals = [v for v in values if v is not None][-width:]
    if not vals:
        return ""
    lo, hi = min(vals), max(vals)
    if hi == lo:
        return SPARKS[0 if hi == 0 else 3] * len(vals)
    return "".join(SPARKS[min(7, int((v - lo) / (hi - lo) * 7.999))] for v in vals)


def count(n: int) -> str:
    return f"{n:,}"


def one_line(text: str | None, width: int = 200) -> str:
    if not text:
        return ""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"
