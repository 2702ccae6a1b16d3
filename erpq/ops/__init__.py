"""THE read/act API for operators: the CLI and the console call only this.

``Ops`` is one facade composed of sections:

- core sections, one module each: ``schedule``, ``queue``, ``failed``,
  ``fleet`` (runs, log, batches, runners, locks), ``tenants`` (and users),
  ``stats`` (throughput and latency per task), and
  the audit log in ``base``;
- capability sections (``erpq.ops.OpsSection`` subclasses each capability
  names in its ``Capability(ops=...)``), reached as ``ops.section("webhooks")``
  or ``ops.webhooks``.

Reads return plain dataclasses (``to_dict()`` gives the stable JSON field names
the CLI's ``--json`` prints; times are aware UTC datetimes, ISO 8601 in JSON).
Lists are paged (``offset``/``limit``) and read only the page they show, so a
list stays fast with 100,000 rows behind it.

Actions take effect at once, are written to the audit log with the OS user,
the SSH client address when there is one, and the equivalent ``erpq`` command
line. An ``Ops`` made with ``read_only=True`` refuses every action with
``ReadOnly``. Errors an operator can cause (unknown task, missing record, bad
arguments) raise ``OpsError`` subclasses (``NotFound``, ``Conflict``,
``ReadOnly``, ``Invalid``) whose message is one line.

``erpq.ops.contract.ConsoleOps`` is the typed contract the console relies on.
"""

from __future__ import annotations

from typing import Any

from .base import (
    Actor,
    AuditInfo,
    Conflict,
    Invalid,
    NotFound,
    OpsCore,
    OpsError,
    OpsSection,
    Page,
    ReadOnly,
    audited,
    normalise_message,
)
from .events import EmitOutcome, EventOps
from .failed import FailedInfo, FailedOps, FailureCluster
from .fleet import BatchInfo, FleetOps, LockInfo, RunInfo, RunnerInfo
from .queue import JobInfo, QueueOps
from .schedule import ScheduleEntry, ScheduleOps
from .stats import StatsOps, TaskThroughput
from .tenants import TenantInfo, TenantOps, UserInfo


class Ops(ScheduleOps, QueueOps, FailedOps, FleetOps, TenantOps, StatsOps, EventOps, OpsCore):
    """Every operator read and action: core sections plus capability sections."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sections: dict[str, OpsSection] = {}

    def section(self, name: str) -> OpsSection:
        """The Ops section of capability ``name`` (NotFound if it has none)."""
        found = self._sections.get(name)
        if found is not None:
            return found
        from .. import capability

        cap = next((c for c in capability.load_all() if c.name == name and c.ops), None)
        if cap is None:
            known = ", ".join(self.section_names())
            raise NotFound(f"no Ops section {name!r} (known: {known})")
        cls = cap.resolve(cap.ops)
        if not (isinstance(cls, type) and issubclass(cls, OpsSection)):
            raise TypeError(f"capability {name}: ops={cap.ops} is not an OpsSection subclass")
        cls.name = name
        found = self._sections[name] = cls(self)
        return found

    def section_names(self) -> list[str]:
        from .. import capability

        return sorted(c.name for c in capability.load_all() if c.ops)

    def __getattr__(self, name: str) -> Any:
        # Only called for names Ops itself lacks: a capability's section.
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self.section(name)
        except NotFound:
            raise AttributeError(f"Ops has no attribute or section {name!r}") from None


__all__ = ["Actor", "AuditInfo", "BatchInfo", "EmitOutcome", "Conflict", "FailedInfo", "FailureCluster", "Invalid",
           "JobInfo", "LockInfo", "NotFound", "Ops", "OpsCore", "OpsError", "OpsSection", "Page", "ReadOnly",
           "RunInfo", "RunnerInfo", "ScheduleEntry", "TaskThroughput", "TenantInfo", "UserInfo", "audited", "normalise_message"]
