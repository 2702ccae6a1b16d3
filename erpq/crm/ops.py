"""Ops section ``crm``: records, notifications, reminders and workflows for operators.

Reads return ``_Record`` dataclasses (``to_dict()``); lists return ``Page``.
Actions are audited with their equivalent ``erpq`` command and refused in
read-only mode. No SQL here that the service does not already have: reads go
through ``service`` / ``workflows`` functions.
"""

from __future__ import annotations

import datetime as dt
import shlex
from dataclasses import dataclass, field, make_dataclass
from typing import Any

from ..ops import Conflict, Invalid, NotFound, OpsError, OpsSection, Page, audited
from ..ops.base import _Record, check_columns, check_id, check_text
from . import service
from .service import CrmError


def _info_class(entity: str):
    model = service.ENTITIES[entity]
    import sqlalchemy as sa

    cols = [c.key for c in sa.inspect(model).column_attrs]
    return make_dataclass(f"{model.__name__}Info", [(c, Any, field(default=None)) for c in cols], bases=(_Record,))


RECORD_INFO = {entity: _info_class(entity) for entity in service.ENTITIES}


def record_info(entity: str, row: Any) -> Any:
    cls = RECORD_INFO[entity]
    return cls(**{k: getattr(row, k) for k in cls.__dataclass_fields__})


@dataclass
class NotificationInfo(_Record):
    id: int
    tenant_id: int
    user_id: int
    user: str
    kind: str  # the notification's type
    title: str
    body: str | None
    data: Any
    read_at: dt.datetime | None
    created_at: dt.datetime


@dataclass
class DueActivityInfo(_Record):
    id: int
    tenant_id: int
    tenant: str
    subject: str
    due_at: dt.datetime | None
    due_local: str  # in the recipient's timezone
    assignee: str | None  # the reminder's recipient (assigned user, else creator)
    reminder: str  # pending | claimed | sent
    reminder_claimed_at: dt.datetime | None
    reminder_sent_at: dt.datetime | None


def _error(exc: CrmError) -> OpsError:
    return NotFound(str(exc)) if isinstance(exc, service.NotFoundError) else Invalid(str(exc))


def _kv(values: dict[str, Any]) -> str:
    return "".join(f" --set {shlex.quote(f'{k}={v}')}" for k, v in values.items())


class CrmOps(OpsSection):
    """``ops.crm``: leads, contacts, deals, activities, notifications, reminders, workflows."""

    # ------------------------------------------------------------ records
    def records(self, entity: str, tenant: str | int | None = None, offset: int = 0, limit: int = 50,
                status: str | None = None) -> Page:
        self._entity(entity)
        tid = self.ops.tenant_id(tenant) if tenant is not None else None
        with self.rt.read_session() as s:
            rows, total = service.listing(s, entity, tid, offset, limit, status)
            return Page([record_info(entity, r) for r in rows], total, offset, limit)

    def record(self, entity: str, record_id: int) -> Any:
        self._entity(entity)
        try:
            with self.rt.read_session() as s:
                return record_info(entity, service.get(s, entity, record_id))
        except CrmError as exc:
            raise _error(exc) from None

    @audited
    def add(self, entity: str, tenant: str | int, values: dict[str, Any]) -> Any:
        """Create a lead, contact, deal or activity (emits ``<entity>.created``)."""
        self._entity(entity)
        self._check_values(entity, values)
        tid = self.ops.tenant_id(tenant)
        self._act(f"crm.{entity}.add", str(tenant),
                  f"erpq {entity} add --tenant {shlex.quote(str(tenant))}{_kv(values)}")
        try:
            with self._tx() as s:
                row = service.create(s, entity, tid, values)
                info = record_info(entity, row)
        except CrmError as exc:
            raise _error(exc) from None
        return info

    @audited
    def update(self, entity: str, record_id: int, values: dict[str, Any]) -> tuple[Any, dict[str, list]]:
        """Change fields of a record (emits ``<entity>.updated``, and ``deal.status_changed``)."""
        self._entity(entity)
        if not values:
            raise Invalid(f"{entity} update: nothing to change (give --set FIELD=VALUE)")
        check_id(record_id, f"{entity} id")
        self._check_values(entity, values)
        self._act(f"crm.{entity}.update", str(record_id), f"erpq {entity} update {record_id}{_kv(values)}")
        try:
            with self._tx() as s:
                row, changes = service.update(s, entity, record_id, values)
                info = record_info(entity, row)
        except CrmError as exc:
            raise _error(exc) from None
        return info, changes

    @staticmethod
    def _check_values(entity: str, values: dict[str, Any]) -> None:
        """Text values fit their columns and are valid UTF-8 (the same refusal on every backend)."""
        columns = service.ENTITIES[entity].__table__.c
        check_columns(service.ENTITIES[entity], entity,
                      **{k: v for k, v in values.items() if isinstance(v, str) and k in columns})
        for k, v in values.items():
            if isinstance(v, str):
                check_text(v, f"{entity} {k}")

    @staticmethod
    def _entity(entity: str) -> None:
        if entity not in service.ENTITIES:
            raise Invalid(f"unknown record type {entity!r} (one of {', '.join(service.ENTITIES)})")

    # ------------------------------------------------------------ notifications
    def notifications(self, user: int | None = None, unread: bool = False, offset: int = 0, limit: int = 50,
                      search: str | None = None) -> Page:
        with self.rt.read_session() as s:
            rows, total = service.notifications(s, user, unread, offset=offset, limit=limit, search=search)
            return Page([_notification_info(n, name) for n, name in rows], total, offset, limit)

    def notifications_page(self, offset: int = 0, limit: int = 50, search: str | None = None) -> Page:
        """The console panel's read: every notification, newest first."""
        return self.notifications(offset=offset, limit=limit, search=search)

    def notification_counts(self) -> dict[str, int]:
        with self.rt.read_session() as s:
            return service.notification_counts(s)

    @audited
    def mark_read(self, notification_id: int | str) -> NotificationInfo:
        notification_id = check_id(int(notification_id), "notification id")
        self._act("crm.notification.read", str(notification_id), f"erpq notifications read {notification_id}")
        try:
            with self._tx() as s:
                service.mark_read(s, notification_id)
                return _notification_info(*service.notification(s, notification_id))
        except CrmError as exc:
            raise _error(exc) from None

    # ------------------------------------------------------------ reminders
    def due_activities(self, offset: int = 0, limit: int = 50, search: str | None = None,
                       within_min: int | None = None) -> Page:
        """Open activities due within the reminder window (or ``within_min``), overdue
        ones included, with their reminder state and the due time in the recipient's zone."""
        from .reminders import due_activities

        within = within_min if within_min is not None else self.settings.reminder_window_min
        with self.rt.read_session() as s:
            rows, total = due_activities(s, within, offset, limit, search)
            tz_default = self.settings.default_timezone
            items = []
            for a, slug, user in rows:
                tz = service.user_timezone(s, user.id if user else None, tz_default)
                state = "sent" if a.reminder_sent_at else "claimed" if a.reminder_claimed_at else "pending"
                items.append(DueActivityInfo(a.id, a.tenant_id, slug, a.subject, a.due_at,
                                             service.local_time(a.due_at, tz), user.name if user else None, state,
                                             a.reminder_claimed_at, a.reminder_sent_at))
        return Page(items, total, offset, limit)

    @audited
    def check_reminders(self) -> int:
        """Run crm:check-activity-reminders now (claims and enqueues)."""
        from .reminders import claim_due, unclaim

        self._act("crm.reminders.check", None, "erpq schedule run crm:check-activity-reminders")
        rt = self.rt
        with self._tx() as s:
            claims = claim_due(rt, session=s)
        for aid, tenant_id in claims:  # each job once the claims committed; a job not enqueued is unclaimed
            self._after_commit(lambda a=aid, t=tenant_id: rt.enqueue("SendActivityReminderJob", a, tenant_id=t),
                               lambda a=aid: unclaim(rt, a))
        return len(claims)

    # ------------------------------------------------------------ workflows
    def workflows(self, tenant: str | int | None = None) -> list[WorkflowInfo]:
        from . import workflows

        tid = self.ops.tenant_id(tenant) if tenant is not None else None
        with self._read() as s:
            return [WorkflowInfo(w.id, w.tenant_id, w.name, w.trigger_event, w.match, w.conditions, w.actions,
                                 w.is_active) for w in workflows.definitions(s, tid)]

    def workflow_runs(self, offset: int = 0, limit: int = 50, search: str | None = None,
                      status: str | None = None) -> Page:
        from . import workflows

        with self.rt.read_session() as s:
            items, total = workflows.runs(s, offset, limit, search, status)
            return Page([_run_info(*r) for r in items], total, offset, limit)

    def workflow_run(self, run_id: int) -> WorkflowRunInfo:
        from . import workflows

        with self.rt.read_session() as s:
            row = workflows.run(s, run_id)
        if row is None:
            raise NotFound(f"no workflow run {run_id}")
        return _run_info(*row)

    @audited
    def load_workflows(self, tenant: str | int, path: str) -> list[WorkflowInfo]:
        from . import workflows

        tid = self.ops.tenant_id(tenant)
        try:
            defs = workflows.read_file(path)
        except workflows.WorkflowError as exc:
            raise Invalid(str(exc)) from None
        self._act("crm.workflow.load", path, f"erpq workflow load {shlex.quote(path)} --tenant {tenant}")
        with self._tx() as s:
            for d in defs:
                workflows.save(s, tid, d)
        return [w for w in self.workflows(tid) if w.name in {d["name"] for d in defs}]

    @audited
    def resume_run(self, run_id: int | str) -> str:
        """Resume a waiting (or stuck) workflow run now."""
        run_id = int(run_id)
        info = self.workflow_run(run_id)
        if info.status in ("completed", "cut"):
            raise Conflict(f"workflow run {run_id} is {info.status}: nothing to resume")
        self._act("crm.workflow.resume", str(run_id), f"erpq workflow resume {run_id}")
        from . import workflows

        with self._tx() as s:
            workflows.resume_now(s, run_id)
        # resume_at = now stands if the enqueue fails: the waiting-instance sweep resumes it.
        self._after_commit(lambda: self.rt.enqueue("ExecuteWorkflowJob", run_id, tenant_id=info.tenant_id,
                                                   trigger="manual"), keep_audit=True)
        return info.status

    def summary(self) -> str:
        counts = self.notification_counts()
        return f"notifications {counts['total']:,} ({counts['unread']:,} unread)"


def _notification_info(n: Any, user_name: str) -> NotificationInfo:
    return NotificationInfo(n.id, n.tenant_id, n.user_id, user_name, n.kind, n.title, n.body, n.data, n.read_at,
                            n.created_at)


@dataclass
class WorkflowInfo(_Record):
    id: int
    tenant_id: int
    name: str
    trigger_event: str
    match: str
    conditions: Any
    actions: Any
    is_active: bool


@dataclass
class WorkflowRunInfo(_Record):
    id: int
    tenant_id: int
    workflow_id: int
    workflow: str
    event: str
    status: str
    steps_done: int
    depth: int
    error: str | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    instance_status: str | None
    next_step: int | None  # 1-based: the step it waits at / runs next
    resume_at: dt.datetime | None
    steps: Any = None


def _run_info(run: Any, name: str, inst: Any) -> WorkflowRunInfo:
    return WorkflowRunInfo(run.id, run.tenant_id, run.workflow_id, name, run.event, run.status, run.steps_done,
                           run.depth, run.error, run.started_at, run.finished_at,
                           inst.status if inst else None, (inst.next_action + 1) if inst else None,
                           inst.resume_at if inst else None, run.steps)


