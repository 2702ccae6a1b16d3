"""Ops section ``health``: the latest readings, their history, thresholds, a check now."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..models import SystemHealth, Tenant
from ..ops import OpsSection, audited
from ..ops.base import _Record
from .capability import METRICS
from .probe import HealthProbe, add_probe, fail_lost_probes, liveness
from .service import check_system_health


@dataclass
class ProbeInfo(_Record):
    id: int
    enqueued_at: dt.datetime
    status: str  # pending | ok | failed
    wait_s: float | None
    run_s: float | None
    runner: str | None
    error: str | None


@dataclass
class HealthInfo(_Record):
    tenant_id: int | None
    tenant: str  # slug, or "host"
    checked_at: dt.datetime
    status: str
    cpu_percent: float | None
    memory_percent: float | None
    disk_percent: float | None
    db_connections: int | None
    queue_pending: int
    queue_scheduled: int
    failed_last_hour: int
    details: Any = None


class HealthOps(OpsSection):
    """Readings of the host and every tenant (``ops.health``)."""

    def latest(self) -> list[HealthInfo]:
        """The latest reading of the host and of every tenant."""
        with self._read() as s:
            latest = s.scalar(sa.select(sa.func.max(SystemHealth.checked_at)).where(SystemHealth.tenant_id.is_(None)))
            if latest is None:
                return []
            rows = s.execute(sa.select(SystemHealth, Tenant.slug)
                             .outerjoin(Tenant, Tenant.id == SystemHealth.tenant_id)
                             .where(SystemHealth.checked_at == latest)
                             .order_by(SystemHealth.tenant_id.is_not(None), Tenant.slug)).all()
            return [_health_info(h, slug) for h, slug in rows]

    def alerts(self, now=None) -> list:
        """Critical on any tenant (or the host) at the latest reading: one alert naming them."""
        from ..alerts import CRITICAL, Alert

        critical = [h for h in self.latest() if h.status == "critical"]
        if not critical:
            return []
        known = self.ops.tenant_names()
        names = ", ".join("host" if h.tenant_id is None else known.get(h.tenant_id) or f"#{h.tenant_id}"
                          for h in critical[:4]) + (" …" if len(critical) > 4 else "")
        return [Alert(CRITICAL, "health", f"health critical: {names}", "erpq health")]

    def metrics(self) -> list:
        """Prometheus families (``erpq.metrics``): the latest reading of the host and each tenant."""
        latest = self.latest()
        level = {"ok": 0, "warning": 1, "critical": 2}
        fams = [("health_status", "gauge", "Latest health status: 0 ok, 1 warning, 2 critical.",
                 [({"tenant": h.tenant}, level.get(h.status, 2)) for h in latest])]
        for field in ("cpu_percent", "memory_percent", "disk_percent", "db_connections", "queue_pending",
                      "failed_last_hour"):
            fams.append((f"health_{field}", "gauge", f"Latest health reading: {field.replace('_', ' ')}.",
                         [({"tenant": h.tenant}, getattr(h, field)) for h in latest
                          if getattr(h, field, None) is not None]))
        return fams

    def history(self, tenant_id: int | None = None, limit: int = 60) -> list[HealthInfo]:
        """Readings of the host (or a tenant), oldest first, the last ``limit`` of them."""
        with self.rt.read_session() as s:
            q = sa.select(SystemHealth, Tenant.slug).outerjoin(Tenant, Tenant.id == SystemHealth.tenant_id)
            q = q.where(SystemHealth.tenant_id.is_(None) if tenant_id is None else SystemHealth.tenant_id == tenant_id)
            rows = s.execute(q.order_by(SystemHealth.id.desc()).limit(limit)).all()
            return [_health_info(h, slug) for h, slug in reversed(rows)]

    def thresholds(self) -> dict[str, tuple[float, float]]:
        h = self.settings
        return {m: (getattr(h, f"{m}_warning"), getattr(h, f"{m}_critical")) for m in METRICS}

    @audited
    def check(self) -> list[HealthInfo]:
        """Take a reading now (what erp:check-system-health does) and return it."""
        self._act("health.check", None, "erpq health --check")
        with self._tx() as s:
            check_system_health(s, self.rt)
        return self.latest()


    def probes(self, limit: int = 60) -> list[ProbeInfo]:
        """The last ``limit`` probes, oldest first (the console plots wait_s + run_s)."""
        with self.rt.session() as s:
            fail_lost_probes(self.rt, s)
            rows = s.scalars(sa.select(HealthProbe).order_by(HealthProbe.id.desc()).limit(limit)).all()
            return [ProbeInfo(p.id, p.enqueued_at, p.status, p.wait_s, p.run_s, p.runner, p.error)
                    for p in reversed(rows)]

    def liveness(self):
        """Probe outcome, live runners and schedulers, latest tick: from the record."""
        return liveness(self.rt)

    @audited
    def send_probe(self) -> int:
        """Send a probe through the queue (its row commits with the audit row, its job
        is enqueued after); returns the probe's id."""
        self._act("health.probe", None, "erpq health probe")
        rt = self.rt
        with self._tx() as s:
            probe_id, enqueue = add_probe(rt, s)

        def undo() -> None:  # never enqueued: no probe was sent
            with rt.session() as s2:
                s2.execute(sa.delete(HealthProbe).where(HealthProbe.id == probe_id))

        self._after_commit(enqueue, undo)
        return probe_id

    def probe(self, wait_s: float | None = None) -> ProbeInfo:
        """Send a probe through the queue and wait for its round trip (at most
        ``wait_s``, default ``health.probe_timeout_s``); a probe not run by then is failed."""
        import time

        rt = self.rt
        probe_id = self.send_probe()
        deadline = time.monotonic() + (wait_s if wait_s is not None else self.settings.probe_timeout_s)
        while True:
            with rt.read_session() as s:
                p = s.get(HealthProbe, probe_id)
                if p.status != "pending":
                    return ProbeInfo(p.id, p.enqueued_at, p.status, p.wait_s, p.run_s, p.runner, p.error)
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        from ..db import session_scope, utcnow

        with session_scope(rt.Session) as s:
            p = s.get(HealthProbe, probe_id)
            if p.status == "pending":
                waited = (utcnow() - p.enqueued_at).total_seconds()
                p.status, p.error = "failed", f"not run within {waited:.1f}s: no worker took it (workers stopped or stuck)"
            return ProbeInfo(p.id, p.enqueued_at, p.status, p.wait_s, p.run_s, p.runner, p.error)


def _health_info(h: SystemHealth, slug: str | None) -> HealthInfo:
    return HealthInfo(h.tenant_id, slug or "host", h.checked_at, h.status, h.cpu_percent, h.memory_percent,
                      h.disk_percent, h.db_connections, h.queue_pending, h.queue_scheduled, h.failed_last_hour,
                      h.details)
