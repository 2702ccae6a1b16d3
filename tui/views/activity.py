"""Activity: the live stream of recent runs (newest first) and the log tail."""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Log

from ..fmt import clock, duration, one_line, stamp, status_text
from ..widgets.keyed_table import KeyedTable
from .base import View

#: ``f`` cycles through every run status (None: all of them).
STATUSES = (None, "failed", "success", "running", "retrying", "enqueued", "skipped", "cancelled", "revoked",
            "expired")


class ActivityView(View):
    """Recent runs; / filters by text, f by status; l shows or hides the log tail."""

    TITLE = "Activity"
    KEY = "activity"
    PAGED = True
    SORTS = [("id", "at"), ("task", "task"), ("status", "status")]
    COLUMNS = [("at", "Time", 8), ("task", "Task", 28), ("status", "Status", 9), ("took", "Took", 6),
               ("trigger", "Trigger", 8), ("what", "Arguments / error", 60)]

    BINDINGS = [
        Binding("f", "status_filter", "Status filter", id="activity.status"),
        Binding("l", "toggle_log", "Log", id="activity.log"),
        Binding("right_square_bracket", "page(1)", "Older", show=False, id="activity.next_page"),
        Binding("left_square_bracket", "page(-1)", "Newer", show=False, id="activity.prev_page"),
        Binding("enter", "detail", "Detail", show=False, id="activity.detail"),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.status: str | None = None
        self._log_lines: list[str] = []

    def compose_body(self) -> ComposeResult:
        yield KeyedTable(self.COLUMNS, id="table")
        yield Log(id="log", max_lines=500)

    def fetch(self, ops: Any) -> Any:
        page = ops.runs(offset=self.page_offset, limit=self.PAGE_SIZE, status=self.status,
                        search=self.filter_text or None, sort=self.sort)
        tail = ops.log_tail(60) if self.query_one("#log").display else None
        return page, tail

    def show(self, data: Any) -> None:
        page, tail = data
        tz, now = self.console.tz, self.console.now()
        rows = []
        for r in page.items:
            what = Text(one_line(r.error, 500), style="red") if r.error else Text(r.args_summary or "")
            rows.append((str(r.id), [clock(r.started_at or r.enqueued_at, tz, now), r.task_name,
                                     status_text(r.status), duration(r.duration_s), r.trigger or "", what]))
        self.table.sync(rows, {str(r.id): r for r in page.items})
        self.total = page.offset + len(page.items) + (1 if len(page.items) == page.limit else 0)
        where = "newest" if self.page_offset == 0 else f"from #{self.page_offset + 1:,}"
        status = f" · status {self.status}" if self.status else ""
        self.head(f"{len(page.items)} runs, {where}{status}")
        if tail is not None:
            self._show_log(tail)
        self.refresh_info()

    def _show_log(self, lines: list[str]) -> None:
        """Append only the new lines of the tail (the log widget keeps the rest)."""
        if lines == self._log_lines:
            return
        log = self.query_one("#log", Log)
        old = self._log_lines
        new: list[str] | None = None
        if old:
            last = old[-1]
            for i in range(len(lines) - 1, -1, -1):
                if lines[i] == last:
                    new = lines[i + 1:]
                    break
        if new is None:
            log.clear()
            new = lines
        log.write_lines(new)
        self._log_lines = lines

    def describe(self, r: Any) -> str:
        text = f"{r.task_name} {r.task_id[:8]}" + (f" · {one_line(r.error, 300)}" if r.error else "")
        when = stamp(r.started_at or r.enqueued_at, self.console.tz, self.console.now())
        return text + f" · {when} · {r.kind} · attempt {r.attempt} · {r.runner or '—'}"

    def detail_actions(self, r: Any) -> dict[str, Any]:
        if r.status != "failed":
            return {}
        return {"failed": lambda: self.console.drill_to_failed(f"run #{r.id} {r.task_name}", task_ids=[r.task_id])}

    def detail(self, ops: Any, r: Any) -> tuple[str, str]:
        return f"run #{r.id} {r.task_name}", json.dumps(r.to_dict(), indent=2, default=str)

    def action_status_filter(self) -> None:
        self.status = STATUSES[(STATUSES.index(self.status) + 1) % len(STATUSES)]
        self.page_offset = 0
        self.console.poll_now()

    def action_toggle_log(self) -> None:
        log = self.query_one("#log", Log)
        log.display = not log.display
        if log.display:
            self._log_lines = []
        self.console.poll_now()
