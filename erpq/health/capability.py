"""The health capability: ``erp:check-system-health`` and its ``[health]`` thresholds."""

from __future__ import annotations

from dataclasses import dataclass

from ..capability import Capability, PanelSpec

METRICS = ("cpu", "memory", "disk", "db_connections", "queue", "failed_per_hour")


@dataclass
class HealthSettings:
    """``[health]``: warning and critical thresholds per metric."""

    cpu_warning: float = 80.0
    cpu_critical: float = 95.0
    memory_warning: float = 80.0
    memory_critical: float = 95.0
    disk_warning: float = 80.0
    disk_critical: float = 95.0
    db_connections_warning: int = 80
    db_connections_critical: int = 150
    queue_warning: int = 1_000
    queue_critical: int = 10_000
    failed_per_hour_warning: int = 10
    failed_per_hour_critical: int = 100
    #: A probe job not run this long after it was enqueued is failed (workers stopped or stuck).
    probe_timeout_s: float = 60.0

    def validate(self, err) -> None:
        if self.probe_timeout_s <= 0:
            raise err("probe_timeout_s", "must be positive")
        for metric in METRICS:
            warn, crit = getattr(self, f"{metric}_warning"), getattr(self, f"{metric}_critical")
            if warn < 0 or crit < warn:
                raise err(f"{metric}_critical", f"must be >= health.{metric}_warning ({warn})")


CAPABILITY = Capability(
    "health",
    title="Health",
    description="CPU, memory, disk, database connections, queue size and failures, per host and tenant",
    modules=("erpq.health.service", "erpq.health.probe"),
    settings=HealthSettings,
    cli="erpq.health.cli:register",
    ops="erpq.health.ops:HealthOps",
    panels=(PanelSpec("health", "Health", view="tui.views.health:HealthView", order=40),),
)
