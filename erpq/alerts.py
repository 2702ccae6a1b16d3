"""System-level alerts: what an on-call operator must not miss.

``collect(ops)`` reads through Ops only and returns ``Alert`` records, worst
first. The core contributes the fleet alerts (no runner alive, a runner that
died, the scheduler not firing, jobs failing now); every Ops section may
contribute its own by defining ``alerts(now) -> list[Alert]`` (health: a tenant
critical; webhooks: deliveries failing, subscriptions disabled). A section whose
read fails gives an alert saying so instead of hiding the others.

A runner on this host is dead as soon as its PID is gone (a SIGKILLed
consumer is seen at the next poll, not after ``runner.dead_after_s``); a runner
elsewhere is judged by its heartbeat age.

Used by the console's alert line, ``erpq alerts`` and the metrics export.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from dataclasses import dataclass
from typing import Any

from .ops.base import _Record

CRITICAL, WARNING = "critical", "warning"
#: A dead runner is reported for this long after its last heartbeat (then only
#: "no runner alive" remains, if it is still true).
DEAD_RUNNER_WINDOW_S = 3600.0
#: Jobs failed within this window make a "jobs failing" warning.
FAILING_WINDOW_S = 900.0


@dataclass
class Alert(_Record):
    severity: str  # critical | warning
    source: str  # "runners", "scheduler", "failed", or a capability name
    text: str  # one line, no secrets
    command: str = ""  # an erpq command that shows more


def pid_state(pid: int) -> bool:
    """Whether process ``pid`` on this host is alive (a zombie is dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def runner_dead_reason(r: Any, now: dt.datetime, dead_after_s: float, host: str | None = None) -> str | None:
    """Why runner record ``r`` (a ``RunnerInfo``) is dead, or None when alive."""
    if r.stopped_at is not None:
        return "stopped"
    host = host or socket.gethostname()
    if r.host == host and not pid_state(r.pid):
        return f"pid {r.pid} gone"
    age = (now - r.heartbeat_at).total_seconds()
    if age > dead_after_s:
        return f"no heartbeat for {_age(age)}"
    return None


def _age(seconds: float) -> str:
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h"


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def fleet_alerts(ops: Any, now: dt.datetime, counts: dict[str, int] | None = None) -> list[Alert]:
    settings = ops.rt.settings if hasattr(ops, "rt") else ops.settings
    dead_after = settings.runner.dead_after_s
    out: list[Alert] = []
    runners = ops.runners()
    alive, dead = [], []
    for r in runners:
        reason = runner_dead_reason(r, now, dead_after)
        if reason is None:
            alive.append(r)
        elif reason != "stopped" and (now - r.heartbeat_at).total_seconds() <= DEAD_RUNNER_WINDOW_S:
            dead.append((r, reason))
    counts = counts if counts is not None else ops.queue_counts()
    waiting = counts.get("pending", 0)
    if not alive:
        out.append(Alert(CRITICAL, "runners", f"no runner alive: jobs are not processed ({waiting:,} pending)",
                         "erpq runner list --all"))
    for r, reason in dead:
        out.append(Alert(CRITICAL, "runners", f"runner {r.host}:{r.pid} died ({reason})", "erpq runner list --all"))
    if alive and not any(r.periodic for r in alive):
        out.append(Alert(CRITICAL, "scheduler", "no scheduler: no alive runner runs periodic tasks",
                         "erpq runner list"))
    elif alive:
        late = _late_tasks(ops, settings, now, min(r.started_at for r in alive if r.periodic))
        if late:
            name, tick = late[0]
            out.append(Alert(CRITICAL, "scheduler",
                             f"scheduler not firing: {name} due {_age((now - tick).total_seconds())} ago, not run"
                             + (f" (+{len(late) - 1} more)" if len(late) > 1 else ""), "erpq schedule list"))
    failing = _recent_failures(ops, now)
    if failing:
        out.append(Alert(WARNING, "failed", f"{_plural(failing, 'job')} failed in the last "
                         f"{int(FAILING_WINDOW_S // 60)} min", "erpq queue failed"))
    return out


def _late_tasks(ops: Any, settings: Any, now: dt.datetime, up_since: dt.datetime) -> list[tuple[str, dt.datetime]]:
    """Unpaused periodic tasks whose latest tick (older than a grace period, and
    after a scheduler was up) left no run: the scheduler is not firing."""
    from .runtime.schedule import latest_tick

    grace = max(2 * settings.runner.periodic_check_s + 30, settings.runner.dead_after_s)
    late = []
    for e in ops.schedule():
        if e.paused or e.running_since is not None:
            continue
        try:
            tick = latest_tick(e.expression, now - dt.timedelta(seconds=grace), settings.schedule.timezone)
        except Exception:  # a bad expression is config's business, not an alert
            continue
        if tick <= up_since:
            continue
        if e.last_run_at is None or e.last_run_at < tick - dt.timedelta(seconds=5):
            late.append((e.name, tick))
    late.sort(key=lambda p: p[1])
    return late


def _recent_failures(ops: Any, now: dt.datetime) -> int:
    recent = getattr(ops, "failed_since", None)
    if recent is not None:
        return recent(now - dt.timedelta(seconds=FAILING_WINDOW_S))
    return 0


def collect(ops: Any, now: dt.datetime | None = None, counts: dict[str, int] | None = None) -> list[Alert]:
    """Every alert, critical first; never raises for one broken source."""
    now = now or dt.datetime.now(dt.UTC)
    alerts: list[Alert] = []
    try:
        alerts += fleet_alerts(ops, now, counts)
    except Exception as exc:
        alerts.append(Alert(CRITICAL, "runners", f"cannot read runners: {type(exc).__name__}: {_line(exc)}"))
    names = ops.section_names() if hasattr(ops, "section_names") else []
    for name in names:
        try:
            section = ops.section(name)
            method = getattr(section, "alerts", None)
            if method is not None:
                alerts += method(now)
        except Exception as exc:
            alerts.append(Alert(WARNING, name, f"{name}: cannot read alerts: {type(exc).__name__}: {_line(exc)}"))
    alerts.sort(key=lambda a: a.severity != CRITICAL)
    return alerts


def _line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:120] if text else ""


__all__ = ["CRITICAL", "WARNING", "Alert", "collect", "pid_state", "runner_dead_reason"]
