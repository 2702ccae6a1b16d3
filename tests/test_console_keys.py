"""Keys as terminal users expect (issue 8, item 4): the ':' command line,
j/k/g/G/Home/End, Esc backing out, Tab never on the tab bar, help with action
names and rebound keys, a palette of erpq commands only."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.widgets import Tabs

from conftest import make_settings
from console_fixtures import FakeOps, fixed_clock, press, seed_failed, settle
from erpq.ops import Actor, Ops
from erpq.runtime import Runtime, set_current
from tui.app import ErpqConsole
from tui.commands import CommandError, parse
from tui.views import GROUPED, TABS, VIEWS, business
from tui.widgets.dialogs import ConfirmScreen, TextScreen

pytestmark = pytest.mark.anyio
ACTOR = Actor(user="tester", client="10.1.2.3", source="console")
V = [(v.KEY, v.TITLE) for v in VIEWS]
T = [v.KEY for v in TABS] + [business.KEY]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def fake_app() -> ErpqConsole:
    ops = FakeOps()
    return ErpqConsole(ops, ops.settings, clock=fixed_clock, poll=False)


# ---------------------------------------------------------------- grammar
@pytest.mark.parametrize("line,verb,target", [
    (":failed", "view", "failed"), ("fail", "view", "failed"), (":Workflows", "view", "workflows"),
    (":draft purchase orders", "view", "purchase_orders"), (":3", "view", "failed"),
    (":8", "view", business.KEY), (":q", "quit", ""), (":alerts", "alerts", ""),
    (":run erp:check-system-health", "run", "erp:check-system-health"), (":filter boom 1", "filter", "boom 1"),
])
def test_command_grammar(line, verb, target):
    cmd = parse(line, V, T)
    assert (cmd.verb, cmd.target) == (verb, target)


def test_retry_grammar():
    assert parse(":retry --task SendJob", V, T).task == "SendJob"
    assert parse(":retry 4 5", V, T).ids == [4, 5]
    assert parse(":retry --all", V, T).all


@pytest.mark.parametrize("line,error", [
    (":retry 1 --all", "not both"), (":retry", "needs IDs"), (":retry --task", "needs a task"),
    (":zzz", "unknown command or view :zzz"), (":re", "ambiguous"), (":run", "one periodic task"),
    (":help me", "takes no arguments"), (":", "empty command"),
])
def test_command_errors_are_one_line(line, error):
    with pytest.raises(CommandError) as exc:
        parse(line, V, T)
    assert error in str(exc.value) and "\n" not in str(exc.value)


# ---------------------------------------------------------------- in the console
async def test_colon_jumps_to_any_view_or_panel_and_reports_errors():
    app = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "colon", *"webhooks", "enter")
        assert app.active_view.KEY == "webhooks" and app.focused is app.active_view.table
        await press(app, pilot, "colon", *"failed", "enter")
        assert app.active_view.KEY == "failed"
        await press(app, pilot, "colon", *"nope", "enter")
        assert app.messages[-1].startswith("unknown command or view :nope")
        await press(app, pilot, "colon", "x", "escape")
        assert not app.query_one("#command").has_class("shown")
        assert app.focused is app.active_view.table


async def test_colon_retry_task_asks_with_the_count_and_audits_the_real_command(tmp_path: Path):
    rt = Runtime(make_settings(tmp_path))
    set_current(rt)
    try:
        seed_failed(rt, 3, task="DeliverWebhookJob")
        app = ErpqConsole(Ops(rt, ACTOR), rt.settings, poll=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(app, pilot)
            await press(app, pilot, "colon", *":retry --task DeliverWebhookJob".lstrip(":"), "enter")
            assert isinstance(app.screen, ConfirmScreen)
            assert "Retry 3 failed jobs of task DeliverWebhookJob?" in app.screen.question
            await press(app, pilot, "y")
            assert rt.huey.pending_count() == 3
            assert app.messages[-1].startswith("3 failed jobs re-enqueued")
            assert "$ erpq queue retry --all --task DeliverWebhookJob" in app.messages[-1]
    finally:
        set_current(None)
        rt.close()


async def test_vim_keys_home_end_move_the_cursor():
    app = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await press(app, pilot, "6")
        t = app.active_view.table
        assert t.row_count > 3
        await press(app, pilot, "j", "j")
        assert t.cursor_row == 2
        await press(app, pilot, "k")
        assert t.cursor_row == 1
        await press(app, pilot, "G")
        assert t.cursor_row == t.row_count - 1
        await press(app, pilot, "g")
        assert t.cursor_row == 0
        await press(app, pilot, "end")
        assert t.cursor_row == t.row_count - 1
        await press(app, pilot, "home")
        assert t.cursor_row == 0


async def test_esc_backs_out_and_tab_never_lands_on_the_tab_bar():
    app = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        app.action_show_view(GROUPED[-1].KEY)
        await settle(app, pilot)
        await press(app, pilot, "slash", *"x")
        await press(app, pilot, "escape")  # closes the filter box
        assert app.focused is app.active_view.table
        await press(app, pilot, "escape")  # back to the panel list
        assert isinstance(app.focused, business.PanelList)
        for _ in range(6):
            await press(app, pilot, "tab")
            assert not isinstance(app.focused, Tabs)
        await press(app, pilot, "3")
        await press(app, pilot, "enter")
        assert isinstance(app.screen, TextScreen)
        await press(app, pilot, "escape")  # Esc closes a detail screen
        assert not isinstance(app.screen, TextScreen)
        for _ in range(4):
            await press(app, pilot, "tab")
            assert not isinstance(app.focused, Tabs)


async def test_help_names_every_action_with_its_key_and_rebinding_shows(tmp_path: Path):
    from tui.app import binding_ids

    rt = Runtime(make_settings(tmp_path, console={"keys": {"schedule.trigger": "T", "app.view.failed": "F"}}))
    set_current(rt)
    try:
        app = ErpqConsole(Ops(rt, ACTOR), rt.settings, poll=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(app, pilot)
            body = app.help_text()
            for bid in binding_ids():
                assert bid in body, bid
            assert "  T          Run now" in body and "  F          Failed" in body
            assert "\"\"\"" not in body and "subclasses" not in body  # no developer docstrings
            labels = [str(t.label) for t in app.query("#tabs Tab")]
            assert "F Failed" in labels and "3 Failed" not in labels
    finally:
        set_current(None)
        rt.close()


async def test_palette_holds_erpq_commands_only():
    from tui.widgets.palette import ConsoleCommands

    app = fake_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert set(app.COMMANDS) == {ConsoleCommands}
        names = [n for n, _, _ in app.palette_commands()]
        assert names.count("Quit") == 1
        assert not any("screenshot" in n.lower() or "theme" in n.lower() for n in names)
        for v in VIEWS:
            assert f"Show {v.TITLE}" in names


# ---------------------------------------------------------------- the config's example
REPO = Path(__file__).resolve().parent.parent


def uncommented_config(tmp_path: Path, extra: str = "") -> Path:
    """A copy of config.toml with the commented [console.keys] examples uncommented,
    everything else under tmp_path."""
    text = (REPO / "config.toml").read_text()
    head, keys = text.split("[console.keys]\n", 1)
    lines = [line[2:] if line.startswith("# ") and " = " in line and not line.startswith("# Rebind")
             else line for line in keys.splitlines()]
    text = head + "[console.keys]\n" + "\n".join(lines) + "\n" + extra
    text = text.replace('"sqlite:///var/', '"sqlite:///').replace('"var/log/erpq.log"', '"erpq.log"')
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    return cfg


async def test_the_commented_key_example_of_config_toml_works_uncommented(tmp_path: Path):
    from erpq.config import load
    from tui.app import resolve_keys

    cfg = uncommented_config(tmp_path)
    settings = load(cfg)
    assert settings.console.keys == {"retry": "y", "schedule.trigger": "T"}
    keymap, bad = resolve_keys(settings.console.keys)
    assert not bad and keymap["failed.retry"] == "y" and keymap["schedule.trigger"] == "T"
    assert {name for name, key in keymap.items() if key == "y"} == {n for n in keymap if n.endswith(".retry")}
    rt = Runtime(settings)
    set_current(rt)
    try:
        ids = seed_failed(rt, 2, task="DeliverWebhookJob")
        app = ErpqConsole(Ops(rt, ACTOR), rt.settings, poll=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(app, pilot)
            await press(app, pilot, "3", "r")  # no longer retry
            assert rt.huey.pending_count() == 0
            await press(app, pilot, "y")
            assert rt.huey.pending_count() == 1
            assert f"$ erpq queue retry {ids[-1]}" in app.messages[-1]
            assert "  y          Retry" in app.help_text()
    finally:
        set_current(None)
        rt.close()


def test_console_key_names_short_dotted_shared_and_unknown(tmp_path: Path, capsys):
    from erpq.config import load
    from tui.app import main, resolve_keys

    cfg = tmp_path / "config.toml"
    cfg.write_text('[console.keys]\nfailed.flush = "ctrl+x"\n')  # a bare dotted name: a nested table in TOML
    assert load(cfg).console.keys == {"failed.flush": "ctrl+x"}
    keymap, bad = resolve_keys({"detail": "D", "nope": "z", "retry_all": "A"})
    assert bad == ["nope"]
    assert keymap["failed.retry_all"] == "A"
    # a short name several views share rebinds it in every one of them
    assert "failed.detail" in keymap and "queue.detail" in keymap
    assert {n for n, k in keymap.items() if k == "D"} == {n for n in keymap if n.endswith(".detail")}
    cfg.write_text('[console.keys]\nnope = "D"\n')
    assert main(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown action(s) nope" in err and len(err.splitlines()) == 1
