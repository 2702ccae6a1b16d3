"""A one-line Static that redraws only when its text changes."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class Line(Static):
    def __init__(self, text: str | Text = "", **kwargs) -> None:
        super().__init__(text, markup=False, **kwargs)
        self._text: str | Text = text

    def set(self, text: str | Text) -> None:
        if text != self._text:
            self._text = text
            self.update(text)

    @property
    def text(self) -> str:
        return self._text.plain if isinstance(self._text, Text) else str(self._text)
