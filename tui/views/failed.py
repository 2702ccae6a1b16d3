"""Failed: failed jobs (paged, filterable) and their failure clusters.

r retries the selected job (or cluster, or the marked rows), R retries
everything matching the filter after a confirmation with the count, d forgets
(confirmed), X flushes (typed confirmation); forget and flush can be undone
with u for ``retention.undo_minutes``. Retrying or forgetting many jobs runs
in chunks with a progress line (see ``ErpqConsole.perform``).

The list can be narrowed to given failed-job ids (``show_ids``): a failure
cluster's jobs, a batch's failures, a run's failed job. Esc drops that.
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
    MARKABLE = True
    SORTS = [("id", "id"), ("task", "task"), ("failed", "when")]
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
        #: ``(what, failed-job ids)`` the list is narrowed to (a drill-down), or None.
        self.only: tuple[str, list[int]] | None = None

    def compose_body(self):
        from ..widgets.keyed_table import KeyedTable

        yield KeyedTable(self.COLUMNS, markable=True, id="table")
        yield KeyedTable(self.CLUSTER_COLUMNS, markable=True, id="clusters", classes="hidden")

    def sortable(self) -> bool:
        return not self.clustered

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
        ids = self.only[1] if self.only else None
        page = ops.failed(offset=self.page_offset, limit=self.PAGE_SIZE, search=search, ids=ids, sort=self.sort)
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
            word = "matching" if self.filter_text or self.only else "failed jobs"
            of = f" of {self.only[0]} (Esc: all)" if self.only else ""
            self.head(f"{self.page_text(len(items))} {word}{of}")
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

    def detail_actions(self, r: Any) -> dict[str, Any]:
        acts = {"retry": lambda: self.retry([r], self.clustered), "forget": lambda: self.forget([r], self.clustered)}
        if self.clustered:
            acts["failed"] = lambda: self.show_ids(f"cluster {r.task_name} {r.exception_type}", list(r.ids))
        return acts

    def show_ids(self, what: str, ids: list[int]) -> None:
        """Show only the failed jobs ``ids`` (a drill-down from a cluster, a batch, a run)."""
        if self.clustered:
            self.action_clusters()
        self.only = (what, list(ids))
        self.page_offset = 0
        self.console.action_show_view(self.KEY)
        # Focused now, the Failed table is also what the list screen gives the focus back
        # to when a detail screen closes (focus elsewhere would switch the tab back).
        self.table.focus()
        self.head(f"loading the failed jobs of {what}…")
        self.console.poll_now()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter")
        if self.only and not self.table.marked and not box.has_class("shown") and not self.filter_text:
            self.only = None
            self.page_offset = 0
            self.console.poll_now()
            return
        super().action_clear_filter()

    def action_retry(self) -> None:
        marked = self.marked()
        if marked:
            self.retry(marked, self.clustered, marked=True)
        elif (r := self.selected()) is not None:
            self.retry([r], self.clustered)

    def retry(self, records: list[Any], clusters: bool, marked: bool = False) -> None:
        """Retry failed jobs (or every job of the clusters), in chunks with a progress line."""
        table = self.table
        if clusters:
            ids = [i for c in records for i in c.ids]
            what = (f"all {len(ids):,} failed jobs of this cluster?\n{records[0].task_name} "
                    f"{records[0].exception_type}: {records[0].message}") if len(records) == 1 else \
                f"all {len(ids):,} failed jobs of {len(records)} marked clusters?"
            confirm: str | None = f"Retry {what}"
        else:
            ids = [r.id for r in records]
            confirm = f"Retry {len(ids):,} marked failed jobs?" if marked else None
        label = f"cluster of {len(ids):,}" if clusters and len(records) == 1 else (
            f"{len(ids):,} failed jobs" if len(ids) > 1 else f"failed job #{ids[0]}")

        def done(new: list[str]) -> str:
            if marked:
                table.clear_marks()
            if len(ids) == 1 and not clusters:
                return f"#{ids[0]} re-enqueued as {new[0][:8]}"
            return f"{len(new):,} jobs re-enqueued"

        self.console.perform(f"retry {label}", lambda ops, progress: ops.retry(ids, progress=progress),
                             confirm=confirm, done=done, bulk="retrying")

    def action_retry_all(self) -> None:
        search = self.filter_text or None
        only = self.only
        ids = only[1] if only else None
        what = " ".join(filter(None, [f"of {only[0]}" if only else "", f"matching {search!r}" if search else ""])) \
            or "(no filter: all of them)"
        self.console.perform_counted(
            "retry all failed",
            count=lambda ops: ops.count_failed(search=search, ids=ids),
            question=lambda n: f"Retry {n:,} failed jobs {what}?",
            call=lambda ops, progress: ops.retry_all(search=search, ids=ids, progress=progress),
            done=lambda n: f"{n:,} failed jobs re-enqueued", bulk="retrying")

    def action_forget(self) -> None:
        marked = self.marked()
        if marked:
            self.forget(marked, self.clustered, marked=True)
        elif (r := self.selected()) is not None:
            self.forget([r], self.clustered)

    def forget(self, records: list[Any], clusters: bool, marked: bool = False) -> None:
        table = self.table
        ids = [i for c in records for i in c.ids] if clusters else [r.id for r in records]
        if len(records) == 1:
            label = f"cluster of {len(ids):,}" if clusters else f"failed job #{ids[0]}"
            which = f" ({records[0].task_name})"
        else:
            label = f"{len(ids):,} failed jobs" + (f" of {len(records)} clusters" if clusters else "")
            which = ""

        def done(n: int) -> str:
            if marked:
                table.clear_marks()
            return f"{n:,} forgotten — press u to undo"

        self.console.perform(
            f"forget {label}", lambda ops, progress: ops.forget(ids, progress=progress),
            confirm=f"Forget {label}?{which} It can be undone with u for a few minutes.",
            done=done, undo=lambda n: (f"forget {label}", {"ids": ids}), bulk="forgetting")

    def action_flush(self) -> None:
        n = self.console.counts.get("failed", 0)
        self.console.perform(
            "flush failed jobs", lambda ops: ops.flush_failed(),
            confirm=f"Flush ALL {n:,} failed jobs? They stay restorable with u for a few minutes.",
            typed="flush",
            done=lambda res: f"{res[0]:,} failed jobs flushed — press u to undo",
            undo=lambda res: ("flush", {"since": res[1]}))
