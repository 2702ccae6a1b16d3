"""Health: gauges against thresholds, sparklines of recent readings, tenants."""

from __future__ import annotations

import json
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding

from ..fmt import clock, sparkline, status_text
from ..widgets.gauge import Gauge
from ..widgets.keyed_table import KeyedTable
from .base import View

#: (threshold key, label, unit, reading -> value)
METRICS: list[tuple[str, str, str, Any]] = [
    ("cpu", "CPU", "%", lambda h: h.cpu_percent),
    ("memory", "Memory", "%", lambda h: h.memory_percent),
    ("disk", "Disk", "%", lambda h: h.disk_percent),
    ("db_connections", "DB conns", "", lambda h: h.db_connections),
    ("queue", "Queue size", "", lambda h: h.queue_pending + h.queue_scheduled),
    ("failed_per_hour", "Failed/hour", "", lambda h: h.failed_last_hour),
]


class HealthView(View):
    """Host gauges with thresholds and history; one row per tenant."""

    TITLE = "Health"
    KEY = "health"
    COLUMNS = [("tenant", "Tenant", 16), ("status", "Status", 8), ("pending", "Pending", 8),
               ("scheduled", "Sched", 7), ("failed", "Fail/h", 7), ("checked", "Checked", 8)]

    BINDINGS = [
        Binding("c", "check", "Check now", id="health.check"),
        Binding("enter", "detail", "Detail", show=False, id="health.detail"),
    ]

    def compose_body(self) -> ComposeResult:
        for key, label, unit, _ in METRICS:
            yield Gauge(label, unit, id=f"gauge-{key}", classes="gauge")
        yield KeyedTable(self.COLUMNS, id="table")

    def fetch(self, ops: Any) -> Any:
        return ops.health.latest(), ops.health.history(None, 40), ops.health.thresholds()

    def show(self, data: Any) -> None:
        latest, history, thresholds = data
        host = next((h for h in latest if h.tenant_id is None), None)
        for key, _label, _unit, get in METRICS:
            warn, crit = thresholds[key]
            value = get(host) if host is not None else None
            self.query_one(f"#gauge-{key}", Gauge).show(value, warn, crit, [get(h) for h in history])
        tz, now = self.console.tz, self.console.now()
        if host is None:
            self.head("no readings yet (erp:check-system-health writes them; c checks now)")
        else:
            self.head(f"host {host.status.upper()} at {clock(host.checked_at, tz, now)} · "
                      f"{len(latest) - 1} tenants · {len(history)} readings in history")
        f = self.filter_text.lower()
        name = self.console.tenant
        tenants = [h for h in latest if h.tenant_id is not None and (not f or f in name(h.tenant_id).lower())]
        rows = [(str(h.tenant_id), [name(h.tenant_id), status_text(h.status), f"{h.queue_pending:,}",
                                    f"{h.queue_scheduled:,}", f"{h.failed_last_hour:,}",
                                    clock(h.checked_at, tz, now)]) for h in tenants]
        self.table.sync(rows, {str(h.tenant_id): h for h in tenants})
        self.refresh_info()

    def describe(self, h: Any) -> str:
        return f"{self.console.tenant(h.tenant_id) or h.tenant}: {h.status} · queue {h.queue_pending} pending " \
               f"{h.queue_scheduled} scheduled · {h.failed_last_hour} failed in the last hour"

    def detail(self, ops: Any, h: Any) -> tuple[str, str]:
        hist = ops.health.history(h.tenant_id, 30)
        lines = [json.dumps(h.to_dict(), indent=2, default=str), "", "Recent readings:"]
        tz = self.console.tz
        lines += [f"  {clock(r.checked_at, tz)}  {r.status:<8} pending {r.queue_pending:<6} "
                  f"failed/h {r.failed_last_hour}" for r in reversed(hist)]
        if h.tenant_id is None:  # the host: the queue round trip over time, and the queue per tenant
            lines += _probe_lines(ops, tz) + _tenant_queue_lines(ops, self.console.tenant)
        who = self.console.tenant_long(h.tenant_id) if h.tenant_id is not None else h.tenant
        return f"health of {who}", "\n".join(lines)

    def action_check(self) -> None:
        self.console.perform("check health now", lambda ops: ops.health.check(),
                             done=lambda rows: f"health checked: {len(rows)} readings")


def _probe_lines(ops: Any, tz: Any) -> list[str]:
    """The probe job's end-to-end latency (wait + run) over time, and failures."""
    probes = ops.health.probes(60)
    if not probes:
        return ["", "Queue round trip: no probe yet (each health check sends one)"]
    latency = [(p.wait_s or 0) + (p.run_s or 0) for p in probes if p.status == "ok"]
    last = probes[-1]
    lines = ["", f"Queue round trip (probe job, last {len(probes)}): {sparkline(latency, 40) if latency else '-'}",
             f"  latest {clock(last.enqueued_at, tz)} {last.status}"
             + (f" waited {last.wait_s:.3f}s ran {last.run_s:.3f}s" if last.wait_s is not None else "")
             + (f": {last.error}" if last.error else "")]
    failed = sum(1 for p in probes if p.status == "failed")
    if failed:
        lines.append(f"  {failed} failed probe(s): no worker took the job in time")
    return lines


def _tenant_queue_lines(ops: Any, name: Any = None) -> list[str]:
    """The queue per tenant; ``name(tenant_id)`` gives the name shown (default: the slug)."""
    rows = ops.queue_by_tenant()
    if not rows:
        return []
    lines = ["", "Queue per tenant:  tenant        pending  running  oldest     done/5m"]
    for r in rows:
        age = f"{r.oldest_age_s:.0f}s" if r.oldest_age_s is not None else "-"
        lines.append(f"                   {(name(r.tenant_id) if name and r.tenant_id else r.tenant)[:12]:<12} {r.pending:>8,} {r.running:>8} {age:>8} {r.done_last_5m:>9}")
    return lines
