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
    COLUMNS = [("name", "Batch", 20), ("kind", "Kind", 9), ("progress", "Progress", 17),
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
        return ops.batches(offset=self.page_offset, limit=self.PAGE_SIZE, active_only=not self.show_all)

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

    def action_cancel(self) -> None:
        b = self.selected()
        if b is None:
            return
        self.console.perform(f"cancel batch {b.name}", lambda ops: ops.cancel_batch(b.id),
                             confirm=f"Cancel batch {b.name} ({b.pending:,} jobs not yet run are skipped)?",
                             done=lambda _: f"batch {b.name} cancelled")
