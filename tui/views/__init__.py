"""The console's views, one module each; ``VIEWS`` is their tab order."""

from .activity import ActivityView
from .base import View
from .batches import BatchesView
from .failed import FailedView
from .health import HealthView
from .queue import QueueView
from .runners import RunnersView
from .schedule import ScheduleView

VIEWS: list[type[View]] = [ScheduleView, QueueView, FailedView, HealthView, BatchesView,
                           ActivityView, RunnersView]

__all__ = ["VIEWS", "ActivityView", "BatchesView", "FailedView", "HealthView", "QueueView",
           "RunnersView", "ScheduleView", "View"]
