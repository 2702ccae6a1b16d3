"""The console's views, one module each.

The core views come first in their fixed places; each capability's panels
(``Capability(panels=...)``) are put among them by their ``order``: a table
panel is built from its ``PanelSpec`` (``panel.panel_view``), a custom one is
the Textual view class the spec names.

Navigation scales with the number of capabilities: views ordered below
``GROUPED_FROM`` (the core views, and a capability panel that asks for a core
place, like Health) get a numbered tab each (``TABS``); every other panel lives
in ONE further tab, the panel browser (``business.PanelBrowser``), as a side
list grouped by capability title (``GROUPS``). ``VIEWS`` is every view, tabs
first, then the grouped panels in list order; ``:name`` and the palette reach
each of them by name.
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

#: Panels with an ``order`` at or above this go to the panel browser tab.
GROUPED_FROM = 100


def capability_views() -> list[tuple[int, str, type[View]]]:
    """``(order, capability title, view class)`` of every capability panel."""
    found = []
    for cap in load_all():
        for spec in cap.panels:
            if spec.view:
                module, _, name = spec.view.partition(":")
                view = getattr(importlib.import_module(module), name)
            else:
                view = panel_view(cap.name, spec)
            found.append((spec.order, cap.title or cap.name, view))
    return found


_CAP = capability_views()

#: Views with a numbered tab of their own, in tab order.
TABS: list[type[View]] = [v for _, v in sorted([*CORE_VIEWS, *[(o, v) for o, _, v in _CAP if o < GROUPED_FROM]],
                                               key=lambda p: p[0])]


def _groups() -> list[tuple[str, list[type[View]]]]:
    by_title: dict[str, list[tuple[int, type[View]]]] = {}
    for order, title, view in _CAP:
        if order >= GROUPED_FROM:
            by_title.setdefault(title, []).append((order, view))
    return [(title, [v for _, v in sorted(views, key=lambda p: p[0])])
            for title, views in sorted(by_title.items(), key=lambda kv: (min(o for o, _ in kv[1]), kv[0]))]


#: The panel browser's side list: ``(capability title, its panels)``.
GROUPS: list[tuple[str, list[type[View]]]] = _groups()
GROUPED: list[type[View]] = [v for _, views in GROUPS for v in views]
VIEWS: list[type[View]] = [*TABS, *GROUPED]

__all__ = ["GROUPED", "GROUPS", "TABS", "VIEWS", "CapabilityPanel", "View"]
