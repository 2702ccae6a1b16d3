"""Invoicing tables.

``erp_recurring_invoices`` and ``erp_invoices`` come from the core's first
migration (their original columns stay as they were); the columns and tables
added here are in this capability's own Alembic branch (``invoicing_0001``).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..db import Base, JSONType, utcnow

# column helpers shared with the core tables
from ..models import Money, Str, _id, _tenant


class RecurringInvoice(Base):
    """A recurring invoice template: what to bill a customer, and when."""

    __tablename__ = "erp_recurring_invoices"
    __table_args__ = (sa.Index("ix_recurring_invoices_due", "is_active", "next_date"),)

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    contact_id: Mapped[int | None] = mapped_column(sa.ForeignKey("contacts.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(Str(255))
    frequency: Mapped[str] = mapped_column(Str(16))  # daily weekly monthly quarterly yearly
    interval: Mapped[int] = mapped_column(sa.Integer, default=1)
    start_date: Mapped[dt.date] = mapped_column(sa.Date)
    end_date: Mapped[dt.date | None] = mapped_column(sa.Date)
    max_occurrences: Mapped[int | None] = mapped_column(sa.Integer)
    #: Invoices issued so far: also the index of the next period.
    occurrences: Mapped[int] = mapped_column(sa.Integer, default=0)
    #: Start of the next period to invoice; NULL once the template has ended.
    next_date: Mapped[dt.date | None] = mapped_column(sa.Date)
    lines: Mapped[Any] = mapped_column(JSONType)  # [{description, quantity, unit_price, tax_rate}] as strings
    currency: Mapped[str] = mapped_column(Str(3), default="EUR")
    is_active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # ---- invoicing_0001
    #: Day of the month (1-31, clamped to the month's end) or ISO weekday (1-7) for weekly.
    anchor_day: Mapped[int | None] = mapped_column(sa.Integer)
    payment_terms_days: Mapped[int] = mapped_column(sa.Integer, default=14, server_default="14")
    consecutive_failures: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    #: Set while paused (by an operator, after failures, or over the catch-up limit).
    paused_at: Mapped[dt.datetime | None]
    paused_reason: Mapped[str | None] = mapped_column(Str(512))
    #: Why the template stopped for good (end date, occurrence limit).
    ended_reason: Mapped[str | None] = mapped_column(Str(255))


class Invoice(Base):
    __tablename__ = "erp_invoices"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "number", name="uq_invoices_tenant_number"),
        sa.UniqueConstraint("recurring_invoice_id", "period_start", name="uq_invoices_template_period"),
        sa.Index("ix_invoices_created_at", "created_at"),
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
    #: Unused by generated invoices (their lines are rows of erp_invoice_lines).
    lines: Mapped[Any | None] = mapped_column(JSONType)
    total: Mapped[Decimal] = mapped_column(Money, default=0)
    currency: Mapped[str] = mapped_column(Str(3), default="EUR")
    status: Mapped[str] = mapped_column(Str(16), default="draft")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # ---- invoicing_0001
    period_end: Mapped[dt.date | None] = mapped_column(sa.Date)
    subtotal: Mapped[Decimal] = mapped_column(Money, default=0, server_default="0")
    tax_total: Mapped[Decimal] = mapped_column(Money, default=0, server_default="0")

    items: Mapped[list[InvoiceLine]] = relationship(order_by="InvoiceLine.position", cascade="all, delete-orphan",
                                                    lazy="raise_on_sql")


class InvoiceLine(Base):
    __tablename__ = "erp_invoice_lines"
    __table_args__ = (sa.UniqueConstraint("invoice_id", "position", name="uq_invoice_lines_position"),)

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    invoice_id: Mapped[int] = mapped_column(sa.ForeignKey("erp_invoices.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(sa.Integer)
    description: Mapped[str] = mapped_column(Str(255))
    quantity: Mapped[Decimal] = mapped_column(sa.Numeric(14, 3))
    unit_price: Mapped[Decimal] = mapped_column(sa.Numeric(14, 4))
    tax_rate: Mapped[Decimal] = mapped_column(sa.Numeric(6, 3))  # percent
    net: Mapped[Decimal] = mapped_column(Money)
    tax: Mapped[Decimal] = mapped_column(Money)
    total: Mapped[Decimal] = mapped_column(Money)


class InvoiceSequence(Base):
    """The last invoice number used per tenant (and year, when the format has one).

    Taken with a row lock in the transaction that inserts the invoices, so two
    generators never share a number and a rolled-back run leaves no gap.
    """

    __tablename__ = "erp_invoice_sequences"

    tenant_id: Mapped[int] = mapped_column(sa.ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    year: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)  # 0: not per year
    last_value: Mapped[int] = mapped_column(sa.Integer, default=0)
