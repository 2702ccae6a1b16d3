"""Workflows: conditions, each action, wait and resume (also by the sweep after a
restart), no repeated step on retry (emails counted at the SMTP server), the
loop guard, invalid files with the exact error."""

from __future__ import annotations

import datetime as dt
import json

import pytest

import smtp_fixtures
from crm_fixtures import add_tenant, add_user, rows
from draining import drain
from erpq.crm import service, workflows
from erpq.crm.models import Activity, Deal, Notification, WorkflowInstance, WorkflowRun
from erpq.models import EventOutbox

smtp_server = smtp_fixtures.smtp_server


@pytest.fixture
def crm(runtime, smtp_server):
    runtime.settings.mail.smtp_host, runtime.settings.mail.smtp_port = "127.0.0.1", smtp_server.port
    t = add_tenant(runtime)
    ann = add_user(runtime, t, "Ann", "ann@example.com")
    return runtime, t, ann


def load(rt, t, *defs):
    with rt.session() as s:
        for d in defs:
            workflows.save(s, t, workflows.validate(d))


def deal(rt, t, ann, **values) -> int:
    with rt.session() as s:
        return service.create(s, "deal", t, {"title": "Deal", "assigned_to": ann, **values}).id


def won(rt, deal_id):
    with rt.session() as s:
        service.update(s, "deal", deal_id, {"status": "won"})


WON = {"name": "won", "trigger": "deal.status_changed",
       "conditions": [{"field": "new_status", "op": "equals", "value": "won"},
                      {"field": "amount", "op": "gt", "value": 1000}]}


def test_matching_and_non_matching_condition_and_each_action(crm, smtp_server):
    rt, t, ann = crm
    load(rt, t, {**WON, "actions": [
        {"type": "notify", "title": "Won {{ record.title }}"},
        {"type": "email", "subject": "Won {{ record.title }}", "body": "Amount {{ record.amount }}"},
        {"type": "create_activity", "subject": "Thank the client", "due_in_minutes": 600},
        {"type": "update_field", "field": "stage", "value": "closed"},
        {"type": "webhook", "data": {"k": 1}},
    ]})
    small, big = deal(rt, t, ann, amount=10), deal(rt, t, ann, amount=5000)
    won(rt, small)
    won(rt, big)
    drain(rt)
    (run,) = rows(rt, WorkflowRun)
    assert run.status == "completed" and run.steps_done == 5 and run.record["id"] == big
    assert [n.title for n in rows(rt, Notification) if n.kind == "workflow"] == ["Won Deal"]
    assert [m.message["Subject"] for m in smtp_server.messages if "Won" in m.message["Subject"]] == ["Won Deal"]
    (act,) = rows(rt, Activity)
    assert act.subject == "Thank the client" and act.deal_id == big and act.assigned_to == ann
    assert rows(rt, Deal, Deal.id == big)[0].stage == "closed"
    fired = [e for e in rows(rt, EventOutbox) if e.name == "workflow.fired"]
    assert len(fired) == 1 and fired[0].payload["data"] == {"k": 1}


def test_update_field_value_email_to_and_webhook_data_are_templates(crm, smtp_server):
    rt, t, ann = crm
    load(rt, t, {**WON, "actions": [
        {"type": "update_field", "field": "stage", "value": "won: {{ record.title }}"},
        {"type": "email", "to": "{{ record.title | lower }}@example.com", "subject": "Hi", "body": "b"},
        {"type": "webhook", "data": {"deal": "{{ record.title }}", "tags": ["{{ workflow }}", 7],
                                     "n": 1}},
    ]})
    won(rt, deal(rt, t, ann, amount=5000, title="Bob"))
    drain(rt)
    (run,) = rows(rt, WorkflowRun)
    assert run.status == "completed" and run.steps_done == 3
    assert rows(rt, Deal)[0].stage == "won: Bob"
    smtp_server.wait_for(1)
    assert [m.rcpt_tos for m in smtp_server.messages if m.message["Subject"] == "Hi"] == [["bob@example.com"]]
    (fired,) = [e for e in rows(rt, EventOutbox) if e.name == "workflow.fired"]
    assert fired.payload["data"] == {"deal": "Bob", "tags": ["won", 7], "n": 1}


def test_templates_run_in_the_sandbox(crm):
    rt, t, ann = crm
    load(rt, t, {**WON, "actions": [
        {"type": "update_field", "field": "stage", "value": "{{ record.__class__.__mro__ }}"}]})
    won(rt, deal(rt, t, ann, amount=5000))
    drain(rt)  # the job fails (and is retried later); the run says why
    (run,) = rows(rt, WorkflowRun)
    assert run.status == "failed" and run.error.startswith("step 1 (update_field): TemplateError")
    assert "refused by sandbox" in run.error
    assert rows(rt, Deal)[0].stage is None


def test_wait_resumes_by_its_eta_job_and_by_the_sweep_after_a_restart(crm, smtp_server):
    rt, t, ann = crm
    load(rt, t, {**WON, "actions": [{"type": "wait", "minutes": 10},
                                    {"type": "email", "subject": "Later", "body": "b"}]})
    won(rt, deal(rt, t, ann, amount=5000))
    drain(rt)
    (inst,) = rows(rt, WorkflowInstance)
    assert inst.status == "waiting" and inst.next_action == 1 and rt.huey.scheduled_count() == 1
    # "restart": the ETA job is lost; the sweep finds the due instance
    rt.huey.storage.flush_schedule()
    later = inst.resume_at + dt.timedelta(minutes=5)
    assert workflows.resume_due(rt, now=later - dt.timedelta(minutes=10)) == 0  # not due yet
    assert workflows.resume_due(rt, now=later) == 1
    assert workflows.execute_run(rt, inst.run_id, now=later) == "completed"
    smtp_server.wait_for(2)
    assert [m.message["Subject"] for m in smtp_server.messages if m.message["Subject"] == "Later"] == ["Later"]
    assert rows(rt, WorkflowRun)[0].status == "completed"
    drain(rt)  # the sweep's job finds nothing to do
    assert len(smtp_server.messages) == 2  # the deal notification and "Later", once


def test_a_retried_job_does_not_repeat_a_completed_step(crm, smtp_server):
    rt, t, ann = crm
    load(rt, t, {**WON, "actions": [{"type": "email", "subject": "One", "body": "1"},
                                    {"type": "email", "subject": "Two", "body": "2", "to": "bob@example.com"}]})
    won(rt, deal(rt, t, ann, amount=5000))
    (run_id,) = [r.id for r in rows(rt, WorkflowRun)]
    rt.huey.flush()
    smtp_server.reply_for["bob@example.com"] = "451 4.7.1 try later"
    with pytest.raises(Exception, match="451"):
        workflows.execute_run(rt, run_id)
    run = rows(rt, WorkflowRun)[0]
    assert run.status == "failed" and run.steps_done == 1 and run.error.startswith("step 2 (email)")
    del smtp_server.reply_for["bob@example.com"]
    assert workflows.execute_run(rt, run_id) == "completed"
    subjects = [m.message["Subject"] for m in smtp_server.messages if m.message["Subject"] in ("One", "Two")]
    assert subjects == ["One", "Two"]


def test_loop_guard_cuts_a_workflow_that_retriggers_itself(crm):
    rt, t, ann = crm
    load(rt, t, {"name": "ping", "trigger": "deal.updated",
                 "conditions": [{"field": "stage", "op": "changed_to", "value": "a"}],
                 "actions": [{"type": "update_field", "field": "stage", "value": "b"}]},
         {"name": "pong", "trigger": "deal.updated",
          "conditions": [{"field": "stage", "op": "changed_to", "value": "b"}],
          "actions": [{"type": "update_field", "field": "stage", "value": "a"}]})
    d = deal(rt, t, ann)
    with rt.session() as s:
        service.update(s, "deal", d, {"stage": "a"})
    for _ in range(10):
        if not drain(rt):
            break
    runs = rows(rt, WorkflowRun)
    cut = [r for r in runs if r.status == "cut"]
    assert cut and all("loop guard" in r.error and "workflow_max_depth=3" in r.error for r in cut)
    assert max(r.depth for r in runs) == 3


@pytest.mark.parametrize(("definition", "error"), [
    ({"trigger": "deal.created", "actions": [{"type": "wait", "seconds": 1}]},
     "workflow #1: field 'name': required"),
    ({"name": "a", "trigger": "deal.exploded", "actions": []},
     "workflow 'a': field 'trigger': unknown event 'deal.exploded'"),
    ({"name": "a", "trigger": "deal.created", "actions": [{"type": "email", "subject": "s"}]},
     "workflow 'a' step 1 (email): field 'body': required"),
    ({"name": "a", "trigger": "deal.created", "actions": [{"type": "notify", "title": "{{ x "}]},
     "workflow 'a' step 1 (notify): field 'title': template error"),
    ({"name": "a", "trigger": "deal.created", "actions": [{"type": "webhook", "data": {"x": ["{% if %}"]}}]},
     "workflow 'a' step 1 (webhook): field 'data': template error"),
    ({"name": "a", "trigger": "deal.created",
      "actions": [{"type": "email", "to": "{{ a", "subject": "s", "body": "b"}]},
     "workflow 'a' step 1 (email): field 'to': template error"),
    ({"name": "a", "trigger": "deal.created", "actions": [{"type": "wait"}]},
     "workflow 'a' step 1 (wait): field 'seconds': give a positive"),
    ({"name": "a", "trigger": "deal.created", "conditions": [{"field": "x", "op": "like", "value": 1}],
      "actions": [{"type": "wait", "seconds": 1}]},
     "workflow 'a' condition 1: field 'op': must be one of"),
])
def test_invalid_workflow_files_name_the_step_and_field(runtime, tmp_path, definition, error):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps({"workflows": [definition]}))
    with pytest.raises(workflows.WorkflowError) as exc:
        workflows.read_file(path)
    assert str(exc.value).startswith(error)


def test_workflow_cli_load_runs_show(crm, tmp_path, capsys):
    from test_crm_records import cli

    rt, t, ann = crm
    path = tmp_path / "wf.toml"
    path.write_text('[[workflow]]\nname = "won"\ntrigger = "deal.status_changed"\n'
                    '[[workflow.actions]]\ntype = "notify"\ntitle = "Won {{ record.title }}"\n')
    assert cli(rt, "workflow", "load", str(path), "--tenant", "acme", "--json") == 0
    (loaded,) = json.loads(capsys.readouterr().out)
    assert (loaded["name"], loaded["trigger_event"], loaded["is_active"]) == ("won", "deal.status_changed", True)
    assert loaded["actions"] == [{"type": "notify", "title": "Won {{ record.title }}"}]
    assert cli(rt, "workflow", "load", str(path), "--tenant", "acme") == 0
    assert capsys.readouterr().out == "Loaded 1 workflow(s): won\n"
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x", "trigger": "deal.created", "actions": [{"type": "notify"}]}')
    with pytest.raises(Exception, match=r"^workflow 'x' step 1 \(notify\): field 'title': required$"):
        cli(rt, "workflow", "load", str(bad), "--tenant", "acme", "--json")
    won(rt, deal(rt, t, ann))
    drain(rt)
    capsys.readouterr()
    assert cli(rt, "workflow", "runs", "--json") == 0
    (run,) = json.loads(capsys.readouterr().out)
    assert run["status"] == "completed" and run["workflow"] == "won"
    assert cli(rt, "workflow", "show", str(run["id"])) == 0
    assert "step 1 notify: done" in capsys.readouterr().out
    page = __import__("erpq.ops", fromlist=["Ops"]).Ops(rt).crm.due_activities()
    assert page.total == 0


def test_a_second_fan_out_of_the_same_event_starts_nothing(crm):
    from erpq import events

    rt, t, ann = crm
    load(rt, t, {**WON, "name": "a", "actions": [{"type": "notify", "title": "a"}]},
         {**WON, "name": "b", "actions": [{"type": "notify", "title": "b"}]})
    d = deal(rt, t, ann, amount=5000)
    won(rt, d)
    (outbox,) = [e for e in rows(rt, EventOutbox) if e.name == "deal.status_changed"]
    assert len(rows(rt, WorkflowRun)) == 2
    again = events.Event("deal.status_changed", outbox.payload, t, id=outbox.id)
    assert workflows.WorkflowEngine(rt).trigger(again) == []  # e.g. the sweep after a crash mid fan-out
    drain(rt)
    assert sorted(n.title for n in rows(rt, Notification) if n.kind == "workflow") == ["a", "b"]


def test_one_fan_out_of_many_events_reads_workflows_once_and_starts_only_the_matching(crm):
    from erpq import events

    rt, t, ann = crm
    other = add_tenant(rt, "globex")
    load(rt, t, {**WON, "actions": [{"type": "notify", "title": "won {{ record.title }}"}]})
    payload = {"new_status": "won", "amount": 5000, "assigned_to": ann, "title": "Big"}
    batch = [events.Event("deal.status_changed", payload, t, id="901"),  # matches
             events.Event("deal.status_changed", {**payload, "amount": 10}, t, id="902"),  # condition fails
             events.Event("deal.status_changed", payload, other, id="903"),  # tenant without workflows
             events.Event("deal.created", payload, t, id="904")]  # no workflow listens
    started = workflows.WorkflowEngine(rt).trigger_many(batch)
    (run,) = rows(rt, WorkflowRun)
    assert started == {"901": [run.id], "902": [], "903": [], "904": []}
    assert (run.event_key, run.tenant_id) == ("901", t)
    assert workflows.WorkflowEngine(rt).trigger_many(batch) == {"901": [], "902": [], "903": [], "904": []}
    drain(rt)
    assert [n.title for n in rows(rt, Notification) if n.kind == "workflow"] == ["won Big"]
    # nothing to start: no write at all
    assert workflows.WorkflowEngine(rt).trigger_many(batch[1:]) == {"902": [], "903": [], "904": []}
    assert len(rows(rt, WorkflowRun)) == 1
