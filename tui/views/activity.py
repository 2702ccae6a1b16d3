"""Activity: the live stream of recent runs (newest first) and the log tail; ``s``
switches to Stats: throughput and latency per task over a window (``w``), from
``ops.throughput`` (aggregated by the database), with sparklines of the
selected task (or of all tasks)."""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Log
from textual.widgets.data_table import ColumnKey

from erpq.models import RUN_STATUSES
from erpq.ops.stats import ALL, WINDOWS

from ..fmt import SPARKS, clock, duration, one_line, stamp, status_text
from ..widgets.keyed_table import KeyedTable
from ..widgets.line import Line
from ..widgets.spark_row import SparkRow
from .base import View

#: ``f`` cycles through every run status the history holds (None: all of them).
STATUSES = (None, *RUN_STATUSES)
#: Stats windows, in the order ``w`` cycles through them, and how they read.
WINDOW_TEXT = {"hour": "last hour by minute", "day": "last day by hour"}
STATS_COLUMNS = [("task", "Task", 22), ("per_min", "Runs/m", 7), ("failed", "Fail/m", 6), ("wait", "Wait p95", 8),
                 ("run50", "Run p50", 8), ("run95", "Run p95", 8), ("trend", "Trend", 8)]


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
        Binding("s", "toggle_stats", "Stats", id="activity.stats"),
        Binding("w", "window", "Window", id="activity.window"),
        Binding("right_square_bracket", "page(1)", "Older", show=False, id="activity.next_page"),
        Binding("left_square_bracket", "page(-1)", "Newer", show=False, id="activity.prev_page"),
        Binding("enter", "detail", "Detail", show=False, id="activity.detail"),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.status: str | None = None
        self._log_lines: list[str] = []
        self.stats_mode = False
        self.window = next(iter(WINDOWS))

    def compose_body(self) -> ComposeResult:
        yield KeyedTable(self.COLUMNS, id="table")
        yield Log(id="log", max_lines=500)
        yield KeyedTable(STATS_COLUMNS, id="stats-table", classes="hidden")
        with Vertical(id="stats-strip", classes="hidden"):
            yield SparkRow("processed/min", id="spark-processed")
            yield SparkRow("failed/min", id="spark-failed")
            yield SparkRow("wait p95", id="spark-wait")
            yield SparkRow("run p95", id="spark-run")

    @property
    def table(self) -> KeyedTable:
        return self.query_one("#stats-table" if self.stats_mode else "#table", KeyedTable)

    def fetch(self, ops: Any) -> Any:
        if self.stats_mode:
            return "stats", self.window, ops.throughput(*WINDOWS[self.window])
        page = ops.runs(offset=self.page_offset, limit=self.PAGE_SIZE, status=self.status,
                        search=self.filter_text or None, sort=self.sort)
        tail = ops.log_tail(60) if self.query_one("#log").display else None
        return page, tail

    def show(self, data: Any) -> None:
        if data[0] == "stats":
            if self.stats_mode and data[1] == self.window:
                self._show_stats(data[2])
            return
        if self.stats_mode:  # a runs read that finished after switching
            return
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

    # ------------------------------------------------------------ stats
    def _show_stats(self, items: list[Any]) -> None:
        f = self.filter_text.lower()
        shown = [t for t in items if t.task_name == ALL or not f or f in t.task_name.lower()]
        column = self.table.columns.get(ColumnKey("trend"))
        width = max(column.width if column is not None else 0, 1)  # the newest buckets that fit
        rows = [(t.task_name, [("all tasks" if t.task_name == ALL else t.task_name), _rate(t.per_min),
                               _rate(t.failed_per_min), duration(t.wait_p95_s), duration(t.run_p50_s),
                               duration(t.run_p95_s), _trend(t.processed_series[-width:])]) for t in shown]
        self.table.sync(rows, {t.task_name: t for t in shown})
        total = next((t for t in items if t.task_name == ALL), None)
        text = f"stats, {WINDOW_TEXT.get(self.window, self.window)} (w: window, s: runs)"
        if total is None:
            text += " · no finished runs"
        else:
            text += f" · {total.processed:,} runs, {total.failed:,} failed · {len(items) - 1} tasks"
        self.head(text)
        self.refresh_info()
        # The trend column takes the width left once the table is laid out: draw again then.
        self.call_after_refresh(self._refit_trend, items, width)

    def _refit_trend(self, items: list[Any], width: int) -> None:
        column = self.table.columns.get(ColumnKey("trend"))
        if self.stats_mode and column is not None and column.width != width:
            self._show_stats(items)

    def _show_strip(self, t: Any) -> None:
        self.query_one("#spark-processed", SparkRow).show(
            t.processed_series, f"{_rate(t.per_min)}/min ({t.processed:,})")
        self.query_one("#spark-failed", SparkRow).show(
            t.failed_series, f"{_rate(t.failed_per_min)}/min ({t.failed:,})")
        self.query_one("#spark-wait", SparkRow).show(
            t.wait_p95_series, f"p50 {duration(t.wait_p50_s)} p95 {duration(t.wait_p95_s)}")
        self.query_one("#spark-run", SparkRow).show(
            t.run_p95_series, f"p50 {duration(t.run_p50_s)} p95 {duration(t.run_p95_s)}")

    def refresh_info(self) -> None:
        super().refresh_info()
        if self.stats_mode:
            record = self.table.selected_record if self.table.row_count else None
            if record is not None:
                self._show_strip(record)
            else:
                for row in self.query(SparkRow):
                    row.show([], "")

    def action_toggle_stats(self) -> None:
        self.stats_mode = not self.stats_mode
        for wid in ("#table", "#log"):
            self.query_one(wid).set_class(self.stats_mode, "hidden")
        for wid in ("#stats-table", "#stats-strip"):
            self.query_one(wid).set_class(not self.stats_mode, "hidden")
        if not self.stats_mode:
            self._log_lines = []
        self.page_offset = 0
        self.head("stats: reading…" if self.stats_mode else "runs: reading…")
        self.query_one("#info", Line).set("")
        self.focus_main()
        self.console.poll_now()

    def action_window(self) -> None:
        names = list(WINDOWS)
        self.window = names[(names.index(self.window) + 1) % len(names)]
        self.head(f"stats, {WINDOW_TEXT.get(self.window, self.window)}: reading…")
        self.console.poll_now()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "window":
            return self.stats_mode
        if action in ("status_filter", "toggle_log", "page", "sort", "sort_reverse"):
            return not self.stats_mode and super().check_action(action, parameters)
        return super().check_action(action, parameters)

    def describe(self, r: Any) -> str:
        if self.stats_mode:
            name = "all tasks" if r.task_name == ALL else r.task_name
            return (f"{name}: {r.processed:,} runs, {r.failed:,} failed · wait p50 {duration(r.wait_p50_s)} "
                    f"p95 {duration(r.wait_p95_s)} · run p50 {duration(r.run_p50_s)} p95 {duration(r.run_p95_s)}")
        text = f"{r.task_name} {r.task_id[:8]}" + (f" · {one_line(r.error, 300)}" if r.error else "")
        when = stamp(r.started_at or r.enqueued_at, self.console.tz, self.console.now())
        tenant = f" · tenant {self.console.tenant(r.tenant_id)}" if r.tenant_id is not None else ""
        return text + f" · {when} · {r.kind} · attempt {r.attempt} · {r.runner or '—'}{tenant}"

    def detail_actions(self, r: Any) -> dict[str, Any]:
        if self.stats_mode or r.status != "failed":  # a task's stats row offers no action
            return {}
        return {"failed": lambda: self.console.drill_to_failed(f"run #{r.id} {r.task_name}", task_ids=[r.task_id])}

    def detail(self, ops: Any, r: Any) -> tuple[str, str]:
        if self.stats_mode:
            return f"stats of {'all tasks' if r.task_name == ALL else r.task_name}", _stats_detail(r, self.console.tz)
        info = r.to_dict()
        if r.tenant_id is not None:
            info["tenant"] = self.console.tenant_long(r.tenant_id)
        return f"run #{r.id} {r.task_name}", json.dumps(info, indent=2, default=str)

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


def _rate(per_min: float) -> str:
    return f"{per_min:,.1f}" if per_min < 100 else f"{per_min:,.0f}"


def _trend(values: list[int]) -> str:
    """Counts per bucket as bars from zero (a blank for none)."""
    top = max(values, default=0) or 1
    return "".join(SPARKS[min(7, int(v / top * 7.999))] if v else " " for v in values)


def _stats_detail(t: Any, tz: str) -> str:
    """Every bucket of the window: start, processed, failed, wait and run p50/p95."""
    import datetime as dt

    lines = [f"{'bucket':<12} {'runs':>7} {'failed':>7} {'wait p50':>9} {'wait p95':>9} {'run p50':>9} {'run p95':>9}"]
    for i, n in enumerate(t.processed_series):
        at = clock(t.start + dt.timedelta(seconds=i * t.bucket_s), tz)
        lines.append(f"{at:<12} {n:>7,} {t.failed_series[i]:>7,} {duration(t.wait_p50_series[i]):>9} "
                     f"{duration(t.wait_p95_series[i]):>9} {duration(t.run_p50_series[i]):>9} "
                     f"{duration(t.run_p95_series[i]):>9}")
    return "\n".join(lines)
