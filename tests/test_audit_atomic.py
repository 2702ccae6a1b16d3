"""Issue 13, item 1: every audited action commits with its audit row or not at all.

For each action of every Ops section (core and capabilities) an audit row the
database refuses (a NOT NULL column left empty, so the INSERT fails after the
action's own writes were flushed, before the commit) must leave every table and
the queue store as they were: the action's writes roll back with the audit row,
and nothing is enqueued or run (enqueues and runs happen only after the commit).
Runs on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa

from badinput import close_dumps, dump, run_cli, write_config
from conftest import MARIADB_URL, PG_URL, db_available, need, reset_database
from erpq.config import load
from erpq.ops import Ops
from erpq.ops import base as ops_base
from erpq.runtime import Runtime, set_current

SECRET = "s3cret-pw"


def _seed(rt: Runtime, tmp_path) -> dict:
    """One of everything an action below works on."""
    from erpq.crm import service as crm_service
    from erpq.models import Lock, WebhookDelivery
    from test_crm_ops import add_runs

    ops = Ops(rt)
    ops.add_tenant("acme")
    user = ops.add_user("acme", "Ann", "ann@example.com")
    ctx: dict = {"tmp": tmp_path}
    # crm
    ctx["lead"] = ops.crm.add("lead", "acme", {"name": "Lee", "email": "lee@example.com"}).id
    ops.crm.add("activity", "acme", {"subject": "Call", "due_at": (dt.datetime.now(dt.UTC) + dt.timedelta(
        minutes=5)).isoformat(), "assigned_to": str(user.id)})
    with rt.session() as s:
        tid = ops.tenant_id("acme")
        ctx["notification"] = crm_service.notify(s, tid, user.id, "reminder", "Call", None, None, "k1").id
        # the activity's reminder is not claimed yet (the created event may have claimed it: undo that)
        from erpq.crm.models import Activity

        s.execute(sa.update(Activity).values(reminder_claimed_at=None, reminder_sent_at=None))
    ctx["run"] = add_runs(rt, tid)["waiting"]
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps({"name": "Hello", "trigger": "lead.created",
                              "actions": [{"type": "notify", "title": "t", "user": str(user.id)}]}))
    ctx["workflow_file"] = str(wf)
    # mail
    m = ops.mail
    ctx["account"] = m.add_account("acme", "box@example.com", imap_host="127.0.0.1", imap_port=1,
                                   imap_security="none", imap_password=SECRET).id
    ctx["account_off"] = m.add_account("acme", "off@example.com", imap_host="127.0.0.1", imap_port=1,
                                       imap_security="none", imap_password=SECRET).id
    m.disable_account(ctx["account_off"])
    ops.crm.add("contact", "acme", {"first_name": "Cy", "email": "cy@example.com"})
    ctx["campaign"] = m.create_campaign("acme", ctx["account"], "Launch", "Hi", "Hello").id
    m.add_recipients(ctx["campaign"], source="contacts")
    ctx["campaign_paused"] = m.create_campaign("acme", ctx["account"], "Paused", "Hi", "Hello").id
    m.add_recipients(ctx["campaign_paused"], source="contacts")
    m.send(ctx["campaign_paused"], at=dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    m.pause(ctx["campaign_paused"])
    csv = tmp_path / "r.csv"
    csv.write_text("email,name\nzed@example.com,Zed\n")
    ctx["recipients_csv"] = str(csv)
    # inventory: P1 has an open order (set_order_status), P2 is below its minimum (check)
    inv = ops.inventory
    inv.add_supplier("acme", "Acme Supply")
    inv.add_product("acme", "P1", "Bolt", stock="1")
    inv.add_rule("acme", "P1", "5", "10")
    inv.check("acme")
    inv.add_product("acme", "P2", "Nut", stock="1")
    inv.add_rule("acme", "P2", "5", "10")
    inv.add_product("acme", "P3", "Washer")
    ctx["order"] = inv.orders().items[0].id
    # invoicing: one active template due today, one paused
    lines = [{"description": "Support", "quantity": "1", "unit_price": "100", "tax_rate": "0"}]
    ctx["template"] = ops.invoicing.add("acme", "Monthly", lines, "monthly").id
    ctx["template_paused"] = ops.invoicing.add("acme", "Weekly", lines, "weekly").id
    ops.invoicing.pause(ctx["template_paused"])
    # reports
    ctx["report"] = ops.reports.create("acme", "Leads", "leads").id
    ctx["schedule"] = ops.reports.add_schedule(ctx["report"], "0 7 * * *", "UTC", "csv").id
    ctx["schedule_paused"] = ops.reports.add_schedule(ctx["report"], "0 8 * * *", "UTC", "csv").id
    ops.reports.pause_schedule(ctx["schedule_paused"])
    ctx["report_out"] = str(tmp_path / "out.csv")
    # imports: a file, and an import waiting for its job
    leads = tmp_path / "leads.csv"
    leads.write_text("Name,Email\nIvy,ivy@example.com\n")
    ctx["leads_csv"] = str(leads)
    ctx["import"] = ops.imports.start("acme", "leads", leads, queue=True).id
    # webhooks: a subscription with a finished (dead) delivery
    hook, _secret = ops.webhooks.add("acme", "https://example.com/hook", ["deal.created"])
    ctx["hook"] = hook.id
    ctx["hook_off"] = ops.webhooks.add("acme", "https://example.com/off")[0].id
    ops.webhooks.disable(ctx["hook_off"])
    ctx["batch"] = ops.imports.get(ctx["import"]).batch_id
    ops.emit_event("deal.created", {"id": 1}, "acme")
    with rt.session() as s:
        s.execute(sa.update(WebhookDelivery).values(status="dead"))
        ctx["delivery"] = s.scalar(sa.select(WebhookDelivery.delivery_id))
        s.add(Lock(name="stale-lock", holder="gone-runner", task_id=None,
                   acquired_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=2),
                   expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)))
    return ctx


#: (name, action(ops, ctx)): every audited action, core and capability.
ACTIONS = [
    # core
    ("tenant.add", lambda o, c: o.add_tenant("globex")),
    ("user.add", lambda o, c: o.add_user("acme", "Bob")),
    ("schedule.pause", lambda o, c: o.pause("erp:check-system-health")),
    ("schedule.run", lambda o, c: o.trigger("erp:check-system-health")),
    ("event.emit", lambda o, c: o.emit_event("deal.created", {"id": 2}, "acme")),
    ("lock.release", lambda o, c: o.release_lock("stale-lock")),
    ("queue.recover", lambda o, c: o.recover()),
    ("batch.cancel", lambda o, c: o.cancel_batch(c["batch"])),
    # webhooks
    ("webhook.add", lambda o, c: o.webhooks.add("acme", "https://example.com/other")),
    ("webhook.disable", lambda o, c: o.webhooks.disable(c["hook"], "maintenance")),
    ("webhook.enable", lambda o, c: o.webhooks.enable(c["hook_off"])),
    ("webhook.rotate-secret", lambda o, c: o.webhooks.rotate_secret(c["hook"])),
    ("webhook.redeliver", lambda o, c: o.webhooks.redeliver(c["delivery"])),
    # crm
    ("crm.lead.add", lambda o, c: o.crm.add("lead", "acme", {"name": "New", "email": "new@example.com"})),
    ("crm.lead.update", lambda o, c: o.crm.update("lead", c["lead"], {"status": "qualified"})),
    ("crm.notification.read", lambda o, c: o.crm.mark_read(c["notification"])),
    ("crm.reminders.check", lambda o, c: o.crm.check_reminders()),
    ("crm.workflow.load", lambda o, c: o.crm.load_workflows("acme", c["workflow_file"])),
    ("crm.workflow.resume", lambda o, c: o.crm.resume_run(c["run"])),
    # mail
    ("mail.account.add", lambda o, c: o.mail.add_account("acme", "new@example.com", imap_host="127.0.0.1",
                                                         imap_password=SECRET)),
    ("mail.account.disable", lambda o, c: o.mail.disable_account(c["account"])),
    ("mail.account.enable", lambda o, c: o.mail.enable_account(c["account_off"])),
    ("mail.sync", lambda o, c: o.mail.sync(c["account"])),
    ("mail.sync (queued)", lambda o, c: o.mail.sync_account(c["account"])),
    ("mail.campaign.create", lambda o, c: o.mail.create_campaign("acme", c["account"], "New", "Hi", "Body")),
    ("mail.campaign.add-recipients", lambda o, c: o.mail.add_recipients(c["campaign"], c["recipients_csv"])),
    ("mail.campaign.send", lambda o, c: o.mail.send(c["campaign"])),
    ("mail.campaign.resume", lambda o, c: o.mail.resume(c["campaign_paused"])),
    ("mail.campaign.cancel", lambda o, c: o.mail.cancel(c["campaign_paused"])),
    # inventory
    ("inventory.supplier.add", lambda o, c: o.inventory.add_supplier("acme", "Other")),
    ("inventory.product.add", lambda o, c: o.inventory.add_product("acme", "P4", "Screw")),
    ("inventory.rule.add", lambda o, c: o.inventory.add_rule("acme", "P3", "1", "2")),
    ("inventory.set_stock", lambda o, c: o.inventory.set_stock("acme", "P1", "50")),
    ("inventory.order.status", lambda o, c: o.inventory.set_order_status(c["order"], "sent")),
    ("inventory.check", lambda o, c: o.inventory.check()),
    # invoicing
    ("invoicing.recurring.add", lambda o, c: o.invoicing.add(
        "acme", "Yearly", [{"description": "x", "quantity": "1", "unit_price": "1"}], "yearly")),
    ("invoicing.recurring.pause", lambda o, c: o.invoicing.pause(c["template"])),
    ("invoicing.recurring.resume", lambda o, c: o.invoicing.resume(c["template_paused"])),
    ("invoicing.generate", lambda o, c: o.invoicing.generate()),
    # health
    ("health.check", lambda o, c: o.health.check()),
    ("health.probe", lambda o, c: o.health.send_probe()),
    # reports
    ("report.create", lambda o, c: o.reports.create("acme", "Other", "leads")),
    ("report.run", lambda o, c: o.reports.run(c["report"], "csv", c["report_out"])),
    ("report.email", lambda o, c: o.reports.email(c["report"], "csv", ["boss@example.com"])),
    ("report.schedule.add", lambda o, c: o.reports.add_schedule(c["report"], "0 9 * * *")),
    ("report.schedule.pause", lambda o, c: o.reports.pause_schedule(c["schedule"])),
    ("report.schedule.resume", lambda o, c: o.reports.resume_schedule(c["schedule_paused"])),
    ("report.schedule.remove", lambda o, c: o.reports.remove_schedule(c["schedule"])),
    ("report.schedule.run", lambda o, c: o.reports.run_schedule_now(c["schedule"])),
    # imports
    ("import.start (now)", lambda o, c: o.imports.start("acme", "leads", c["leads_csv"])),
    ("import.start (queued)", lambda o, c: o.imports.start("acme", "leads", c["leads_csv"], queue=True)),
    ("import.cancel", lambda o, c: o.imports.cancel(c["import"])),
]


def _refused_audit_row(row):
    row = _real_fit_row(row)
    row.actor = None  # NOT NULL: the INSERT fails at the commit's flush, after the action's writes
    return row


_real_fit_row = ops_base._fit_row


@pytest.fixture(scope="module", params=["sqlite", "postgres", "mariadb"])
def seeded(request, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "sqlite":
        url = f"sqlite:///{tmp}/db.sqlite"
    else:
        url = PG_URL if request.param == "postgres" else MARIADB_URL
        need(request.param, db_available(url), url)
        reset_database(url)
    from cryptography.fernet import Fernet

    key = tmp / "mail.key"
    key.write_bytes(Fernet.generate_key())
    cfg = write_config(tmp, url, extra=f'[webhooks]\nallow_hosts = ["127.0.0.1"]\n'
                                       f'[mailing]\nkey_file = "{key}"\ntimeout_s = 2.0\n')
    assert run_cli(cfg, ["db", "upgrade"]).code == 0
    rt = Runtime(load(cfg))
    set_current(rt)
    try:
        ctx = _seed(rt, tmp)
    finally:
        set_current(None)
    yield cfg, ctx, rt
    rt.close()
    close_dumps()
    set_current(None)


@pytest.mark.parametrize("name, action", ACTIONS, ids=[n for n, _ in ACTIONS])
def test_action_and_audit_row_commit_together_or_not_at_all(seeded, name, action):
    cfg, ctx, rt = seeded
    before = dump(cfg)
    set_current(rt)
    ops_base._fit_row = _refused_audit_row
    try:
        with pytest.raises(sa.exc.DBAPIError):
            action(Ops(rt), ctx)
    finally:
        ops_base._fit_row = _real_fit_row
        set_current(None)
    after = dump(cfg)
    changed = {k for k in before if before[k] != after.get(k)}
    assert not changed, f"{name}: the refused audit row left changes in {sorted(changed)}"


def test_every_audited_action_is_listed_here():
    """A new audited action must be added to ACTIONS (so its atomicity is tested)."""
    import importlib
    import inspect
    import re

    from erpq import capability
    from erpq.runtime.registry import load_capabilities

    load_capabilities()
    modules = ["erpq.ops.events", "erpq.ops.fleet", "erpq.ops.tenants", "erpq.ops.schedule"]
    modules += [c.ops.split(":")[0] for c in capability.loaded() if c.ops and c.ops.startswith("erpq.")]
    acted = set()
    for name in modules:
        acted |= set(re.findall(r'_act\(\s*f?"([a-z_.\-]+)', inspect.getsource(importlib.import_module(name))))
    listed = {n.split(" ")[0] for n, _ in ACTIONS}
    missing = {a for a in acted if not any(x.startswith(a) for x in listed)}
    assert acted and not missing, f"audited actions without an atomicity test: {sorted(missing)}"
