"""``erpq inventory``: reorder rules, purchase orders, stock adjustments."""

from __future__ import annotations

import argparse

from ..cli_support import Group, bounded_text, column_text, decimal_text, ops_for, out
from .models import Product, Supplier

#: Quantities and prices: what the Numeric columns hold.
QUANTITY = decimal_text(-1e12, 1e12, "a quantity")
AMOUNT = decimal_text(0, 1e12, "an amount")
TENANT = bounded_text(64)

RULE_COLUMNS = ["id", "tenant", "sku", "stock", "min_quantity", "order_quantity", "supplier", "is_active",
                "last_triggered_at", "last_order"]
ORDER_COLUMNS = ["id", "tenant", "number", "supplier", "status", "lines", "items", "created_at"]


def _inv(args, rt):
    return ops_for(args, rt).inventory


def cmd_rules(args, rt) -> int:
    return out(args, _inv(args, rt).rules(args.tenant), RULE_COLUMNS)


def cmd_orders(args, rt) -> int:
    page = _inv(args, rt).orders(args.tenant, args.status, offset=args.offset, limit=args.limit)
    return out(args, page.items, ORDER_COLUMNS)


def cmd_set_stock(args, rt) -> int:
    qty = _inv(args, rt).set_stock(args.tenant, args.sku, args.qty)
    print(f"Stock of {args.sku} set to {qty}")
    return 0


def cmd_add_product(args, rt) -> int:
    pid = _inv(args, rt).add_product(args.tenant, args.sku, args.name or args.sku, args.stock, args.unit_cost)
    print(f"Added product {pid} ({args.sku})")
    return 0


def cmd_add_supplier(args, rt) -> int:
    sid = _inv(args, rt).add_supplier(args.tenant, args.name, args.email)
    print(f"Added supplier {sid} ({args.name})")
    return 0


def cmd_add_rule(args, rt) -> int:
    rid = _inv(args, rt).add_rule(args.tenant, args.sku, args.min, args.reorder, args.max, args.supplier)
    print(f"Added reorder rule {rid} for {args.sku}")
    return 0


def cmd_check(args, rt) -> int:
    r = _inv(args, rt).check(args.tenant)
    print(f"{len(r.orders)} draft order(s) with {r.lines} line(s); {len(r.blocked)} rule(s) blocked by open orders")
    return 0


def register(groups, common: argparse.ArgumentParser) -> None:
    g = Group(groups, common, "inventory", "reorder rules, purchase orders, stock")
    c = g.cmd("rules", cmd_rules, "reorder rules with stock, when they last fired and their last order", json=True)
    c.add_argument("--tenant", type=TENANT, help="only this tenant (slug or id)")
    c = g.cmd("orders", cmd_orders, "purchase orders, newest first, with their lines", json=True, paged=True)
    c.add_argument("--tenant", type=TENANT, help="only this tenant (slug or id)")
    c.add_argument("--status", choices=("draft", "sent", "received", "cancelled"), help="only orders in this status")
    c = g.cmd("set-stock", cmd_set_stock, "set a product's stock quantity (tests and demos)")
    c.add_argument("sku", type=column_text(Product, "sku"), help="product SKU")
    c.add_argument("qty", type=QUANTITY, help="new stock quantity")
    c.add_argument("--tenant", required=True, type=TENANT, help="tenant slug or id")
    c = g.cmd("add-product", cmd_add_product, "add a product")
    c.add_argument("sku", type=column_text(Product, "sku"), help="product SKU (unique per tenant)")
    c.add_argument("--tenant", required=True, type=TENANT, help="tenant slug or id")
    c.add_argument("--name", type=column_text(Product, "name"), help="product name (default: the SKU)")
    c.add_argument("--stock", default="0", type=QUANTITY, help="initial stock (default 0)")
    c.add_argument("--unit-cost", type=AMOUNT, help="purchase price per unit")
    c = g.cmd("add-supplier", cmd_add_supplier, "add a supplier")
    c.add_argument("name", type=column_text(Supplier, "name"), help="supplier name (unique per tenant)")
    c.add_argument("--tenant", required=True, type=TENANT, help="tenant slug or id")
    c.add_argument("--email", type=column_text(Supplier, "email"), help="supplier's order address")
    c = g.cmd("add-rule", cmd_add_rule, "add a reorder rule to a product")
    c.add_argument("sku", type=column_text(Product, "sku"), help="product SKU")
    c.add_argument("--tenant", required=True, type=TENANT, help="tenant slug or id")
    c.add_argument("--min", required=True, type=AMOUNT, help="reorder when stock is at or below this")
    c.add_argument("--reorder", required=True, type=AMOUNT, help="quantity to order")
    c.add_argument("--max", type=AMOUNT, help="order up to this stock level instead of --reorder")
    c.add_argument("--supplier", type=column_text(Supplier, "name"), help="supplier name")
    c = g.cmd("check", cmd_check, "run the reorder check now (what erp:check-reorder-rules does)")
    c.add_argument("--tenant", type=TENANT, help="only this tenant (slug or id)")
