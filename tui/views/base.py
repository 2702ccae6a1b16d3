"""What every view shares: a header line, a filter box, paging, an info line.

A view reads in ``fetch`` (called in a thread worker, may block on I/O) and
draws in ``show`` (called on the event loop with what ``fetch`` returned).
``tick`` runs every second on the event loop for clocks that move without a
poll (countdowns); it must only touch cells whose text changed.

A view with ``MARKABLE`` lets space mark rows (``*`` the whole page) and applies
its actions to the marked rows; a view with ``SORTS`` lets ``o`` cycle the sort
column and ``O`` flip its direction, the order being the database's (the view
passes ``self.sort`` to its Ops read). ``detail_actions`` names what the detail
screen of a record offers (retry, forget, drill down to failed jobs, cancel).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import DataTable, Input

from ..widgets.keyed_table import KeyedTable
from ..widgets.line import Line

if TYPE_CHECKING:
    from ..app import ErpqConsole


class View(Vertical):
    """Base of the views; subclasses define ``COLUMNS``, ``fetch`` and ``show``."""

    TITLE: ClassVar[str] = ""
    KEY: ClassVar[str] = ""
    COLUMNS: ClassVar[list[tuple[str, str, int | None]]] = []
    PAGED: ClassVar[bool] = False
    PAGE_SIZE: ClassVar[int] = 50
    #: Space marks rows; the view's actions apply to the marked ones.
    MARKABLE: ClassVar[bool] = False
    #: ``(Ops sort key, column key)`` that ``o`` cycles through, in order.
    SORTS: ClassVar[list[tuple[str, str]]] = []

    BINDINGS = [
        Binding("slash", "filter", "Filter", id="view.filter"),
        Binding("escape", "clear_filter", "Back / clear filter", show=False, id="view.clear_filter"),
        Binding("right_square_bracket", "page(1)", "Next page", show=False, id="view.next_page"),
        Binding("left_square_bracket", "page(-1)", "Prev page", show=False, id="view.prev_page"),
        Binding("space", "mark", "Mark", key_display="␣", id="view.mark"),
        Binding("asterisk", "mark_page", "Mark page", show=False, id="view.mark_page"),
        Binding("o", "sort", "Sort", id="view.sort"),
        Binding("O", "sort_reverse", "Sort direction", show=False, id="view.sort_reverse"),
    ]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.filter_text = ""
        self.page_offset = 0
        self.total = 0
        #: The Ops sort key in force (``-`` first: descending); None is the view's own order.
        self.sort: str | None = None

    @property
    def console(self) -> ErpqConsole:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Line(id="head", classes="head")
        yield from self.compose_body()
        yield Line(id="info", classes="info")
        yield Input(placeholder="filter (Enter applies, Esc clears)", id="filter", classes="filter")

    def compose_body(self) -> ComposeResult:
        yield KeyedTable(self.COLUMNS, markable=self.MARKABLE, id="table")

    @property
    def table(self) -> KeyedTable:
        return self.query_one("#table", KeyedTable)

    def focus_main(self) -> None:
        self.table.focus()

    # ------------------------------------------------------------ data
    def fetch(self, ops: Any) -> Any:  # thread
        """Read this view's data through ``ops`` (every view defines it)."""
        raise TypeError(f"{type(self).__name__} must define fetch()")

    def show(self, data: Any) -> None:  # event loop
        """Put what ``fetch`` read on the screen (every view defines it)."""
        raise TypeError(f"{type(self).__name__} must define show()")

    def tick(self) -> None:
        pass

    def describe(self, record: Any) -> str:
        """The info line for the selected record."""
        return ""

    def detail(self, ops: Any, record: Any) -> tuple[str, str] | None:  # thread
        """Title and body of the detail screen for a record."""
        return None

    def head(self, text: str) -> None:
        if self.filter_text:
            text += f"   filter: {self.filter_text!r}"
        if self.table.marked:
            text += f"   {len(self.table.marked):,} marked"
        self.query_one("#head", Line).set(text)

    def page_text(self, shown: int) -> str:
        if not self.total:
            return "none"
        if self.page_offset == 0 and shown >= self.total:
            return f"{self.total:,}"
        return f"{self.page_offset + 1:,}–{self.page_offset + shown:,} of {self.total:,} ([ ] pages)"

    def refresh_info(self) -> None:
        record = self.table.selected_record if self.table.row_count else None
        self.query_one("#info", Line).set(self.describe(record) if record is not None else "")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self.refresh_info()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_detail()

    # ------------------------------------------------------------ actions
    def selected(self) -> Any:
        return self.table.selected_record

    def marked(self) -> list[Any]:
        """The marked records (of every page), or [] when none is marked."""
        return [r for r in self.table.marked.values() if r is not None]

    def targets(self) -> list[Any]:
        """What an action applies to: the marked rows, else the one under the cursor."""
        return self.marked() or [r for r in [self.selected()] if r is not None]

    def detail_actions(self, record: Any) -> dict[str, Any]:
        """``{detail action name: callable}`` the detail screen of ``record`` offers
        (names: ``DetailScreen``'s bindings, e.g. retry, forget, failed, cancel)."""
        return {}

    def action_detail(self) -> None:
        record = self.selected()
        if record is None:
            return
        self.console.show_detail(lambda ops: self.detail(ops, record), self.detail_actions(record))

    def action_mark(self) -> None:
        self.table.toggle_mark()
        self._redraw_head()
        self.table.action_cursor_down()

    def action_mark_page(self) -> None:
        self.table.mark_page()
        self._redraw_head()

    def clear_marks(self) -> None:
        self.table.clear_marks()
        self._redraw_head()

    def _redraw_head(self) -> None:
        """Re-show the head with the marked count, without waiting for the next read."""
        line = self.query_one("#head", Line)
        base = line.text.split("   ")[0] if line.text else ""
        self.head(base)

    def action_sort(self) -> None:
        """Cycle the sort column: the view's own order, then each of ``SORTS``."""
        keys = [None, *[k for k, _ in self.SORTS]]
        current = self.sort.lstrip("-") if self.sort else None
        desc = bool(self.sort and self.sort.startswith("-"))
        nxt = keys[(keys.index(current) + 1) % len(keys)] if current in keys else None
        self._set_sort(None if nxt is None else ("-" if desc else "") + nxt)

    def action_sort_reverse(self) -> None:
        if not self.SORTS:
            return
        if self.sort is None:
            self._set_sort("-" + self.SORTS[0][0])
        else:
            self._set_sort(self.sort[1:] if self.sort.startswith("-") else "-" + self.sort)

    def _set_sort(self, sort: str | None) -> None:
        self.sort = sort
        self.page_offset = 0
        self.show_sort()
        self.console.poll_now()

    def show_sort(self) -> None:
        column = dict(self.SORTS).get(self.sort.lstrip("-")) if self.sort else None
        self.table.sort_arrow(column, bool(self.sort and self.sort.startswith("-")))

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = self.filter_text
        box.add_class("shown")
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "filter":
            return
        event.stop()
        self.set_filter(event.value.strip())

    def set_filter(self, text: str) -> None:
        self.filter_text = text
        self.page_offset = 0
        box = self.query_one("#filter", Input)
        box.remove_class("shown")
        self.focus_main()
        self.console.poll_now()

    def action_clear_filter(self) -> None:
        """Esc backs out: closes the filter, then clears it, then leaves a panel for its list."""
        box = self.query_one("#filter", Input)
        if self.table.marked and not box.has_class("shown"):
            self.clear_marks()
        elif box.has_class("shown") or self.filter_text:
            box.value = ""
            self.set_filter("")
        else:
            self.console.back_out(self)

    def action_page(self, step: int) -> None:
        if not self.PAGED:
            return
        new = max(0, self.page_offset + step * self.PAGE_SIZE)
        if new >= max(self.total, 1):
            return
        if new != self.page_offset:
            self.page_offset = new
            self.console.poll_now()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "page" and not self.PAGED:
            return False
        if action in ("mark", "mark_page"):
            try:
                return self.table.markable
            except Exception:  # not composed yet
                return False
        if action in ("sort", "sort_reverse") and not self.sortable():
            return False
        return True

    def sortable(self) -> bool:
        return bool(self.SORTS)
