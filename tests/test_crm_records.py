"""Records and their events, deal notifications (two people, one person who is
both), notifications CLI; real SMTP."""

from __future__ import annotations

import argparse
import json
import sys

import pytest
import sqlalchemy as sa

import smtp_fixtures
from crm_fixtures import add_tenant, add_user, rows
from draining import drain
from erpq.cli_support import CliError
from erpq.crm import service
from erpq.crm.cli import register
from erpq.crm.models import Deal, Notification
from erpq.models import EventOutbox
from erpq.ops import Invalid, NotFound, Ops, OpsError

smtp_server = smtp_fixtures.smtp_server


@pytest.fixture
def crm(runtime, smtp_server):
    runtime.settings.mail.smtp_host, runtime.settings.mail.smtp_port = "127.0.0.1", smtp_server.port
    t = add_tenant(runtime)
    return runtime, t


def cli(rt, *argv: str) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config")
    parser = argparse.ArgumentParser(prog="erpq")
    groups = parser.add_subparsers(dest="group", required=True)
    register(groups, common)
    args = parser.parse_args(argv)
    return args.handler(args, rt)


def events_named(rt, name):
    return [e for e in rows(rt, EventOutbox) if e.name == name]


def test_each_record_emits_its_event_in_the_callers_transaction(crm):
    rt, t = crm
    with rt.session() as s:
        service.create(s, "lead", t, {"name": "Lead A", "email": "a@example.com"})
        service.create(s, "contact", t, {"first_name": "Ann"})
        deal = service.create(s, "deal", t, {"title": "Big", "amount": "1200.50"})
        service.create(s, "activity", t, {"subject": "Call"})
        deal_id = deal.id
    with pytest.raises(RuntimeError), rt.session() as s:  # rolled back: announces nothing
        service.create(s, "lead", t, {"name": "Ghost"})
        raise RuntimeError("boom")
    names = [e.name for e in rows(rt, EventOutbox)]
    assert names == ["lead.created", "contact.created", "deal.created", "activity.created"]
    with rt.session() as s:
        service.update(s, "deal", deal_id, {"status": "won"})
    (changed,) = events_named(rt, "deal.status_changed")
    assert (changed.payload["old_status"], changed.payload["new_status"]) == ("open", "won")
    assert changed.payload["amount"] == 1200.5


def test_bad_input_is_one_line_and_writes_nothing(crm):
    rt, t = crm
    ops = Ops(rt)
    with pytest.raises(Invalid, match=r"deal.status: must be one of open, won, lost, not 'maybe'"):
        ops.crm.add("deal", t, {"title": "X", "status": "maybe"})
    with pytest.raises(Invalid, match=r"lead: unknown field 'colour'"):
        ops.crm.add("lead", t, {"name": "X", "colour": "red"})
    with pytest.raises(Invalid, match=r"activity.due_at: not an ISO 8601 time: 'tomorrow'"):
        ops.crm.add("activity", t, {"subject": "X", "due_at": "tomorrow"})
    with pytest.raises(NotFound, match="no deal 99"):
        ops.crm.update("deal", 99, {"status": "won"})
    assert rows(rt, Deal) == [] and rows(rt, EventOutbox) == []


def _deal(rt, t, assigned, creator) -> int:
    with rt.session() as s:
        return service.create(s, "deal", t, {"title": "Deal", "assigned_to": assigned, "created_by": creator}).id


def test_deal_status_change_notifies_assignee_and_creator(crm, smtp_server):
    rt, t = crm
    ann = add_user(rt, t, "Ann", "ann@example.com")
    bob = add_user(rt, t, "Bob", "bob@example.com")
    deal_id = _deal(rt, t, ann, bob)
    with rt.session() as s:
        service.update(s, "deal", deal_id, {"status": "won"})
    assert drain(rt) == 1
    notes = rows(rt, Notification)
    assert sorted(n.user_id for n in notes) == [ann, bob]
    assert all(n.data == {"deal_id": deal_id, "old_status": "open", "new_status": "won"} for n in notes)
    got = smtp_server.wait_for(2)
    assert sorted(m.rcpt_tos[0] for m in got) == ["ann@example.com", "bob@example.com"]
    assert all("open -> won" in m.message["Subject"] for m in got)
    # the event fanned out again (a crash mid fan-out) and the job retried: nobody twice
    (ev,) = events_named(rt, "deal.status_changed")
    from erpq.crm.deals import send_deal_notification

    send_deal_notification(rt, deal_id, "open", "won", str(ev.id))
    assert len(rows(rt, Notification)) == 2 and len(smtp_server.messages) == 2


def test_deal_notification_to_one_person_who_is_both(crm, smtp_server):
    rt, t = crm
    ann = add_user(rt, t, "Ann", "ann@example.com")
    deal_id = _deal(rt, t, ann, ann)
    Ops(rt).crm.update("deal", deal_id, {"status": "lost"})
    drain(rt)
    (n,) = rows(rt, Notification)
    assert n.user_id == ann
    assert len(smtp_server.wait_for(1)) == 1
    with rt.read_session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Notification)) == 1


def test_cli_records_and_notifications(crm, capsys, tmp_path):
    rt, t = crm
    ann = add_user(rt, t, "Ann", "ann@example.com")

    def run(*argv):
        try:
            code = cli(rt, *argv)
        except (CliError, OpsError) as exc:
            print(exc, file=sys.stderr)
            code = 1
        return code, capsys.readouterr()

    code, o = run("deal", "add", "--tenant", "acme", "--set", "title=Big", "--set", f"assigned_to={ann}")
    assert code == 0 and "Added deal 1" in o.out
    code, o = run("deal", "update", "1", "--set", "status=won")
    assert code == 0 and "status 'open' -> 'won'" in o.out
    drain(rt)
    code, o = run("notifications", "list", "--user", str(ann), "--unread", "--json")
    (item,) = json.loads(o.out)
    assert item["kind"] == "deal.status_changed" and item["read_at"] is None
    code, o = run("notifications", "read", str(item["id"]), "--json")
    read = json.loads(o.out)
    assert code == 0 and read["id"] == item["id"] and read["read_at"] and read["user"] == "Ann"
    code, o = run("notifications", "read", "999")
    assert code == 1 and o.err.strip() == "no notification 999"
    code, o = run("notifications", "list", "--unread", "--json")
    assert json.loads(o.out) == []
    code, o = run("deal", "update", "1", "--set", "nope")
    assert code == 1 and o.err.strip().count("\n") == 0 and "expected FIELD=VALUE" in o.err
