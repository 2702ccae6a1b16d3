"""Workflows: per-tenant definitions, ``WorkflowEngine.trigger`` and ``ExecuteWorkflowJob``.

A workflow has a trigger event, conditions on the event's record (``match``
"all" or "any") and ordered actions: ``notify``, ``email`` (Jinja2 templates),
``create_activity``, ``update_field``, ``webhook`` (emits ``workflow.fired``,
which webhook subscriptions receive) and ``wait`` (then continue).

``WorkflowEngine.trigger(event)`` (``trigger_many``: a batch handler for every
event, one read of the workflows per fan-out) writes one run and one instance
per matching active workflow (unique per workflow and
event outbox id, so a re-run fan-out starts nothing twice) and enqueues
``ExecuteWorkflowJob``. The job claims the instance (one conditional UPDATE),
then runs the steps from ``next_action``: a database step commits its effect
together with ``next_action + 1`` (exactly once); an email step is sent once
per Message-ID (the sent-mail ledger) before the step is recorded. ``wait``
sets the instance waiting with ``resume_at`` and enqueues an ETA job; the
``crm:resume-workflows`` sweep enqueues instances that are due (or whose job
died) and never resumed, e.g. after a restart. Changes a workflow makes carry
``_depth`` + 1; a run at ``[crm] workflow_max_depth`` is cut (status ``cut``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import tomllib
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from .. import events, mailer
from ..db import utcnow
from ..models import User
from ..runtime import current
from . import service
from .capability import CAPABILITY
from .mail import send_once
from .models import Workflow, WorkflowInstance, WorkflowRun

log = logging.getLogger("erpq.crm.workflows")

OPERATORS = ("equals", "not_equals", "gt", "lt", "gte", "lte", "in", "contains", "is_empty", "changed_to")
ACTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {  # type -> (required, optional) fields
    "notify": (("title",), ("user", "body")),
    "email": (("subject", "body"), ("to",)),
    "create_activity": (("subject",), ("due_in_minutes", "assigned_to", "type")),
    "update_field": (("field", "value"), ()),
    "webhook": ((), ("event", "data")),
    "wait": ((), ("seconds", "minutes", "hours", "days")),
}


class WorkflowError(ValueError):
    """An invalid workflow definition; the message names the workflow, step and field."""


# ---------------------------------------------------------------- definitions


def read_file(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise WorkflowError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise WorkflowError(f"{p}: not valid {'TOML' if p.suffix == '.toml' else 'JSON'}: {exc}") from None
    items = data.get("workflow", data.get("workflows", data)) if isinstance(data, dict) else data
    items = [items] if isinstance(items, dict) else items
    if not isinstance(items, list) or not items:
        raise WorkflowError(f"{p}: expected a workflow object or a list under 'workflows'")
    return [validate(w, i) for i, w in enumerate(items, 1)]


def validate(w: Any, index: int = 1) -> dict[str, Any]:
    """A clean workflow definition, or WorkflowError naming the step and field."""
    if not isinstance(w, dict):
        raise WorkflowError(f"workflow #{index}: must be an object")
    name = w.get("name")
    if not isinstance(name, str) or not name.strip():
        raise WorkflowError(f"workflow #{index}: field 'name': required")
    where = f"workflow {name!r}"
    trigger = w.get("trigger")
    if not isinstance(trigger, str) or not trigger:
        raise WorkflowError(f"{where}: field 'trigger': required (an event name)")
    try:
        events.check_event(trigger)
    except events.UnknownEvent as exc:
        raise WorkflowError(f"{where}: field 'trigger': {exc}") from None
    match = w.get("match", "all")
    if match not in ("all", "any"):
        raise WorkflowError(f"{where}: field 'match': must be 'all' or 'any', not {match!r}")
    conditions = w.get("conditions", [])
    if not isinstance(conditions, list):
        raise WorkflowError(f"{where}: field 'conditions': must be a list")
    for i, c in enumerate(conditions, 1):
        cw = f"{where} condition {i}"
        if not isinstance(c, dict) or not isinstance(c.get("field"), str):
            raise WorkflowError(f"{cw}: field 'field': required")
        if c.get("op") not in OPERATORS:
            raise WorkflowError(f"{cw}: field 'op': must be one of {', '.join(OPERATORS)}, not {c.get('op')!r}")
        if c["op"] != "is_empty" and "value" not in c:
            raise WorkflowError(f"{cw}: field 'value': required for {c['op']}")
        if c["op"] == "in" and not isinstance(c["value"], list):
            raise WorkflowError(f"{cw}: field 'value': must be a list for 'in'")
    actions = w.get("actions")
    if not isinstance(actions, list) or not actions:
        raise WorkflowError(f"{where}: field 'actions': at least one action required")
    for i, a in enumerate(actions, 1):
        kind = a.get("type") if isinstance(a, dict) else None
        if kind not in ACTIONS:
            raise WorkflowError(f"{where} step {i}: field 'type': must be one of {', '.join(ACTIONS)}, not {kind!r}")
        sw = f"{where} step {i} ({kind})"
        required, optional = ACTIONS[kind]
        for key in required:
            if key not in a or a[key] in ("", None):
                raise WorkflowError(f"{sw}: field '{key}': required")
        for key in a:
            if key != "type" and key not in required + optional:
                raise WorkflowError(f"{sw}: field '{key}': unknown (fields: {', '.join(required + optional)})")
        for key in ("title", "body", "subject", "to", "value", "data"):
            for text in _strings(a.get(key)):
                try:
                    mailer.check_template(text)
                except mailer.TemplateError as exc:
                    raise WorkflowError(f"{sw}: field '{key}': template error: {exc}") from None
        if kind == "wait":
            if wait_seconds(a) <= 0:
                raise WorkflowError(f"{sw}: field 'seconds': give a positive seconds, minutes, hours or days")
        if kind == "webhook" and a.get("event"):
            try:
                events.check_event(a["event"])
            except events.UnknownEvent as exc:
                raise WorkflowError(f"{sw}: field 'event': {exc}") from None
    return {"name": name.strip(), "trigger": trigger, "match": match, "conditions": conditions,
            "actions": actions, "active": bool(w.get("active", True))}


def _strings(value: Any) -> list[str]:
    """Every string in a value (templates may sit anywhere in a webhook's data)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [t for v in value for t in _strings(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _strings(v)]
    return []


def wait_seconds(a: dict[str, Any]) -> float:
    try:
        return (float(a.get("seconds", 0)) + 60 * float(a.get("minutes", 0)) + 3600 * float(a.get("hours", 0))
                + 86400 * float(a.get("days", 0)))
    except (TypeError, ValueError):
        return -1


def save(s: Any, tenant_id: int, definition: dict[str, Any]) -> Workflow:
    """Create or replace (by name) a tenant's workflow."""
    row = s.scalar(sa.select(Workflow).where(Workflow.tenant_id == tenant_id, Workflow.name == definition["name"]))
    if row is None:
        row = Workflow(tenant_id=tenant_id, name=definition["name"])
        s.add(row)
    row.trigger_event, row.match = definition["trigger"], definition["match"]
    row.conditions, row.actions = definition["conditions"], definition["actions"]
    row.is_active, row.updated_at = definition["active"], utcnow()
    s.flush()
    return row


# ---------------------------------------------------------------- conditions


def _value(record: dict[str, Any], field: str) -> Any:
    value: Any = record
    for part in field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _num(v: Any) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def condition_holds(c: dict[str, Any], record: dict[str, Any]) -> bool:
    op, want, got = c["op"], c.get("value"), _value(record, c["field"])
    if op == "equals":
        return got == want
    if op == "not_equals":
        return got != want
    if op in ("gt", "lt", "gte", "lte"):
        a, b = _num(got), _num(want)
        if a is None or b is None:
            return False
        return {"gt": a > b, "lt": a < b, "gte": a >= b, "lte": a <= b}[op]
    if op == "in":
        return got in want
    if op == "contains":
        return got is not None and (want in got if isinstance(got, list | str) else False)
    if op == "is_empty":
        return got in (None, "", [], {})
    if op == "changed_to":
        change = (record.get("changes") or {}).get(c["field"])
        return bool(change) and change[1] == want
    return False


def matches(workflow_conditions: list[dict[str, Any]] | None, match: str, record: dict[str, Any]) -> bool:
    conds = workflow_conditions or []
    if not conds:
        return True
    results = (condition_holds(c, record) for c in conds)
    return any(results) if match == "any" else all(results)


# ---------------------------------------------------------------- engine


class WorkflowEngine:
    """Starts runs of the workflows an event triggers."""

    def __init__(self, rt: Any = None):
        self.rt = rt or current()

    def trigger(self, event: events.Event) -> list[int]:
        """Start every active matching workflow of the event's tenant; returns the run ids enqueued."""
        return self.trigger_many([event])[event.id]

    def trigger_many(self, batch: list[events.Event]) -> dict[str, list[int]]:
        """``trigger`` for the events of one fan-out: one read of the active workflows of the
        tenants and events involved; an event no workflow matches costs no write. Returns the run
        ids enqueued per event id."""
        rt = self.rt
        out: dict[str, list[int]] = {e.id: [] for e in batch}
        if not batch:
            return out
        W = Workflow
        with rt.read_session() as s:
            flows = s.execute(sa.select(W.id, W.tenant_id, W.trigger_event, W.conditions, W.match)
                              .where(W.tenant_id.in_({e.tenant_id for e in batch}),
                                     W.trigger_event.in_({e.name for e in batch}), W.is_active.is_(True))
                              .order_by(W.id)).all()
        if not flows:  # most events trigger nothing: no write transaction then
            return out
        by_key: dict[tuple[int, str], list[Any]] = {}
        for wf in flows:
            by_key.setdefault((wf.tenant_id, wf.trigger_event), []).append(wf)
        todo = [(e, matching) for e in batch
                if (matching := [wf for wf in by_key.get((e.tenant_id, e.name), ())
                                 if matches(wf.conditions, wf.match, e.payload)])]
        if not todo:
            return out
        limit = rt.settings.crm.workflow_max_depth
        with rt.session() as s:
            for event, matching in todo:
                out[event.id] = self._start(s, event, matching, limit)
        for event, _ in todo:
            for run_id in out[event.id]:
                rt.enqueue("ExecuteWorkflowJob", run_id, tenant_id=event.tenant_id)
        return out

    @staticmethod
    def _start(s: Any, event: events.Event, matching: list[Any], limit: int) -> list[int]:
        """Write the runs (and instances) of one event's matching workflows; the run ids to enqueue."""
        record = event.payload
        depth = int(record.get("_depth") or 0)
        started: list[int] = []
        try:
            # one savepoint for the event: its runs commit together, so a second fan-out
            # of the same event (unique workflow + event key) finds them all and starts none
            with s.begin_nested():
                for wf in matching:
                    run = WorkflowRun(tenant_id=wf.tenant_id, workflow_id=wf.id, event=event.name,
                                      record=record, event_key=str(event.id), depth=depth, steps_done=0,
                                      steps=[])
                    if depth >= limit:
                        run.status, run.finished_at = "cut", utcnow()
                        run.error = (f"loop guard: this event comes from {depth} nested workflow runs "
                                     f"(crm.workflow_max_depth={limit}); not run")
                    s.add(run)
                    s.flush()
                    if run.status != "cut":
                        s.add(WorkflowInstance(tenant_id=wf.tenant_id, run_id=run.id, next_action=0,
                                               status="pending", state={}))
                        started.append(run.id)
                s.flush()
        except IntegrityError:  # this event already started its workflows
            return []
        return started


@events.on(batch=True)
def start_workflows(batch: list[events.Event]) -> dict[str, list[int]]:
    return WorkflowEngine().trigger_many(batch)


@CAPABILITY.job("ExecuteWorkflowJob", retries=5, retry_delay=30, retry_backoff=2)
def execute_workflow_job(run_id: int) -> str:
    """Run (or resume) a workflow run from its next step."""
    return execute_run(current(), run_id)


def _claim(s: Any, rt: Any, run_id: int, now: dt.datetime) -> bool:
    """Take the instance (one conditional UPDATE) in the caller's transaction."""
    stale = now - dt.timedelta(seconds=rt.settings.crm.workflow_claim_lease_s)
    Inst = WorkflowInstance
    return bool(s.execute(sa.update(Inst).where(Inst.run_id == run_id, sa.or_(
        Inst.status == "pending",
        sa.and_(Inst.status == "waiting", Inst.resume_at <= now),
        sa.and_(Inst.status == "running", Inst.claimed_at < stale)))
        .values(status="running", claimed_at=now).execution_options(synchronize_session=False)).rowcount)


def claim(rt: Any, run_id: int, now: dt.datetime | None = None) -> WorkflowInstance | None:
    """Claim the instance in its own transaction; the instance, or None when not claimable."""
    with rt.session() as s:
        if not _claim(s, rt, run_id, now or utcnow()):
            return None
        return s.scalar(sa.select(WorkflowInstance).where(WorkflowInstance.run_id == run_id))


def _logged(log: list[dict[str, Any]], index: int, kind: str, status: str, error: str | None = None
            ) -> list[dict[str, Any]]:
    return [*log, {"step": index + 1, "action": kind, "status": status, "at": service.jsonable(utcnow()),
                   "error": error}]


#: Actions that leave the database transaction: an email is sent outside it (once per
#: Message-ID), a wait ends the job. Every other action commits with its step record.
_OUTSIDE = ("email", "wait")


def execute_run(rt: Any, run_id: int, now: dt.datetime | None = None) -> str:
    """Run the instance from its next step.

    The claim, the consecutive database steps after it and the completion share
    one transaction (each step's effect commits with its ``next_action + 1``,
    so a retry never repeats a committed step, and a failure rolls back the
    uncommitted ones together with the claim). An email step commits what came
    before it, then sends once per Message-ID and records itself.
    """
    when = now or utcnow()
    step, kind = 0, "claim"
    try:
        with rt.session() as s:
            if not _claim(s, rt, run_id, when):
                return "not claimable"
            run, wf, inst = s.execute(
                sa.select(WorkflowRun, Workflow, WorkflowInstance)
                .join(Workflow, Workflow.id == WorkflowRun.workflow_id)
                .join(WorkflowInstance, WorkflowInstance.run_id == WorkflowRun.id)
                .where(WorkflowRun.id == run_id)).one()
            actions, record, depth, tenant_id = list(wf.actions), dict(run.record or {}), run.depth, run.tenant_id
            ctx = {"record": record, "workflow": wf.name, "event": run.event}
            log, step = list(run.steps or []), inst.next_action
            while True:
                finished_here = False
                # database steps, in the open transaction
                while step < len(actions) and actions[step]["type"] not in _OUTSIDE:
                    kind = actions[step]["type"]
                    log = _logged(log, step, kind, "done")
                    finished_here = step + 1 == len(actions)
                    # the step is ours (next_action still points at it) before its effect is written;
                    # both commit together or not at all
                    if not _advance(s, run_id, step, log=log, finished=finished_here):
                        raise _TakenOver
                    _db_action(s, rt, kind, actions[step], ctx, record, tenant_id, run_id, step, depth)
                    step += 1
                if step >= len(actions):
                    if not finished_here:  # e.g. resumed after a final wait
                        _complete(s, run_id)
                    return "completed"
                kind = actions[step]["type"]
                if kind == "wait":
                    resume_at = when + dt.timedelta(seconds=wait_seconds(actions[step]))
                    task_id = rt.enqueue("ExecuteWorkflowJob", run_id, eta=resume_at, tenant_id=tenant_id)
                    log = _logged(log, step, kind, "waiting")
                    if not _advance(s, run_id, step, status="waiting", resume_at=resume_at, job_id=task_id,
                                    log=log):
                        raise _TakenOver
                    return "waiting"
                # email: commit what came before, send once, record it in the next transaction
                s.commit()
                to = _recipient_address(rt, _render_value(actions[step].get("to", "assigned_to"), ctx), record)
                if to:
                    send_once(rt, tenant_id, "workflow", f"wf-{run_id}-{step}", to,
                              mailer.render(actions[step]["subject"], ctx), mailer.render(actions[step]["body"], ctx))
                log = _logged(log, step, kind, "done" if to else "skipped: no address")
                if not _advance(s, run_id, step, log=log, finished=step + 1 == len(actions)):
                    raise _TakenOver
                step += 1
                if step >= len(actions):
                    return "completed"
    except _TakenOver:
        return "taken over"
    except Exception as exc:
        message = f"step {step + 1} ({kind}): {type(exc).__name__}: {exc}"
        with rt.session() as s:
            run = s.get(WorkflowRun, run_id)
            run.status, run.error = "failed", message[:2000]
            run.steps = _logged(list(run.steps or []), step, kind, "failed", message[:500])
            s.execute(sa.update(WorkflowInstance).where(WorkflowInstance.run_id == run_id)
                      .values(status="pending"))  # the retry claims it again
        raise
    return "completed"  # pragma: no cover


class _TakenOver(Exception):
    """Another job recorded this step first: this one stops (its transaction rolls back)."""


def _complete(s: Any, run_id: int) -> None:
    s.execute(sa.update(WorkflowInstance).where(WorkflowInstance.run_id == run_id)
              .values(status="completed", resume_at=None))
    s.execute(sa.update(WorkflowRun).where(WorkflowRun.id == run_id)
              .values(status="completed", finished_at=utcnow(), error=None))


def _advance(s: Any, run_id: int, step: int, status: str = "running", resume_at: dt.datetime | None = None,
             job_id: str | None = None, log: list | None = None, finished: bool = False) -> bool:
    """Record step ``step`` done (in the caller's transaction, with its effect); False if another job did.
    ``finished``: it was the last step, the run completes in the same statements."""
    status = "completed" if finished else status
    values: dict[str, Any] = {"next_action": step + 1, "status": status, "resume_at": resume_at}
    if job_id:
        values["job_id"] = job_id
    n = s.execute(sa.update(WorkflowInstance).where(WorkflowInstance.run_id == run_id,
                                                    WorkflowInstance.next_action == step)
                  .values(**values).execution_options(synchronize_session=False)).rowcount
    if n:
        run_values: dict[str, Any] = {"steps_done": step + 1, "status": status}
        if log is not None:
            run_values["steps"] = log
        if finished:
            run_values.update(finished_at=utcnow(), error=None)
        s.execute(sa.update(WorkflowRun).where(WorkflowRun.id == run_id).values(**run_values)
                  .execution_options(synchronize_session=False))
    return bool(n)


def _render_value(value: Any, ctx: dict[str, Any]) -> Any:
    """Render every string in a value (a string, or lists and dicts of them) in the sandbox."""
    if isinstance(value, str):
        return mailer.render(value, ctx) if ("{{" in value or "{%" in value) else value
    if isinstance(value, list):
        return [_render_value(v, ctx) for v in value]
    if isinstance(value, dict):
        return {k: _render_value(v, ctx) for k, v in value.items()}
    return value


def _user_id(ref: Any, record: dict[str, Any]) -> int | None:
    if isinstance(ref, int):
        return ref
    if isinstance(ref, str) and ref.isdigit():
        return int(ref)
    value = record.get(ref or "assigned_to") if isinstance(ref, str) or ref is None else None
    if value is None and (ref in (None, "assigned_to")):
        value = record.get("owner_id") or record.get("created_by")
    return int(value) if value is not None else None


def _recipient_address(rt: Any, ref: Any, record: dict[str, Any]) -> str | None:
    if isinstance(ref, str) and "@" in ref:
        return ref
    uid = _user_id(ref, record)
    if uid is None:
        return None
    with rt.read_session() as s:
        return s.scalar(sa.select(User.email).where(User.id == uid))


def _db_action(s: Any, rt: Any, kind: str, action: dict[str, Any], ctx: dict[str, Any], record: dict[str, Any],
               tenant_id: int, run_id: int, step: int, depth: int) -> None:
    key = f"wf:{run_id}:{step}"
    entity = ctx["event"].split(".")[0]
    if kind == "notify":
        uid = _user_id(action.get("user", "assigned_to"), record)
        if uid is not None:
            service.notify(s, tenant_id, uid, "workflow", mailer.render(action["title"], ctx),
                           mailer.render(action["body"], ctx) if action.get("body") else None,
                           {"run_id": run_id, "step": step + 1, "record_id": record.get("id")}, key,
                           known_new=True)  # the step's own key, recorded in this transaction
    elif kind == "create_activity":
        values = {"subject": mailer.render(action["subject"], ctx), "type": action.get("type", "task")}
        if action.get("due_in_minutes") is not None:
            values["due_at"] = utcnow() + dt.timedelta(minutes=float(action["due_in_minutes"]))
        uid = _user_id(action.get("assigned_to", "assigned_to"), record)
        if uid is not None:
            values["assigned_to"] = uid
        if entity == "deal" and record.get("id"):
            values["deal_id"] = record["id"]
        service.create(s, "activity", tenant_id, values, depth=depth + 1, source_key=key)
    elif kind == "update_field":
        if entity not in service.ENTITIES or not record.get("id"):
            raise WorkflowError(f"update_field: event {ctx['event']} has no {entity} record to update")
        service.update(s, entity, int(record["id"]), {action["field"]: _render_value(action["value"], ctx)},
                       depth=depth + 1)
    elif kind == "webhook":
        payload = {"workflow": ctx["workflow"], "run_id": run_id, "step": step + 1, "record": record,
                   "data": _render_value(action.get("data"), ctx), "_depth": depth + 1}
        events.emit(action.get("event") or "workflow.fired", payload, tenant_id, session=s)


# ---------------------------------------------------------------- sweep


def resume_due(rt: Any, now: dt.datetime | None = None) -> int:
    """Enqueue instances that are due and did not resume (their ETA job was lost, or their job died)."""
    now = now or utcnow()
    cfg = rt.settings.crm
    grace = now - dt.timedelta(seconds=cfg.workflow_resume_grace_s)
    stale = now - dt.timedelta(seconds=cfg.workflow_claim_lease_s)
    Inst = WorkflowInstance
    with rt.read_session() as s:
        due = s.execute(sa.select(Inst.run_id, Inst.tenant_id).where(sa.or_(
            sa.and_(Inst.status == "waiting", Inst.resume_at <= grace),
            sa.and_(Inst.status == "pending", Inst.updated_at <= grace),
            sa.and_(Inst.status == "running", Inst.claimed_at < stale)))).all()
    for run_id, tenant_id in due:
        rt.enqueue("ExecuteWorkflowJob", run_id, tenant_id=tenant_id, trigger="recovery")
    return len(due)


@CAPABILITY.periodic("crm:resume-workflows", cron="* * * * *",
                     description="Resume waiting workflow instances that are due and were not resumed")
def resume_workflows_task() -> None:
    resume_due(current())


# ---------------------------------------------------------------- reads


def run(s: Any, run_id: int) -> tuple[WorkflowRun, str, WorkflowInstance | None] | None:
    row = s.execute(sa.select(WorkflowRun, Workflow.name, WorkflowInstance)
                    .join(Workflow, Workflow.id == WorkflowRun.workflow_id)
                    .outerjoin(WorkflowInstance, WorkflowInstance.run_id == WorkflowRun.id)
                    .where(WorkflowRun.id == run_id)).first()
    return tuple(row) if row else None


def resume_now(s: Any, run_id: int) -> None:
    """Make a waiting instance due now (an operator's "resume now")."""
    s.execute(sa.update(WorkflowInstance).where(WorkflowInstance.run_id == run_id,
                                                WorkflowInstance.status == "waiting").values(resume_at=utcnow()))


def runs(s: Any, offset: int = 0, limit: int = 50, search: str | None = None, status: str | None = None
         ) -> tuple[list[tuple[WorkflowRun, str, WorkflowInstance | None]], int]:
    q = (sa.select(WorkflowRun, Workflow.name, WorkflowInstance)
         .join(Workflow, Workflow.id == WorkflowRun.workflow_id)
         .outerjoin(WorkflowInstance, WorkflowInstance.run_id == WorkflowRun.id))
    if status:
        q = q.where(WorkflowRun.status == status)
    if search:
        from ..ops.base import text_search

        q = q.where(text_search((Workflow.name, WorkflowRun.event, WorkflowRun.status, WorkflowRun.error), search))
    total = s.scalar(sa.select(sa.func.count()).select_from(q.subquery())) or 0
    return [tuple(r) for r in s.execute(q.order_by(WorkflowRun.id.desc()).offset(offset).limit(limit))], total


def definitions(s: Any, tenant_id: int | None = None) -> list[Workflow]:
    q = sa.select(Workflow).order_by(Workflow.id)
    if tenant_id is not None:
        q = q.where(Workflow.tenant_id == tenant_id)
    return list(s.scalars(q))
