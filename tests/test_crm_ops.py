"""The Ops reads and actions the three CRM console panels name: due_activities,
workflow_runs, notifications_page (paging, case-insensitive search, on SQLite and
PostgreSQL), mark_read and resume_run (audited with their command, refused in
read-only mode with nothing changed and nothing audited)."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

import crm_fixtures
from crm_fixtures import add_tenant, add_user, in_minutes, rows
from draining import drain
from erpq.crm import service, workflows
from erpq.crm.capability import CAPABILITY
from erpq.crm.models import Activity, Notification, WorkflowInstance, WorkflowRun
from erpq.db import utcnow
from erpq.models import AuditLog
from erpq.ops import Actor, Conflict, NotFound, Ops, ReadOnly

db_runtime = crm_fixtures.db_runtime


def audit_rows(rt) -> list[tuple[str, str | None, str | None]]:
    with rt.read_session() as s:
        return [(a.action, a.target, a.command) for a in s.scalars(sa.select(AuditLog).order_by(AuditLog.id))]


def read_only(rt) -> Ops:
    return Ops(rt, Actor("viewer", None, "console"), read_only=True)


def test_the_panels_name_ops_methods_with_the_columns_they_show():
    ops_cls = CAPABILITY.resolve(CAPABILITY.ops)
    for panel in CAPABILITY.panels:
        assert callable(getattr(ops_cls, panel.read))
        for action in panel.actions:
            assert callable(getattr(ops_cls, action.method))


def add_activities(rt, t, ann, bob) -> None:
    now = utcnow()
    with rt.session() as s:  # rows written directly: no event, no reminder claimed by a handler
        s.add_all([
            Activity(tenant_id=t, subject="Call ACME", due_at=now + dt.timedelta(minutes=5), assigned_to=ann),
            Activity(tenant_id=t, subject="Send quote", due_at=now - dt.timedelta(minutes=30), created_by=bob,
                     reminder_claimed_at=now, reminder_sent_at=now),
            Activity(tenant_id=t, subject="call back", due_at=now + dt.timedelta(minutes=10), assigned_to=bob,
                     reminder_claimed_at=now),
            Activity(tenant_id=t, subject="Call later", due_at=now + dt.timedelta(hours=3), assigned_to=ann),
            Activity(tenant_id=t, subject="Call done", due_at=now, assigned_to=ann, status="done"),
        ])


def test_due_activities_pages_searches_and_shows_reminder_state(db_runtime):
    rt = db_runtime
    t = add_tenant(rt)
    ann, bob = add_user(rt, t, "Ann"), add_user(rt, t, "Bob")
    with rt.session() as s:
        service.set_user_timezone(s, bob, "Asia/Tokyo")
    add_activities(rt, t, ann, bob)
    ops = Ops(rt)
    page = ops.crm.due_activities()
    assert page.total == 3  # open, due within 15 minutes or overdue; soonest first
    assert [(a.subject, a.assignee, a.reminder) for a in page.items] == [
        ("Send quote", "Bob", "sent"), ("Call ACME", "Ann", "pending"), ("call back", "Bob", "claimed")]
    assert all(a.tenant == "acme" for a in page.items)
    assert [a.due_local[-3:] for a in page.items] == ["JST", "UTC", "JST"]  # the recipient's zone
    second = ops.crm.due_activities(offset=1, limit=1)
    assert (second.total, [a.subject for a in second.items]) == (3, ["Call ACME"])
    assert [a.subject for a in ops.crm.due_activities(search="CALL").items] == ["Call ACME", "call back"]
    assert [a.subject for a in ops.crm.due_activities(search="bob").items] == ["Send quote", "call back"]
    assert ops.crm.due_activities(search="100%").total == 0  # % is literal
    assert ops.crm.due_activities(within_min=240).total == 4
    assert page.items[0].to_dict()["reminder"] == "sent"


def test_notifications_page_pages_and_searches(db_runtime):
    rt = db_runtime
    t = add_tenant(rt)
    ann, bob = add_user(rt, t, "Ann"), add_user(rt, t, "Bob")
    with rt.session() as s:
        for i in range(5):
            service.notify(s, t, ann if i % 2 else bob, "deal-status", f"Deal {i} WON", None, {"i": i}, f"k{i}")
        service.notify(s, t, ann, "reminder", "Call ACME", "soon", None, "r1")
    ops = Ops(rt)
    page = ops.crm.notifications_page(limit=4)
    assert (page.total, len(page.items)) == (6, 4)
    assert page.items[0].title == "Call ACME"  # newest first
    rest = ops.crm.notifications_page(offset=4, limit=4)
    assert [n.title for n in rest.items] == ["Deal 1 WON", "Deal 0 WON"]
    assert [n.title for n in ops.crm.notifications_page(search="won").items] == [f"Deal {i} WON"
                                                                                 for i in (4, 3, 2, 1, 0)]
    assert ops.crm.notifications_page(search="REMINDER").total == 1  # the type
    assert {n.user for n in ops.crm.notifications_page(search="bob").items} == {"Bob"}
    assert "6 (6 unread)" in ops.crm.summary()
    assert set(page.items[0].to_dict()) >= {"id", "user", "kind", "title", "read_at", "created_at"}


def test_mark_read_is_audited_and_refused_read_only(runtime):
    t = add_tenant(runtime)
    ann = add_user(runtime, t, "Ann")
    with runtime.session() as s:
        n_id = service.notify(s, t, ann, "reminder", "Call", None, None, "r1").id
    with pytest.raises(ReadOnly, match="read-only mode"):
        read_only(runtime).crm.mark_read(n_id)
    assert rows(runtime, Notification)[0].read_at is None and audit_rows(runtime) == []
    info = Ops(runtime).crm.mark_read(str(n_id))  # the panel passes the row id
    assert info.id == n_id and info.read_at is not None
    assert audit_rows(runtime) == [("crm.notification.read", str(n_id), f"erpq notifications read {n_id}")]
    with pytest.raises(NotFound, match="no notification 999"):
        Ops(runtime).crm.mark_read(999)
    assert len(audit_rows(runtime)) == 1  # only successful actions are audited
    assert "1 unread" not in Ops(runtime).crm.summary()


def add_runs(rt, t) -> dict[str, int]:
    with rt.session() as s:
        wf = workflows.save(s, t, workflows.validate(
            {"name": "Follow-up", "trigger": "deal.created",
             "actions": [{"type": "wait", "minutes": 30}, {"type": "notify", "title": "t", "user": "1"}]}))
        other = workflows.save(s, t, workflows.validate(
            {"name": "escalate", "trigger": "deal.updated", "actions": [{"type": "notify", "title": "t"}]}))
        ids = {}
        for key, flow, status, inst_status, error in [
            ("completed", other, "completed", "completed", None),
            ("failed", other, "failed", "pending", "step 1 (notify): boom"),
            ("waiting", wf, "waiting", "waiting", None),
        ]:
            run = WorkflowRun(tenant_id=t, workflow_id=flow.id, event=flow.trigger_event,
                              record={"id": 1, "assigned_to": 1}, event_key=key, status=status, error=error,
                              steps_done=1 if key == "waiting" else 0, steps=[])
            s.add(run)
            s.flush()
            s.add(WorkflowInstance(tenant_id=t, run_id=run.id, status=inst_status,
                                   next_action=1 if key == "waiting" else 0,
                                   resume_at=in_minutes(30) if key == "waiting" else None))
            ids[key] = run.id
    return ids


def test_workflow_runs_pages_and_searches_with_waiting_instances(db_runtime):
    rt = db_runtime
    t = add_tenant(rt)
    add_user(rt, t, "Ann")
    ids = add_runs(rt, t)
    ops = Ops(rt)
    page = ops.crm.workflow_runs()
    assert [r.id for r in page.items] == [ids["waiting"], ids["failed"], ids["completed"]]  # newest first
    waiting = page.items[0]
    assert (waiting.workflow, waiting.instance_status, waiting.next_step) == ("Follow-up", "waiting", 2)
    assert waiting.resume_at is not None
    assert [r.id for r in ops.crm.workflow_runs(offset=1, limit=1).items] == [ids["failed"]]
    assert ops.crm.workflow_runs(offset=1, limit=1).total == 3
    assert [r.id for r in ops.crm.workflow_runs(search="FOLLOW").items] == [ids["waiting"]]
    assert [r.id for r in ops.crm.workflow_runs(search="boom").items] == [ids["failed"]]  # the error
    assert [r.id for r in ops.crm.workflow_runs(status="failed").items] == [ids["failed"]]
    assert ops.crm.workflow_runs(search="nothing").total == 0
    assert page.items[1].to_dict()["error"] == "step 1 (notify): boom"


def test_resume_run_is_audited_refused_read_only_and_runs_the_rest(runtime):
    t = add_tenant(runtime)
    add_user(runtime, t, "Ann")
    ids = add_runs(runtime, t)
    runtime.huey.flush()
    with pytest.raises(ReadOnly, match="read-only mode"):
        read_only(runtime).crm.resume_run(ids["waiting"])
    assert runtime.huey.pending_count() == 0 and audit_rows(runtime) == []
    (inst,) = rows(runtime, WorkflowInstance, WorkflowInstance.run_id == ids["waiting"])
    assert inst.resume_at > utcnow()
    with pytest.raises(Conflict, match=f"workflow run {ids['completed']} is completed: nothing to resume"):
        Ops(runtime).crm.resume_run(ids["completed"])
    with pytest.raises(NotFound, match="no workflow run 999"):
        Ops(runtime).crm.resume_run(999)
    assert Ops(runtime).crm.resume_run(str(ids["waiting"])) == "waiting"
    assert audit_rows(runtime) == [("crm.workflow.resume", str(ids["waiting"]),
                                    f"erpq workflow resume {ids['waiting']}")]
    drain(runtime)
    run = rows(runtime, WorkflowRun, WorkflowRun.id == ids["waiting"])[0]
    assert run.status == "completed" and run.steps_done == 2
    assert [n.title for n in rows(runtime, Notification)] == ["t"]
    # a failed run is retried now from its failed step
    Ops(runtime).crm.resume_run(ids["failed"])
    drain(runtime)
    assert rows(runtime, WorkflowRun, WorkflowRun.id == ids["failed"])[0].status == "completed"


def test_cli_activity_due_and_notification_counts(runtime, capsys):
    import json

    from test_crm_records import cli

    t = add_tenant(runtime)
    ann, bob = add_user(runtime, t, "Ann"), add_user(runtime, t, "Bob")
    add_activities(runtime, t, ann, bob)
    with runtime.session() as s:
        service.notify(s, t, ann, "reminder", "Call", None, None, "r1")
    capsys.readouterr()
    assert cli(runtime, "activity", "due", "--json", "--search", "call") == 0
    due = json.loads(capsys.readouterr().out)
    assert [(a["subject"], a["reminder"]) for a in due] == [("Call ACME", "pending"), ("call back", "claimed")]
    assert cli(runtime, "activity", "due", "--within", "240", "--limit", "1", "--offset", "3") == 0
    assert "Call later" in capsys.readouterr().out
    assert cli(runtime, "notifications", "counts", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"total": 1, "unread": 1}
