"""Runners and Locks: who runs work (heartbeats, current jobs), what they hold."""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding

from ..fmt import clock, span
from ..widgets.keyed_table import KeyedTable
from ..widgets.line import Line
from .base import View


class RunnersView(View):
    """Runners (top) and locks (bottom); Tab moves between them, l releases a stale lock."""

    TITLE = "Runners"
    KEY = "runners"
    COLUMNS = [("host", "Host", 16), ("pid", "Pid", 7), ("kind", "Kind", 8), ("workers", "Wkr", 3),
               ("beat", "Heartbeat", 9), ("jobs", "Jobs", 4), ("state", "State", 5)]
    LOCK_COLUMNS = [("name", "Lock", 40), ("holder", "Holder", 18), ("age", "Age", 7), ("state", "State", 5)]

    BINDINGS = [
        Binding("l", "release", "Release lock", id="runners.release"),
        Binding("enter", "detail", "Detail", show=False, id="runners.detail"),
    ]

    def compose_body(self) -> ComposeResult:
        yield KeyedTable(self.COLUMNS, id="table")
        yield Line(id="locks-head", classes="head")
        yield KeyedTable(self.LOCK_COLUMNS, id="locks")

    @property
    def locks_table(self) -> KeyedTable:
        return self.query_one("#locks", KeyedTable)

    def fetch(self, ops: Any) -> Any:
        return ops.runners(), ops.locks()

    def show(self, data: Any) -> None:
        runners, locks = data
        f = self.filter_text.lower()
        runners = [r for r in runners if not f or f in r.id.lower()]
        locks = [lk for lk in locks if not f or f in lk.name.lower() or f in lk.holder.lower()]
        # Ages come from the poll (computed by ops on the same clock as the rows); they
        # move every poll for live runners, which is real change, not noise.
        rows = [(r.id, [r.host, str(r.pid), r.kind, str(r.workers), span(r.heartbeat_age_s),
                        str(r.current_jobs),
                        Text("alive", style="green") if r.alive else Text("dead", style="bold red")])
                for r in runners]
        self.table.sync(rows, {r.id: r for r in runners})
        lrows = [(lk.name, [lk.name, lk.holder, span(lk.age_s),
                            Text("stale", style="bold red") if lk.stale else Text("held", style="green")])
                 for lk in locks]
        self.locks_table.sync(lrows, {lk.name: lk for lk in locks})
        alive = sum(1 for r in runners if r.alive)
        self.head(f"{len(runners)} runners ({alive} alive)")
        stale = sum(1 for lk in locks if lk.stale)
        self.query_one("#locks-head", Line).set(f"{len(locks)} locks held ({stale} stale) — Tab to select")
        self.refresh_info()

    def refresh_info(self) -> None:
        table = self.locks_table if self.locks_table.has_focus else self.table
        record = table.selected_record if table.row_count else None
        self.query_one("#info", Line).set(self.describe(record) if record is not None else "")

    def on_descendant_focus(self) -> None:
        self.refresh_info()

    def selected(self) -> Any:
        table = self.locks_table if self.locks_table.has_focus else self.table
        return table.selected_record

    def describe(self, r: Any) -> str:
        tz, now = self.console.tz, self.console.now()
        if hasattr(r, "holder"):
            return (f"{r.name} held by {r.holder} (task {r.task_id or '—'}) · "
                    f"lease until {clock(r.expires_at, tz, now)}")
        return (f"{r.id} · {r.queue} · periodic {'yes' if r.periodic else 'no'} · "
                f"started {clock(r.started_at, tz, now)}")

    def detail(self, ops: Any, r: Any) -> tuple[str, str]:
        title = f"lock {r.name}" if hasattr(r, "holder") else f"runner {r.id}"
        return title, json.dumps(r.to_dict(), indent=2, default=str)

    def action_release(self) -> None:
        if not self.locks_table.has_focus:
            self.locks_table.focus()
            self.console.message("select a lock (Tab moves to the locks) and press l again")
            return
        lk = self.locks_table.selected_record
        if lk is None:
            return
        if lk.stale:
            question = f"Release stale lock {lk.name} (its holder {lk.holder} is gone or its lease ran out)?"
        else:
            # A live holder is still running the task: releasing lets a second run start beside it.
            question = (f"Lock {lk.name} is held by LIVE runner {lk.holder}; releasing it lets the task "
                        "run twice at once. Release it anyway (--force)?")
        force = not lk.stale  # a stale lock needs no force; if it became live since, ops refuses
        self.console.perform(f"release lock {lk.name}", lambda ops: ops.release_lock(lk.name, force=force),
                             confirm=question, done=lambda _: f"lock {lk.name} released")
