"""Failed: failed jobs (paged, filterable) and their failure clusters.

r retries the selected job (or cluster), R retries everything matching the
filter after a confirmation with the count, d forgets (confirmed), X flushes
(typed confirmation); forget and flush can be undone with u for
``retention.undo_minutes``.
"""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual.binding import Binding

from ..fmt import clock, one_line, stamp
from .base import View


class FailedView(View):
    TITLE = "Failed"
    KEY = "failed"
    PAGED = True
    COLUMNS = [("id", "Id", 7), ("task", "Task", 22), ("when", "Failed", 8), ("attempts", "Try", 3),
               ("error", "Error", 60)]
    CLUSTER_COLUMNS = [("count", "Count", 7), ("task", "Task", 22), ("last", "Last", 8),
                       ("first", "First", 8), ("error", "Error", 60)]

    BINDINGS = [
        Binding("c", "clusters", "Clusters", id="failed.clusters"),
        Binding("r", "retry", "Retry", id="failed.retry"),
        Binding("R", "retry_all", "Retry all", id="failed.retry_all"),
        Binding("d", "forget", "Forget", id="failed.forget"),
        Binding("X", "flush", "Flush", id="failed.flush"),
        Binding("right_square_bracket", "page(1)", "Next page", show=False, id="failed.next_page"),
        Binding("left_square_bracket", "page(-1)", "Prev page", show=False, id="failed.prev_page"),
        Binding("enter", "detail", "Detail", show=False, id="failed.detail"),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.clustered = False
        self.items: list[Any] = []

    def compose_body(self):
        from ..widgets.keyed_table import KeyedTable

        yield KeyedTable(self.COLUMNS, id="table")
        yield KeyedTable(self.CLUSTER_COLUMNS, id="clusters", classes="hidden")

    @property
    def table(self):
        from ..widgets.keyed_table import KeyedTable

        return self.query_one("#clusters" if self.clustered else "#table", KeyedTable)

    def fetch(self, ops: Any) -> Any:
        search = self.filter_text or None
        if self.clustered:
            clusters = ops.failure_clusters(limit=200)
            if search:
                s = search.lower()
                clusters = [c for c in clusters
                            if s in c.task_name.lower() or s in c.message.lower() or s in c.exception_type.lower()]
            return True, clusters, len(clusters)
        page = ops.failed(offset=self.page_offset, limit=self.PAGE_SIZE, search=search)
        return False, page.items, page.total

    def show(self, data: Any) -> None:
        clustered, items, total = data
        if clustered != self.clustered:
            return
        self.items, self.total = items, total
        tz, now = self.console.tz, self.console.now()
        if clustered:
            rows = [(c.key, [f"{c.count:,}", c.task_name, clock(c.last_seen, tz, now), clock(c.first_seen, tz, now),
                             Text(f"{c.exception_type}: {c.message}", style="red")]) for c in items]
            self.table.sync(rows, {c.key: c for c in items})
            self.head(f"{len(items)} failure clusters of {self.console.counts.get('failed', 0):,} failed jobs")
        else:
            rows = [(str(f.id), [str(f.id), f.task_name, clock(f.failed_at, tz, now), str(f.attempts),
                                 Text(one_line(f"{f.exception_type}: {f.exception}", 500), style="red")])
                    for f in items]
            self.table.sync(rows, {str(f.id): f for f in items})
            word = "matching" if self.filter_text else "failed jobs"
            self.head(f"{self.page_text(len(items))} {word}")
        self.refresh_info()

    def describe(self, r: Any) -> str:
        tz, now = self.console.tz, self.console.now()
        if self.clustered:
            return (f"{r.count:,}× {r.task_name} {r.exception_type}: {r.message} · first {clock(r.first_seen, tz, now)}"
                    f" last {clock(r.last_seen, tz, now)}")
        # The error first: at 80 columns the table cuts it, the info line shows it.
        return (f"#{r.id} {one_line(f'{r.exception_type}: {r.exception}', 300)} · {r.task_name}({r.args_summary})"
                f" · {r.reason} after {r.attempts} attempt{'s' if r.attempts != 1 else ''}"
                f" at {stamp(r.failed_at, tz, now)}"
                + (f" · tenant {self.console.tenant(r.tenant_id)}" if r.tenant_id is not None else ""))

    def detail(self, ops: Any, r: Any) -> tuple[str, str]:
        tz = self.console.tz
        if self.clustered:
            lines = [f"Task:       {r.task_name}", f"Exception:  {r.exception_type}", f"Message:    {r.message}",
                     f"Count:      {r.count:,}", f"First seen: {clock(r.first_seen, tz)}",
                     f"Last seen:  {clock(r.last_seen, tz)}", "", "Failed job ids (first 200):",
                     " ".join(map(str, r.ids[:200]))]
            return f"cluster: {r.task_name} {r.exception_type}", "\n".join(lines)
        d = ops.failed_detail(r.id)
        lines = [f"Failed job: #{d.id}  (task id {d.task_id})", f"Task:       {d.task_name}",
                 f"Tenant:     {self.console.tenant_long(d.tenant_id)}",
                 f"Failed at:  {clock(d.failed_at, tz)}", f"Attempts:   {d.attempts}", f"Reason:     {d.reason}",
                 f"Error:      {d.exception_type}: {d.exception}", "", "Arguments:",
                 json.dumps(d.args, indent=2, default=str), "", "Traceback:", d.traceback or "(none recorded)"]
        return f"failed job #{d.id} {d.task_name}", "\n".join(lines)

    # ------------------------------------------------------------ actions
    def action_clusters(self) -> None:
        self.table.add_class("hidden")
        self.clustered = not self.clustered
        self.items = []
        self.page_offset = 0
        self.table.remove_class("hidden")
        self.table.focus()
        self.head("loading failure clusters…" if self.clustered else "loading…")
        self.console.poll_now()

    def focus_main(self) -> None:
        self.table.focus()

    def action_retry(self) -> None:
        r = self.selected()
        if r is None:
            return
        if self.clustered:
            ids = list(r.ids)
            self.console.perform(f"retry cluster of {len(ids):,}", lambda ops: ops.retry(ids),
                                 confirm=f"Retry all {len(ids):,} failed jobs of this cluster?\n"
                                         f"{r.task_name} {r.exception_type}: {r.message}",
                                 done=lambda new: f"{len(new):,} jobs re-enqueued")
        else:
            self.console.perform(f"retry failed job #{r.id}", lambda ops: ops.retry([r.id]),
                                 done=lambda new: f"#{r.id} re-enqueued as {new[0][:8]}")

    def action_retry_all(self) -> None:
        search = self.filter_text or None
        what = f"matching {search!r}" if search else "(no filter: all of them)"
        self.console.perform_counted(
            "retry all failed",
            count=lambda ops: ops.count_failed(search=search),
            question=lambda n: f"Retry {n:,} failed jobs {what}?",
            call=lambda ops: ops.retry_all(search=search),
            done=lambda n: f"{n:,} failed jobs re-enqueued")

    def action_forget(self) -> None:
        r = self.selected()
        if r is None:
            return
        ids = list(r.ids) if self.clustered else [r.id]
        label = f"cluster of {len(ids):,}" if self.clustered else f"failed job #{r.id}"
        self.console.perform(
            f"forget {label}", lambda ops: ops.forget(ids),
            confirm=f"Forget {label}? ({r.task_name}) It can be undone with u for a few minutes.",
            done=lambda n: f"{n:,} forgotten — press u to undo",
            undo=lambda n: (f"forget {label}", {"ids": ids}))

    def action_flush(self) -> None:
        n = self.console.counts.get("failed", 0)
        self.console.perform(
            "flush failed jobs", lambda ops: ops.flush_failed(),
            confirm=f"Flush ALL {n:,} failed jobs? They stay restorable with u for a few minutes.",
            typed="flush",
            done=lambda res: f"{res[0]:,} failed jobs flushed — press u to undo",
            undo=lambda res: ("flush", {"since": res[1]}))
