"""Snapshots of every view at 80x24 with a fixed clock and fixed data (FakeOps).

Regenerate after an intended change with ``pytest tests/test_console_snapshots.py
--snapshot-update`` and review the SVGs under tests/__snapshots__/.
"""

from __future__ import annotations

import pytest

from console_fixtures import EmptyOps, FakeOps, fixed_clock
from tui.app import ErpqConsole


def app_for(ops: FakeOps) -> ErpqConsole:
    return ErpqConsole(ops, ops.settings, clock=fixed_clock, poll=False)


def keys(*presses: str):
    async def run(pilot) -> None:
        app = pilot.app
        for _ in range(3):
            await app.workers.wait_for_complete()
            await pilot.pause()
        for key in presses:
            await pilot.press(key)
            for _ in range(3):
                await app.workers.wait_for_complete()
                await pilot.pause()
    return run


@pytest.mark.parametrize("view", ["1", "2", "3", "4", "5", "6", "7"])
def test_view(snap_compare, view):
    assert snap_compare(app_for(FakeOps()), terminal_size=(80, 24), run_before=keys(view))


@pytest.mark.parametrize("name,presses", [
    ("queue_scheduled", ("2", "v")),
    ("queue_running", ("2", "v", "v")),
    ("failed_clusters", ("3", "c")),
    ("failed_detail", ("3", "enter")),
    ("confirm_forget", ("3", "d")),
    ("help", ("question_mark",)),
    ("runners_locks_focus", ("7", "tab")),
    ("business_webhooks", ("colon", *"webhooks", "enter")),
    ("command_line", ("colon", *"retry --task X")),
    ("alerts", ("exclamation_mark",)),
    ("business_webhook_subscriptions", ("colon", *"subscriptions", "enter")),
    ("activity_stats", ("6", "s")),
    ("failed_marked_sorted", ("3", "space", "o", "o")),
    ("run_detail_actions", ("6", "j", "enter")),
])
def test_screen(snap_compare, name, presses):
    assert snap_compare(app_for(FakeOps()), terminal_size=(80, 24), run_before=keys(*presses))


def test_read_only_status(snap_compare):
    assert snap_compare(app_for(FakeOps(read_only=True)), terminal_size=(80, 24), run_before=keys())


def test_empty_install(snap_compare):
    assert snap_compare(app_for(EmptyOps()), terminal_size=(80, 24), run_before=keys("4"))


@pytest.mark.parametrize("presses", [(), ("3",), ("6",), ("6", "s"), ("3", "space", "space", "o", "o", "O")],
                         ids=["schedule", "failed", "activity", "stats", "failed_marked_sorted"])
def test_wide(snap_compare, presses):
    """200x50: columns widen, the alert line shows every alert."""
    assert snap_compare(app_for(FakeOps()), terminal_size=(200, 50), run_before=keys(*presses))
