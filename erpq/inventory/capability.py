"""The inventory capability: reorder rules and ``erp:check-reorder-rules``."""

from __future__ import annotations

from dataclasses import dataclass

from ..capability import Capability, PanelSpec


@dataclass
class InventorySettings:
    """``[inventory]``: purchase order numbering."""

    #: Purchase order number format; ``{id}`` is the order's row id.
    po_number_format: str = "PO-{id:06d}"

    def validate(self, err) -> None:
        try:
            self.po_number_format.format(id=1)
        except (KeyError, IndexError, ValueError) as exc:
            raise err("po_number_format", f"not a valid format ({exc}); field: id") from None


CAPABILITY = Capability(
    "inventory",
    title="Inventory",
    description="Reorder rules create draft purchase orders, grouped by supplier, when stock runs low",
    modules=("erpq.inventory.service",),
    settings=InventorySettings,
    cli="erpq.inventory.cli:register",
    ops="erpq.inventory.ops:InventoryOps",
    events=("purchase_order.created",),
    models="erpq.inventory.models",
    migrations="migrations",
    panels=(
        PanelSpec("reorder_rules", "Reorder rules", read="rules_page",
                  columns=(("id", "Id", 6), ("tenant", "Tenant", 12), ("sku", "SKU", 12), ("stock", "Stock", 10),
                           ("min_quantity", "Min", 8), ("order_quantity", "Orders", 8), ("supplier", "Supplier", 16),
                           ("last_triggered_at", "Last fired", 19), ("last_order", "Last order", None))),
        PanelSpec("purchase_orders", "Draft purchase orders", read="orders_page",
                  columns=(("id", "Id", 6), ("tenant", "Tenant", 12), ("number", "Number", 12),
                           ("supplier", "Supplier", 16), ("status", "Status", 8), ("lines", "Lines", 5),
                           ("items", "Items", None), ("created_at", "Created", 19))),
    ),
)
