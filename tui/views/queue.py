"""Queue: pending, scheduled (delayed and retrying) and running jobs, paged."""

from __future__ import annotations

import json
from typing import Any

from textual.binding import Binding

from ..fmt import clock, countdown, span
from .base import View

SECTIONS = ("pending", "scheduled", "running")


class QueueView(View):
    """Jobs in the queue; v switches pending / scheduled / running, c cancels one."""

    TITLE = "Queue"
    KEY = "queue"
    PAGED = True
    MARKABLE = True
    COLUMNS = [("id", "Id", 8), ("task", "Task", 24), ("when", "When", 10), ("attempt", "Try", 3),
               ("args", "Arguments", 15), ("where", "Runner/tenant", 30)]

    BINDINGS = [
        Binding("v", "section", "Pending/sched/running", id="queue.section"),
        Binding("c", "cancel", "Cancel job", id="queue.cancel"),
        Binding("right_square_bracket", "page(1)", "Next page", show=False, id="queue.next_page"),
        Binding("left_square_bracket", "page(-1)", "Prev page", show=False, id="queue.prev_page"),
        Binding("enter", "detail", "Detail", show=False, id="queue.detail"),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.section = "pending"
        self.jobs: list[Any] = []
        self.counts: dict[str, int] = {}

    def fetch(self, ops: Any) -> Any:
        section, offset, search = self.section, self.page_offset, self.filter_text or None
        page = getattr(ops, section)(offset=offset, limit=self.PAGE_SIZE, search=search)
        return section, page

    def show(self, data: Any) -> None:
        section, page = data
        if section != self.section:
            return
        self.jobs = page.items
        self.total = page.total
        self._draw()
        c = self.console.counts
        label = {s: f"{s} {c.get(s, 0):,}" for s in SECTIONS}
        label[self.section] = f"[{label[self.section]}]"
        shown = f"showing {self.page_text(len(self.jobs))}" if not self.filter_text else f"{len(self.jobs)} matching"
        self.head(f"{label['pending']} · {label['scheduled']} · {label['running']} · {shown}")
        self.refresh_info()

    def _when(self, j: Any) -> str:
        now = self.console.now()
        if j.state == "scheduled":
            return countdown(j.eta, now)
        if j.state == "running":
            return "for " + span((now - j.started_at).total_seconds()) if j.started_at else "running"
        return clock(j.enqueued_at, self.console.tz, now)

    def _rows(self) -> list[tuple[str, list]]:
        rows = []
        for j in self.jobs:
            where = j.runner or self.console.tenant(j.tenant_id)
            if j.batch_id:
                where = (where + " " if where else "") + f"batch {j.batch_id[:8]}"
            rows.append((f"{j.state}:{j.id}", [j.id[:8], j.task_name, self._when(j), str(j.attempt),
                                                j.args_summary, where]))
        return rows

    def _draw(self) -> None:
        self.table.sync(self._rows(), {f"{j.state}:{j.id}": j for j in self.jobs})

    def tick(self) -> None:
        if self.jobs and self.section != "pending":
            self.table.sync(self._rows())

    def describe(self, j: Any) -> str:
        tz, now = self.console.tz, self.console.now()
        if j.state == "scheduled":
            return f"{j.task_name} {j.id} · runs at {clock(j.eta, tz, now)} · attempt {j.attempt} · {j.args_summary}"
        if j.state == "running":
            return f"{j.task_name} {j.id} · on {j.runner} since {clock(j.started_at, tz, now)} · {j.args_summary}"
        tenant = f" · tenant {self.console.tenant(j.tenant_id)}" if j.tenant_id else ""
        return f"{j.task_name} {j.id} · enqueued {clock(j.enqueued_at, tz, now)} · {j.args_summary}{tenant}"

    def detail(self, ops: Any, j: Any) -> tuple[str, str]:
        body = json.dumps({k: v for k, v in j.to_dict().items() if k != "key"}, indent=2)
        return f"{j.state} job {j.id}", body

    # ------------------------------------------------------------ actions
    def action_section(self) -> None:
        self.section = SECTIONS[(SECTIONS.index(self.section) + 1) % len(SECTIONS)]
        self.page_offset = 0
        self.jobs = []
        self.table.sync([], {})
        self.console.poll_now()

    def detail_actions(self, j: Any) -> dict[str, Any]:
        return {} if j.state == "running" else {"cancel": lambda: self.cancel([j])}

    def action_cancel(self) -> None:
        marked = self.marked()
        if marked:
            self.cancel(marked, marked=True)
        elif (j := self.selected()) is not None:
            self.cancel([j])

    def cancel(self, jobs: list[Any], marked: bool = False) -> None:
        if len(jobs) > 1 or marked:
            self.cancel_many(jobs)
            return
        j = jobs[0]
        if j.state == "running":
            self.console.message("a running job cannot be cancelled; it finishes or fails", error=True)
            return
        self.console.perform(f"cancel {j.state} job {j.id[:8]}",
                             lambda ops: ops.cancel_job(j.id, key=j.key),
                             confirm=f"Cancel {j.state} job {j.task_name} {j.id}?\n{j.args_summary}",
                             done=lambda _: f"job {j.id[:8]} cancelled")

    def cancel_many(self, jobs: list[Any]) -> None:
        """Cancel the marked jobs (each audited as ``erpq queue cancel ID``), with progress."""
        todo = [j for j in jobs if j.state != "running"]
        if not todo:
            self.console.message("running jobs cannot be cancelled; they finish or fail", error=True)
            return
        table = self.table
        skipped = len(jobs) - len(todo)

        def call(ops: Any, progress: Any) -> int:
            n = 0
            for i, j in enumerate(todo, 1):
                ops.cancel_job(j.id, key=j.key)
                n += 1
                if progress(i, len(todo)) is False:
                    break
            return n

        def done(n: int) -> str:
            table.clear_marks()
            return f"{n:,} jobs cancelled" + (f" ({skipped} running, left alone)" if skipped else "")

        self.console.perform(f"cancel {len(todo):,} jobs", call, bulk="cancelling", done=done,
                             confirm=f"Cancel {len(todo):,} marked jobs?" + (
                                 f" ({skipped} running ones are left alone)" if skipped else ""))
