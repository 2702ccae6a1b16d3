"""The CRM tables: contacts, leads, deals, activities, notifications, sent mail,
user preferences, workflows and their runs and instances.

The first eight tables were created by the core's initial migration (0001) and
keep its columns; everything added since lives in this capability's Alembic
branch (``erpq/crm/migrations``, label ``crm``). Unique keys carry the
idempotency of at-least-once jobs: one notification per user and de-duplication
key, one sent mail per Message-ID, one activity per workflow step
(``source_key``), one run per workflow and triggering event (``event_key``).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base, JSONType, utcnow

# column helpers shared with the core tables
from ..models import Money, Str, _created, _id, _tenant


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
    #: Set by the claim of crm:check-activity-reminders; a claim older than the
    #: lease with no reminder sent is taken again (its job died).
    reminder_claimed_at: Mapped[dt.datetime | None]
    reminder_sent_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = _created()
    #: Who made it when not a person: "wf:<run>:<step>" for a workflow step (one activity per step).
    source_key: Mapped[str | None] = mapped_column(Str(191), unique=True)


class Notification(Base):
    """A database notification (Laravel style): ``kind`` is its type, ``data`` its JSON."""

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


class SentMail(Base):
    """One row per Message-ID handed to SMTP: a retried job never sends it again."""

    __tablename__ = "crm_sent_mail"

    message_id: Mapped[str] = mapped_column(Str(191), primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    purpose: Mapped[str] = mapped_column(Str(64))
    recipient: Mapped[str] = mapped_column(Str(255))
    subject: Mapped[str] = mapped_column(Str(255))
    sent_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class UserPreference(Base):
    """Per-user display preferences: the timezone times are shown in."""

    __tablename__ = "crm_user_preferences"

    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    tenant_id: Mapped[int] = _tenant()
    timezone: Mapped[str] = mapped_column(Str(64), default="UTC")


class Workflow(Base):
    __tablename__ = "workflows"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "name", name="uq_workflows_tenant_name"),)

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    name: Mapped[str] = mapped_column(Str(255))
    trigger_event: Mapped[str] = mapped_column(Str(64), index=True)
    conditions: Mapped[Any | None] = mapped_column(JSONType)
    actions: Mapped[Any] = mapped_column(JSONType)
    is_active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    created_at: Mapped[dt.datetime] = _created()
    #: "all" (every condition) or "any" (one is enough).
    match: Mapped[str] = mapped_column(Str(8), default="all")
    updated_at: Mapped[dt.datetime | None]


class WorkflowRun(Base):
    __tablename__ = "workflow_runs"
    __table_args__ = (sa.UniqueConstraint("workflow_id", "event_key", name="uq_workflow_runs_event"),)

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    workflow_id: Mapped[int] = mapped_column(sa.ForeignKey("workflows.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(Str(64))
    record: Mapped[Any | None] = mapped_column(JSONType)
    # running waiting completed failed skipped cut
    status: Mapped[str] = mapped_column(Str(16), default="running")
    error: Mapped[str | None] = mapped_column(sa.Text)
    started_at: Mapped[dt.datetime] = _created()
    finished_at: Mapped[dt.datetime | None]
    #: The triggering event's outbox id: one run per workflow and event.
    event_key: Mapped[str | None] = mapped_column(Str(64))
    #: How many workflow runs led to this event (0: a person's change).
    depth: Mapped[int] = mapped_column(sa.Integer, default=0)
    steps_done: Mapped[int] = mapped_column(sa.Integer, default=0)
    #: One entry per step: {"step", "action", "status", "at", "error"}.
    steps: Mapped[Any | None] = mapped_column(JSONType)


class WorkflowInstance(Base):
    __tablename__ = "workflow_instances"
    __table_args__ = (sa.Index("ix_workflow_instances_resume", "status", "resume_at"),)

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    run_id: Mapped[int] = mapped_column(sa.ForeignKey("workflow_runs.id", ondelete="CASCADE"), unique=True)
    #: The step to execute next (the one it waits at while waiting).
    next_action: Mapped[int] = mapped_column(sa.Integer, default=0)
    state: Mapped[Any | None] = mapped_column(JSONType)
    # pending running waiting completed failed
    status: Mapped[str] = mapped_column(Str(16), default="waiting")
    resume_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    #: The Huey task that will resume it (an ETA task), and when a job took it.
    job_id: Mapped[str | None] = mapped_column(Str(64))
    claimed_at: Mapped[dt.datetime | None]
