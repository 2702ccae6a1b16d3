"""erp:check-system-health: host and per-tenant health readings.

One reading is a row per check for the host (``tenant_id`` NULL) and one per
active tenant, all with the same ``checked_at``. The host row carries CPU,
memory, disk (of the partition holding the data), database connections
(PostgreSQL ``pg_stat_activity``, MySQL/MariaDB ``Threads_connected``, NULL for
SQLite: not applicable), queue size and failed jobs in the last hour; a tenant
row carries that tenant's pending and failed jobs. Each row's status is ok,
warning or critical against ``[health]`` thresholds in config, and ``details``
names every metric that crossed one.
"""

from __future__ import annotations

import datetime as dt
import socket
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import sqlalchemy as sa
from sqlalchemy.orm import Session

from ..db import utcnow
from ..models import FailedJob, SystemHealth, Tenant
from ..runtime import current
from .capability import CAPABILITY

if TYPE_CHECKING:
    from ..runtime import Runtime

#: Pending jobs looked at to count per tenant (each must be decoded).
TENANT_SCAN_LIMIT = 50_000


@CAPABILITY.periodic("erp:check-system-health", cron="*/5 * * * *",
                     description="Measure CPU, memory, disk, DB connections, queue and failures, per host and tenant")
def check_system_health_task() -> None:
    rt = current()
    with rt.session() as s:
        check_system_health(s, rt)


def check_system_health(session: Session, rt: Runtime) -> list[SystemHealth]:
    """Take one reading, store its rows in ``session`` and return them."""
    now = utcnow()
    host = socket.gethostname()
    cpu = psutil.cpu_percent(interval=0.2)
    memory = psutil.virtual_memory().percent
    disk = psutil.disk_usage(str(data_dir(rt))).percent
    connections = db_connections(session)
    pending, scheduled = rt.huey.pending_count(), rt.huey.scheduled_count()
    since = now - dt.timedelta(hours=1)
    failed_by_tenant = dict(session.execute(
        sa.select(FailedJob.tenant_id, sa.func.count()).where(FailedJob.failed_at >= since)
        .group_by(FailedJob.tenant_id)).all())
    failed_total = sum(failed_by_tenant.values())

    host_row = SystemHealth(
        tenant_id=None, checked_at=now, host=host, cpu_percent=cpu, memory_percent=memory,
        disk_percent=disk, db_connections=connections, queue_pending=pending,
        queue_scheduled=scheduled, failed_last_hour=failed_total,
    )
    host_row.status, host_row.details = grade(rt, {
        "cpu": cpu, "memory": memory, "disk": disk, "db_connections": connections,
        "queue": pending + scheduled, "failed_per_hour": failed_total,
    })
    rows = [host_row]

    pending_by_tenant, scanned = pending_per_tenant(rt)
    for tenant_id in session.scalars(sa.select(Tenant.id).where(Tenant.is_active.is_(True)).order_by(Tenant.id)):
        t_pending = pending_by_tenant.get(tenant_id, 0)
        t_failed = failed_by_tenant.get(tenant_id, 0)
        row = SystemHealth(
            tenant_id=tenant_id, checked_at=now, host=host, cpu_percent=cpu, memory_percent=memory,
            disk_percent=disk, db_connections=connections, queue_pending=t_pending,
            queue_scheduled=0, failed_last_hour=t_failed,
        )
        row.status, row.details = grade(rt, {"queue": t_pending, "failed_per_hour": t_failed})
        if scanned < pending:
            row.details["pending_counted_of"] = scanned
        rows.append(row)
    # The round trip: the previous probe's outcome goes into this reading, and a
    # new probe is sent through the queue for the next one to read.
    from .probe import liveness, send_probe

    alive = liveness(rt, session)
    host_row.details["probe"] = {"status": alive.probe_status, "wait_s": alive.probe_wait_s,
                                 "run_s": alive.probe_run_s, "error": alive.probe_error}
    host_row.details["runners"] = {"live": alive.live_runners, "schedulers": alive.live_schedulers,
                                   "last_tick_at": alive.last_tick_at.isoformat() if alive.last_tick_at else None}
    if alive.status == "critical":
        host_row.status = "critical"
    send_probe(rt, session)
    session.add_all(rows)
    session.flush()
    return rows


def grade(rt: Runtime, values: dict[str, float | None]) -> tuple[str, dict]:
    """ok / warning / critical for a set of metrics, and which crossed what."""
    h = rt.settings.health
    status, crossed = "ok", {}
    for metric, value in values.items():
        if value is None:
            continue
        warn, crit = getattr(h, f"{metric}_warning"), getattr(h, f"{metric}_critical")
        if value >= crit:
            crossed[metric] = {"value": value, "critical": crit}
            status = "critical"
        elif value >= warn:
            crossed[metric] = {"value": value, "warning": warn}
            if status == "ok":
                status = "warning"
    return status, {"crossed": crossed}


def data_dir(rt: Runtime) -> Path:
    """The directory holding the data: the SQLite database, else the queue file, else the config dir."""
    s = rt.settings
    for url in (s.database.url, s.queue.url):
        path = s.sqlite_path(url)
        if path is not None:
            return path.parent if path.parent.exists() else Path(s.base_dir)
    return Path(s.base_dir)


def db_connections(session: Session) -> int | None:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return session.scalar(sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"))
    if dialect in ("mysql", "mariadb"):
        row = session.execute(sa.text("SHOW GLOBAL STATUS LIKE 'Threads_connected'")).first()
        return int(row[1]) if row else None
    return None  # SQLite: no server, not applicable


def pending_per_tenant(rt: Runtime) -> tuple[Counter, int]:
    """Pending jobs per tenant id, from the first TENANT_SCAN_LIMIT queued jobs."""
    counts: Counter = Counter()
    storage, scanned = rt.huey.storage, 0
    while scanned < TENANT_SCAN_LIMIT:
        page = storage.enqueued_page(scanned, 1000)
        if not page:
            break
        scanned += len(page)
        for _key, data in page:
            try:
                task = rt.huey.deserialize_task(data)
            except Exception:
                continue
            tenant = task.erpq.get("tenant_id") or task.kwargs.get("tenant_id")
            if tenant is not None:
                counts[tenant] += 1
    return counts, scanned
