"""Batches: every batch in progress with a progress bar, counts and ETA."""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual.binding import Binding

from ..fmt import bar, clock, span
from .base import View


class BatchesView(View):
    """Batches (webhook fan-outs, imports, campaigns, report runs); c cancels one."""

    TITLE = "Batches"
    KEY = "batches"
    PAGED = True
    MARKABLE = True
    SORTS = [("name", "name"), ("kind", "kind"), ("failed", "failed")]
    COLUMNS = [("name", "Batch", 17), ("kind", "Kind", 9), ("progress", "Progress", 17),
               ("done", "Done/total", 13), ("failed", "Failed", 6), ("eta", "ETA", 9)]

    BINDINGS = [
        Binding("a", "toggle_all", "All/active", id="batches.all"),
        Binding("c", "cancel", "Cancel batch", id="batches.cancel"),
        Binding("enter", "detail", "Detail", show=False, id="batches.detail"),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.show_all = False

    def fetch(self, ops: Any) -> Any:
        return ops.batches(offset=self.page_offset, limit=self.PAGE_SIZE, active_only=not self.show_all,
                           sort=self.sort)

    def show(self, page: Any) -> None:
        f = self.filter_text.lower()
        items = [b for b in page.items if not f or f in b.name.lower() or f in b.kind.lower()]
        self.total = page.total
        rows = []
        for b in items:
            if b.cancelled_at:
                eta = Text("cancelled", style="yellow")
            elif b.finished_at:
                eta = Text("finished", style="green")
            else:
                eta = Text(span(b.eta_s) if b.eta_s is not None else "—")
            rows.append((b.id, [b.name, b.kind, f"{bar(b.progress, 12)} {b.progress * 100:3.0f}%",
                                f"{b.done:,}/{b.total:,}", Text(f"{b.failed:,}", style="red" if b.failed else ""),
                                eta]))
        self.table.sync(rows, {b.id: b for b in items})
        which = "batches" if self.show_all else "batches in progress"
        self.head(f"{self.page_text(len(items))} {which}" if page.total else f"no {which}")
        self.refresh_info()

    def describe(self, b: Any) -> str:
        return (f"{b.name} ({b.kind}) {b.id} · started {clock(b.created_at, self.console.tz, self.console.now())}"
                f" · {b.pending:,} pending · {b.failed:,} failed"
                + (f" · tenant {self.console.tenant(b.tenant_id)}" if b.tenant_id is not None else ""))

    def detail(self, ops: Any, b: Any) -> tuple[str, str]:
        info = ops.batch(b.id).to_dict()
        if info.get("tenant_id") is not None:
            info["tenant"] = self.console.tenant_long(info["tenant_id"])
        return f"batch {b.name}", json.dumps(info, indent=2, default=str)

    def action_toggle_all(self) -> None:
        self.show_all = not self.show_all
        self.page_offset = 0
        self.console.poll_now()

    def detail_actions(self, b: Any) -> dict[str, Any]:
        acts: dict[str, Any] = {}
        if b.failed_job_ids:
            acts["failed"] = lambda: self.console.drill_to_failed(f"batch {b.name}", task_ids=list(b.failed_job_ids))
        if not b.finished_at and not b.cancelled_at:
            acts["cancel"] = lambda: self.cancel([b])
        return acts

    def action_cancel(self) -> None:
        marked = self.marked()
        if marked:
            self.cancel(marked, marked=True)
        elif (b := self.selected()) is not None:
            self.cancel([b])

    def cancel(self, batches: list[Any], marked: bool = False) -> None:
        if len(batches) > 1 or marked:
            table = self.table

            def call(ops: Any, progress: Any) -> int:
                for i, b in enumerate(batches, 1):
                    ops.cancel_batch(b.id)
                    if progress(i, len(batches)) is False:
                        return i
                return len(batches)

            def done(n: int) -> str:
                table.clear_marks()
                return f"{n:,} batches cancelled"

            self.console.perform(f"cancel {len(batches)} batches", call, bulk="cancelling", done=done,
                                 confirm=f"Cancel {len(batches)} marked batches "
                                         f"({sum(b.pending for b in batches):,} jobs not yet run are skipped)?")
            return
        b = batches[0]
        self.console.perform(f"cancel batch {b.name}", lambda ops: ops.cancel_batch(b.id),
                             confirm=f"Cancel batch {b.name} ({b.pending:,} jobs not yet run are skipped)?",
                             done=lambda _: f"batch {b.name} cancelled")
