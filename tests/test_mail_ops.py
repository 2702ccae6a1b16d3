"""The Ops methods the mail console panels name: reads page and search (ignoring
case), actions are audited with their equivalent command and refused in
read-only mode; no password in any record."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from conftest import make_settings
from draining import drain
from erpq.mail.capability import CAPABILITY
from erpq.models import AuditLog, Tenant
from erpq.ops import Actor, Conflict, NotFound, Ops, ReadOnly
from erpq.runtime import Runtime, set_current

SECRET = "imap-Secret-42"


@pytest.fixture
def rt(tmp_path):
    key = tmp_path / "mail.key"
    key.write_text(Fernet.generate_key().decode())
    rt = Runtime(make_settings(tmp_path, mailing={"key_file": str(key), "timeout_s": 2.0}))
    set_current(rt)
    with rt.session() as s:
        s.add(Tenant(slug="acme", name="Acme"))
    yield rt
    set_current(None)
    rt.close()


def audit(rt) -> list[tuple[str, str | None, str | None]]:
    with rt.read_session() as s:
        return [(a.action, a.target, a.command) for a in s.scalars(sa.select(AuditLog).order_by(AuditLog.id))]


def setup_mail(rt, free_port) -> tuple[list[int], list[int]]:
    ops = Ops(rt).mail
    accs = [ops.add_account("acme", f"{name}@Example.com", imap_host="127.0.0.1", imap_port=free_port,
                            imap_security="none", imap_password=SECRET, smtp_host="127.0.0.1", smtp_port=free_port,
                            smtp_security="none", smtp_password=SECRET).id
            for name in ("alice", "bob", "carol")]
    camps = []
    for name in ("Spring Launch", "Summer sale", "Autumn launch"):
        c = ops.create_campaign("acme", accs[0], name, "Hi {{ name }}", "Hello")
        ops.add_recipients(c.id, source="contacts")
        camps.append(c.id)
    return accs, camps


def test_panels_name_existing_ops_methods():
    from erpq.mail.ops import MailOps

    for panel in CAPABILITY.panels:
        assert callable(getattr(MailOps, panel.read))
        for action in panel.actions:
            assert callable(getattr(MailOps, action.method))


def test_accounts_page_pages_searches_and_shows_what_is_broken(rt, tmp_path):
    from conftest import free_port

    accs, _ = setup_mail(rt, free_port())
    ops = Ops(rt).mail
    page = ops.accounts_page(offset=0, limit=2)
    assert (page.total, [a.id for a in page.items]) == (3, accs[:2])
    assert [a.id for a in ops.accounts_page(offset=2, limit=2).items] == [accs[2]]
    assert [a.email for a in ops.accounts_page(search="BOB@example").items] == ["bob@Example.com"]
    assert ops.accounts_page(search="nobody").total == 0

    job_id = ops.sync_account(accs[1])  # the panel's action: queues the sync job
    assert job_id and rt.huey.pending_count() == 1
    drain(rt)
    [bob] = ops.accounts_page(search="bob").items
    assert bob.last_error and "127.0.0.1" in bob.last_error and bob.consecutive_failures == 1
    assert [a.email for a in ops.accounts_page(search=bob.last_error[:12]).items] == ["bob@Example.com"]
    for a in ops.accounts_page().items:
        assert SECRET not in str(a.to_dict())
    assert audit(rt)[-1] == ("mail.sync", str(accs[1]), f"erpq mail sync --account {accs[1]}")
    with pytest.raises(NotFound, match="unknown email account 99"):
        ops.sync_account(99)


def test_campaigns_page_and_pause_resume_cancel_audited(rt, tmp_path):
    from conftest import free_port

    with rt.session() as s:  # recipients from the tenant's contacts
        tid = s.scalar(sa.select(Tenant.id))
        s.execute(sa.text("INSERT INTO contacts (tenant_id, email, first_name, last_name, created_at) "
                          "VALUES (:t, 'x@example.com', 'X', 'Y', CURRENT_TIMESTAMP)"), {"t": tid})
    _, camps = setup_mail(rt, free_port())
    ops = Ops(rt).mail
    page = ops.campaigns_page(offset=0, limit=2)
    assert page.total == 3 and [c.id for c in page.items] == [camps[2], camps[1]]  # newest first
    assert [c.id for c in ops.campaigns_page(offset=2, limit=2).items] == [camps[0]]
    assert sorted(c.name for c in ops.campaigns_page(search="LAUNCH").items) == ["Autumn launch", "Spring Launch"]
    assert ops.campaigns_page(search="draft").total == 3  # status is searched too
    c = page.items[0]
    assert c.counts == {"pending": 1, "sending": 0, "sent": 0, "failed": 0, "uncertain": 0} and c.progress == "0%"

    cid = camps[0]
    ops.send(cid)
    assert ops.pause(cid).status == "paused"
    with pytest.raises(Conflict, match="cannot pause"):
        ops.pause(cid)
    assert ops.resume(cid).status == "sending"
    assert ops.cancel(cid).status == "cancelled"
    with pytest.raises(Conflict, match="not paused"):
        ops.resume(cid)
    with pytest.raises(NotFound, match="unknown campaign 99"):
        ops.pause(99)
    assert [a for a in audit(rt) if a[0].startswith("mail.campaign.") and a[0] != "mail.campaign.create"
            and a[0] != "mail.campaign.add-recipients"] == [
        ("mail.campaign.send", str(cid), f"erpq campaign send {cid}"),
        ("mail.campaign.pause", str(cid), f"erpq campaign pause {cid}"),
        ("mail.campaign.resume", str(cid), f"erpq campaign resume {cid}"),
        ("mail.campaign.cancel", str(cid), f"erpq campaign cancel {cid}")]  # refused ones not audited


def test_read_only_refuses_panel_actions_and_reads_still_work(rt, tmp_path):
    from conftest import free_port

    accs, camps = setup_mail(rt, free_port())
    before = audit(rt)
    ro = Ops(rt, Actor("viewer", None, "console"), read_only=True).mail
    for action in (lambda: ro.sync_account(accs[0]), lambda: ro.pause(camps[0]), lambda: ro.resume(camps[0]),
                   lambda: ro.cancel(camps[0])):
        with pytest.raises(ReadOnly, match="read-only mode"):
            action()
    assert audit(rt) == before and rt.huey.pending_count() == 0
    assert ro.campaign(camps[0]).status == "draft"
    assert ro.accounts_page().total == 3 and ro.campaigns_page().total == 3
