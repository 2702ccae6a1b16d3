"""One line of a throughput/latency strip: a label, Textual's Sparkline, a value."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Sparkline, Static


class SparkRow(Horizontal):
    """``label  ▁▂▃▅▇▅▃  value``; redraws only what changed."""

    DEFAULT_CSS = """
    SparkRow { height: 1; }
    SparkRow > .spark-label { width: 15; color: $text-muted; }
    SparkRow > Sparkline { width: 1fr; height: 1; }
    SparkRow > .spark-value { width: 22; padding-left: 1; }
    """

    def __init__(self, label: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.label = label
        self._value = ""

    def compose(self) -> ComposeResult:
        yield Static(self.label, classes="spark-label")
        yield Sparkline([], summary_function=max)
        yield Static("", classes="spark-value")

    def show(self, values: Sequence[float | None], value: str) -> None:
        data = [float(v) if v is not None else 0.0 for v in values]
        spark = self.query_one(Sparkline)
        if list(spark.data or []) != data:
            spark.data = data
        if value != self._value:
            self._value = value
            self.query_one(".spark-value", Static).update(value)
