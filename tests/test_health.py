"""erp:check-system-health against real databases: host and per-tenant rows,
database connections per backend, thresholds, and the periodic task end to end."""

from __future__ import annotations

import pytest

from conftest import make_settings
from erpq.health import service as health
from erpq.ops import Actor, Ops
from erpq.runtime import Runtime, job, set_current


@job("HealthProbeJob")
def health_probe_job(tenant_id=None):
    raise RuntimeError("probe failed")


def _check(rt: Runtime):
    with rt.session() as s:
        rows = health.check_system_health(s, rt)
        return [(r.tenant_id, r.status, r.queue_pending, r.failed_last_hour, r.db_connections, r.details)
                for r in rows]


def _tenants(rt: Runtime, *slugs: str) -> list[int]:
    ops = Ops(rt, Actor("tester", None, "cli"))
    return [ops.add_tenant(slug).id for slug in slugs]


def test_host_row_and_one_row_per_active_tenant(runtime):
    a, b = _tenants(runtime, "acme", "globex")
    for _ in range(3):
        runtime.enqueue("HealthProbeJob", tenant_id=a)
    runtime.enqueue("HealthProbeJob", tenant_id=b)
    rows = _check(runtime)
    assert [r[0] for r in rows] == [None, a, b]
    host, ra, rb = rows
    assert host[2] == 4 and ra[2] == 3 and rb[2] == 1  # pending: all, per tenant
    assert host[4] is None  # SQLite: database connections not applicable
    latest = Ops(runtime).health.latest()
    assert [h.tenant for h in latest] == ["host", "acme", "globex"]
    assert 0 <= latest[0].cpu_percent <= 100 and 0 < latest[0].memory_percent <= 100
    assert 0 < latest[0].disk_percent <= 100


def test_failures_per_tenant_and_thresholds(tmp_path):
    rt = Runtime(make_settings(tmp_path, health={"failed_per_hour_warning": 2, "failed_per_hour_critical": 3,
                                                 "queue_warning": 1, "queue_critical": 100}))
    set_current(rt)
    try:
        a, b = _tenants(rt, "acme", "globex")
        for tenant in (a, a, a, b):
            rt.enqueue("HealthProbeJob", tenant_id=tenant)
        while (task := rt.huey.dequeue()) is not None:
            rt.huey.execute(task)
        rt.huey.storage.release_pending()
        rt.enqueue("HealthProbeJob", tenant_id=b)
        host, ra, rb = _check(rt)
        assert (host[3], ra[3], rb[3]) == (4, 3, 1)
        assert host[1] == "critical" and ra[1] == "critical"
        assert rb[1] == "warning"  # one pending job crosses queue_warning=1
        assert ra[5]["crossed"]["failed_per_hour"] == {"value": 3, "critical": 3}
        assert rb[5]["crossed"] == {"queue": {"value": 1, "warning": 1}}
    finally:
        set_current(None)
        rt.close()


def test_grade_ignores_missing_metrics(runtime):
    status, details = health.grade(runtime, {"cpu": None, "disk": 10.0})
    assert status == "ok" and details == {"crossed": {}}


@pytest.mark.parametrize("backend", ["postgres", "mariadb"])
def test_database_connections_on_servers(tmp_path, backend, request):
    url = request.getfixturevalue("pg_url" if backend == "postgres" else "mariadb_url")
    from erpq.db import make_engine, upgrade

    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    rt = Runtime(make_settings(tmp_path, database={"url": url}))
    try:
        host = _check(rt)[0]
        assert isinstance(host[4], int) and host[4] >= 1
    finally:
        rt.close()


def test_the_periodic_task_runs_through_the_queue(runtime):
    from erpq.runtime import EmbeddedRunner

    ops = Ops(runtime, Actor("tester", None, "cli"))
    ops.trigger("erp:check-system-health")
    runner = EmbeddedRunner(runtime, workers=1, periodic=False)
    runner.start()
    try:
        import time

        deadline = time.monotonic() + 30
        while not ops.health.latest() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        runner.stop()
    assert ops.health.latest()[0].tenant == "host"
    entry = next(e for e in ops.schedule() if e.name == "erp:check-system-health")
    assert entry.last_status == "success" and entry.last_duration_s > 0
