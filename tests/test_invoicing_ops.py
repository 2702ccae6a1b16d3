"""The Ops methods the invoicing and inventory console panels name: every panel's
read takes (offset, limit, search) and returns a Page whose records have the
panel's columns; the recurring panel's order (failing, paused, active, ended),
paging and search (case-insensitive on every backend, ``%`` literal); invoices
issued today; the reorder rules and draft orders panels; the pause/resume
actions audited, refused in read-only mode and leaving no audit row when they
fail; one read on PostgreSQL."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from conftest import make_settings
from erpq.db import make_engine, upgrade
from erpq.inventory.capability import CAPABILITY as INVENTORY
from erpq.invoicing import service
from erpq.invoicing.capability import CAPABILITY as INVOICING
from erpq.invoicing.models import RecurringInvoice
from erpq.models import AuditLog, EventOutbox
from erpq.ops import Actor, Conflict, NotFound, Ops, Page, ReadOnly
from erpq.runtime import Runtime, set_current

LINES = [{"description": "Support", "quantity": "2", "unit_price": "10.00", "tax_rate": "19"}]


def audit_rows(rt) -> list[tuple]:
    with rt.read_session() as s:
        return [(a.actor, a.client, a.source, a.action, a.target, a.command)
                for a in s.scalars(sa.select(AuditLog).order_by(AuditLog.id))]


@pytest.fixture
def ops(runtime) -> Ops:
    return Ops(runtime, Actor("tester", "10.0.0.9", "console"))


@pytest.fixture
def world(runtime, ops) -> SimpleNamespace:
    """Templates in every state, invoices today and before, reorder rules, draft orders."""
    today = service.local_today(runtime)
    ops.add_tenant("acme")
    ops.add_tenant("globex")
    inv = ops.invoicing

    def add(tenant, name, frequency, start, **kw):
        return inv.add(tenant, name, LINES, frequency, start_date=start, **kw).id

    w = SimpleNamespace(today=today)
    w.active = add("acme", "Support plan", "daily", today - dt.timedelta(days=2))
    w.hosting = add("globex", "Hosting", "monthly", today)
    w.paused = add("acme", "Paused plan", "daily", today)
    w.failing = add("acme", "Broken plan", "daily", today)
    w.ended = add("globex", "One-off setup", "daily", today - dt.timedelta(days=2), max_occurrences=1)
    inv.pause(w.paused)
    with runtime.session() as s:
        t = s.get(RecurringInvoice, w.failing)
        t.paused_at, t.consecutive_failures = dt.datetime.now(dt.UTC), 3
        t.paused_reason = t.last_error = "paused after 3 consecutive failures: ValueError: line 1 unit_price"
    service.generate(runtime, today)

    stock = ops.inventory
    stock.add_supplier("acme", "Bolt Co")
    stock.add_supplier("acme", "Nut Inc")
    w.rules = {}
    for sku, qty, supplier in (("B-1", "4", "Bolt Co"), ("B-2", "6", "Bolt Co"), ("N-1", "1", "Nut Inc")):
        stock.add_product("acme", sku, sku, stock=qty, unit_cost="1.50")
        w.rules[sku] = stock.add_rule("acme", sku, "5", "20", supplier=supplier)
    w.orders = stock.check().orders  # B-1 (Bolt Co) and N-1 (Nut Inc); B-2 is above its minimum
    with runtime.session() as s:
        s.execute(sa.delete(AuditLog))  # the setup's own actions
    return w


@pytest.mark.parametrize("cap", [INVOICING, INVENTORY], ids=lambda c: c.name)
def test_every_panel_read_and_action_exists_and_gives_its_columns(ops, world, cap):
    section = ops.section(cap.name)
    for panel in cap.panels:
        page = getattr(section, panel.read)(offset=0, limit=50, search=None)
        assert isinstance(page, Page) and (page.offset, page.limit) == (0, 50), panel.key
        assert page.items and page.total == len(page.items), panel.key
        for item in page.items:
            assert isinstance(getattr(item, panel.row_id), int)
            record = item.to_dict()
            assert [f for f, _, _ in panel.columns if f not in record] == [], panel.key
        for action in panel.actions:
            assert callable(getattr(section, action.method)), action.method
            assert action.confirm is None or "{id}" in action.confirm
        if panel.summary:
            assert panel.summary.format(**section.summary())


def test_recurring_panel_order_paging_and_search(ops, world):
    inv = ops.invoicing
    page = inv.templates_page()
    assert [t.id for t in page.items] == [world.failing, world.paused, world.active, world.hosting, world.ended]
    assert [t.state for t in page.items] == ["failing", "paused", "active", "active", "ended"]
    active = page.items[2]
    assert (active.tenant, active.schedule, active.next_date) == ("acme", "every day",
                                                                 world.today + dt.timedelta(days=1))
    assert active.last_invoice == inv.invoices(tenant="acme").items[0].number
    assert page.items[4].reason == "occurrence limit reached (1)" and page.items[4].next_date is None
    assert page.items[1].reason == "paused by an operator"

    two = inv.templates_page(offset=2, limit=2)
    assert ([t.id for t in two.items], two.total, two.offset, two.limit) == ([world.active, world.hosting], 5, 2, 2)
    assert inv.templates_page(offset=10).items == [] and inv.templates_page(offset=10).total == 5

    def found(search):
        return [t.id for t in inv.templates_page(search=search).items]

    assert found("acme") == found("ACME") == [world.failing, world.paused, world.active]  # tenant, any case
    assert found("hosting") == [world.hosting]  # name
    assert found("Operator") == [world.paused]  # pause reason
    assert found("unit_price") == [world.failing]  # "_" is a literal underscore...
    assert found("%") == [] and found("plan_") == []  # ...and "%" a literal percent sign
    assert inv.templates_page(search="nothing like it").total == 0


def test_invoices_today_panel(ops, world):
    inv = ops.invoicing
    page = inv.invoices_today()
    assert page.total == 2 and all(i.issue_date == world.today for i in page.items)
    assert [i.template_id for i in page.items] == [world.hosting, world.active]  # newest first
    assert inv.invoices().total == 5  # the two days before today and the ended template's one are not shown
    first = page.items[0]
    assert (first.tenant, first.total, first.currency) == ("globex", "23.80", "EUR")
    assert [i.id for i in inv.invoices_today(search=first.number).items] == [first.id]
    assert [i.id for i in inv.invoices_today(search="GLOBEX").items] == [first.id]
    one = inv.invoices_today(offset=1, limit=1)
    assert ([i.template_id for i in one.items], one.total) == ([world.active], 2)


def test_reorder_rules_and_draft_orders_panels(runtime, ops, world):
    stock = ops.inventory
    rules = stock.rules_page()
    assert [r.sku for r in rules.items] == ["B-1", "N-1", "B-2"]  # fired (latest first, then id), then never fired
    b1, n1, b2 = rules.items
    orders = {o.supplier: o for o in stock.orders_page().items}
    assert (b1.stock, b1.min_quantity, b1.order_quantity, b1.supplier) == ("4", "5", "20", "Bolt Co")
    assert b1.last_order == orders["Bolt Co"].number and n1.last_order == orders["Nut Inc"].number
    assert b2.last_triggered_at is None and b2.last_order is None
    assert [r.sku for r in stock.rules_page(search="BOLT").items] == ["B-1", "B-2"]  # supplier, any case
    assert [r.sku for r in stock.rules_page(search="n-1").items] == ["N-1"]  # SKU
    assert [r.sku for r in stock.rules_page(offset=1, limit=1).items] == ["N-1"]

    drafts = stock.orders_page()
    assert drafts.total == 2 and {o.items for o in drafts.items} == {"B-1 x 20", "N-1 x 20"}
    stock.set_order_status(orders["Bolt Co"].id, "sent")
    drafts = stock.orders_page()
    assert [o.supplier for o in drafts.items] == ["Nut Inc"] and drafts.total == 1  # drafts only
    assert [o.id for o in stock.orders_page(search="nut").items] == [orders["Nut Inc"].id]
    assert stock.orders_page(search="bolt").total == 0
    with runtime.read_session() as s:  # both orders' events fanned out after the commit, none left pending
        statuses = s.scalars(sa.select(EventOutbox.status).where(EventOutbox.name == "purchase_order.created"))
        assert list(statuses) == ["done", "done"]


def _action(cap, panel_key: str, key: str):
    panel = next(p for p in cap.panels if p.key == panel_key)
    return next(a for a in panel.actions if a.key == key)


def test_pause_and_resume_actions_are_audited(runtime, ops, world):
    pause, resume = _action(INVOICING, "recurring", "p"), _action(INVOICING, "recurring", "r")
    t = getattr(ops.invoicing, pause.method)(world.active)
    assert (t.id, t.state, t.reason) == (world.active, "paused", "paused by an operator")
    assert service.generate(runtime, world.today + dt.timedelta(days=1)).invoices == 0  # paused: nothing issued
    t = getattr(ops.invoicing, resume.method)(world.active)
    assert (t.state, t.reason) == ("active", None)
    assert audit_rows(runtime) == [
        ("tester", "10.0.0.9", "console", "invoicing.recurring.pause", f"recurring:{world.active}",
         f"erpq invoice recurring pause {world.active}"),
        ("tester", "10.0.0.9", "console", "invoicing.recurring.resume", f"recurring:{world.active}",
         f"erpq invoice recurring resume {world.active}")]


def test_failed_actions_leave_no_audit_row(runtime, ops, world):
    with pytest.raises(Conflict, match=f"recurring invoice {world.ended} has ended"):
        ops.invoicing.pause(world.ended)
    with pytest.raises(Conflict, match="already paused"):
        ops.invoicing.pause(world.paused)
    with pytest.raises(Conflict, match="is not paused"):
        ops.invoicing.resume(world.active)
    with pytest.raises(NotFound, match="no recurring invoice 999"):
        ops.invoicing.resume(999)
    assert audit_rows(runtime) == []


def test_read_only_refuses_the_actions_and_still_reads(runtime, world):
    ro = Ops(runtime, Actor("viewer", None, "console"), read_only=True)
    with pytest.raises(ReadOnly, match=f"equivalent: erpq invoice recurring pause {world.active}"):
        ro.invoicing.pause(world.active)
    with pytest.raises(ReadOnly, match=f"erpq invoice recurring resume {world.paused}"):
        ro.invoicing.resume(world.paused)
    with pytest.raises(ReadOnly, match="erpq inventory order-status"):
        ro.inventory.set_order_status(world.orders[0], "sent")
    assert audit_rows(runtime) == []
    states = {t.id: t.state for t in ro.invoicing.templates_page().items}  # reads work, nothing changed
    assert (states[world.active], states[world.paused]) == ("active", "paused")
    assert ro.invoicing.invoices_today().total == 2
    assert ro.inventory.rules_page().total == 3 and ro.inventory.orders_page().total == 2


def test_recurring_panel_read_on_postgresql(tmp_path, pg_url):
    engine = make_engine(pg_url)
    upgrade(engine)
    engine.dispose()
    rt = Runtime(make_settings(tmp_path, database={"url": pg_url}))
    set_current(rt)
    try:
        ops = Ops(rt, Actor("tester", None, "console"))
        ops.add_tenant("acme")
        today = service.local_today(rt)
        a = ops.invoicing.add("acme", "Support Plan", LINES, "daily", start_date=today).id
        b = ops.invoicing.add("acme", "Hosting", LINES, "monthly", start_date=today).id
        ops.invoicing.pause(b)
        service.generate(rt, today)
        page = ops.invoicing.templates_page(limit=1)
        assert ([t.id for t in page.items], page.total) == ([b], 2)  # paused before active
        assert [t.id for t in ops.invoicing.templates_page(search="support plan").items] == [a]  # ILIKE
        assert ops.invoicing.templates_page(search="%").total == 0
        today_page = ops.invoicing.invoices_today(search="ACME")
        assert [i.template_id for i in today_page.items] == [a]
    finally:
        set_current(None)
        rt.close()
