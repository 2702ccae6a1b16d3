"""``erp:check-reorder-rules``: draft purchase orders for products at or below their minimum.

For each active rule on an active product whose stock is at or below the
minimum, order the reorder quantity (or up to ``max_quantity`` when the rule
has one), one draft order per tenant and supplier with a line per product,
unless an open (draft or sent) order for that product exists. A line's
``open_product_key`` (unique while the order is open) refuses a second open
order for a product even from a concurrent run.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .. import events
from ..db import utcnow
from ..runtime import current
from .capability import CAPABILITY
from .models import Product, PurchaseOrder, PurchaseOrderLine, ReorderRule, Supplier

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger("erpq.inventory")

OPEN = ("draft", "sent")
STATUSES = ("draft", "sent", "received", "cancelled")


@dataclass
class ReorderResult:
    orders: list[int] = field(default_factory=list)
    lines: int = 0
    blocked: list[int] = field(default_factory=list)  # rule ids with an open order already


@CAPABILITY.periodic("erp:check-reorder-rules", cron="0 7 * * *",
                     description="Draft purchase orders for products at or below their reorder minimum")
def check_reorder_rules_task() -> None:
    r = check_reorder_rules(current())
    log.info("erp:check-reorder-rules: %s order(s), %s line(s), %s blocked by open orders",
             len(r.orders), r.lines, len(r.blocked))


def open_product_ids(s: Session, product_ids: list[int]) -> set[int]:
    """Products among ``product_ids`` that have an open (draft or sent) purchase order."""
    if not product_ids:
        return set()
    a = s.scalars(sa.select(PurchaseOrderLine.product_id).join(PurchaseOrder, PurchaseOrder.id == PurchaseOrderLine.order_id)
                  .where(PurchaseOrderLine.product_id.in_(product_ids), PurchaseOrder.status.in_(OPEN)))
    b = s.scalars(sa.select(PurchaseOrder.product_id).where(PurchaseOrder.product_id.in_(product_ids),
                                                            PurchaseOrder.status.in_(OPEN)))
    return set(a) | set(b)


def check_reorder_rules(rt: Runtime, tenant_id: int | None = None, session: Session | None = None) -> ReorderResult:
    """Draft the purchase orders due; in one transaction of its own, or in ``session``
    (then it commits with the caller's, e.g. an operator's action and its audit row)."""
    result = ReorderResult()
    fmt = rt.settings.section("inventory").po_number_format
    with contextlib.nullcontext(session) if session is not None else rt.session() as s:
        q = (sa.select(ReorderRule, Product, Supplier)
             .join(Product, Product.id == ReorderRule.product_id)
             .outerjoin(Supplier, Supplier.id == ReorderRule.supplier_id)
             .where(ReorderRule.is_active.is_(True), Product.is_active.is_(True),
                    Product.stock_quantity <= ReorderRule.min_quantity)
             .order_by(ReorderRule.tenant_id, ReorderRule.id).with_for_update(of=ReorderRule))
        if tenant_id is not None:
            q = q.where(ReorderRule.tenant_id == tenant_id)
        rows = s.execute(q).all()
        busy = open_product_ids(s, [p.id for _, p, _ in rows])
        groups: dict[tuple, list] = defaultdict(list)
        for rule, product, supplier in rows:
            if product.id in busy:
                result.blocked.append(rule.id)
                continue
            qty = (rule.max_quantity - product.stock_quantity if rule.max_quantity is not None
                   else rule.reorder_quantity)
            if qty <= 0:
                continue
            key = (rule.tenant_id, supplier.id if supplier else None, None if supplier else rule.supplier)
            groups[key].append((rule, product, supplier, qty))
        now = utcnow()
        created: list[tuple[dict, int]] = []
        for (tid, supplier_id, supplier_text), items in groups.items():
            supplier_name = items[0][2].name if items[0][2] else supplier_text
            try:
                with s.begin_nested():
                    order = PurchaseOrder(tenant_id=tid, number="", supplier=supplier_name, supplier_id=supplier_id,
                                          status="draft", created_at=now)
                    s.add(order)
                    s.flush()
                    order.number = fmt.format(id=order.id)
                    for rule, product, _, qty in items:
                        s.add(PurchaseOrderLine(tenant_id=tid, order_id=order.id, product_id=product.id,
                                                reorder_rule_id=rule.id, quantity=Decimal(qty),
                                                unit_cost=product.unit_cost, open_product_key=product.id))
                    s.flush()
            except sa.exc.IntegrityError:  # a concurrent run ordered one of these products first
                result.blocked += [r.id for r, *_ in items]
                continue
            for rule, *_ in items:
                rule.last_triggered_at, rule.last_order_id = now, order.id
            created.append(({"purchase_order_id": order.id, "number": order.number, "supplier": supplier_name,
                             "lines": [{"product_id": p.id, "sku": p.sku, "quantity": str(q)}
                                       for _, p, _, q in items]}, tid))
            result.orders.append(order.id)
            result.lines += len(items)
        # Emitted after the last savepoint: SQLAlchemy fires after_commit when a savepoint is
        # released too, which would fan an event already emitted out before this transaction
        # commits (on SQLite it then waits for this transaction's write lock, up to busy_timeout).
        for payload, tid in created:
            events.emit("purchase_order.created", payload, tid, session=s)
    return result


def set_order_status(s: Session, order: PurchaseOrder, status: str) -> None:
    """Move an order on; lines of an order that is no longer open free their product."""
    order.status = status
    is_open = status in OPEN
    order.open_product_key = order.product_id if is_open and order.product_id else None
    s.execute(sa.update(PurchaseOrderLine).where(PurchaseOrderLine.order_id == order.id)
              .values(open_product_key=PurchaseOrderLine.product_id if is_open else None))
