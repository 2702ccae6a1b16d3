"""The reports capability's tables: report definitions and their schedules."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base, JSONType, utcnow


class Report(Base):
    __tablename__ = "erp_reports"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(sa.String(255))
    report_type: Mapped[str] = mapped_column(sa.String(64))  # one of erpq.reports.kinds.KINDS
    filters: Mapped[Any | None] = mapped_column(JSONType)
    columns: Mapped[Any | None] = mapped_column(JSONType)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ReportSchedule(Base):
    __tablename__ = "erp_report_schedules"
    __table_args__ = (sa.Index("ix_report_schedules_due", "is_active", "next_run_at"),)

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[int] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    report_id: Mapped[int] = mapped_column(sa.ForeignKey("erp_reports.id", ondelete="CASCADE"), index=True)
    cron_expression: Mapped[str] = mapped_column(sa.String(128))
    timezone: Mapped[str] = mapped_column(sa.String(64), default="UTC")
    format: Mapped[str] = mapped_column(sa.String(8), default="pdf")  # pdf xlsx csv
    recipients: Mapped[Any] = mapped_column(JSONType)
    is_active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    next_run_at: Mapped[dt.datetime | None]
    last_run_at: Mapped[dt.datetime | None]
    last_status: Mapped[str | None] = mapped_column(sa.String(16))  # ok error running
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
