"""One line per health metric: value, bar coloured by its thresholds, sparkline."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ..fmt import bar, sparkline


def level(value: float | None, warning: float, critical: float) -> str:
    if value is None:
        return "none"
    if value >= critical:
        return "critical"
    if value >= warning:
        return "warning"
    return "ok"


STYLE = {"ok": "green", "warning": "yellow", "critical": "bold red", "none": "dim"}


class Gauge(Static):
    """``label  value  [bar]  warn/crit  sparkline``; redraws only on change."""

    def __init__(self, label: str, unit: str = "", **kwargs) -> None:
        super().__init__("", **kwargs)
        self.label = label
        self.unit = unit
        self._shown: Text | None = None

    def show(self, value: float | None, warning: float, critical: float, history: list[float]) -> None:
        state = level(value, warning, critical)
        scale = max(critical, value or 0) or 1
        shown = "—" if value is None else (f"{value:.0f}{self.unit}" if isinstance(value, float) else f"{value}{self.unit}")
        text = Text.assemble(
            (f"{self.label:<13}", "bold"),
            (f"{shown:>7} ", STYLE[state]),
            (bar((value or 0) / scale, 12), STYLE[state]),
            (f" {state:<8}", STYLE[state]),
            (f" warn {warning:g} crit {critical:g}".ljust(22), "dim"),
            (sparkline(history, 18), "cyan"),
        )
        if text != self._shown:
            self._shown = text
            self.update(text)
