"""A DataTable that is updated by row key and redraws only what changed.

``sync(rows)`` takes the rows the table should show (a page, never the whole
store). When the row keys and their order are unchanged, only the cells whose
text changed are written, and only their region is refreshed: an idle poll
sends nothing to the terminal, a ticking countdown sends one cell. When rows
come or go the page is rebuilt, keeping the cursor on the same key.

A ``markable`` table has a narrow first column showing which rows are marked
(for an action on several rows); marks are kept by key, so they survive a
refresh and paging. ``sort_arrow`` puts ▲/▼ after a column's label.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.binding import Binding
from textual.coordinate import Coordinate
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey

Cell = str | Text
Row = tuple[str, Sequence[Cell]]
MARK_COLUMN = "mark"


class KeyedTable(DataTable):
    """A row-cursor table of ``(key, cells)`` rows with fixed columns."""

    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False, id="table.down"),
        Binding("k", "cursor_up", "Up", show=False, id="table.up"),
        Binding("g,home", "scroll_top", "First row", show=False, id="table.first"),
        Binding("G,end", "scroll_bottom", "Last row", show=False, id="table.last"),
    ]

    MARK = "●"

    def __init__(self, columns: Sequence[tuple[str, str, int | None]], markable: bool = False, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self.markable = markable
        self._spec = ([(MARK_COLUMN, "", 1)] if markable else []) + list(columns)
        self._skip = 1 if markable else 0  # the mark column is not one of the caller's cells
        self._cells: dict[str, tuple[Cell, ...]] = {}
        self._order: list[str] = []
        self._records: dict[str, object] = {}
        #: Marked rows by key, with the record last seen for each (on this page or not).
        self.marked: dict[str, object] = {}
        self._arrow: tuple[str, bool] | None = None

    def on_mount(self) -> None:
        for key, label, width in self._spec:
            self.add_column(label, key=key, width=width)
        self._fit_width()

    def on_resize(self, event) -> None:
        self._fit_width()

    def _fit_width(self) -> None:
        """The last column (the error, the arguments) takes the width the
        terminal has beyond the others: at 200 columns an error shows ~140
        characters, at 80 what fits."""
        if not self._spec or self._spec[-1][2] is None or not self.size.width:
            return
        key, _, least = self._spec[-1]
        column = self.columns.get(ColumnKey(key))
        if column is None:
            return
        others = sum((w or 10) for _, _, w in self._spec[:-1])
        pad = 2 * self.cell_padding * len(self._spec)
        width = max(least if self.size.width >= others + pad + least + 2 else 8,
                    self.size.width - others - pad - 2)
        if column.width != width:
            column.width = width
            column.auto_width = False
            self._require_update_dimensions = True
            self.refresh()

    # ------------------------------------------------------------ data
    def sync(self, rows: Sequence[Row], records: dict[str, object] | None = None) -> bool:
        """Show ``rows``; returns whether anything was drawn."""
        if records is not None:
            self._records = records
            for key in self.marked.keys() & records.keys():
                self.marked[key] = records[key]
        keys = [k for k, _ in rows]
        if keys == self._order:
            changed = False
            for key, cells in rows:
                cells = tuple(cells)
                old = self._cells[key]
                if old == cells:
                    continue
                for i, (a, b) in enumerate(zip(old, cells, strict=True)):
                    if a != b:
                        self.set_cell(key, i, b)
                self._cells[key] = cells
                changed = True
            return changed
        selected = self.selected_key
        self.clear()
        self._cells = {}
        for key, cells in rows:
            self._cells[key] = tuple(cells)
            if self.markable:
                self.add_row(self._mark(key), *cells, key=key)
            else:
                self.add_row(*cells, key=key)
        self._order = keys
        if selected in self._cells:
            self.move_cursor(row=keys.index(selected), animate=False)
        return True

    def set_cell(self, key: str, column: int, value: Cell) -> None:
        """Change one cell and refresh only its region (``update_cell`` would
        refresh the whole table, which is what a ticking column must not do)."""
        self._write(key, column + self._skip, value)
        cells = list(self._cells[key])
        cells[column] = value
        self._cells[key] = tuple(cells)

    def _write(self, key: str, index: int, value: Cell) -> None:
        row_key, col_key = RowKey(key), ColumnKey(self._spec[index][0])
        self._data[row_key][col_key] = value
        self._update_count += 1
        self.refresh_coordinate(Coordinate(self.get_row_index(row_key), index))

    def cells(self, key: str) -> tuple[Cell, ...] | None:
        return self._cells.get(key)

    # ------------------------------------------------------------ selection
    @property
    def selected_key(self) -> str | None:
        if not self._order or self.cursor_row < 0 or self.cursor_row >= len(self._order):
            return None
        return self._order[self.cursor_row]

    @property
    def selected_record(self) -> object | None:
        key = self.selected_key
        return None if key is None else self._records.get(key)

    @property
    def keys(self) -> list[str]:
        return list(self._order)

    def record(self, key: str) -> object | None:
        return self._records.get(key)

    # ------------------------------------------------------------ marks
    def _mark(self, key: str) -> Text:
        return Text(self.MARK if key in self.marked else " ", style="bold yellow")

    def _redraw_mark(self, key: str) -> None:
        if self.markable and key in self._cells:
            self._write(key, 0, self._mark(key))

    def toggle_mark(self, key: str | None = None) -> bool:
        """Mark or unmark a row (the cursor's by default); returns whether it is marked now."""
        key = key if key is not None else self.selected_key
        if key is None or not self.markable:
            return False
        if key in self.marked:
            del self.marked[key]
        else:
            self.marked[key] = self._records.get(key)
        self._redraw_mark(key)
        return key in self.marked

    def mark_page(self) -> None:
        """Mark every row shown; if all of them already are, unmark them."""
        if not self.markable:
            return
        if self._order and all(k in self.marked for k in self._order):
            for key in self._order:
                self.marked.pop(key, None)
        else:
            for key in self._order:
                self.marked[key] = self._records.get(key)
        for key in self._order:
            self._redraw_mark(key)

    def clear_marks(self) -> None:
        keys, self.marked = list(self.marked), {}
        for key in keys:
            self._redraw_mark(key)

    # ------------------------------------------------------------ sort
    def sort_arrow(self, column: str | None, descending: bool = False) -> None:
        """Show ▲ (ascending) or ▼ after ``column``'s label (None: no arrow)."""
        new = (column, descending) if column else None
        if new == self._arrow:
            return
        labels = {key: label for key, label, _ in self._spec}
        for key in {c for c in (self._arrow and self._arrow[0], column) if c}:
            col = self.columns.get(ColumnKey(key))
            if col is None:
                continue
            text = labels[key] + ((" ▼" if descending else " ▲") if key == column else "")
            col.label = Text(text)
        self._arrow = new
        self._require_update_dimensions = True
        self.refresh()
