"""The tables of SPEC section 3: operations tables and business tables.

Every business row carries ``tenant_id``. Unique constraints carry the
idempotency keys of DESIGN.md (one invoice per template and period, one
delivery row per delivery id, one send per campaign recipient, ...), so that
at-least-once execution can never double an effect. Schema changes go through
an Alembic migration in ``erpq/migrations/versions``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from .db import Base, JSONType, LongBinary, LongText, utcnow

Str = sa.String


def _id() -> Mapped[int]:
    return mapped_column(sa.Integer, primary_key=True, autoincrement=True)


def _tenant() -> Mapped[int]:
    return mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True)


def _created() -> Mapped[dt.datetime]:
    return mapped_column(default=utcnow)


Money = sa.Numeric(14, 2)

# ====================================================================== operations


#: Every status a run in the history can have (``JobRun.status``).
RUN_STATUSES = ("failed", "success", "running", "retrying", "enqueued", "skipped", "missed", "abandoned",
                "cancelled", "revoked", "expired")


class JobRun(Base):
    """One run of a job or a periodic task: the run history."""

    __tablename__ = "job_runs"
    __table_args__ = (
        sa.UniqueConstraint("task_name", "tick", name="uq_job_runs_task_tick"),
        sa.Index("ix_job_runs_task_id_", "task_name", "id"),
        sa.Index("ix_job_runs_status_id", "status", "id"),
        sa.Index("ix_job_runs_finished_at", "finished_at"),
    )

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(Str(64), index=True)
    task_name: Mapped[str] = mapped_column(Str(128))
    kind: Mapped[str] = mapped_column(Str(16), default="job")  # job | periodic
    trigger: Mapped[str | None] = mapped_column(Str(16))  # schedule | manual | retry | recovery
    args_summary: Mapped[str | None] = mapped_column(Str(255))
    tenant_id: Mapped[int | None] = mapped_column(sa.Integer, index=True)
    batch_id: Mapped[str | None] = mapped_column(Str(36))
    status: Mapped[str] = mapped_column(Str(16))  # enqueued running success failed retrying skipped missed abandoned cancelled
    attempt: Mapped[int] = mapped_column(sa.Integer, default=1)
    tick: Mapped[dt.datetime | None]
    enqueued_at: Mapped[dt.datetime | None]
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    duration_s: Mapped[float | None] = mapped_column(sa.Float)
    runner: Mapped[str | None] = mapped_column(Str(128))
    error: Mapped[str | None] = mapped_column(sa.Text)
    #: A scheduled periodic run: seconds between its tick and its start.
    late_s: Mapped[float | None] = mapped_column(sa.Float)


class JobKey(Base):
    """An idempotency key of a dispatch: one job per key while it is pending or
    running and until ``expires_at`` after it finished (NULL: not finished)."""

    __tablename__ = "job_keys"

    key: Mapped[str] = mapped_column(Str(191), primary_key=True)
    task_name: Mapped[str] = mapped_column(Str(128))
    task_id: Mapped[str] = mapped_column(Str(64))
    tenant_id: Mapped[int | None] = mapped_column(sa.Integer)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[dt.datetime | None]
    expires_at: Mapped[dt.datetime | None] = mapped_column(index=True)


class HealthProbe(Base):
    """One round trip of the health probe job through the real queue."""

    __tablename__ = "health_probes"

    id: Mapped[int] = _id()
    task_id: Mapped[str] = mapped_column(Str(64), unique=True)
    enqueued_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    wait_s: Mapped[float | None] = mapped_column(sa.Float)
    run_s: Mapped[float | None] = mapped_column(sa.Float)
    status: Mapped[str] = mapped_column(Str(16), default="pending")  # pending ok failed
    runner: Mapped[str | None] = mapped_column(Str(128))
    error: Mapped[str | None] = mapped_column(sa.Text)


class FailedJob(Base):
    """A job that used all its attempts (or was abandoned after recoveries)."""

    __tablename__ = "failed_jobs"
    __table_args__ = (
        sa.Index("ix_failed_jobs_live", "deleted_at", "id"),
        sa.Index("ix_failed_jobs_task", "task_name", "id"),
        sa.Index("ix_failed_jobs_failed_at", "failed_at"),
    )

    id: Mapped[int] = _id()
    task_id: Mapped[str] = mapped_column(Str(64), index=True)
    task_name: Mapped[str] = mapped_column(Str(128))
    args: Mapped[Any] = mapped_column(JSONType)  # JSON-safe rendering of args and kwargs
    payload: Mapped[bytes] = mapped_column(LongBinary)  # the serialized task, for an exact retry
    exception_type: Mapped[str] = mapped_column(Str(128))
    exception: Mapped[str] = mapped_column(sa.Text)
    traceback: Mapped[str | None] = mapped_column(LongText)
    attempts: Mapped[int] = mapped_column(sa.Integer, default=1)
    reason: Mapped[str] = mapped_column(Str(16), default="error")  # error | abandoned
    tenant_id: Mapped[int | None] = mapped_column(sa.Integer, index=True)
    batch_id: Mapped[str | None] = mapped_column(Str(36))
    runner: Mapped[str | None] = mapped_column(Str(128))
    failed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    retry_of: Mapped[int | None] = mapped_column(sa.Integer)  # the failed record this attempt retried
    retried_at: Mapped[dt.datetime | None]
    retried_by: Mapped[str | None] = mapped_column(Str(128))
    retry_task_id: Mapped[str | None] = mapped_column(Str(64))
    deleted_at: Mapped[dt.datetime | None]  # forgotten/flushed: restorable until pruned
    deleted_by: Mapped[str | None] = mapped_column(Str(128))


class JobBatch(Base):
    __tablename__ = "job_batches"

    id: Mapped[str] = mapped_column(Str(36), primary_key=True)
    name: Mapped[str] = mapped_column(Str(255))
    kind: Mapped[str] = mapped_column(Str(32), default="jobs")  # webhooks | import | campaign | report | jobs
    tenant_id: Mapped[int | None] = mapped_column(sa.Integer, index=True)
    total: Mapped[int] = mapped_column(sa.Integer, default=0)
    pending: Mapped[int] = mapped_column(sa.Integer, default=0)
    failed: Mapped[int] = mapped_column(sa.Integer, default=0)
    failed_job_ids: Mapped[Any] = mapped_column(JSONType, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    finished_at: Mapped[dt.datetime | None]
    cancelled_at: Mapped[dt.datetime | None]


class Runner(Base):
    """A process running workers and/or the scheduler, and its heartbeat."""

    __tablename__ = "runners"

    id: Mapped[str] = mapped_column(Str(128), primary_key=True)
    host: Mapped[str] = mapped_column(Str(255))
    pid: Mapped[int] = mapped_column(sa.Integer)
    workers: Mapped[int] = mapped_column(sa.Integer, default=0)
    periodic: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    kind: Mapped[str] = mapped_column(Str(32), default="consumer")  # consumer | embedded | once
    queue: Mapped[str] = mapped_column(Str(255))  # store URL without credentials
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    stopped_at: Mapped[dt.datetime | None]


class Lock(Base):
    """A lease-based lock (periodic overlap locks). Expired leases count as free."""

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(Str(191), primary_key=True)
    holder: Mapped[str] = mapped_column(Str(128))
    task_id: Mapped[str | None] = mapped_column(Str(64))
    acquired_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]


class ScheduleState(Base):
    """Persisted operator state of a periodic task (pause/resume)."""

    __tablename__ = "schedule_state"

    name: Mapped[str] = mapped_column(Str(128), primary_key=True)
    paused: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    changed_by: Mapped[str | None] = mapped_column(Str(128))


class EventOutbox(Base):
    """Events written in the emitter's transaction, fanned out after it commits."""

    __tablename__ = "event_outbox"
    __table_args__ = (sa.Index("ix_event_outbox_status_id", "status", "id"),)

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    name: Mapped[str] = mapped_column(Str(128))
    tenant_id: Mapped[int] = mapped_column(sa.Integer, index=True)
    payload: Mapped[Any] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(Str(16), default="pending")  # pending | dispatching | done | failed
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    created_at: Mapped[dt.datetime] = _created()
    claimed_at: Mapped[dt.datetime | None]
    dispatched_at: Mapped[dt.datetime | None]
    error: Mapped[str | None] = mapped_column(LongText)


class AuditLog(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = _id()
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(Str(128))
    client: Mapped[str | None] = mapped_column(Str(128))  # SSH client address
    source: Mapped[str] = mapped_column(Str(16))  # cli | console | api
    action: Mapped[str] = mapped_column(Str(64))
    target: Mapped[str | None] = mapped_column(Str(255))
    command: Mapped[str | None] = mapped_column(sa.Text)  # the equivalent erpq command line (cut past 4000)
    detail: Mapped[str | None] = mapped_column(sa.Text)


# ====================================================================== tenants, users


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[int] = _id()
    slug: Mapped[str] = mapped_column(Str(64), unique=True)
    name: Mapped[str] = mapped_column(Str(255))
    is_active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    created_at: Mapped[dt.datetime] = _created()


class User(Base):
    __tablename__ = "users"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "email", name="uq_users_tenant_email"),)

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    name: Mapped[str] = mapped_column(Str(255))
    email: Mapped[str | None] = mapped_column(Str(255))
    is_active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    created_at: Mapped[dt.datetime] = _created()


# CRM tables (contacts, leads, deals, activities, notifications, workflows): erpq/crm/models.py
# mail tables (email_accounts, emails, email_campaigns, email_campaign_recipients): erpq/mail/models.py




# ====================================================================== webhooks


class Webhook(Base):
    __tablename__ = "erp_webhooks"

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    url: Mapped[str] = mapped_column(Str(2048))
    events: Mapped[Any] = mapped_column(JSONType)  # list of event names, or ["*"]
    secret: Mapped[str] = mapped_column(Str(255))  # whsec_<base64>
    description: Mapped[str | None] = mapped_column(Str(255))
    is_active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    consecutive_failures: Mapped[int] = mapped_column(sa.Integer, default=0)
    first_failure_at: Mapped[dt.datetime | None]
    disabled_at: Mapped[dt.datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(Str(512))
    created_at: Mapped[dt.datetime] = _created()


class WebhookDelivery(Base):
    __tablename__ = "erp_webhook_deliveries"
    __table_args__ = (sa.Index("ix_webhook_deliveries_retry", "status", "next_retry_at"),)

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    webhook_id: Mapped[int] = mapped_column(sa.ForeignKey("erp_webhooks.id", ondelete="CASCADE"), index=True)
    delivery_id: Mapped[str] = mapped_column(Str(64), unique=True)  # the webhook-id header
    event: Mapped[str] = mapped_column(Str(64))
    payload: Mapped[Any] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(Str(16), default="pending")  # pending delivered failed dead
    attempts: Mapped[int] = mapped_column(sa.Integer, default=0)
    response_code: Mapped[int | None] = mapped_column(sa.Integer)
    response_body: Mapped[str | None] = mapped_column(sa.Text)
    error: Mapped[str | None] = mapped_column(sa.Text)
    duration_ms: Mapped[float | None] = mapped_column(sa.Float)
    job_id: Mapped[str | None] = mapped_column(Str(64))
    batch_id: Mapped[str | None] = mapped_column(Str(36))
    next_retry_at: Mapped[dt.datetime | None]
    delivered_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


# ====================================================================== health


class SystemHealth(Base):
    __tablename__ = "system_health"
    __table_args__ = (sa.Index("ix_system_health_tenant_checked", "tenant_id", "checked_at"),)

    id: Mapped[int] = _id()
    tenant_id: Mapped[int | None] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"))  # NULL: the host
    checked_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    host: Mapped[str] = mapped_column(Str(255))
    cpu_percent: Mapped[float | None] = mapped_column(sa.Float)
    memory_percent: Mapped[float | None] = mapped_column(sa.Float)
    disk_percent: Mapped[float | None] = mapped_column(sa.Float)
    db_connections: Mapped[int | None] = mapped_column(sa.Integer)  # NULL: not applicable (SQLite)
    queue_pending: Mapped[int] = mapped_column(sa.Integer, default=0)
    queue_scheduled: Mapped[int] = mapped_column(sa.Integer, default=0)
    failed_last_hour: Mapped[int] = mapped_column(sa.Integer, default=0)
    status: Mapped[str] = mapped_column(Str(16))  # ok warning critical
    details: Mapped[Any | None] = mapped_column(JSONType)  # which metrics crossed which threshold


# Invoices and recurring invoices: erpq/invoicing/models.py; products, reorder
# rules and purchase orders: erpq/inventory/models.py.
