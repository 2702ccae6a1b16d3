"""The tables of SPEC section 3: operations tables and business tables.

Every business row carries ``tenant_id``. Unique constraints carry the
idempotency keys of DESIGN.md (one invoice per template and period, one
delivery row per delivery id, one send per campaign recipient, ...), so that
at-least-once execution can never double an effect. Schema changes go through
an Alembic migration in ``erpq/migrations/versions``.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
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
    status: Mapped[str] = mapped_column(Str(16))  # enqueued running success failed retrying skipped abandoned cancelled
    attempt: Mapped[int] = mapped_column(sa.Integer, default=1)
    tick: Mapped[dt.datetime | None]
    enqueued_at: Mapped[dt.datetime | None]
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    duration_s: Mapped[float | None] = mapped_column(sa.Float)
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
    jobs_done: Mapped[int] = mapped_column(sa.Integer, default=0)


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
    command: Mapped[str | None] = mapped_column(Str(512))  # the equivalent erpq command line
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


# ====================================================================== CRM


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    first_name: Mapped[str | None] = mapped_column(Str(128))
    last_name: Mapped[str | None] = mapped_column(Str(128))
    email: Mapped[str | None] = mapped_column(Str(255), index=True)
    phone: Mapped[str | None] = mapped_column(Str(64))
    company: Mapped[str | None] = mapped_column(Str(255))
    owner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = _created()


class Lead(Base):
    __tablename__ = "leads"

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    name: Mapped[str] = mapped_column(Str(255))
    email: Mapped[str | None] = mapped_column(Str(255), index=True)
    phone: Mapped[str | None] = mapped_column(Str(64))
    company: Mapped[str | None] = mapped_column(Str(255))
    source: Mapped[str | None] = mapped_column(Str(64))
    status: Mapped[str] = mapped_column(Str(32), default="new")
    owner_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = _created()


class Deal(Base):
    __tablename__ = "deals"

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    title: Mapped[str] = mapped_column(Str(255))
    amount: Mapped[Decimal | None] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(Str(3), default="EUR")
    status: Mapped[str] = mapped_column(Str(32), default="open")  # open won lost
    stage: Mapped[str | None] = mapped_column(Str(64))
    contact_id: Mapped[int | None] = mapped_column(sa.ForeignKey("contacts.id", ondelete="SET NULL"))
    assigned_to: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_by: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Activity(Base):
    __tablename__ = "activities"
    __table_args__ = (sa.Index("ix_activities_due", "status", "reminder_sent_at", "due_at"),)

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    subject: Mapped[str] = mapped_column(Str(255))
    type: Mapped[str] = mapped_column(Str(32), default="task")  # call meeting task email
    status: Mapped[str] = mapped_column(Str(16), default="open")  # open done cancelled
    due_at: Mapped[dt.datetime | None]
    assigned_to: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    created_by: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id", ondelete="SET NULL"))
    deal_id: Mapped[int | None] = mapped_column(sa.ForeignKey("deals.id", ondelete="SET NULL"))
    reminder_claimed_at: Mapped[dt.datetime | None]
    reminder_sent_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = _created()


class Notification(Base):
    __tablename__ = "notifications"
    __table_args__ = (
        # One notification of a kind per user and subject: a re-run cannot double it.
        sa.UniqueConstraint("user_id", "dedupe_key", name="uq_notifications_user_dedupe"),
    )

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(Str(64))
    title: Mapped[str] = mapped_column(Str(255))
    body: Mapped[str | None] = mapped_column(sa.Text)
    data: Mapped[Any | None] = mapped_column(JSONType)
    dedupe_key: Mapped[str] = mapped_column(Str(191))
    read_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = _created()


# ====================================================================== mail


class EmailAccount(Base):
    __tablename__ = "email_accounts"

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    name: Mapped[str] = mapped_column(Str(255))
    email: Mapped[str] = mapped_column(Str(255))
    imap_host: Mapped[str | None] = mapped_column(Str(255))
    imap_port: Mapped[int | None] = mapped_column(sa.Integer)
    imap_ssl: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    smtp_host: Mapped[str | None] = mapped_column(Str(255))
    smtp_port: Mapped[int | None] = mapped_column(sa.Integer)
    smtp_starttls: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    username: Mapped[str | None] = mapped_column(Str(255))
    password_encrypted: Mapped[str | None] = mapped_column(sa.Text)
    folder: Mapped[str] = mapped_column(Str(255), default="INBOX")
    is_active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    uidvalidity: Mapped[int | None] = mapped_column(sa.BigInteger)
    last_uid: Mapped[int | None] = mapped_column(sa.BigInteger)
    last_synced_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = _created()


class Email(Base):
    __tablename__ = "emails"
    __table_args__ = (
        sa.UniqueConstraint("account_id", "folder", "uidvalidity", "uid", name="uq_emails_account_uid"),
    )

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("email_accounts.id", ondelete="CASCADE"), index=True)
    folder: Mapped[str] = mapped_column(Str(255), default="INBOX")
    uidvalidity: Mapped[int] = mapped_column(sa.BigInteger)
    uid: Mapped[int] = mapped_column(sa.BigInteger)
    message_id: Mapped[str | None] = mapped_column(Str(255), index=True)
    from_address: Mapped[str | None] = mapped_column(Str(255))
    to_addresses: Mapped[str | None] = mapped_column(sa.Text)
    subject: Mapped[str | None] = mapped_column(Str(998))
    body_text: Mapped[str | None] = mapped_column(LongText)
    sent_at: Mapped[dt.datetime | None]
    received_at: Mapped[dt.datetime] = _created()


class EmailCampaign(Base):
    __tablename__ = "email_campaigns"

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    account_id: Mapped[int | None] = mapped_column(sa.ForeignKey("email_accounts.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(Str(255))
    subject: Mapped[str] = mapped_column(Str(998))
    body_template: Mapped[str] = mapped_column(LongText)
    status: Mapped[str] = mapped_column(Str(16), default="draft")  # draft scheduled sending sent stopped failed
    scheduled_at: Mapped[dt.datetime | None]
    rate_per_minute: Mapped[int | None] = mapped_column(sa.Integer)
    batch_id: Mapped[str | None] = mapped_column(Str(36))
    sent_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    failed_count: Mapped[int] = mapped_column(sa.Integer, default=0)
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = _created()


class EmailCampaignRecipient(Base):
    __tablename__ = "email_campaign_recipients"
    __table_args__ = (sa.UniqueConstraint("campaign_id", "email", name="uq_campaign_recipient"),)

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    campaign_id: Mapped[int] = mapped_column(sa.ForeignKey("email_campaigns.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(Str(255))
    name: Mapped[str | None] = mapped_column(Str(255))
    data: Mapped[Any | None] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(Str(16), default="pending")  # pending sending sent failed
    error: Mapped[str | None] = mapped_column(sa.Text)
    sent_at: Mapped[dt.datetime | None]


# ====================================================================== workflows


class Workflow(Base):
    __tablename__ = "workflows"

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    name: Mapped[str] = mapped_column(Str(255))
    trigger_event: Mapped[str] = mapped_column(Str(64), index=True)
    conditions: Mapped[Any | None] = mapped_column(JSONType)
    actions: Mapped[Any] = mapped_column(JSONType)
    is_active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    created_at: Mapped[dt.datetime] = _created()


class WorkflowRun(Base):
    __tablename__ = "workflow_runs"

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    workflow_id: Mapped[int] = mapped_column(sa.ForeignKey("workflows.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(Str(64))
    record: Mapped[Any | None] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(Str(16), default="running")  # running waiting completed failed skipped
    error: Mapped[str | None] = mapped_column(sa.Text)
    started_at: Mapped[dt.datetime] = _created()
    finished_at: Mapped[dt.datetime | None]


class WorkflowInstance(Base):
    __tablename__ = "workflow_instances"
    __table_args__ = (sa.Index("ix_workflow_instances_resume", "status", "resume_at"),)

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    run_id: Mapped[int] = mapped_column(sa.ForeignKey("workflow_runs.id", ondelete="CASCADE"), unique=True)
    next_action: Mapped[int] = mapped_column(sa.Integer, default=0)
    state: Mapped[Any | None] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(Str(16), default="waiting")
    resume_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


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
    status: Mapped[str] = mapped_column(Str(16), default="pending")  # pending delivering delivered failed dead
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


# ====================================================================== invoices, inventory


class RecurringInvoice(Base):
    __tablename__ = "erp_recurring_invoices"

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    contact_id: Mapped[int | None] = mapped_column(sa.ForeignKey("contacts.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(Str(255))
    frequency: Mapped[str] = mapped_column(Str(16))  # daily weekly monthly yearly
    interval: Mapped[int] = mapped_column(sa.Integer, default=1)
    start_date: Mapped[dt.date] = mapped_column(sa.Date)
    end_date: Mapped[dt.date | None] = mapped_column(sa.Date)
    max_occurrences: Mapped[int | None] = mapped_column(sa.Integer)
    occurrences: Mapped[int] = mapped_column(sa.Integer, default=0)
    next_date: Mapped[dt.date | None] = mapped_column(sa.Date)
    lines: Mapped[Any] = mapped_column(JSONType)  # [{description, quantity, unit_price}]
    currency: Mapped[str] = mapped_column(Str(3), default="EUR")
    is_active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    created_at: Mapped[dt.datetime] = _created()


class Invoice(Base):
    __tablename__ = "erp_invoices"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "number", name="uq_invoices_tenant_number"),
        sa.UniqueConstraint("recurring_invoice_id", "period_start", name="uq_invoices_template_period"),
    )

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    number: Mapped[str] = mapped_column(Str(64))
    contact_id: Mapped[int | None] = mapped_column(sa.ForeignKey("contacts.id", ondelete="SET NULL"))
    recurring_invoice_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("erp_recurring_invoices.id", ondelete="SET NULL")
    )
    period_start: Mapped[dt.date | None] = mapped_column(sa.Date)
    issue_date: Mapped[dt.date] = mapped_column(sa.Date)
    due_date: Mapped[dt.date | None] = mapped_column(sa.Date)
    lines: Mapped[Any] = mapped_column(JSONType)
    total: Mapped[Decimal] = mapped_column(Money, default=0)
    currency: Mapped[str] = mapped_column(Str(3), default="EUR")
    status: Mapped[str] = mapped_column(Str(16), default="draft")
    created_at: Mapped[dt.datetime] = _created()


class Product(Base):
    __tablename__ = "erp_products"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "sku", name="uq_products_tenant_sku"),)

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    sku: Mapped[str] = mapped_column(Str(64))
    name: Mapped[str] = mapped_column(Str(255))
    stock_quantity: Mapped[Decimal] = mapped_column(sa.Numeric(14, 3), default=0)
    unit_cost: Mapped[Decimal | None] = mapped_column(Money)
    is_active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ReorderRule(Base):
    __tablename__ = "erp_reorder_rules"

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    product_id: Mapped[int] = mapped_column(sa.ForeignKey("erp_products.id", ondelete="CASCADE"), unique=True)
    min_quantity: Mapped[Decimal] = mapped_column(sa.Numeric(14, 3))
    reorder_quantity: Mapped[Decimal] = mapped_column(sa.Numeric(14, 3))
    supplier: Mapped[str | None] = mapped_column(Str(255))
    is_active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    last_triggered_at: Mapped[dt.datetime | None]


class PurchaseOrder(Base):
    __tablename__ = "erp_purchase_orders"
    __table_args__ = (sa.Index("ix_purchase_orders_product_status", "product_id", "status"),)

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    number: Mapped[str] = mapped_column(Str(64))
    product_id: Mapped[int] = mapped_column(sa.ForeignKey("erp_products.id", ondelete="CASCADE"))
    reorder_rule_id: Mapped[int | None] = mapped_column(sa.ForeignKey("erp_reorder_rules.id", ondelete="SET NULL"))
    quantity: Mapped[Decimal] = mapped_column(sa.Numeric(14, 3))
    supplier: Mapped[str | None] = mapped_column(Str(255))
    status: Mapped[str] = mapped_column(Str(16), default="draft")  # draft sent received cancelled
    #: Set while the order is open (draft/sent) to the product id, NULL otherwise:
    #: a unique key that allows one open purchase order per product.
    open_product_key: Mapped[int | None] = mapped_column(sa.Integer, unique=True)
    created_at: Mapped[dt.datetime] = _created()
