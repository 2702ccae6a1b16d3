"""The console's handle on ``erpq.ops``: an ``Ops`` that remembers, per thread,
the equivalent ``erpq`` command line of the last action it performed, so the
console can show it next to the outcome."""

from __future__ import annotations

import threading
from typing import Any

from erpq.ops import Ops


class ConsoleOps(Ops):
    _local = threading.local()

    def _act(self, action: str, target: str | None, command: str, detail: Any = None) -> None:
        self._local.command = command
        super()._act(action, target, command, detail)

    def take_command(self) -> str | None:
        """The command line of the last action on this thread (then forgotten)."""
        command = getattr(self._local, "command", None)
        self._local.command = None
        return command
