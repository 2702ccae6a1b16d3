"""The alert line: system trouble in one line that is never cut off.

Hidden while all is well; red (``critical``) or amber (``warning``) otherwise.
It is drawn for the width it has: the count and the worst alert come first,
the others follow while they fit, and ``+N more (:alerts)`` says what did not.
In monochrome (``NO_COLOR``) the leading ``ALERT`` word in reverse video
carries the meaning the colour would.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widget import Widget


class AlertLine(Widget):
    DEFAULT_CSS = """
    AlertLine { height: 1; width: 1fr; display: none; }
    AlertLine.shown { display: block; }
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.alerts: list[Any] = []
        self._key: tuple = ()

    def set_alerts(self, alerts: list[Any]) -> None:
        key = tuple((a.severity, a.text) for a in alerts)
        if key == self._key:
            return
        self._key = key
        self.alerts = list(alerts)
        critical = any(a.severity == "critical" for a in alerts)
        self.set_class(bool(alerts), "shown")
        self.set_class(critical, "critical")
        self.set_class(bool(alerts) and not critical, "warning")
        self.refresh()

    @property
    def plain(self) -> str:
        return self.line(max(self.size.width or self.app.size.width, 80)).plain

    def line(self, width: int) -> Text:
        alerts = self.alerts
        if not alerts:
            return Text("")
        n = len(alerts)
        head = Text(f" ALERT{'S' if n > 1 else ''} {n} ", style="bold reverse")
        out = head.copy()
        out.append(" ")
        room = width - out.cell_len
        for i, a in enumerate(alerts):
            rest = n - i - 1
            more = f" · +{rest} more (:alerts)" if rest else ""
            piece = (" · " if i else "") + a.text
            if len(piece) + len(more) <= room or (i == 0 and rest == 0):
                out.append(piece, style="bold" if a.severity == "critical" else "")
                room -= len(piece)
                continue
            if i == 0:  # the worst alert always shows, shortened
                keep = max(room - len(more) - 1, 10)
                out.append(piece[:keep] + "…", style="bold")
                room -= keep + 1
                out.append(more)
            else:
                out.append(f" · +{n - i} more (:alerts)")
            break
        out.truncate(width, overflow="ellipsis")
        return out

    def render(self) -> Text:
        # Shown again after being hidden, the line may render before layout gives it
        # its width: the screen's width is the width it is about to get.
        return self.line(self.size.width or self.app.size.width or 80)
