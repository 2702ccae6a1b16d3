"""The console's views, one module each; ``VIEWS`` is their tab order.

The core views come first in their fixed places; each capability's panels
(``Capability(panels=...)``) are put among them by their ``order``: a table
panel is built from its ``PanelSpec`` (``panel.panel_view``), a custom one is
the Textual view class the spec names.
"""

from __future__ import annotations

import importlib

from erpq.capability import load_all

from .activity import ActivityView
from .base import View
from .batches import BatchesView
from .failed import FailedView
from .panel import CapabilityPanel, panel_view
from .queue import QueueView
from .runners import RunnersView
from .schedule import ScheduleView

CORE_VIEWS: list[tuple[int, type[View]]] = [(10, ScheduleView), (20, QueueView), (30, FailedView),
                                            (50, BatchesView), (60, ActivityView), (70, RunnersView)]


def capability_views() -> list[tuple[int, type[View]]]:
    found = []
    for cap in load_all():
        for spec in cap.panels:
            if spec.view:
                module, _, name = spec.view.partition(":")
                view = getattr(importlib.import_module(module), name)
            else:
                view = panel_view(cap.name, spec)
            found.append((spec.order, view))
    return found


VIEWS: list[type[View]] = [v for _, v in sorted([*CORE_VIEWS, *capability_views()], key=lambda p: p[0])]

__all__ = ["VIEWS", "CapabilityPanel", "View"]
