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
from .service import check_system_health


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
        with self.rt.read_session() as s:
            latest = s.scalar(sa.select(sa.func.max(SystemHealth.checked_at)).where(SystemHealth.tenant_id.is_(None)))
            if latest is None:
                return []
            rows = s.execute(sa.select(SystemHealth, Tenant.slug)
                             .outerjoin(Tenant, Tenant.id == SystemHealth.tenant_id)
                             .where(SystemHealth.checked_at == latest)
                             .order_by(SystemHealth.tenant_id.is_not(None), Tenant.slug)).all()
            return [_health_info(h, slug) for h, slug in rows]

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
        with self.rt.session() as s:
            check_system_health(s, self.rt)
        return self.latest()


def _health_info(h: SystemHealth, slug: str | None) -> HealthInfo:
    return HealthInfo(h.tenant_id, slug or "host", h.checked_at, h.status, h.cpu_percent, h.memory_percent,
                      h.disk_percent, h.db_connections, h.queue_pending, h.queue_scheduled, h.failed_last_hour,
                      h.details)
