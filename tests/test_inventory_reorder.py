"""erp:check-reorder-rules: below, at and above the minimum, open orders blocking,
grouping by supplier, inactive products, and the CLI."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from conftest import make_settings
from erpq.cli import main
from erpq.inventory.models import ReorderRule
from erpq.inventory.service import check_reorder_rules
from erpq.models import EventOutbox
from erpq.ops import Actor, Ops


@pytest.fixture
def ops(runtime):
    o = Ops(runtime, Actor("tester", None, "cli"))
    o.add_tenant("acme")
    inv = o.inventory
    inv.add_supplier("acme", "Bolt Co")
    inv.add_supplier("acme", "Nut Inc")
    for sku, stock, sup, kw in (("B-1", "4", "Bolt Co", {}), ("B-2", "5", "Bolt Co", {"max_quantity": "40"}),
                                ("B-3", "6", "Bolt Co", {}), ("N-1", "1", "Nut Inc", {})):
        inv.add_product("acme", sku, sku, stock=stock, unit_cost="1.50")
        inv.add_rule("acme", sku, "5", "20", supplier=sup, **kw)
    return o


def test_below_and_at_the_minimum_order_above_does_not_grouped_by_supplier(runtime, ops):
    r = check_reorder_rules(runtime)
    assert (len(r.orders), r.lines) == (2, 3)
    orders = {o.supplier: o for o in ops.inventory.orders().items}
    assert orders["Bolt Co"].items == "B-1 x 20, B-2 x 35"  # below: reorder qty; at: up to the max level
    assert orders["Nut Inc"].items == "N-1 x 20"
    assert all(o.status == "draft" and o.number.startswith("PO-") for o in orders.values())
    rules = {x.sku: x for x in ops.inventory.rules()}
    assert rules["B-3"].last_triggered_at is None  # 6 > 5: above the minimum
    assert rules["B-1"].last_triggered_at is not None and rules["B-1"].last_order == orders["Bolt Co"].number
    with runtime.read_session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(EventOutbox)
                        .where(EventOutbox.name == "purchase_order.created")) == 2


def test_an_open_order_blocks_a_new_one_until_it_is_received(runtime, ops):
    first = check_reorder_rules(runtime)
    again = check_reorder_rules(runtime)
    assert again.orders == [] and len(again.blocked) == 3
    ops.inventory.set_order_status(first.orders[0], "sent")  # still open
    assert check_reorder_rules(runtime).orders == []
    ops.inventory.set_order_status(first.orders[0], "received")
    ops.inventory.set_stock("acme", "B-3", "0")
    r = check_reorder_rules(runtime)
    bolt = [o for o in ops.inventory.orders(status="draft").items if o.id in r.orders]
    assert [o.items for o in bolt] == ["B-1 x 20, B-2 x 35, B-3 x 20"]


def test_inactive_product_and_inactive_rule_never_order(runtime, ops):
    ops.inventory.add_product("acme", "OLD", "old", stock="0", active=False)
    ops.inventory.add_rule("acme", "OLD", "5", "20")
    with runtime.session() as s:
        s.execute(sa.update(ReorderRule).where(ReorderRule.id == 4).values(is_active=False))  # N-1's rule
    r = check_reorder_rules(runtime)
    skus = " ".join(o.items for o in ops.inventory.orders().items)
    assert r.lines == 2 and "OLD" not in skus and "N-1" not in skus


def test_cli_inventory_and_invoice_commands(tmp_path, capsys):
    cfg = tmp_path / "config.toml"
    make_settings(tmp_path)  # validates the defaults
    cfg.write_text(f'[database]\nurl = "sqlite:///{tmp_path / "erpq.db"}"\n[queue]\nurl = "sqlite:///{tmp_path / "q.db"}"\n'
                   f'[log]\npath = "{tmp_path / "erpq.log"}"\n')

    def run(*argv):
        return main(["--config", str(cfg), *argv])

    from erpq.config import load
    from erpq.runtime import Runtime
    rt = Runtime(load(str(cfg)))
    Ops(rt, Actor("t", None, "cli")).add_tenant("acme")
    rt.close()
    assert run("inventory", "add-product", "S-1", "--tenant", "acme", "--stock", "2") == 0
    assert run("inventory", "add-rule", "S-1", "--tenant", "acme", "--min", "5", "--reorder", "10") == 0
    assert run("inventory", "check") == 0
    assert run("inventory", "set-stock", "S-1", "9", "--tenant", "acme") == 0
    capsys.readouterr()
    assert run("inventory", "orders", "--json") == 0
    assert '"items": "S-1 x 10"' in capsys.readouterr().out
    assert run("invoice", "recurring", "add", "--tenant", "acme", "--name", "Hosting", "--line", "Hosting;1;49.90;19",
               "--frequency", "monthly", "--anchor-day", "31", "--start", "2027-01-01") == 0
    assert run("invoice", "generate", "--date", "2027-03-01") == 0
    out = capsys.readouterr().out
    assert "2 invoice(s) from 1 template(s) as of 2027-03-01" in out
    assert run("invoice", "list", "--tenant", "acme", "--since", "2027-02-01") == 0
    out = capsys.readouterr().out
    assert "INV-2027-000002" in out and "59.38" in out and "INV-2027-000001" not in out
    assert run("invoice", "recurring", "pause", "1") == 0
    assert run("invoice", "recurring", "list") == 0
    assert "paused" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:  # refused by the argument type, before anything is read
        run("invoice", "recurring", "add", "--tenant", "acme", "--name", "X", "--line", "a;1;x",
            "--frequency", "daily")
    assert exc.value.code == 2 and "'x' is not a number" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        run("invoice", "recurring", "add", "--tenant", "acme", "--name", "X", "--line", "a;1;1e400",
            "--frequency", "daily")
    assert exc.value.code == 2 and "out of range" in capsys.readouterr().err
