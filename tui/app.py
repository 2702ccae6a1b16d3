"""erpq-console: the operations console (Textual).

By default it runs an embedded runner (scheduler + workers) in this process, so
on the SQLite default one command runs the whole system; ``--attach`` only
watches a runner started elsewhere. ``--read-only`` refuses every action.

Every read runs in a thread worker and reaches the screen through
``call_from_thread``: the event loop never waits on the database or the queue.
Only the visible view is polled (every ``console.poll_s``), and tables are
updated by row key, so an idle console writes next to nothing to the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import faulthandler
import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, TabbedContent, TabPane

from erpq.alerts import Alert
from erpq.alerts import collect as collect_alerts

from .commands import Command, CommandError
from .commands import parse as parse_command
from .fmt import bar
from .views import GROUPED, GROUPS, TABS, VIEWS, View, business
from .widgets.alerts import AlertLine
from .widgets.command_line import CommandLine
from .widgets.dialogs import ConfirmScreen, DetailScreen, TextScreen, TypedConfirmScreen
from .widgets.line import Line
from .widgets.palette import ConsoleCommands

Clock = Callable[[], dt.datetime]
GROUPED_KEYS = {v.KEY for v in GROUPED}

APP_BINDINGS = [
    Binding("question_mark", "help", "Help", id="app.help"),
    Binding("q", "quit", "Quit", id="app.quit"),
    Binding("ctrl+c", "quit", "Quit", show=False, priority=True, id="app.interrupt"),
    Binding("u", "undo", "Undo", show=False, id="app.undo"),
    Binding("exclamation_mark", "alerts", "Alerts", show=False, id="app.alerts"),
    Binding("colon", "command_line", "Command", show=False, id="app.command"),
    Binding("ctrl+r", "refresh", "Refresh", show=False, id="app.refresh"),
    Binding("ctrl+x", "cancel_bulk", "Stop bulk action", id="app.cancel_bulk"),
    *[Binding(str(i + 1), f"show_view('{key}')", title, show=False, id=f"app.view.{key}")
      for i, (key, title) in enumerate([(v.KEY, v.TITLE) for v in TABS]
                                       + ([(business.KEY, business.TITLE)] if GROUPED else []))
      if i < 9],
]


def binding_ids() -> set[str]:
    """Every action name a ``[console.keys]`` entry may rebind."""
    from .widgets.keyed_table import KeyedTable

    ids = {b.id for b in APP_BINDINGS if b.id}
    for view in [View, KeyedTable, DetailScreen, *VIEWS]:
        ids |= {b.id for b in view.BINDINGS if isinstance(b, Binding) and b.id}
    return ids


def resolve_keys(keys: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """``[console.keys]`` as a keymap by action name, and the entries that name no
    action. An entry names an action in full (``"failed.retry"``) or by its short
    name (``retry``: the part after the last dot), which rebinds every action of
    that name (``retry`` in the Failed view and in detail screens alike)."""
    ids = binding_ids()
    keymap: dict[str, str] = {}
    bad: list[str] = []
    for name, key in keys.items():
        if name in ids:
            keymap[name] = key
            continue
        matches = sorted(i for i in ids if i.rsplit(".", 1)[-1] == name)
        if matches:
            keymap.update(dict.fromkeys(matches, key))
        else:
            bad.append(name)
    return keymap, bad


@dataclass
class BulkState:
    """A bulk action in progress: what it is, how far it got, whether to stop."""

    title: str
    done: int = 0
    total: int = 0
    stop: threading.Event = field(default_factory=threading.Event)


@dataclass
class UndoEntry:
    label: str
    restore: dict  # keyword arguments of ops.restore
    at: float  # time.monotonic() when done


class ErpqConsole(App):
    """The console. ``ops`` is an ``erpq.ops.Ops`` (or a stand-in with the same
    read methods, in tests); ``clock`` fixes "now" for snapshots."""

    CSS_PATH = "app.tcss"
    TITLE = "erpq"
    BINDINGS: ClassVar = APP_BINDINGS
    # erpq's commands only: no second Quit, no theme or screenshot commands.
    COMMANDS: ClassVar = {ConsoleCommands}
    ENABLE_COMMAND_PALETTE = True
    # The console focuses the visible view itself; Textual's auto-focus would pick
    # the first table and switch the tabs back to it (a TabPane takes the focus).
    AUTO_FOCUS = None

    def __init__(self, ops: Any, settings: Any, *, mode: str = "attached", clock: Clock | None = None,
                 poll: bool = True, install_signals: bool = False, tune_gc: bool = False) -> None:
        super().__init__()
        self.ops = ops
        self.settings = settings
        self.mode = mode
        self.clock = clock
        self.polling_enabled = poll
        self.install_signals = install_signals
        self.tune_gc = tune_gc
        self.tz = settings.schedule.timezone
        self.undo_minutes = settings.retention.undo_minutes
        self.counts: dict[str, int] = {}
        #: Tenant id -> name (``ops.tenant_names``, re-read with every poll; Ops caches it).
        self.tenant_names: dict[int, str] = {}
        self.messages: list[str] = []
        self.undo_stack: list[UndoEntry] = []
        self.polls = 0
        self.first_screen_at: float | None = None
        self.exit_requested = False
        #: Called (from the event loop) when the terminal hangs up; main() sets it.
        self.on_hangup: Callable[[], None] | None = None
        self.startup_messages: list[str] = []
        # Views with a read in flight; one slow read (say, failure clusters over
        # 100,000 rows) must not stop the other views from updating.
        self._in_flight: set[str] = set()
        self._poll_again: set[str] = set()
        self._panel_focus_next = False
        self._alerts_at = -1e9
        self._alerts_busy = False
        self.alerts: list[Alert] = []
        #: The bulk action running in a worker (one at a time): its title and stop flag.
        self.bulk: BulkState | None = None
        # No animations: over SSH every animation frame is bytes on the wire.
        self.animation_level = "none"

    # ------------------------------------------------------------ layout
    def compose(self) -> ComposeResult:
        yield Line(id="status")
        yield AlertLine(id="alerts")
        with TabbedContent(id="tabs"):
            for i, view in enumerate(TABS):
                with TabPane(f"{i + 1} {view.TITLE}" if i < 9 else view.TITLE, id=view.KEY):
                    yield view(id=f"view-{view.KEY}")
            if GROUPED:
                n = len(TABS) + 1
                with TabPane(f"{n} {business.TITLE}" if n <= 9 else business.TITLE, id=business.KEY):
                    yield business.PanelBrowser(GROUPS, id="browser")
        yield Line(id="progress", classes="hidden")
        yield Line(id="message")
        yield CommandLine(id="command")
        yield Footer(compact=True, show_command_palette=False)

    def _hangup(self) -> None:
        """The terminal is gone (a dropped SSH connection). Restoring it would
        write to a dead tty: Textual's output thread dies on the EIO and its
        shutdown then waits forever. So: point our output at /dev/null and let
        ``on_hangup`` stop the runner and end the process; else just exit."""
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (1, 2):
            try:
                os.dup2(devnull, fd)
            except OSError:
                pass
        if self.on_hangup is not None:
            self.on_hangup()
        else:
            self.exit()

    def on_mount(self) -> None:
        if self.settings.console.keys:
            self.set_keymap(resolve_keys(dict(self.settings.console.keys))[0])
        self._label_tabs()
        # Tab moves between the widgets of a view; the tab bar never takes focus
        # (number keys, :name and the palette switch views).
        from textual.widgets import Tabs

        self.query_one(Tabs).can_focus = False
        if self.ops.read_only:
            self.query_one("#status", Line).add_class("readonly")
        self._draw_status()
        if self.install_signals:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, self.exit)
            loop.add_signal_handler(signal.SIGHUP, self._hangup)
            if self.exit_requested:
                self.exit()
        for text in self.startup_messages:
            self.message(text, error=True)
        if self.polling_enabled:
            self.set_interval(self.settings.console.poll_s, self.poll_now)
            self.set_interval(1.0, self._tick)
        self.call_after_refresh(self._focus_initial)
        self.poll_now()

    def _focus_initial(self) -> None:
        if self.focused is None:
            self.active_view.focus_main()
            if self.focused is None:  # not displayed yet: try again after the next refresh
                self.call_after_refresh(self._focus_initial)

    def now(self) -> dt.datetime:
        return self.clock() if self.clock else dt.datetime.now(dt.UTC)

    @property
    def active_view(self) -> View:
        key = self.query_one(TabbedContent).active or VIEWS[0].KEY
        if key == business.KEY:
            key = self.query_one(business.PanelBrowser).current or GROUPED[0].KEY
        return self.query_one(f"#view-{key}", View)

    def view(self, key: str) -> View:
        return self.query_one(f"#view-{key}", View)

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        # The pane is shown on the next refresh; a hidden widget cannot take focus.
        if event.pane.id == business.KEY and not self._panel_focus_next:
            self.call_after_refresh(lambda: self.query_one(business.PanelList).focus())
        else:
            self.call_after_refresh(lambda: self.active_view.focus_main())
        self._panel_focus_next = False
        self.poll_now()

    # ------------------------------------------------------------ polling
    def poll_now(self) -> None:
        """Read the visible view (and the counts) in a thread; one read per view at a time."""
        view = self.active_view
        if view.KEY in self._in_flight:
            self._poll_again.add(view.KEY)
            return
        self._in_flight.add(view.KEY)
        self._poll_again.discard(view.KEY)
        self._poll_worker(view)
        self.poll_alerts()

    @work(thread=True, group="poll", exit_on_error=False)
    def _poll_worker(self, view: View) -> None:
        try:
            counts = self.ops.queue_counts()
            self.tenant_names = self.ops.tenant_names()  # one dict swapped whole: safe to read anywhere
            data, error = view.fetch(self.ops), None
        except Exception as exc:  # a database or queue outage: show it, keep polling
            counts, data, error = None, None, exc
        try:
            self.call_from_thread(self._apply, view, counts, data, error)
        except RuntimeError:  # the app is shutting down
            pass

    def poll_alerts(self) -> None:
        """Read the alerts in a thread (one read at a time, at most every second)."""
        if self._alerts_busy or time.monotonic() - self._alerts_at < 1.0:
            return
        self._alerts_busy = True
        self._alerts_at = time.monotonic()
        self._alerts_worker()

    @work(thread=True, group="alerts", exit_on_error=False)
    def _alerts_worker(self) -> None:
        try:
            alerts = collect_alerts(self.ops, self.now(), self.counts or None)
        except Exception as exc:  # the store itself is unreachable
            alerts = [Alert("critical", "store", f"store unreachable: {_one_line(exc)}")]
        try:
            self.call_from_thread(self.show_alerts, alerts)
        except RuntimeError:
            pass

    def _apply(self, view: View, counts: dict | None, data: Any, error: Exception | None) -> None:
        self._in_flight.discard(view.KEY)
        self.polls += 1
        if error is not None:
            self.message(f"reading failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
                         error=True, toast=False)
        else:
            if counts is not None:
                self.counts = counts
                self._draw_status()
            view.show(data)
            if self.first_screen_at is None:
                self.first_screen_at = time.perf_counter()
                if self.tune_gc:
                    self.call_after_refresh(_freeze_heap)
        if view.KEY in self._poll_again and view is self.active_view:
            self.poll_now()

    def tenant(self, tenant_id: int | None) -> str:
        """A tenant's name (its id, ``#7``, when no tenant has that id; "" for none)."""
        if tenant_id is None:
            return ""
        return self.tenant_names.get(tenant_id) or f"#{tenant_id}"

    def tenant_long(self, tenant_id: int | None) -> str:
        """Name and id, for detail screens: ``Acme Corp (#1)``, ``#7 (unknown tenant)``."""
        if tenant_id is None:
            return "—"
        name = self.tenant_names.get(tenant_id)
        return f"{name} (#{tenant_id})" if name else f"#{tenant_id} (unknown tenant)"

    def _label_tabs(self) -> None:
        """Tab labels show the key that switches to them, rebound or not."""
        from textual.widgets import Tab

        titles = {b.id: b.description for b in APP_BINDINGS if b.id and b.id.startswith("app.view.")}
        for tab in self.query(Tab):
            key = (tab.id or "").removeprefix("--content-tab-")
            bid = f"app.view.{key}"
            if bid in titles:
                binding = next(b for b in APP_BINDINGS if b.id == bid)
                tab.label = f"{self.key_label(binding)} {titles[bid]}"

    def refocus(self) -> None:
        self.active_view.focus_main()

    def action_command_line(self) -> None:
        """Open the ':' command line (k9s style)."""
        self.query_one(CommandLine).open()

    def on_input_submitted(self, event) -> None:
        if event.input.id != "command":
            return
        event.stop()
        line = self.query_one(CommandLine)
        line.action_close()
        self.run_command_line(event.value)

    def run_command_line(self, text: str) -> Command | None:
        views = [(v.KEY, v.TITLE) for v in VIEWS]
        tabs = [v.KEY for v in TABS] + ([business.KEY] if GROUPED else [])
        try:
            cmd = parse_command(text, views, tabs)
        except CommandError as exc:
            self.message(str(exc), error=True, toast=False)
            return None
        if cmd.verb == "view":
            self.action_show_view(cmd.target)
        elif cmd.verb == "quit":
            self.exit()
        elif cmd.verb in ("alerts", "help", "undo", "refresh"):
            getattr(self, f"action_{cmd.verb}")()
        elif cmd.verb == "filter":
            self.active_view.set_filter(cmd.target)
        elif cmd.verb in ("run", "pause", "resume"):
            self._schedule_command(cmd.verb, cmd.target)
        elif cmd.verb == "retry":
            self._retry_command(cmd)
        return cmd

    def _schedule_command(self, verb: str, name: str) -> None:
        call = {"run": lambda ops: ops.trigger(name), "pause": lambda ops: ops.pause(name),
                "resume": lambda ops: ops.resume(name)}[verb]
        done = {"run": lambda tid: f"{name} enqueued as {tid[:8]}", "pause": lambda _: f"{name} paused",
                "resume": lambda _: f"{name} resumed"}[verb]
        self.perform(f"{verb} {name}", call, done=done)

    def _retry_command(self, cmd: Command) -> None:
        if cmd.ids:
            ids = cmd.ids
            self.perform(f"retry {' '.join(map(str, ids))}", lambda ops, progress: ops.retry(ids, progress=progress),
                         confirm=f"Retry failed job{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))}?",
                         done=lambda tids: f"{len(tids):,} failed job{'s' if len(tids) != 1 else ''} re-enqueued",
                         bulk="retrying")
            return
        task = cmd.task
        what = f"of task {task}" if task else "(all of them)"
        self.perform_counted(
            "retry failed", count=lambda ops: ops.count_failed(task=task),
            question=lambda n: f"Retry {n:,} failed job{'s' if n != 1 else ''} {what}?",
            call=lambda ops, progress: ops.retry_all(task=task, progress=progress),
            done=lambda n: f"{n:,} failed job{'s' if n != 1 else ''} re-enqueued", bulk="retrying")

    def show_alerts(self, alerts: list[Alert]) -> None:
        self._alerts_busy = False
        self.alerts = alerts
        self.query_one(AlertLine).set_alerts(alerts)

    def action_alerts(self) -> None:
        """Every alert in full, with the command that shows more."""
        if not self.alerts:
            self.message("no alerts: runners alive, scheduler firing, nothing critical", toast=False)
            return
        body = "\n".join(f"{a.severity.upper():<9} {a.text}" + (f"\n          $ {a.command}" if a.command else "")
                         for a in self.alerts)
        self.push_screen(TextScreen(f"{len(self.alerts)} alert{'s' if len(self.alerts) != 1 else ''}", body))

    def _tick(self) -> None:
        self.active_view.tick()

    def _draw_status(self) -> None:
        c = self.counts
        text = " erpq" + (" READ-ONLY" if self.ops.read_only else "")
        text += (f" │ {self.mode} │ pending {c.get('pending', 0):,} · sched {c.get('scheduled', 0):,}"
                f" · running {c.get('running', 0):,} · failed {c.get('failed', 0):,}")
        self.query_one("#status", Line).set(text)

    # ------------------------------------------------------------ messages
    def message(self, text: str, error: bool = False, toast: bool = True) -> None:
        """Show an outcome on the message line (and as a notification)."""
        self.messages.append(text)
        line = self.query_one("#message", Line)
        line.set(text)
        line.set_class(error, "error")
        if toast:
            self.notify(text, severity="error" if error else "information", timeout=6)

    # ------------------------------------------------------------ actions
    def perform(self, title: str, call: Callable[..., Any], *, confirm: str | None = None,
                typed: str | None = None, done: Callable[[Any], str] | None = None,
                undo: Callable[[Any], tuple[str, dict]] | None = None, bulk: str | None = None) -> None:
        """Run an action (after a confirmation, if given) in a thread worker.

        In read-only mode there is nothing to confirm: ``ops`` refuses the
        action with a message naming the equivalent command, which is shown.

        A ``bulk`` action (``bulk`` names it as it runs: "retrying") is called as
        ``call(ops, progress)``: Ops does it in chunks and calls ``progress(done,
        total)`` after each, which the progress line shows; the console stays
        usable meanwhile and the stop key ends it after the current chunk.
        """
        def go(ok: bool | None = True) -> None:
            if not ok:
                self.message(f"{title}: not confirmed, nothing done", toast=False)
            elif bulk is None:
                self._action_worker(title, call, done, undo)
            elif self.bulk is not None:
                self.message(f"{title}: wait, {self.bulk.title} is still running "
                             f"({self._stop_key()} stops it)", error=True, toast=False)
            else:
                self.bulk = BulkState(bulk)
                self._show_progress()
                self.refresh_bindings()
                self._action_worker(title, call, done, undo, self.bulk)

        if self.ops.read_only or not (confirm or typed):
            go()
        elif typed:
            self.push_screen(TypedConfirmScreen(confirm or title, typed), go)
        else:
            self.push_screen(ConfirmScreen(confirm or title), go)

    def perform_counted(self, title: str, *, count: Callable[[Any], int], question: Callable[[int], str],
                        call: Callable[..., Any], done: Callable[[Any], str], bulk: str | None = None) -> None:
        """Count what an action would touch (in a thread), then confirm with the count."""
        if self.ops.read_only:
            self.perform(title, call, done=done, bulk=bulk)
            return

        def counted(n: int) -> None:
            if n == 0:
                self.message(f"{title}: nothing matches", toast=False)
            else:
                self.perform(title, call, confirm=question(n), done=done, bulk=bulk)

        self._read_worker(count, counted)

    @work(thread=True, group="action", exit_on_error=False)
    def _read_worker(self, read: Callable[[Any], Any], then: Callable[[Any], None]) -> None:
        try:
            result = read(self.ops)
        except Exception as exc:
            self.call_from_thread(self.message, _one_line(exc), error=True)
            return
        self.call_from_thread(then, result)

    @work(thread=True, group="action", exit_on_error=False)
    def _action_worker(self, title: str, call: Callable[..., Any], done: Callable[[Any], str] | None,
                       undo: Callable[[Any], tuple[str, dict]] | None, bulk: BulkState | None = None) -> None:
        take = self.ops.take_command
        take()

        def progress(n: int, total: int) -> bool:
            assert bulk is not None
            bulk.done, bulk.total = n, total
            try:
                self.call_from_thread(self._show_progress)
            except RuntimeError:  # the app is shutting down
                bulk.stop.set()
            return not bulk.stop.is_set()

        try:
            result = call(self.ops) if bulk is None else call(self.ops, progress)
        except Exception as exc:
            take()
            if bulk is not None:
                self.call_from_thread(self._end_bulk)
            self.call_from_thread(self.message, _one_line(exc), error=True)
            self.call_from_thread(self.poll_now)
            return
        command = take()
        text = done(result) if done else f"{title}: done"
        if bulk is not None and bulk.stop.is_set() and bulk.done < bulk.total:
            text = f"stopped after {bulk.done:,} of {bulk.total:,}: " + text
        if command:
            text += f"   $ {command}"

        def finish() -> None:
            if bulk is not None:
                self._end_bulk()
            if undo is not None:
                label, restore = undo(result)
                self.undo_stack.append(UndoEntry(label, restore, time.monotonic()))
            self.message(text)
            self.poll_now()

        self.call_from_thread(finish)

    # ------------------------------------------------------------ bulk progress
    def _stop_key(self) -> str:
        return self.key_label(next(b for b in APP_BINDINGS if b.id == "app.cancel_bulk"))

    def _show_progress(self) -> None:
        bulk = self.bulk
        line = self.query_one("#progress", Line)
        if bulk is None:
            line.add_class("hidden")
            return
        if bulk.total:
            text = (f" {bulk.title} {bulk.done:,}/{bulk.total:,} {bar(bulk.done / bulk.total, 20)}"
                    f" {bulk.done * 100 // bulk.total:3d}%")
        else:
            text = f" {bulk.title}…"
        text += "   stopping after this chunk…" if bulk.stop.is_set() else f"   {self._stop_key()}: stop"
        line.set(text)
        line.remove_class("hidden")

    def _end_bulk(self) -> None:
        self.bulk = None
        self._show_progress()
        self.refresh_bindings()

    def action_cancel_bulk(self) -> None:
        """Stop the running bulk action after its current chunk (what is done stays done)."""
        if self.bulk is None:
            return
        self.bulk.stop.set()
        self._show_progress()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_bulk":
            return self.bulk is not None
        return True

    def action_undo(self) -> None:
        """Restore what the last forget or flush hid (within retention.undo_minutes)."""
        if not self.undo_stack:
            self.message("nothing to undo", toast=False)
            return
        entry = self.undo_stack[-1]
        if time.monotonic() - entry.at > self.undo_minutes * 60:
            self.undo_stack.clear()
            self.message(f"too late to undo {entry.label} (kept for {self.undo_minutes} minutes)", error=True)
            return
        self.undo_stack.pop()
        self.perform(f"undo {entry.label}", lambda ops, progress: ops.restore(**entry.restore, progress=progress),
                     done=lambda n: f"undid {entry.label}: {n:,} failed jobs restored", bulk="restoring")

    def show_detail(self, fetch: Callable[[Any], tuple[str, str] | None],
                    actions: dict[str, Callable[[], None]] | None = None) -> None:
        """Read a record's detail in a thread, then show it with the actions it offers."""
        self._read_worker(fetch, lambda res: res and self.push_screen(DetailScreen(*res, actions)))

    def drill_to_failed(self, what: str, task_ids: list[str]) -> None:
        """Open the Failed view on the failed jobs of ``task_ids`` (a run's, a batch's)."""
        def found(page: Any) -> None:
            ids = [f.id for f in page.items]
            if not ids:
                self.message(f"{what}: no failed job awaiting action (retried, forgotten or pruned)", toast=False)
                return
            self.view("failed").show_ids(what, ids)

        self._read_worker(lambda ops: ops.failed(task_ids=task_ids, limit=10_000), found)

    # ------------------------------------------------------------ keys
    def action_show_view(self, key: str) -> None:
        if key in GROUPED_KEYS:
            tabs = self.query_one(TabbedContent)
            if tabs.active == business.KEY:
                self.query_one(business.PanelBrowser).select(key, focus=True)
            else:
                self._panel_focus_next = True
                self.query_one(business.PanelBrowser).select(key, focus=False)
                tabs.active = business.KEY
        else:
            self.query_one(TabbedContent).active = key

    def action_refresh(self) -> None:
        self.poll_now()

    def action_help(self) -> None:
        self.push_screen(TextScreen("erpq-console — keys", self.help_text()))

    def key_label(self, binding: Binding) -> str:
        keys = self._keymap.get(binding.id, binding.key) if binding.id else binding.key
        return ", ".join(self.get_key_display(Binding(k.strip(), "")) for k in keys.split(","))

    def help_text(self) -> str:
        """Every key, with its action name (for [console.keys]) and the key in force."""
        from .widgets.keyed_table import KeyedTable

        def row(b: Binding) -> str:
            return f"  {self.key_label(b):<10} {b.description:<26} {b.id or ''}"

        lines = ["Everywhere                            action name", ""]
        lines += [row(b) for b in APP_BINDINGS]
        lines += ["  ctrl+p     Command palette            (views, panels, actions by name)",
                  "  Tab        Next table / widget        (the tab bar never takes focus)", ""]
        lines += ["In every list", ""]
        lines += [row(b) for b in [*KeyedTable.BINDINGS, *View.BINDINGS] if isinstance(b, Binding)]
        lines += ["  Enter      Detail (arguments, traceback, history; Esc goes back)",
                  "  (marking: Failed, Queue, Batches; sorting, by the database: Failed, Batches, Activity)", ""]
        lines += ["In a detail screen (the keys its record offers are on its last line)", ""]
        lines += [row(b) for b in DetailScreen.BINDINGS if isinstance(b, Binding)]
        lines += ["", "Bulk actions (retry, forget, undo or cancel of many rows) run in chunks with a progress",
                  f"line; the console stays usable and {self._stop_key()} stops one after its current chunk.", ""]
        for view in VIEWS:
            own = [b for b in view.BINDINGS if isinstance(b, Binding) and b not in View.BINDINGS]
            if not own:
                continue
            where = f"{view.TITLE} ({business.TITLE} tab)" if view.KEY in GROUPED_KEYS else view.TITLE
            lines.append(where)
            lines += [row(b) for b in own]
            lines.append("")
        lines += [
            "Command line (:)",
            "  :failed :workflows :8   jump to a view or panel (name, unique prefix or tab number)",
            "  :retry --task NAME      retry failed jobs of a task (:retry --all, :retry 12 13)",
            "  :run/:pause/:resume T   a periodic task;  :filter TEXT;  :alerts  :help  :undo  :q",
            "",
            "Notes",
            "  Destructive actions ask first; flush asks you to type 'flush'.",
            f"  Forget and flush can be undone with u for {self.undo_minutes} minutes.",
            "  Every action shows its equivalent 'erpq' command and is written to the",
            "  audit log with your OS user and SSH client address.",
            "  Rebind a key in config.toml under [console.keys] by its action name",
            "  (or its last part when only one action has it), e.g.",
            '    [console.keys]',
            '    "schedule.trigger" = "T"',
            '    retry = "y"',
            f"  Times are shown in {self.tz}.",
        ]
        return "\n".join(lines)

    def back_out(self, view: View) -> None:
        """Esc in a view with nothing left to close: from a panel back to the panel list."""
        if view.KEY in GROUPED_KEYS:
            self.query_one(business.PanelList).focus()

    def palette_commands(self) -> list[tuple[str, Callable[[], Any], str]]:
        cmds: list[tuple[str, Callable[[], Any], str]] = []
        for v in VIEWS:
            cmds.append((f"Show {v.TITLE}", lambda k=v.KEY: self.action_show_view(k), f"switch to the {v.TITLE} view"))
        sched = self.view("schedule")
        for e in getattr(sched, "entries", []):
            cmds.append((f"Run now: {e.name}", lambda n=e.name: self.perform(
                f"run {n} now", lambda ops: ops.trigger(n), done=lambda tid, n=n: f"{n} enqueued as {tid[:8]}"),
                "trigger this periodic task now"))
            verb = "Resume" if e.paused else "Pause"
            cmds.append((f"{verb}: {e.name}", lambda n=e.name, p=e.paused: self.perform(
                f"{'resume' if p else 'pause'} {n}", (lambda ops: ops.resume(n)) if p else (lambda ops: ops.pause(n)),
                done=lambda _: f"{n} {'resumed' if p else 'paused'}"), f"{verb.lower()} this periodic task"))
        failed = self.view("failed")
        cmds += [
            ("Retry all failed jobs (matching the filter)", failed.action_retry_all, "asks first, with the count"),
            ("Flush failed jobs", failed.action_flush, "asks you to type 'flush'; undo with u"),
            ("Undo last forget/flush", self.action_undo, "restore what was hidden"),
            ("Toggle failure clusters", lambda: (self.action_show_view("failed"), failed.action_clusters()),
             "group failed jobs by task, exception and message"),
            ("Show alerts", self.action_alerts, "every alert in full, with the command that shows more"),
            ("Help: keys", self.action_help, "the help screen"),
            ("Quit", self.exit, "quit (stops the embedded runner cleanly)"),
        ]
        return cmds


def _freeze_heap() -> None:
    """Move everything alive after start-up out of the garbage collector's sight.

    A full collection walks every tracked object; with the ~200,000 objects of
    a started console it paused the event loop for 100-140 ms on a small
    machine. Frozen objects are skipped, so the later collections only walk
    what the polls allocate.
    """
    gc.freeze()


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    from erpq.ops import OpsError

    if isinstance(exc, OpsError):
        return text
    return f"{type(exc).__name__}: {text}"


# ====================================================================== entry point


def quiet_logging() -> None:
    """Keep every log line off the terminal the console draws on.

    erpq's and Huey's lines go to the configured log file (the runtime adds
    those handlers); what would otherwise reach ``logging.lastResort`` (stderr)
    is dropped, and Python warnings are routed through logging.
    """
    for name in ("", "huey"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())
    logging.getLogger("huey").propagate = False
    for handler in list(logging.getLogger().handlers):
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            logging.getLogger().removeHandler(handler)
    logging.captureWarnings(True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="erpq-console", description=__doc__.splitlines()[0])
    p.add_argument("--config", help="config file (default: $ERPQ_CONFIG or ./config.toml)")
    p.add_argument("--attach", action="store_true",
                   help="only watch a runner started elsewhere (no embedded scheduler/workers)")
    p.add_argument("--read-only", action="store_true", help="refuse every action")
    return p


def for_console(settings):
    """The settings as the console runs them: it owns the terminal, so its log
    (and its embedded runner's) goes to the log file even under a supervisor or
    with ``log.output = "stderr"``."""
    settings.log.output = "file"
    return settings


def _err(text: str) -> None:
    try:
        print(f"erpq-console: {text}", file=sys.stderr, flush=True)
    except OSError:  # the terminal is gone (SSH dropped)
        pass


def main(argv: list[str] | None = None) -> int:
    from erpq.config import ConfigError, load
    from erpq.ops import Actor, Ops
    from erpq.runtime import EmbeddedRunner, Runtime, set_current

    args = parse_args(argv)
    try:
        settings = load(args.config)
    except ConfigError as exc:
        _err(str(exc))
        return 2
    unknown = sorted(resolve_keys(dict(settings.console.keys))[1])
    if unknown:
        _err(f"{settings.source}: console.keys: unknown action(s) {', '.join(unknown)} "
             f"(known: {', '.join(sorted(binding_ids()))})")
        return 2
    settings = for_console(settings)
    try:
        rt = Runtime(settings)
    except Exception as exc:
        _err(_one_line(exc))
        return 2
    set_current(rt)
    quiet_logging()
    stacks = _dump_stacks_on_sigusr1(settings.path(settings.log.path))
    ops = Ops(rt, Actor.detect("console"), read_only=args.read_only)
    # A watching-only console must not run jobs: --read-only never starts a runner.
    runner = None if args.attach or args.read_only else EmbeddedRunner(rt)
    mode = "embedded runner" if runner is not None else "attached"
    app = ErpqConsole(ops, settings, mode=mode, install_signals=True, tune_gc=True)
    finished = threading.Event()
    stopping = threading.Lock()

    def stop_everything() -> None:
        with stopping:  # once, whether the hang-up thread or the main thread gets here first
            if not finished.is_set():
                _stop_everything()
                finished.set()

    def _stop_everything() -> None:
        if starter is not None:
            starter.join()
        if runner is not None and runner.running:
            _err("stopping the embedded runner (waiting for running jobs)…")
            runner.stop()
        set_current(None)
        rt.close()
        if stacks is not None:
            faulthandler.unregister(signal.SIGUSR1)
            stacks.close()

    def hung_up() -> None:  # the terminal is gone: stop cleanly, then end without touching it
        def finish() -> None:
            stop_everything()
            os._exit(0)

        threading.Thread(target=finish, name="erpq-hangup", daemon=True).start()

    app.on_hangup = hung_up

    def early_signal(signum, frame) -> None:  # before the event loop takes over
        app.exit_requested = True

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, early_signal)

    starter: threading.Thread | None = None
    if runner is not None:
        def start() -> None:
            try:
                runner.start()
            except Exception as exc:
                text = f"embedded runner failed to start: {_one_line(exc)}"
                app.startup_messages.append(text)
                try:
                    app.call_from_thread(app.message, text, True)
                except RuntimeError:  # not running yet: on_mount shows it
                    pass

        starter = threading.Thread(target=start, name="erpq-runner-start", daemon=True)
        starter.start()
    try:
        app.run()
    finally:
        # Ignore further hangups while we stop cleanly (the terminal may be gone).
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)
        stop_everything()
    return app.return_code or 0


def _dump_stacks_on_sigusr1(log_path):
    """``kill -USR1 PID`` writes every thread's stack to the log file: how an
    operator (or a test) sees where a console that will not quit is waiting."""
    try:
        fh = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 (kept open for the handler)
    except OSError:
        return None
    faulthandler.register(signal.SIGUSR1, file=fh, all_threads=True)
    return fh


if __name__ == "__main__":
    sys.exit(main())
