"""The crm capability: records, notifications, reminders, deal notifications, workflows."""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass

from ..capability import Capability, PanelAction, PanelSpec
from ..events import define_event as _define_event


@dataclass
class CrmSettings:
    """``[crm]``: reminder window and lease, display timezone, workflow limits, mail domain."""

    #: Open activities due within this many minutes get their reminder.
    reminder_window_min: int = 15
    #: A reminder claimed this long ago and still not sent is claimed again (its job died).
    reminder_lease_s: int = 600
    #: Times are shown in this timezone for users without a preference.
    default_timezone: str = "UTC"
    #: Domain of the deterministic Message-IDs.
    mail_domain: str = "erpq.local"
    #: A workflow run started by this many nested workflow runs is cut (loop guard).
    workflow_max_depth: int = 3
    #: A waiting instance due this long ago without having resumed is resumed by the sweep.
    workflow_resume_grace_s: int = 60
    #: A running instance whose job has been silent this long is taken over.
    workflow_claim_lease_s: int = 300

    def validate(self, err) -> None:
        if not 1 <= self.reminder_window_min <= 24 * 60:
            raise err("reminder_window_min", "must be between 1 and 1440 minutes")
        if self.reminder_lease_s < 10:
            raise err("reminder_lease_s", "must be at least 10 seconds")
        try:
            zoneinfo.ZoneInfo(self.default_timezone)
        except Exception:
            raise err("default_timezone", f"unknown timezone {self.default_timezone!r}") from None
        if not 1 <= self.workflow_max_depth <= 20:
            raise err("workflow_max_depth", "must be between 1 and 20")
        if self.workflow_resume_grace_s < 0 or self.workflow_claim_lease_s < 10:
            raise err("workflow_claim_lease_s", "must be at least 10 seconds (and the grace >= 0)")


EVENTS = ("lead.created", "lead.updated", "contact.created", "contact.updated", "deal.created",
          "deal.updated", "deal.status_changed", "activity.created", "activity.updated", "workflow.fired")

CAPABILITY = Capability(
    "crm",
    title="CRM",
    description="Leads, contacts, deals, activities; reminders, deal notifications and workflows",
    modules=("erpq.crm.service", "erpq.crm.reminders", "erpq.crm.deals", "erpq.crm.workflows"),
    settings=CrmSettings,
    cli="erpq.crm.cli:register",
    ops="erpq.crm.ops:CrmOps",
    events=EVENTS,
    models="erpq.crm.models",
    migrations="migrations",
    panels=(
        PanelSpec("activities", "Activities", read="due_activities",
                  columns=(("id", "Id", 6), ("tenant", "Tenant", 10), ("subject", "Subject", None),
                           ("due_at", "Due", 19), ("assignee", "To", 14), ("reminder", "Reminder", 10)),
                  summary="{summary}"),
        PanelSpec("workflows", "Workflows", read="workflow_runs",
                  columns=(("id", "Run", 6), ("workflow", "Workflow", 18), ("event", "Event", 18),
                           ("status", "Status", 9), ("steps_done", "Steps", 5), ("resume_at", "Resumes", 19),
                           ("error", "Error", None)),
                  actions=(PanelAction("r", "Resume now", "resume_run", "Resume workflow run {id} now?"),),
                  summary="{summary}"),
        PanelSpec("notifications", "Notifications", read="notifications_page",
                  columns=(("id", "Id", 6), ("user", "User", 14), ("kind", "Type", 16), ("title", "Title", None),
                           ("read_at", "Read", 19), ("created_at", "Created", 19)),
                  actions=(PanelAction("m", "Mark read", "mark_read"),),
                  summary="{summary}"),
    ),
)

# Known before any of this capability's modules subscribes to them (a module
# imported directly, ahead of capability discovery, must not fail).
for _name in EVENTS:
    _define_event(_name)
