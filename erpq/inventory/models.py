"""Inventory tables.

``erp_products``, ``erp_reorder_rules`` and ``erp_purchase_orders`` come from the
core's first migration (original columns unchanged); suppliers, order lines and
the added columns are in this capability's branch (``inventory_0001``).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from ..db import Base, utcnow

# column helpers shared with the core tables
from ..models import Money, Str, _id, _tenant

Qty = sa.Numeric(14, 3)


class Product(Base):
    __tablename__ = "erp_products"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "sku", name="uq_products_tenant_sku"),)

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    sku: Mapped[str] = mapped_column(Str(64))
    name: Mapped[str] = mapped_column(Str(255))
    stock_quantity: Mapped[Decimal] = mapped_column(Qty, default=0)
    unit_cost: Mapped[Decimal | None] = mapped_column(Money)
    is_active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Supplier(Base):
    __tablename__ = "erp_suppliers"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "name", name="uq_suppliers_tenant_name"),)

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    name: Mapped[str] = mapped_column(Str(255))
    email: Mapped[str | None] = mapped_column(Str(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ReorderRule(Base):
    __tablename__ = "erp_reorder_rules"

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    product_id: Mapped[int] = mapped_column(sa.ForeignKey("erp_products.id", ondelete="CASCADE"), unique=True)
    min_quantity: Mapped[Decimal] = mapped_column(Qty)
    reorder_quantity: Mapped[Decimal] = mapped_column(Qty)
    supplier: Mapped[str | None] = mapped_column(Str(255))  # legacy free text; supplier_id wins
    is_active: Mapped[bool] = mapped_column(sa.Boolean, default=True)
    last_triggered_at: Mapped[dt.datetime | None]
    # ---- inventory_0001
    supplier_id: Mapped[int | None] = mapped_column(sa.ForeignKey("erp_suppliers.id", ondelete="SET NULL"))
    #: Order up to this stock level instead of a fixed reorder quantity.
    max_quantity: Mapped[Decimal | None] = mapped_column(Qty)
    last_order_id: Mapped[int | None] = mapped_column(sa.Integer)


class PurchaseOrder(Base):
    __tablename__ = "erp_purchase_orders"
    __table_args__ = (sa.Index("ix_purchase_orders_product_status", "product_id", "status"),)

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    number: Mapped[str] = mapped_column(Str(64))
    #: Single-product orders of the first schema; grouped orders leave it NULL and use lines.
    product_id: Mapped[int | None] = mapped_column(sa.ForeignKey("erp_products.id", ondelete="CASCADE"))
    reorder_rule_id: Mapped[int | None] = mapped_column(sa.ForeignKey("erp_reorder_rules.id", ondelete="SET NULL"))
    quantity: Mapped[Decimal | None] = mapped_column(Qty)
    supplier: Mapped[str | None] = mapped_column(Str(255))
    status: Mapped[str] = mapped_column(Str(16), default="draft")  # draft sent received cancelled
    #: Set while the order is open (draft/sent) to the product id, NULL otherwise:
    #: a unique key that allows one open purchase order per product.
    open_product_key: Mapped[int | None] = mapped_column(sa.Integer, unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    # ---- inventory_0001
    supplier_id: Mapped[int | None] = mapped_column(sa.ForeignKey("erp_suppliers.id", ondelete="SET NULL"))


class PurchaseOrderLine(Base):
    __tablename__ = "erp_purchase_order_lines"

    id: Mapped[int] = _id()
    tenant_id: Mapped[int] = _tenant()
    order_id: Mapped[int] = mapped_column(sa.ForeignKey("erp_purchase_orders.id", ondelete="CASCADE"), index=True)
    product_id: Mapped[int] = mapped_column(sa.ForeignKey("erp_products.id", ondelete="CASCADE"))
    reorder_rule_id: Mapped[int | None] = mapped_column(sa.ForeignKey("erp_reorder_rules.id", ondelete="SET NULL"))
    quantity: Mapped[Decimal] = mapped_column(Qty)
    unit_cost: Mapped[Decimal | None] = mapped_column(Money)
    #: The product id while the order is open, NULL after: one open order line per product.
    open_product_key: Mapped[int | None] = mapped_column(sa.Integer, unique=True)
