"""Fixtures for the console tests: a fixed clock and fixed data (``FakeOps``), and
helpers to seed a real runtime."""

from __future__ import annotations

import datetime as dt
from typing import Any

from erpq.config import from_dict
from erpq.health.ops import HealthInfo
from erpq.ops import (
    BatchInfo,
    FailedInfo,
    FailureCluster,
    JobInfo,
    LockInfo,
    Page,
    RunInfo,
    RunnerInfo,
    ScheduleEntry,
)
from erpq.ops.stats import ALL, TaskThroughput
from erpq.webhooks.ops import DeliveryInfo, WebhookInfo

NOW = dt.datetime(2024, 5, 6, 12, 0, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    """``NOW`` plus ``seconds`` (negative: in the past)."""
    return NOW + dt.timedelta(seconds=seconds)


def fixed_clock() -> dt.datetime:
    return NOW


RUNNER = "ops-1:4242:abc123"


class FakeOps:
    """The read side of ``erpq.ops.Ops`` with fixed data, for snapshots."""

    read_only = False

    def __init__(self, read_only: bool = False) -> None:
        self.read_only = read_only
        self.settings = from_dict({}, source="<fake>")
        self.sections: dict[str, Any] = {"health": FakeHealth(), "webhooks": FakeWebhooks()}

    def queue_counts(self) -> dict[str, int]:
        return {"pending": 100_000, "scheduled": 2, "running": 1, "failed": 3}

    def schedule(self) -> list[ScheduleEntry]:
        return [
            ScheduleEntry("crm:check-activity-reminders", "*/5 * * * *", "Every 5 minutes", False,
                          at(-60), "success", 0.21, at(240), summary="Send due activity reminders"),
            ScheduleEntry("erp:check-system-health", "*/5 * * * *", "Every 5 minutes", False,
                          at(-1), "running", None, at(299), running_since=at(-1), lock_holder=RUNNER,
                          summary="Measure CPU, memory, disk, queue"),
            ScheduleEntry("erp:generate-recurring-invoices", "0 1 * * *", "At 01:00", True,
                          at(-39600), "failed", 3.4, None, summary="Create due recurring invoices"),
            ScheduleEntry("erp:generate-scheduled-reports", "* * * * *", "Every minute", False,
                          None, None, None, at(60), summary="Export due report schedules"),
        ]

    def _page(self, items: list, offset: int, limit: int, total: int | None = None) -> Page:
        return Page(items[offset: offset + limit], len(items) if total is None else total, offset, limit)

    def pending(self, offset: int = 0, limit: int = 50, search: str | None = None) -> Page:
        items = [JobInfo(f"{i:08x}-aaaa-bbbb-cccc-000000000000", "DeliverWebhookJob", f"delivery_id={i}",
                         "pending", enqueued_at=at(-30 - i), tenant_id=1 + i % 3, key=f"#{i}")
                 for i in range(1, 31)]
        if search:
            items = [j for j in items if search in j.args_summary]
        return self._page(items, offset, limit, 100_000 if not search else None)

    def scheduled(self, offset: int = 0, limit: int = 50, search: str | None = None) -> Page:
        items = [JobInfo("5c4e0000-0000-0000-0000-000000000001", "ExportReportJob", "schedule_id=7", "scheduled",
                         eta=at(90), attempt=2, key="#900"),
                 JobInfo("5c4e0000-0000-0000-0000-000000000002", "SendEmailCampaignJob", "campaign_id=3",
                         "scheduled", eta=at(3600), key="#901")]
        return self._page(items, offset, limit)

    def running(self, offset: int = 0, limit: int = 50, search: str | None = None) -> Page:
        items = [JobInfo("7a7a0000-0000-0000-0000-000000000001", "ImportDataJob", "import_id=12", "running",
                         runner=RUNNER, started_at=at(-75))]
        return self._page(items, offset, limit)

    def _failed(self) -> list[FailedInfo]:
        return [
            FailedInfo(3, "f3", "DeliverWebhookJob", "delivery_id=9", "ConnectError", "connection refused: 10.0.0.9",
                       3, at(-120), "error", 1, None, None),
            FailedInfo(2, "f2", "DeliverWebhookJob", "delivery_id=8", "ConnectError", "connection refused: 10.0.0.8",
                       3, at(-600), "error", 1, None, None),
            FailedInfo(1, "f1", "ExportReportJob", "schedule_id=7", "ValueError", "bad column 'amount'",
                       1, at(-7200), "error", 2, None, None),
        ]

    def failed(self, offset: int = 0, limit: int = 50, task: str | None = None, search: str | None = None,
               include_retried: bool = False, ids: list[int] | None = None, task_ids: list[str] | None = None,
               sort: str | None = None) -> Page:
        items = [f for f in self._failed() if (not search or search in f.task_name or search in f.exception)
                 and (ids is None or f.id in ids) and (task_ids is None or f.task_id in task_ids)]
        if sort:
            key = {"id": "id", "task": "task_name", "failed": "failed_at"}[sort.lstrip("-")]
            items.sort(key=lambda f: (getattr(f, key), f.id), reverse=sort.startswith("-"))
        return self._page(items, offset, limit)

    def failed_detail(self, failed_id: int) -> FailedInfo:
        f = next(f for f in self._failed() if f.id == failed_id)
        f.args = {"args": [], "kwargs": {"delivery_id": 9}}
        f.traceback = "Traceback (most recent call last):\n  File \"x.py\", line 1\nConnectError: refused"
        return f

    def failure_clusters(self, limit: int = 50, task: str | None = None) -> list[FailureCluster]:
        return [FailureCluster("k1", "DeliverWebhookJob", "ConnectError", "connection refused: <n>.<n>.<n>.<n>",
                               2, at(-600), at(-120), [3, 2]),
                FailureCluster("k2", "ExportReportJob", "ValueError", "bad column '…'", 1, at(-7200), at(-7200), [1])]

    def count_failed(self, task: str | None = None, search: str | None = None, ids: list[int] | None = None) -> int:
        return len(self.failed(search=search, ids=ids).items)

    def runs(self, offset: int = 0, limit: int = 50, task: str | None = None, status: str | None = None,
             search: str | None = None, with_total: bool = False, sort: str | None = None) -> Page:
        rows = [
            RunInfo(10, "r10", "erp:check-system-health", "periodic", "schedule", "running", "", None, 1,
                    at(-1), at(-1), None, None, RUNNER, None),
            RunInfo(9, "r9", "DeliverWebhookJob", "job", None, "failed", "delivery_id=9", 1, 3, at(-125),
                    at(-121), at(-120), 1.02, RUNNER, "ConnectError: connection refused: 10.0.0.9"),
            RunInfo(8, "r8", "crm:check-activity-reminders", "periodic", "schedule", "success", "", None, 1,
                    at(-60), at(-60), at(-59.8), 0.21, RUNNER, None),
            RunInfo(7, "r7", "SendDealNotificationJob", "job", None, "success", "deal_id=5, old='open'", 2, 1,
                    at(-300), at(-299), at(-298.9), 0.08, RUNNER, None),
        ]
        rows = [r for r in rows if (not status or r.status == status) and (not search or search in r.task_name)]
        if sort:
            key = {"id": "id", "task": "task_name", "status": "status"}[sort.lstrip("-")]
            rows.sort(key=lambda r: (getattr(r, key), r.id), reverse=sort.startswith("-"))
        return self._page(rows, offset, limit, -1)

    def log_tail(self, lines: int = 200) -> list[str]:
        return ["2024-05-06 11:59:00 INFO [w1] Processing job: crm:check-activity-reminders",
                "2024-05-06 11:59:58 WARNING [w2] Failed job: DeliverWebhookJob f3",
                "2024-05-06 11:59:59 INFO [sched] Running scheduled command: erp:check-system-health"]

    def batches(self, offset: int = 0, limit: int = 50, active_only: bool = False,
                sort: str | None = None) -> Page:
        items = [BatchInfo("b1", "deal.created fan-out", "webhooks", 1, 40, 10, 2, 30, 0.75, at(-60), None, None, 20.0),
                 BatchInfo("b2", "leads.csv import", "import", 2, 10_000, 9_000, 0, 1_000, 0.1, at(-30), None, None,
                           270.0)]
        return self._page(items, offset, limit)

    def batch(self, batch_id: str) -> BatchInfo:
        return next(b for b in self.batches().items if b.id == batch_id)

    def runners(self, include_stopped: bool = False, limit: int = 100) -> list[RunnerInfo]:
        return [RunnerInfo(RUNNER, "ops-1", 4242, "embedded", 4, True, "sqlite:///var/queue.db", at(-3600), at(-2),
                           2.0, None, True, 1),
                RunnerInfo("ops-2:99:def456", "ops-2", 99, "consumer", 8, False, "sqlite:///var/queue.db",
                           at(-7200), at(-400), 400.0, None, False, 0)]

    def locks(self) -> list[LockInfo]:
        return [LockInfo("periodic:erp:check-system-health", RUNNER, "r10", at(-1), at(119), 1.0, False),
                LockInfo("periodic:crm:sync-email-accounts", "ops-2:99:def456", "r3", at(-900), at(-780), 900.0,
                         True)]

    def tenant_names(self) -> dict[int, str]:
        return {1: "Acme Corp", 2: "Globex"}  # tenant 3 is unknown: shown by its id

    def throughput(self, bucket_s: int = 60, buckets: int = 60) -> list[TaskThroughput]:
        start = NOW - dt.timedelta(seconds=bucket_s * (buckets - 1))

        def series(task: str, scale: int, fail_every: int, run: float) -> TaskThroughput:
            done = [(i * scale) % 7 + scale for i in range(buckets)]
            failed = [n // fail_every for n in done]
            t = TaskThroughput(task, sum(done), sum(failed), round(sum(done) / (buckets * bucket_s / 60), 3),
                               round(sum(failed) / (buckets * bucket_s / 60), 3), 0.4, 2.5, run, run * 3,
                               start, bucket_s, done, failed, [0.4] * buckets,
                               [2.0 + (i % 5) / 2 for i in range(buckets)], [run] * buckets,
                               [run * (2 + i % 3) for i in range(buckets)])
            return t

        rows = [series("DeliverWebhookJob", 3, 4, 0.12), series("crm:check-activity-reminders", 1, 99, 0.21)]
        total = series(ALL, 4, 5, 0.15)
        return [total, *rows]

    def section(self, name: str) -> Any:
        return self.sections[name]

    def section_names(self) -> list[str]:
        return sorted(self.sections)

    def __getattr__(self, name: str) -> Any:
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(name)


class FakeHealth:
    """``ops.health`` with fixed readings."""

    def thresholds(self) -> dict[str, tuple[float, float]]:
        return {"cpu": (80, 95), "memory": (80, 95), "disk": (80, 95), "db_connections": (80, 150),
                "queue": (1000, 10000), "failed_per_hour": (10, 100)}

    def _health(self, tenant_id: int | None, slug: str, k: int) -> HealthInfo:
        return HealthInfo(tenant_id, slug, at(-60 * k), "ok" if k % 3 else "warning", 20.0 + k * 3, 61.0 + k,
                          45.0, 12, 100 + k * 10, 2, k, None)

    def latest(self) -> list[HealthInfo]:
        return [self._health(None, "host", 0), self._health(1, "acme", 1), self._health(2, "globex", 2)]

    def history(self, tenant_id: int | None = None, limit: int = 60) -> list[HealthInfo]:
        return [self._health(tenant_id, "host", k) for k in range(12, -1, -1)]


class FakeWebhooks:
    """``ops.webhooks`` with fixed deliveries."""

    def deliveries(self, offset: int = 0, limit: int = 50, status: str | None = None,
                   webhook_id: int | None = None, search: str | None = None) -> Page:
        items = [DeliveryInfo(i, f"msg_{i:032x}", 1, 1, "deal.created", "delivered" if i % 4 else "failed",
                              1 if i % 4 else 3, 200 if i % 4 else 503, None if i % 4 else "HTTP 503", 12.0,
                              None if i % 4 else at(300), at(-60 * i) if i % 4 else None, at(-60 * i))
                 for i in range(1, 9)]
        return Page(items[offset: offset + limit], len(items), offset, limit)

    def summary(self) -> str:
        return "delivered 6, failed 2"

    def subscription_page(self, offset: int = 0, limit: int = 50, search: str | None = None) -> Page:
        items = [WebhookInfo(2, 2, "globex", "https://hooks.globex.example/erp", ["deal.created"], None, False, 20,
                             at(-86400 * 5), at(-3600), "20 failures over 5 days", at(-86400 * 30)),
                 WebhookInfo(1, 1, "acme", "https://acme.example/hooks/erpq", [], "all events", True, 0, None, None,
                             None, at(-86400 * 60)),
                 WebhookInfo(3, 3, "initech", "https://initech.example/in", ["invoice.created"], None, True, 2,
                             at(-600), None, None, at(-86400))]
        return Page(items[offset: offset + limit], len(items), offset, limit)

    def subscription_summary(self) -> str:
        return "active 1, failing 1, disabled 1"

    def redeliver(self, ref: str | int) -> Any:
        return None


class EmptyHealth(FakeHealth):
    def latest(self) -> list[HealthInfo]:
        return []

    def history(self, tenant_id: int | None = None, limit: int = 60) -> list[HealthInfo]:
        return []


class EmptyWebhooks(FakeWebhooks):
    def deliveries(self, offset: int = 0, limit: int = 50, status: str | None = None,
                   webhook_id: int | None = None, search: str | None = None) -> Page:
        return Page([], 0, offset, limit)

    def summary(self) -> str:
        return "none"

    def subscription_page(self, offset: int = 0, limit: int = 50, search: str | None = None) -> Page:
        return Page([], 0, offset, limit)

    def subscription_summary(self) -> str:
        return "none"


class EmptyOps(FakeOps):
    """No data at all: a fresh install."""

    def __init__(self, read_only: bool = False) -> None:
        super().__init__(read_only)
        self.sections = {"health": EmptyHealth(), "webhooks": EmptyWebhooks()}

    def queue_counts(self) -> dict[str, int]:
        return {"pending": 0, "scheduled": 0, "running": 0, "failed": 0}


def seed_failed(rt: Any, n: int, task: str = "ConsoleTestJob", message: str = "boom {i}") -> list[int]:
    """Write ``n`` failed jobs (real rows, retryable payloads); returns their ids."""
    import sqlalchemy as sa

    from erpq.models import FailedJob

    wrapper = rt.tasks[task]
    rows = []
    for i in range(n):
        t = wrapper.s(i)
        rows.append({"task_id": t.id, "task_name": task, "args": {"args": [i], "kwargs": {}},
                     "payload": rt.huey.serialize_task(t), "exception_type": "RuntimeError",
                     "exception": message.format(i=i), "traceback": f"Traceback...\nRuntimeError: {message.format(i=i)}",
                     "attempts": 1, "failed_at": dt.datetime.now(dt.UTC), "reason": "error"})
    with rt.session() as s:
        s.execute(sa.insert(FailedJob), rows)
        return list(s.scalars(sa.select(FailedJob.id).order_by(FailedJob.id)))[-n:]


# ------------------------------------------------------------------ driving a console under Pilot


async def settle(app, pilot) -> None:
    """Let every worker finish and every message land (polls chain after actions)."""
    for _ in range(6):
        await app.workers.wait_for_complete()
        await pilot.pause()
    await app.workers.wait_for_complete()
    await pilot.pause()


async def press(app, pilot, *keys: str) -> None:
    """Press each key and settle. The console focuses the first view's table once it
    is drawn; a view key pressed before that focus lands would have its tab
    switched back to the focused table's, so the first press of an app waits for it
    (once: a later screen may have nothing to focus)."""
    if not getattr(app, "_pressed_once", False):
        app._pressed_once = True
        for _ in range(500):
            if app.focused is not None:
                break
            await pilot.pause(0.01)
    for key in keys:
        await pilot.press(key)
        await settle(app, pilot)
