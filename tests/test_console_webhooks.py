"""The webhooks panels (Business tab): subscriptions with failure counts and state,
deliveries with response code, attempts and next retry; enable, disable (with a
reason) and redeliver change the store, are audited, and are refused read-only.
On SQLite, and the whole path once on PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from conftest import backend_settings
from console_fixtures import press, settle
from erpq.db import utcnow
from erpq.models import AuditLog, Webhook, WebhookDelivery
from erpq.ops import Actor, Ops
from erpq.runtime import Runtime, set_current
from erpq.runtime.registry import load_capabilities
from tui.app import ErpqConsole
from tui.widgets.dialogs import ConfirmScreen, PromptScreen
from webhook_fixtures import add_tenant, insert_webhook, webhook

load_capabilities()

pytestmark = pytest.mark.anyio
ACTOR = Actor(user="tester", client="10.1.2.3", source="console")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    settings = backend_settings(request, tmp_path, request.param)
    rt = Runtime(settings)
    set_current(rt)
    yield rt
    set_current(None)
    rt.close()


def seed(rt: Runtime) -> dict[str, int]:
    tid = add_tenant(rt, "acme")
    ok = insert_webhook(rt, tid, "http://127.0.0.1:9/ok")
    dead = insert_webhook(rt, tid, "http://127.0.0.1:9/dead")
    now = utcnow()
    with rt.session() as s:
        h = s.get(Webhook, dead)
        h.is_active, h.consecutive_failures, h.disabled_at, h.disabled_reason = False, 20, now, "20 failures"
        d = WebhookDelivery(tenant_id=tid, webhook_id=ok, delivery_id="msg_one", event="deal.created", payload={},
                            status="dead", attempts=8, response_code=503, error="HTTP 503")
        s.add(d)
        s.flush()
        return {"tenant": tid, "ok": ok, "dead": dead, "delivery": d.id}


def audit_actions(rt: Runtime) -> list[tuple[str, str]]:
    with rt.read_session() as s:
        return [(a.action, a.target) for a in s.scalars(sa.select(AuditLog).order_by(AuditLog.id))]


async def open_panel(app, pilot, key: str):
    app.action_show_view(key)
    await settle(app, pilot)
    view = app.view(key)
    assert app.active_view is view
    return view


async def test_panels_list_and_act_on_a_real_store(db):
    ids = seed(db)
    app = ErpqConsole(Ops(db, ACTOR), db.settings, poll=False)
    async with app.run_test(size=(200, 50)) as pilot:
        await settle(app, pilot)
        subs = await open_panel(app, pilot, "webhook_subscriptions")
        table = subs.table
        assert table.keys == [str(ids["dead"]), str(ids["ok"])]  # the disabled first
        assert [str(c) for c in table.cells(str(ids["dead"]))[:4]] == [str(ids["dead"]), "Acme", "20",
                                                                          "disabled: 20 failures"]
        assert str(table.cells(str(ids["ok"]))[3]) == "active"
        assert "active 1, failing 0, disabled 1" in subs.query_one("#head").text
        # Disable the active one, with a reason typed into the prompt.
        table.move_cursor(row=1)
        await press(app, pilot, "x")
        assert isinstance(app.screen, PromptScreen)
        prompt = app.screen.query_one("#prompt")
        prompt.value = "maintenance at acme"
        await press(app, pilot, "enter")
        hook = webhook(db, ids["ok"])
        assert not hook.is_active and hook.disabled_reason == "maintenance at acme"
        assert ("webhook.disable", str(ids["ok"])) in audit_actions(db)
        assert "erpq webhook disable" in app.messages[-1]
        assert str(table.cells(str(ids["ok"]))[3]) == "disabled: maintenance at acme"
        # Esc at the prompt does nothing.
        await press(app, pilot, "x", "escape")
        assert "cancelled, nothing done" in app.messages[-1]
        # Enable both (asks first).
        for key in (str(ids["ok"]), str(ids["dead"])):
            table.move_cursor(row=table.keys.index(key))
            await press(app, pilot, "e")
            assert isinstance(app.screen, ConfirmScreen)
            await press(app, pilot, "y")
        assert webhook(db, ids["dead"]).is_active and webhook(db, ids["dead"]).consecutive_failures == 0
        assert [a for a in audit_actions(db) if a[0] == "webhook.enable"] == [
            ("webhook.enable", str(ids["ok"])), ("webhook.enable", str(ids["dead"]))]
        # Deliveries: code, attempts; redeliver resets it for a new series of attempts.
        deliveries = await open_panel(app, pilot, "webhooks")
        key = str(ids["delivery"])
        assert deliveries.table.keys == [key]
        cells = [str(c) for c in deliveries.table.cells(key)]
        assert cells[2:5] == ["dead", "8", "503"]
        await press(app, pilot, "r", "y")
        with db.read_session() as s:
            d = s.get(WebhookDelivery, ids["delivery"])
            assert (d.status, d.attempts) == ("pending", 0)
        assert ("webhook.redeliver", key) in audit_actions(db)
        assert [str(c) for c in deliveries.table.cells(key)][2:4] == ["pending", "0"]


async def test_panel_actions_are_refused_read_only(runtime):
    ids = seed(runtime)
    app = ErpqConsole(Ops(runtime, ACTOR, read_only=True), runtime.settings, poll=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        subs = await open_panel(app, pilot, "webhook_subscriptions")
        subs.table.move_cursor(row=subs.table.keys.index(str(ids["ok"])))
        await press(app, pilot, "x")  # no prompt: refused at once
        assert not isinstance(app.screen, PromptScreen)
        assert "read-only mode: 'webhook.disable' is refused" in app.messages[-1]
        subs.table.move_cursor(row=subs.table.keys.index(str(ids["dead"])))
        await press(app, pilot, "e")
        assert "read-only mode: 'webhook.enable' is refused" in app.messages[-1]
        await open_panel(app, pilot, "webhooks")
        await press(app, pilot, "r")
        assert "read-only mode: 'webhook.redeliver' is refused" in app.messages[-1]
    assert webhook(runtime, ids["ok"]).is_active and not webhook(runtime, ids["dead"]).is_active
    with runtime.read_session() as s:
        assert s.get(WebhookDelivery, ids["delivery"]).status == "dead"
    assert audit_actions(runtime) == []
