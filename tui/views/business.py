"""The panel browser: one tab holding every capability panel.

A side list (grouped by capability title, headings not selectable) and, beside
it, the selected panel. Moving in the list switches the panel at once; Enter or
Tab goes into the panel's table, Esc/shift+Tab comes back. The browser knows
no capability: it is given ``GROUPS`` (``views.GROUPS``).
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import ContentSwitcher, OptionList
from textual.widgets.option_list import Option

from .base import View

KEY = "business"
TITLE = "Business"


class PanelList(OptionList):
    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("g", "first", "First", show=False),
        Binding("G", "last", "Last", show=False),
    ]


class PanelBrowser(Horizontal):
    def __init__(self, groups: list[tuple[str, list[type[View]]]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.groups = groups
        self.keys = [v.KEY for _, views in groups for v in views]
        self._wanted: str | None = None  # a panel asked for before mounting

    def compose(self) -> ComposeResult:
        options: list[Option] = []
        for title, views in self.groups:
            options.append(Option(Text(title, style="bold"), id=f"group-{title}", disabled=True))
            options += [Option(f"  {v.TITLE}", id=v.KEY) for v in views]
        yield PanelList(*options, id="panel-list")
        with ContentSwitcher(id="panel-switcher", initial=self.keys[0] if self.keys else None):
            for _, views in self.groups:
                for view in views:
                    yield view(id=f"view-{view.KEY}")

    def on_mount(self) -> None:
        if self.keys:
            self.call_after_refresh(lambda: self.select(self._wanted or self.keys[0], focus=False))

    @property
    def current(self) -> str | None:
        return self.query_one(ContentSwitcher).current and \
            self.query_one(ContentSwitcher).current.removeprefix("view-")

    def select(self, key: str, focus: bool = True) -> None:
        """Show panel ``key`` (and highlight it in the list)."""
        self._wanted = key
        options = self.query_one(PanelList)
        index = options.get_option_index(key)
        if options.highlighted != index:
            options.highlighted = index
        switcher = self.query_one(ContentSwitcher)
        if switcher.current != f"view-{key}":
            switcher.current = f"view-{key}"
            self.app.poll_now()  # type: ignore[attr-defined]
        if focus:
            self.focus_panel()

    def focus_panel(self) -> None:
        key = self.current
        if key:
            self.call_after_refresh(lambda: self.query_one(f"#view-{key}", View).focus_main())

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        event.stop()
        if event.option.id and event.option.id in self.keys:
            self.select(event.option.id, focus=False)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id in self.keys:
            self.select(event.option.id, focus=True)
