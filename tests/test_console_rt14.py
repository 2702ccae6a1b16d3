"""Console: the schedule entry's detail explains its ticks; the host's health
detail shows the probe's round trip over time and the queue per tenant."""

from __future__ import annotations

import pytest

from erpq.ops import Ops
from erpq.runtime import EmbeddedRunner
from test_console_app import make_app, press, settle  # noqa: F401
from tui.views.health import _probe_lines, _tenant_queue_lines
from tui.widgets.dialogs import TextScreen

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_schedule_detail_explains(make_app):  # noqa: F811
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "enter")
        assert isinstance(app.screen, TextScreen)
        body = str(app.screen.body)
        assert "Why did it (not) fire?" in body and "Scheduler: NO live runner" in body and "Lock: free" in body


def test_health_detail_lines(runtime):
    ops = Ops(runtime)
    assert "no probe yet" in _probe_lines(ops, "UTC")[1]
    assert ops.health.probe(wait_s=0.2).status == "failed"
    runner = EmbeddedRunner(runtime, workers=1, periodic=False)
    runner.start()
    try:
        assert ops.health.probe(wait_s=30).status == "ok"
    finally:
        runner.stop()
    lines = _probe_lines(ops, "UTC")
    assert "Queue round trip (probe job, last 2)" in lines[1] and "latest" in lines[2] and " ok waited " in lines[2]
    assert "1 failed probe(s)" in lines[3]
    runtime.enqueue("TestEcho", 1, tenant_id=3) if "TestEcho" in runtime.tasks else None
    rows = _tenant_queue_lines(ops)
    assert rows == [] or "Queue per tenant" in rows[1]
