"""Schedule: every periodic task, its expression in words, last and next run."""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual.binding import Binding

from ..fmt import ago, clock, countdown, duration, status_text
from .base import View


def _state(e: Any) -> Text:
    if e.lock_holder and e.running_since:
        return Text("running", style="cyan")
    if e.paused:
        return Text("paused", style="yellow")
    return Text("")


class ScheduleView(View):
    """Periodic tasks. t runs one now, p pauses or resumes it."""

    TITLE = "Schedule"
    KEY = "schedule"
    COLUMNS = [("task", "Task", 31), ("next", "Next", 9), ("last", "Last run", 8),
               ("result", "Result", 7), ("took", "Took", 6), ("state", "State", 7),
               ("every", "Schedule", 24)]

    BINDINGS = [
        Binding("t", "trigger", "Run now", id="schedule.trigger"),
        Binding("p", "pause", "Pause/resume", id="schedule.pause"),
        Binding("enter", "detail", "Detail", show=False, id="schedule.detail"),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.entries: list[Any] = []

    def fetch(self, ops: Any) -> Any:
        return ops.schedule()

    def show(self, entries: Any) -> None:
        f = self.filter_text.lower()
        self.entries = [e for e in entries if not f or f in e.name.lower() or f in e.description.lower()]
        self._draw()
        paused = sum(1 for e in entries if e.paused)
        running = sum(1 for e in entries if e.lock_holder and e.running_since)
        self.head(f"{len(entries)} periodic tasks · {running} running · {paused} paused")
        self.refresh_info()

    def _rows(self) -> list[tuple[str, list]]:
        now = self.console.now()
        return [(e.name, [e.name, countdown(e.next_run_at, now) if not e.paused else "paused",
                          clock(e.last_run_at, self.console.tz, now), status_text(e.last_status),
                          duration(e.last_duration_s), _state(e), e.description])
                for e in self.entries]

    def _draw(self) -> None:
        if not self.entries:
            self.table.sync([], {})
            return
        self.table.sync(self._rows(), {e.name: e for e in self.entries})

    def tick(self) -> None:
        if self.entries:
            self.table.sync(self._rows())

    def describe(self, e: Any) -> str:
        text = f"{e.name}: {e.description} ({e.expression})"
        if e.lock_holder:
            since = ago(e.running_since, self.console.now()) if e.running_since else "?"
            text += f" · lock held by {e.lock_holder} for {since.replace(' ago', '')}"
        elif e.summary:
            text += f" · {e.summary}"
        return text

    def detail(self, ops: Any, e: Any) -> tuple[str, str]:
        tz = self.console.tz
        now = self.console.now()
        lines = [
            f"Task:        {e.name}",
            f"Schedule:    {e.description}  ({e.expression}, {tz})",
            f"What:        {e.summary or '—'}",
            f"Paused:      {'yes' if e.paused else 'no'}",
            f"Last run:    {clock(e.last_run_at, tz)}  {e.last_status or '—'}  took {duration(e.last_duration_s)}",
            f"Next run:    {clock(e.next_run_at, tz)}  ({countdown(e.next_run_at, now)})",
            f"Lock holder: {e.lock_holder or '—'}",
            f"Running for: {ago(e.running_since, now).replace(' ago', '') if e.running_since else '—'}",
            "",
            "Why did it (not) fire? (erpq schedule explain):",
            *(f"  {line}" for line in ops.explain(e.name).lines()),
            "",
            "Recent runs:",
        ]
        for r in ops.runs(limit=15, task=e.name).items:
            lines.append(f"  {clock(r.started_at or r.enqueued_at, tz)}  {r.status:<9} "
                         f"{duration(r.duration_s):>7}  {r.trigger or ''}  {r.error or ''}".rstrip())
        lines += ["", json.dumps(e.to_dict(), indent=2)]
        return e.name, "\n".join(lines)

    # ------------------------------------------------------------ actions
    def action_trigger(self) -> None:
        e = self.selected()
        if e is None:
            return
        self.console.perform(f"run {e.name} now", lambda ops: ops.trigger(e.name),
                             done=lambda task_id: f"{e.name} enqueued as {task_id[:8]}")

    def action_pause(self) -> None:
        e = self.selected()
        if e is None:
            return
        if e.paused:
            self.console.perform(f"resume {e.name}", lambda ops: ops.resume(e.name),
                                 done=lambda _: f"{e.name} resumed")
        else:
            self.console.perform(f"pause {e.name}", lambda ops: ops.pause(e.name),
                                 done=lambda _: f"{e.name} paused")
