"""The ``:`` command line: an input docked above the footer, hidden until ``:``."""

from __future__ import annotations

from textual.binding import Binding
from textual.widgets import Input


class CommandLine(Input):
    DEFAULT_CSS = """
    CommandLine { dock: bottom; height: 1; border: none; padding: 0 1; display: none; margin-bottom: 1; }
    CommandLine.shown { display: block; }
    """
    BINDINGS = [Binding("escape", "close", "Close", show=False, id="command.close")]

    def __init__(self, **kwargs) -> None:
        super().__init__(placeholder=":failed  :retry --task NAME  :workflows  :alerts  (Esc closes)", **kwargs)
        self.can_focus = False  # only while open: never auto-focused, never on Tab's path

    def open(self) -> None:
        self.value = ""
        self.can_focus = True
        self.add_class("shown")
        self.focus()

    def action_close(self) -> None:
        self.can_focus = False
        self.remove_class("shown")
        self.app.call_after_refresh(self.app.refocus)  # type: ignore[attr-defined]
