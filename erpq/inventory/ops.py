"""Ops section ``inventory``: products, suppliers, reorder rules, purchase orders."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import sqlalchemy as sa

from ..models import Tenant
from ..ops import Conflict, Invalid, NotFound, OpsSection, Page, audited
from ..ops.base import _Record, text_search
from . import service
from .models import Product, PurchaseOrder, PurchaseOrderLine, ReorderRule, Supplier


@dataclass
class RuleInfo(_Record):
    id: int
    tenant: str
    sku: str
    product_active: bool
    stock: str
    min_quantity: str
    order_quantity: str  # "50" or "up to 100"
    supplier: str | None
    is_active: bool
    last_triggered_at: dt.datetime | None
    last_order: str | None


@dataclass
class OrderInfo(_Record):
    id: int
    tenant: str
    number: str
    supplier: str | None
    status: str
    lines: int
    items: str  # "SKU1 x 10, SKU2 x 5"
    created_at: dt.datetime


def _qty(value) -> str:
    return f"{Decimal(value).normalize():f}" if value is not None else "-"


def _dec(value, what: str) -> Decimal:
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise Invalid(f"{what}: not a number: {value!r}") from None
    if not d.is_finite():
        raise Invalid(f"{what}: not a finite number: {value!r}")
    return d


class InventoryOps(OpsSection):
    """``ops.inventory``: reorder rules, the draft orders they made, stock adjustments."""

    # ------------------------------------------------------------ reads
    def _rules_query(self, tenant=None, search=None):
        q = (sa.select(ReorderRule, Product, Supplier.name, Tenant.slug, PurchaseOrder.number)
             .join(Product, Product.id == ReorderRule.product_id).join(Tenant, Tenant.id == ReorderRule.tenant_id)
             .outerjoin(Supplier, Supplier.id == ReorderRule.supplier_id)
             .outerjoin(PurchaseOrder, PurchaseOrder.id == ReorderRule.last_order_id))
        if tenant is not None:
            q = q.where(ReorderRule.tenant_id == self.ops.tenant_id(tenant))
        if search:
            q = q.where(text_search((Product.sku, Supplier.name), search))
        return q

    def rules(self, tenant=None) -> list[RuleInfo]:
        with self.rt.read_session() as s:
            return [_rule_info(*r) for r in s.execute(self._rules_query(tenant).order_by(ReorderRule.id))]

    def rules_page(self, offset: int = 0, limit: int = 50, search: str | None = None) -> Page:
        """Rules, the ones that fired most recently first."""
        q = self._rules_query(search=search)
        with self.rt.read_session() as s:
            total = s.scalar(sa.select(sa.func.count()).select_from(q.subquery()))
            rows = s.execute(q.order_by(ReorderRule.last_triggered_at.is_(None), ReorderRule.last_triggered_at.desc(),
                                        ReorderRule.id).offset(offset).limit(limit)).all()
            return Page([_rule_info(*r) for r in rows], total or 0, offset, limit)

    def orders(self, tenant=None, status: str | None = None, offset: int = 0, limit: int = 50,
               search: str | None = None) -> Page:
        """Purchase orders, newest first, with their lines."""
        if status is not None and status not in service.STATUSES:
            raise Invalid(f"unknown order status {status!r} (one of {', '.join(service.STATUSES)})")
        q = sa.select(PurchaseOrder, Tenant.slug).join(Tenant, Tenant.id == PurchaseOrder.tenant_id)
        if tenant is not None:
            q = q.where(PurchaseOrder.tenant_id == self.ops.tenant_id(tenant))
        if status is not None:
            q = q.where(PurchaseOrder.status == status)
        if search:
            q = q.where(text_search((PurchaseOrder.number, PurchaseOrder.supplier), search))
        with self.rt.read_session() as s:
            total = s.scalar(sa.select(sa.func.count()).select_from(q.subquery()))
            rows = s.execute(q.order_by(PurchaseOrder.id.desc()).offset(offset).limit(limit)).all()
            lines: dict[int, list] = {}
            for order_id, sku, qty in s.execute(
                    sa.select(PurchaseOrderLine.order_id, Product.sku, PurchaseOrderLine.quantity)
                    .join(Product, Product.id == PurchaseOrderLine.product_id)
                    .where(PurchaseOrderLine.order_id.in_([o.id for o, _ in rows])).order_by(PurchaseOrderLine.id)):
                lines.setdefault(order_id, []).append(f"{sku} x {_qty(qty)}")
            items = [OrderInfo(o.id, slug, o.number, o.supplier, o.status, len(lines.get(o.id, [])),
                               ", ".join(lines.get(o.id, [])), o.created_at) for o, slug in rows]
            return Page(items, total or 0, offset, limit)

    def orders_page(self, offset: int = 0, limit: int = 50, search: str | None = None) -> Page:
        """Draft orders (what the reorder rules made and nobody sent yet)."""
        return self.orders(status="draft", offset=offset, limit=limit, search=search)

    # ------------------------------------------------------------ actions
    @audited
    def add_supplier(self, tenant, name: str, email: str | None = None) -> int:
        tenant_id = self.ops.tenant_id(tenant)
        if not name.strip():
            raise Invalid("supplier name is empty")
        self._act("inventory.supplier.add", f"tenant:{tenant_id}", f"erpq inventory add-supplier --tenant {tenant} ...")
        with self._tx() as s:
            if s.scalar(sa.select(Supplier.id).where(Supplier.tenant_id == tenant_id, Supplier.name == name.strip())):
                raise Conflict(f"supplier {name!r} exists")
            sup = Supplier(tenant_id=tenant_id, name=name.strip(), email=email)
            s.add(sup)
            s.flush()
            return sup.id

    @audited
    def add_product(self, tenant, sku: str, name: str, stock="0", unit_cost=None, active: bool = True) -> int:
        tenant_id = self.ops.tenant_id(tenant)
        if not sku.strip():
            raise Invalid("SKU is empty")
        stock_d = _dec(stock, "stock")
        cost = _dec(unit_cost, "unit cost") if unit_cost is not None else None
        self._act("inventory.product.add", f"tenant:{tenant_id}", f"erpq inventory add-product {sku} --tenant {tenant}")
        with self._tx() as s:
            if s.scalar(sa.select(Product.id).where(Product.tenant_id == tenant_id, Product.sku == sku)):
                raise Conflict(f"product {sku!r} exists")
            p = Product(tenant_id=tenant_id, sku=sku, name=name, stock_quantity=stock_d, unit_cost=cost,
                        is_active=active)
            s.add(p)
            s.flush()
            return p.id

    @audited
    def add_rule(self, tenant, sku: str, min_quantity, reorder_quantity, max_quantity=None,
                 supplier: str | None = None) -> int:
        tenant_id = self.ops.tenant_id(tenant)
        mn, rq = _dec(min_quantity, "minimum"), _dec(reorder_quantity, "reorder quantity")
        mx = _dec(max_quantity, "maximum") if max_quantity is not None else None
        if mn < 0 or rq <= 0:
            raise Invalid("minimum must be >= 0 and reorder quantity > 0")
        if mx is not None and mx <= mn:
            raise Invalid(f"maximum level {mx} must be above the minimum {mn}")
        self._act("inventory.rule.add", f"tenant:{tenant_id}", f"erpq inventory add-rule {sku} --tenant {tenant} ...")
        with self._tx() as s:
            product = self._product(s, tenant_id, sku)
            sup_id = None
            if supplier:
                sup_id = s.scalar(sa.select(Supplier.id).where(Supplier.tenant_id == tenant_id, Supplier.name == supplier))
                if sup_id is None:
                    raise NotFound(f"no supplier {supplier!r}")
            if s.scalar(sa.select(ReorderRule.id).where(ReorderRule.product_id == product.id)):
                raise Conflict(f"product {sku!r} already has a reorder rule")
            rule = ReorderRule(tenant_id=tenant_id, product_id=product.id, min_quantity=mn, reorder_quantity=rq,
                               max_quantity=mx, supplier_id=sup_id, is_active=True)
            s.add(rule)
            s.flush()
            return rule.id

    @audited
    def set_stock(self, tenant, sku: str, quantity) -> str:
        """Set a product's stock (for tests and demos); returns the new quantity."""
        tenant_id = self.ops.tenant_id(tenant)
        qty = _dec(quantity, "quantity")
        self._act("inventory.set_stock", f"product:{sku}", f"erpq inventory set-stock {sku} {quantity} --tenant {tenant}")
        with self._tx() as s:
            product = self._product(s, tenant_id, sku)
            product.stock_quantity = qty
        return _qty(qty)

    @audited
    def set_order_status(self, order_id: int, status: str) -> None:
        if status not in service.STATUSES:
            raise Invalid(f"unknown order status {status!r} (one of {', '.join(service.STATUSES)})")
        self._act("inventory.order.status", f"order:{order_id}", f"erpq inventory order-status {order_id} {status}")
        with self._tx() as s:
            order = s.get(PurchaseOrder, order_id, with_for_update=True)
            if order is None:
                raise NotFound(f"no purchase order {order_id}")
            service.set_order_status(s, order, status)

    @audited
    def check(self, tenant=None) -> service.ReorderResult:
        """What erp:check-reorder-rules does, now."""
        tenant_id = self.ops.tenant_id(tenant) if tenant is not None else None
        self._act("inventory.check", None, "erpq inventory check")
        with self._tx() as s:
            return service.check_reorder_rules(self.rt, tenant_id, session=s)

    @staticmethod
    def _product(s, tenant_id: int, sku: str) -> Product:
        p = s.scalar(sa.select(Product).where(Product.tenant_id == tenant_id, Product.sku == sku))
        if p is None:
            raise NotFound(f"no product with SKU {sku!r}")
        return p


def _rule_info(r: ReorderRule, p: Product, supplier: str | None, slug: str, last_order: str | None) -> RuleInfo:
    order = f"up to {_qty(r.max_quantity)}" if r.max_quantity is not None else _qty(r.reorder_quantity)
    return RuleInfo(r.id, slug, p.sku, p.is_active, _qty(p.stock_quantity), _qty(r.min_quantity), order,
                    supplier or r.supplier, r.is_active, r.last_triggered_at, last_order)
