"""Navigation that scales with capabilities: numbered tabs for the core views,
one panel-browser tab with every capability panel in a grouped side list, and
jumps by name (``:name``, the palette, ``show_view``)."""

from __future__ import annotations

import pytest

from console_fixtures import FakeOps, fixed_clock, settle
from tui.app import ErpqConsole
from tui.views import GROUPED, GROUPS, TABS, VIEWS, business

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def app_for(ops=None) -> ErpqConsole:
    ops = ops or FakeOps()
    return ErpqConsole(ops, ops.settings, clock=fixed_clock, poll=False)


def test_every_capability_panel_is_grouped_under_its_capability():
    assert [v.KEY for v in VIEWS] == [v.KEY for v in TABS] + [v.KEY for v in GROUPED]
    assert len(TABS) <= 8, "numbered tabs are for the core views only"
    assert "webhooks" in {v.KEY for v in GROUPED}
    titles = [t for t, _ in GROUPS]
    assert len(titles) == len(set(titles))


async def test_tab_bar_fits_80_columns_and_browser_lists_every_panel():
    app = app_for()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        tabs = app.query("#tabs Tab")
        labels = [str(t.label) for t in tabs]
        assert labels[-1] == f"{len(TABS) + 1} {business.TITLE}"
        assert max(t.region.right for t in tabs) <= 80, labels
        await pilot.press(str(len(TABS) + 1))
        await settle(app, pilot)
        assert isinstance(app.focused, business.PanelList)
        listed = [o.id for o in app.focused._options if not o.disabled]
        assert listed == [v.KEY for v in GROUPED]
        first = app.active_view.KEY
        await pilot.press("j")
        await settle(app, pilot)
        assert app.active_view.KEY != first == GROUPED[0].KEY
        await pilot.press("enter")
        await settle(app, pilot)
        assert app.focused is app.active_view.table


async def test_show_view_jumps_into_a_grouped_panel_and_polls_it():
    app = app_for()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        app.action_show_view("webhooks")
        await settle(app, pilot)
        view = app.active_view
        assert view.KEY == "webhooks"
        assert app.focused is view.table
        assert view.table.row_count == 8
        app.action_show_view("failed")
        await settle(app, pilot)
        assert app.active_view.KEY == "failed"
